package server

import (
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/wire"
)

// A storage node's session can outlive its attempt: it waited on a request
// while its agent died and the job went on to another attempt. Its abort,
// late, must not end the attempt that runs now; the running attempt's own
// abort does.
func TestAbortOfAnAttemptThatIsOverChangesNothing(t *testing.T) {
	h := newHarness(t)
	_, orders := h.setup()
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/data"}, Level: "full"}, &started))
	<-orders
	var job wire.JobInfo
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &job))
	if job.State != "running" || job.Attempt != 1 {
		t.Fatalf("job %+v", job)
	}
	late := wire.SessionAbortReq{JobID: started.JobID, Attempt: job.Attempt + 1, Error: wire.Error{Code: wire.CodeAborted, Message: "the agent of client web disconnected"}}
	h.must(h.node(wire.OpSessionAbort, late, nil))
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &job))
	if job.State != "running" {
		t.Fatalf("an abort about attempt %d ended attempt %d: %+v", late.Attempt, job.Attempt, job)
	}
	late.Attempt = job.Attempt
	h.must(h.node(wire.OpSessionAbort, late, nil))
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &job))
	if job.State != "failed" || job.ErrorCode != wire.CodeAborted {
		t.Fatalf("the running attempt's own abort: %+v", job)
	}
}
