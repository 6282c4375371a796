package catalog

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
)

func (c *testCatalog) startPending(rid, digest string, paths ...string) ApplyResult {
	c.t.Helper()
	if len(paths) == 0 {
		paths = []string{"/srv"}
	}
	return c.must(&Command{Op: OpCreateJob, Request: &RequestKey{ID: rid, Digest: digest},
		Job: &Job{Type: JobBackup, Client: "web1", Level: LevelFull, State: JobPending, Pool: "disk1", Paths: fileindex.Paths(paths)}})
}

// A request id makes one job however often its start is applied: the
// repeats answer the first job and change nothing.
func TestRequestIDMakesOneJob(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	first := c.startPending("req-1", "d1")
	if first.JobID == 0 || first.Repeat {
		t.Fatalf("first start: %+v", first)
	}
	j, _ := c.s.Job(first.JobID)
	if j.State != JobPending || j.RequestID != "req-1" {
		t.Fatalf("new job %+v", j)
	}
	before := dump(t, c.s)
	again := c.startPending("req-1", "d1")
	if again.JobID != first.JobID || !again.Repeat {
		t.Fatalf("repeat: %+v, first job %d", again, first.JobID)
	}
	if dump(t, c.s) != before {
		t.Fatal("a repeated start changed the catalog")
	}
	r, err := c.s.Request("req-1")
	if err != nil || r.JobID != first.JobID || r.Op != OpCreateJob || r.Digest != "d1" || r.Time.IsZero() {
		t.Fatalf("request record %+v, %v", r, err)
	}
	// The same id with other parameters, or for a label, is another request.
	e := c.refused(CodeAlreadyExists, &Command{Op: OpCreateJob, Request: &RequestKey{ID: "req-1", Digest: "d2"},
		Job: &Job{Type: JobBackup, Client: "web1", Level: LevelFull, State: JobPending, Pool: "disk1", Paths: []fileindex.Path{"/etc"}}})
	if !strings.Contains(e.Msg, "req-1") || !strings.Contains(e.Msg, "job 1") || e.Hint == "" {
		t.Fatalf("refusal %+v", e)
	}
	c.refused(CodeInvalidArgument, &Command{Op: OpCreateJob, Request: &RequestKey{ID: ""},
		Job: &Job{Type: JobBackup, Client: "web1", Pool: "disk1", Paths: []fileindex.Path{"/etc"}}})
	if _, err := c.s.Request("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown request: %v", err)
	}
	// A refused start records no request: a corrected repeat may use the id.
	c.refused(CodeUnknownClient, &Command{Op: OpCreateJob, Request: &RequestKey{ID: "req-2"},
		Job: &Job{Type: JobBackup, Client: "ghost", State: JobPending, Pool: "disk1", Paths: []fileindex.Path{"/srv"}}})
	if _, err := c.s.Request("req-2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused start recorded its request: %v", err)
	}
}

// Nothing moves a pending job but an accept or a void: it is never
// dispatched, run, ended, requeued or held a volume before its start was
// confirmed.
func TestPendingJobRunsOnlyOnceAccepted(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	id := c.startPending("req-1", "").JobID
	c.refused(CodeWrongState, &Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn1"}})
	for _, st := range []JobState{JobRunning, JobFailed, JobCanceled, JobQueued, JobVoid} {
		c.refused(CodeWrongState, &Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: id, State: st}})
	}
	c.refused(CodeWrongState, &Command{Op: OpRequeueJob, Requeue: &JobRequeue{JobID: id, Reason: "x"}})
	if j, _ := c.s.Job(id); j.State != JobPending {
		t.Fatalf("job is %s", j.State)
	}
	if res := c.must(&Command{Op: OpAcceptJob, Accept: &JobAccept{JobID: id}}); res.JobID != id {
		t.Fatalf("accept: %+v", res)
	}
	c.must(&Command{Op: OpAcceptJob, Accept: &JobAccept{JobID: id}}) // a repeat's accept
	if j, _ := c.s.Job(id); j.State != JobQueued {
		t.Fatalf("accepted job is %s", j.State)
	}
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn1"}})
	c.must(&Command{Op: OpAcceptJob, Accept: &JobAccept{JobID: id}}) // late, changes nothing
	if j, _ := c.s.Job(id); j.State != JobRunning {
		t.Fatalf("dispatched job is %s", j.State)
	}
	c.refused(CodeNotFound, &Command{Op: OpAcceptJob, Accept: &JobAccept{JobID: 99}})
	counts, _ := c.s.Counts()
	if counts.Jobs[JobRunning] != 1 || counts.Jobs[JobPending] != 0 {
		t.Fatalf("counts %+v", counts.Jobs)
	}
}

// The leader voids pending jobs nobody accepted: they end void, their backup
// is dropped, an accept after that is refused, and a job accepted meanwhile
// or created after the cutoff is left alone.
func TestVoidOfStartsNeverConfirmed(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	lost := c.startPending("lost", "").JobID
	accepted := c.startPending("ok", "", "/etc").JobID
	c.must(&Command{Op: OpAcceptJob, Accept: &JobAccept{JobID: accepted}})
	cutoff := c.clock
	young := c.startPending("young", "", "/var").JobID
	c.must(&Command{Op: OpVoidJobs, Void: &JobsVoid{JobIDs: []uint64{lost, accepted, young, 99}, CreatedBefore: cutoff,
		Reason: "its start was not confirmed to the caller"}})
	j, _ := c.s.Job(lost)
	if j.State != JobVoid || j.Ended.IsZero() || !strings.Contains(j.Error, "not confirmed") || len(j.Log) == 0 ||
		!strings.Contains(j.Log[len(j.Log)-1].Msg, "never ran") {
		t.Fatalf("voided job %+v", j)
	}
	if b, _ := c.s.Backup(lost); b.State != BackupAborted {
		t.Fatalf("backup of the voided job is %s", b.State)
	}
	if j, _ := c.s.Job(accepted); j.State != JobQueued {
		t.Fatalf("an accepted job was voided: %s", j.State)
	}
	if j, _ := c.s.Job(young); j.State != JobPending {
		t.Fatalf("a job newer than the cutoff was voided: %s", j.State)
	}
	e := c.refused(CodeWrongState, &Command{Op: OpAcceptJob, Accept: &JobAccept{JobID: lost}})
	if !strings.Contains(e.Msg, "voided") || e.Hint == "" {
		t.Fatalf("accept of a voided job: %+v", e)
	}
	c.refused(CodeWrongState, &Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: lost, Node: "sn1"}})
	// A repeat of the voided start answers the voided job, not a new one.
	if res := c.startPending("lost", ""); res.JobID != lost || !res.Repeat {
		t.Fatalf("repeat of a voided start: %+v", res)
	}
	c.refused(CodeInvalidArgument, &Command{Op: OpVoidJobs, Void: &JobsVoid{JobIDs: []uint64{young}, CreatedBefore: c.clock}})
	counts, _ := c.s.Counts()
	if counts.Jobs[JobVoid] != 1 || counts.Jobs[JobPending] != 1 || counts.Jobs[JobQueued] != 1 {
		t.Fatalf("counts %+v", counts.Jobs)
	}
	if active, _ := c.s.Jobs(JobFilter{States: []JobState{JobPending, JobQueued, JobRunning}}); len(active) != 2 {
		t.Fatalf("active jobs %+v", active)
	}
}

// Request ids are forgotten after a while; a forgotten id starts anew.
func TestForgetRequests(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	if at, err := c.s.OldestRequest(); err != nil || !at.IsZero() {
		t.Fatalf("oldest request of none: %v %v", at, err)
	}
	old := c.startPending("old", "").JobID
	firstAt := c.clock
	if at, _ := c.s.OldestRequest(); !at.Equal(firstAt) {
		t.Fatalf("oldest request at %v, want %v", at, firstAt)
	}
	c.startPending("new", "", "/etc")
	c.must(&Command{Op: OpForgetRequests, Forget: &RequestsForget{Before: firstAt.Add(time.Second)}})
	if _, err := c.s.Request("old"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("forgotten request: %v", err)
	}
	if r, err := c.s.Request("new"); err != nil || r.JobID == 0 {
		t.Fatalf("request kept: %+v %v", r, err)
	}
	if at, _ := c.s.OldestRequest(); !at.After(firstAt) {
		t.Fatalf("oldest request at %v after forgetting up to %v", at, firstAt)
	}
	if again := c.startPending("old", ""); again.Repeat || again.JobID == old {
		t.Fatalf("a forgotten id answered the old job: %+v", again)
	}
	if j, _ := c.s.Job(old); j.RequestID != "old" {
		t.Fatalf("the job keeps its request id: %+v", j)
	}
}

// A tape label carries its request too: a repeat answers the volume, and
// the same label recorded twice (a lost answer) is one volume.
func TestLabelRequest(t *testing.T) {
	c := newTestCatalog(t)
	c.tapeSetup()
	vol := uuid.New()
	l := &TapeLabel{VolumeID: vol, Barcode: "CRN001L9", Library: "lib1", Node: "sn1", Pool: "Weekly", Location: "slot 1", BlockSize: 64 << 10}
	if res := c.must(&Command{Op: OpLabelTape, TapeLabel: l, Request: &RequestKey{ID: "lab-1"}}); res.VolumeID != vol || res.Repeat {
		t.Fatalf("label: %+v", res)
	}
	before := dump(t, c.s)
	other := *l
	other.VolumeID = uuid.New() // a repeat would carry a new id: the first one wins
	if res := c.must(&Command{Op: OpLabelTape, TapeLabel: &other, Request: &RequestKey{ID: "lab-1"}}); res.VolumeID != vol || !res.Repeat {
		t.Fatalf("repeated label: %+v", res)
	}
	if res := c.must(&Command{Op: OpLabelTape, TapeLabel: l}); res.VolumeID != vol {
		t.Fatalf("the same label recorded again: %+v", res)
	}
	if dump(t, c.s) != before {
		t.Fatal("a repeated label changed the catalog")
	}
	c.refused(CodeAlreadyExists, &Command{Op: OpCreateJob, Request: &RequestKey{ID: "lab-1"},
		Job: &Job{Type: JobBackup, Client: "web1", State: JobPending, Pool: "Weekly", Paths: []fileindex.Path{"/srv"}}})
}

// An administrator's cancel of a job whose start is not confirmed yet ends
// it at once, as a queued one's does: it never ran. The start's accept,
// coming after, changes nothing, and the job is never dispatched.
func TestCancelPendingJob(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	id := c.startPending("req-c", "d").JobID
	c.must(&Command{Op: OpCancelJob, Cancel: &JobCancel{JobID: id, By: "alice", Reason: "not this one"}})
	j, _ := c.s.Job(id)
	if j.State != JobCanceled || j.Ended.IsZero() || j.Error != "canceled by alice: not this one" {
		t.Fatalf("canceled pending job %+v", j)
	}
	c.must(&Command{Op: OpAcceptJob, Accept: &JobAccept{JobID: id}})
	if j, _ := c.s.Job(id); j.State != JobCanceled {
		t.Fatalf("the accept of a canceled pending job made it %s", j.State)
	}
	c.refused(CodeWrongState, &Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: id, Node: "sn1"}})
}
