package server

import (
	"errors"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
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

// A storage node that stops hands its session back, and the job goes back
// to the queue; the servers then stop the attempt at the agent too, whose
// report that its attempt was stopped comes in while the job waits for its
// next attempt. That report is about an attempt that is over: it must not
// fail the job (TestStorageNodeDrainsOnSIGTERM saw the handed-back backup
// fail with "job 1 was stopped by the servers").
func TestAgentsReportOfAnAttemptHandedBackChangesNothing(t *testing.T) {
	h := newHarness(t)
	_, orders := h.setup()
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/data"}, Level: "full"}, &started))
	<-orders
	// The node stops: it takes no new session, so the job waits.
	h.mu.Lock()
	h.nodeDraining = true
	h.mu.Unlock()
	var job wire.JobInfo
	poll.Until(t, 10*time.Second, func() error {
		if !h.srv.nodeDraining("sn1") {
			return errors.New("the server does not see sn1 stopping yet")
		}
		return nil
	})
	handedBack := wire.SessionAbortReq{JobID: started.JobID, Attempt: 1, Error: wire.Error{Code: wire.CodeHandedBack, Message: "storage node sn1 stopped during the backup and handed it back"}}
	h.must(h.node(wire.OpSessionAbort, handedBack, nil))
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &job))
	if job.State != "queued" || job.Attempt != 1 {
		t.Fatalf("after the hand-back: %+v, want queued after attempt 1", job)
	}
	stopped := wire.JobDoneReq{JobID: started.JobID, Attempt: 1, Error: &wire.Error{Code: wire.CodeAborted, Message: "job 1 was stopped by the servers: " + handedBack.Error.Message}}
	h.must(h.agent(wire.OpJobDone, stopped, nil))
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &job))
	if job.State != "queued" {
		t.Fatalf("the agent's report of the attempt that was handed back ended the job: %+v, want it queued for attempt 2", job)
	}
}
