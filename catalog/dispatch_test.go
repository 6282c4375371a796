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
	res := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: LevelFull, Pool: "disk1", Paths: []string{"/srv"}}})
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
