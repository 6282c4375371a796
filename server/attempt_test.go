package server

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

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

// A session that outlived its attempt on the node the next attempt runs on
// (the job handed back, then given to the same node again) must add
// nothing to the next attempt's backup: its index segments and its commit
// are refused, the running attempt's are taken.
func TestSessionOfAnAttemptThatIsOverIsNotCommitted(t *testing.T) {
	h := newHarness(t)
	_, orders := h.setup()
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv"}, Level: "full"}, &started))
	<-orders
	g := h.labeledVolume(started.JobID)
	handedBack := wire.SessionAbortReq{JobID: started.JobID, Attempt: 1, Error: wire.Error{Code: wire.CodeHandedBack, Message: "storage node sn1 stopped during the backup and handed it back"}}
	h.must(h.node(wire.OpSessionAbort, handedBack, nil))
	var job wire.JobInfo
	poll.Until(t, 10*time.Second, func() error { // attempt 2, on sn1 again
		h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &job))
		if job.State != "running" || job.Attempt != 2 || job.Node != "sn1" {
			return fmt.Errorf("job %s, attempt %d on %q", job.State, job.Attempt, job.Node)
		}
		return nil
	})

	b := fileindex.NewSegmentBuilder(0)
	h.must(b.Add(&fileindex.Entry{Path: "/srv", Type: fileindex.TypeDir, Mode: 0o755}))
	seg := b.Flush()
	index := func(attempt int) error {
		return h.node(wire.OpSessionIndex, wire.SessionIndexReq{JobID: started.JobID, Attempt: attempt,
			First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}, nil)
	}
	commit := func(attempt int, vol wire.VolumeGrant) error {
		return h.node(wire.OpSessionCommit, wire.SessionCommitReq{
			JobID: started.JobID, Attempt: attempt, SessionID: uuid.New(), Segments: 1,
			Parts: []wire.SessionPart{{VolumeID: vol.ID, VolumeStart: 256 << 10, DataStart: 256<<10 + 64, End: 62 << 20, Final: true}},
			Stats: wire.SessionStats{Entries: 1},
		}, nil)
	}
	wantCode(t, index(1), wire.CodeAborted)
	g2 := h.labeledVolume(started.JobID)
	h.must(index(2))
	// Attempt 1's commit comes once the catalog holds attempt 2's index:
	// nothing but its attempt tells it apart.
	wantCode(t, commit(1, g), wire.CodeAborted)
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &job))
	if job.State != "running" || job.Attempt != 2 {
		t.Fatalf("after attempt 1's late session: %+v, want attempt 2 running", job)
	}
	h.must(commit(2, g2))
	poll.Until(t, 10*time.Second, func() error {
		h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &job))
		if job.State != "success" {
			return fmt.Errorf("job %s", job.State)
		}
		return nil
	})
}
