package catalog

import (
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
)

func jobLog(j *Job) string {
	var b strings.Builder
	for _, l := range j.Log {
		b.WriteString(l.Level + ": " + l.Msg + "\n")
	}
	return b.String()
}

// A queued job is canceled by the command itself: it ends as canceled,
// saying who canceled it and why, and its backup leaves nothing behind.
func TestCancelQueuedJob(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	id := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: LevelFull, Pool: "disk1", Paths: []fileindex.Path{"/srv"}}}).JobID
	waiting := "no storage node of pool disk1 is online"
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: id, Waiting: &waiting}})
	c.must(&Command{Op: OpCancelJob, Cancel: &JobCancel{JobID: id, By: "alice@admin1", Reason: "wrong paths"}})
	j, _ := c.s.Job(id)
	b, _ := c.s.Backup(id)
	if j.State != JobCanceled || j.Ended.IsZero() || j.Waiting != "" || j.Error != "canceled by alice@admin1: wrong paths" ||
		j.Cancel == nil || j.Cancel.By != "alice@admin1" || j.Cancel.Reason != "wrong paths" || j.Cancel.Time.IsZero() {
		t.Fatalf("canceled queued job %+v (cancel %+v)", j, j.Cancel)
	}
	if b.State != BackupAborted {
		t.Fatalf("the backup of a canceled queued job is %s, want aborted", b.State)
	}
	if !strings.Contains(jobLog(j), "warning: canceled by alice@admin1: wrong paths") {
		t.Fatalf("log:\n%s", jobLog(j))
	}
	counts, err := c.s.Counts()
	if err != nil || counts.Jobs[JobCanceled] != 1 || counts.Jobs[JobQueued] != 0 {
		t.Fatalf("counts %+v %v", counts.Jobs, err)
	}
	active, _ := c.s.Jobs(JobFilter{States: []JobState{JobQueued, JobRunning}})
	if len(active) != 0 {
		t.Fatalf("active jobs after the cancel: %+v", active)
	}
	// It cannot be dispatched; a repeated cancel changes nothing.
	c.refused(CodeWrongState, &Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn1"}})
	c.must(&Command{Op: OpCancelJob, Cancel: &JobCancel{JobID: id, By: "bob"}})
	if j, _ := c.s.Job(id); j.Cancel.By != "alice@admin1" || strings.Count(jobLog(j), "canceled by") != 1 {
		t.Fatalf("a repeated cancel changed the job: %+v\n%s", j, jobLog(j))
	}
	c.refused(CodeNotFound, &Command{Op: OpCancelJob, Cancel: &JobCancel{JobID: 999, By: "bob"}})
}

// A job that ended cannot be canceled: the refusal says how it ended.
func TestCancelEndedJobIsRefused(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	id := c.backup(LevelFull, []fileindex.Entry{dir("/srv"), file("/srv/a", 1)})
	e := c.refused(CodeWrongState, &Command{Op: OpCancelJob, Cancel: &JobCancel{JobID: id, By: "bob"}})
	if !strings.Contains(e.Msg, "already ended (success)") {
		t.Fatalf("refusal %v", e)
	}
	if j, _ := c.s.Job(id); j.State != JobSuccess || j.Cancel != nil {
		t.Fatalf("a refused cancel changed the job: %+v", j)
	}
}

// A running job only records its cancel and goes on running (its node and
// agent must be stopped first); however it then stops (the leader ends it,
// its node aborts the session, it fails, it is requeued) it ends as
// canceled, with nothing of its session left in the catalog.
func TestCancelRunningJob(t *testing.T) {
	ends := map[string]func(c *testCatalog, id uint64) *Command{
		"leader ends it": func(_ *testCatalog, id uint64) *Command {
			return &Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: id, State: JobCanceled, Attempt: 1}}
		},
		"node aborts": func(_ *testCatalog, id uint64) *Command {
			return &Command{Op: OpAbortBackup, Abort: &BackupAbort{BackupID: id, Code: "aborted", Msg: "job was stopped by the servers", Attempt: 1}}
		},
		"it fails": func(_ *testCatalog, id uint64) *Command {
			return &Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: id, State: JobFailed, ErrorCode: "aborted", Error: "stopped", Attempt: 1}}
		},
		"its node dies": func(_ *testCatalog, id uint64) *Command {
			return &Command{Op: OpRequeueJob, Requeue: &JobRequeue{JobID: id, Reason: "storage node sn1 stopped answering", Attempt: 1}}
		},
	}
	for name, end := range ends {
		t.Run(name, func(t *testing.T) {
			c := newTestCatalog(t)
			c.setup()
			id := c.startBackup(LevelFull)
			c.writeIndex(id, []fileindex.Entry{dir("/srv"), file("/srv/a", 1)}, 0)
			vol := c.volumeFor(id)
			c.must(&Command{Op: OpCancelJob, Cancel: &JobCancel{JobID: id, By: "alice", Reason: "too slow"}})
			c.must(&Command{Op: OpCancelJob, Cancel: &JobCancel{JobID: id, By: "alice", Reason: "too slow"}}) // a repeat changes nothing
			j, _ := c.s.Job(id)
			if j.State != JobRunning || j.Cancel == nil || j.Cancel.By != "alice" || j.Error != "" {
				t.Fatalf("running job after its cancel: %+v", j)
			}
			if n := strings.Count(jobLog(j), "cancel asked by alice"); n != 1 {
				t.Fatalf("log says the cancel %d times:\n%s", n, jobLog(j))
			}
			c.must(end(c, id))
			j, _ = c.s.Job(id)
			b, _ := c.s.Backup(id)
			v, _ := c.s.Volume(vol)
			infos, _ := c.s.SegmentInfos(id)
			if j.State != JobCanceled || j.Error != "canceled by alice: too slow" || j.ErrorCode != "" || j.Ended.IsZero() {
				t.Fatalf("job %+v", j)
			}
			if b.State != BackupAborted || len(infos) != 0 || v.WriterJob != 0 {
				t.Fatalf("what the canceled session left: backup %+v, %d segments, volume %+v", b, len(infos), v)
			}
		})
	}
}

// A commit that got in before the cancel took effect wins: the backup is
// complete, and the cancel is then refused as too late.
func TestCommitBeforeTheCancelTookEffect(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	id := c.startBackup(LevelFull)
	c.must(&Command{Op: OpCancelJob, Cancel: &JobCancel{JobID: id, By: "alice"}})
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: id, Files: 3}})
	segs := c.writeIndex(id, []fileindex.Entry{dir("/srv")}, 0)
	vol := c.volumeFor(id)
	v, _ := c.s.Volume(vol)
	c.must(&Command{Op: OpCommitBackup, Commit: &BackupCommit{BackupID: id, SessionID: [16]byte{1}, Segments: segs, Entries: 1,
		Parts: []Part{{VolumeID: vol, VolumeStart: v.Bytes, DataStart: v.Bytes + 4096, End: v.Bytes + 8192, Final: true}}}})
	if j, _ := c.s.Job(id); j.State != JobSuccess {
		t.Fatalf("job %+v", j)
	}
	c.refused(CodeWrongState, &Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: id, State: JobCanceled, Attempt: 1}})
}

// A restore's cancel works the same way: the restore's failure report
// ends it as canceled.
func TestCancelRunningRestore(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	bid := c.backup(LevelFull, []fileindex.Entry{dir("/srv"), file("/srv/a", 1)})
	id := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobRestore, Client: "web1", BackupID: bid, Target: "/r", Node: "sn1", Pool: "disk1"}}).JobID
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn1"}})
	waiting := "insert tape T00001L6"
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: id, Waiting: &waiting}})
	c.must(&Command{Op: OpCancelJob, Cancel: &JobCancel{JobID: id, By: "alice"}})
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: id, State: JobFailed, ErrorCode: "aborted", Error: "stopped", Attempt: 1}})
	if j, _ := c.s.Job(id); j.State != JobCanceled || j.Waiting != "" || j.Error != "canceled by alice" {
		t.Fatalf("restore %+v", j)
	}
}
