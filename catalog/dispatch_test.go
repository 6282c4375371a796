package catalog

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
)

func TestDispatchAndRequeue(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	c.must(&Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn2", DataAddr: "b:2", Pools: []NodePool{{Name: "disk1", Dir: "/other"}}}})
	c.must(&Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn3", DataAddr: "c:3", Pools: []NodePool{{Name: "elsewhere", Dir: "/e"}}}})
	res := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: LevelFull, Pool: "disk1", Paths: []fileindex.Path{"/srv"}}})
	id := res.JobID
	waiting := "no storage node of pool disk1 is online"
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: id, Waiting: &waiting}})
	if j, _ := c.s.Job(id); j.Waiting != waiting || j.State != JobQueued {
		t.Fatalf("queued job %+v", j)
	}
	c.refused(CodeInvalidArgument, &Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn3"}})
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn1"}})
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn1"}}) // a retry changes nothing
	j, _ := c.s.Job(id)
	b, _ := c.s.Backup(id)
	if j.State != JobRunning || j.Node != "sn1" || j.Attempt != 1 || j.Waiting != "" || b.Node != "sn1" || b.StartTime.IsZero() {
		t.Fatalf("dispatched job %+v backup %+v", j, b)
	}
	start := b.StartTime
	// The first attempt writes a segment and holds a volume, then its node dies.
	c.writeIndex(id, []fileindex.Entry{dir("/srv"), file("/srv/a", 1)}, 0)
	vol := uuid.New()
	c.must(&Command{Op: OpCreateVolume, Volume: &Volume{ID: vol, Pool: "disk1", Node: "sn1", WriterJob: id}})
	c.must(&Command{Op: OpRequeueJob, Requeue: &JobRequeue{JobID: id, Reason: "storage node sn1 stopped answering"}})
	c.must(&Command{Op: OpRequeueJob, Requeue: &JobRequeue{JobID: id, Reason: "again"}}) // a retry changes nothing
	j, _ = c.s.Job(id)
	b, _ = c.s.Backup(id)
	v, _ := c.s.Volume(vol)
	infos, _ := c.s.SegmentInfos(id)
	if j.State != JobQueued || j.Node != "" || !strings.Contains(j.Waiting, "sn1 stopped answering") || b.State != BackupWriting ||
		b.Node != "" || len(infos) != 0 || v.WriterJob != 0 {
		t.Fatalf("requeued job %+v backup %+v volume %+v segments %d", j, b, v, len(infos))
	}
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn2"}})
	j, _ = c.s.Job(id)
	b, _ = c.s.Backup(id)
	if j.Attempt != 2 || j.Node != "sn2" || !b.StartTime.Equal(start) {
		t.Fatalf("second attempt %+v, backup start %v (was %v)", j, b.StartTime, start)
	}
	jl, _ := c.s.Job(id)
	log := ""
	for _, l := range jl.Log {
		log += l.Msg + "\n"
	}
	if !strings.Contains(log, "back in the queue after attempt 1 on storage node sn1") || !strings.Contains(log, "attempt 2 on storage node sn2") {
		t.Fatalf("log:\n%s", log)
	}
	// A job that ended cannot be requeued or dispatched.
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: id, State: JobFailed, Error: "x"}})
	c.refused(CodeWrongState, &Command{Op: OpRequeueJob, Requeue: &JobRequeue{JobID: id, Reason: "r"}})
	c.refused(CodeWrongState, &Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn1"}})
}

// TestLateReportsOfAnEarlierAttempt: the reports of an attempt that is over
// (its storage node aborting or committing, its agent failing) arrive after
// the job went back to the queue or on to the next attempt, on another node.
// They change nothing.
func TestLateReportsOfAnEarlierAttempt(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	c.must(&Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn2", DataAddr: "b:2", Pools: []NodePool{{Name: "disk1", Dir: "/other"}}}})
	id := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: LevelFull, Pool: "disk1", Paths: []fileindex.Path{"/srv"}}}).JobID
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn1"}})
	c.must(&Command{Op: OpRequeueJob, Requeue: &JobRequeue{JobID: id, Reason: "the stream to sn1 broke", Attempt: 1}})

	// Queued after attempt 1: its late abort and failure are refused.
	c.refused(CodeWrongState, &Command{Op: OpAbortBackup, Abort: &BackupAbort{BackupID: id, Code: "aborted", Msg: "agent gone", Attempt: 1}})
	c.refused(CodeWrongState, &Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: id, State: JobFailed, Error: "late", Attempt: 1}})
	if j, _ := c.s.Job(id); j.State != JobQueued {
		t.Fatalf("a late report of attempt 1 changed the queued job: %+v", j)
	}

	// Attempt 2 runs on sn2: attempt 1's reports, and sn1's index and
	// commit, are refused; attempt 2's are taken.
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn2"}})
	c.refused(CodeWrongState, &Command{Op: OpRequeueJob, Requeue: &JobRequeue{JobID: id, Reason: "late", Attempt: 1}})
	c.refused(CodeWrongState, &Command{Op: OpAbortBackup, Abort: &BackupAbort{BackupID: id, Code: "aborted", Msg: "late", Attempt: 1}})
	c.refused(CodeWrongState, &Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: id, State: JobFailed, Error: "late", Attempt: 1}})
	seg := fileindex.NewSegmentBuilder(0)
	e := dir("/srv")
	if err := seg.Add(&e); err != nil {
		t.Fatal(err)
	}
	s := seg.Flush()
	c.refused(CodeWrongState, &Command{Op: OpAddIndexSegment, Segment: &IndexSegment{BackupID: id, Node: "sn1", First: fileindex.Path(s.First), Last: fileindex.Path(s.Last), Count: s.Count, Data: s.Data}})
	c.must(&Command{Op: OpAddIndexSegment, Segment: &IndexSegment{BackupID: id, Node: "sn2", First: fileindex.Path(s.First), Last: fileindex.Path(s.Last), Count: s.Count, Data: s.Data}})
	vol := uuid.New()
	c.must(&Command{Op: OpCreateVolume, Volume: &Volume{ID: vol, Pool: "disk1", Node: "sn2", WriterJob: id}})
	commit := func(node string) *Command {
		return &Command{Op: OpCommitBackup, Commit: &BackupCommit{BackupID: id, Node: node, SessionID: uuid.New(), Segments: 1,
			Parts: []Part{{VolumeID: vol, Part: 0, VolumeStart: 1024, End: 4096, Final: true}}}}
	}
	c.refused(CodeWrongState, commit("sn1"))
	if j, _ := c.s.Job(id); j.State != JobRunning || j.Attempt != 2 {
		t.Fatalf("late reports of attempt 1 changed attempt 2: %+v", j)
	}
	c.must(commit("sn2"))
	if j, _ := c.s.Job(id); j.State != JobSuccess {
		t.Fatalf("attempt 2's commit: %+v", j)
	}
}
