package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// cancelOrders records the job.cancel orders a subject gets.
type cancelOrders struct {
	mu     sync.Mutex
	orders []wire.CancelJob
}

func (h *harness) cancelOrders(subject string) *cancelOrders {
	c := &cancelOrders{}
	sub, err := h.nc.Subscribe(subject, func(m *nats.Msg) {
		body, err := wire.Unmarshal(m.Data)
		if err != nil {
			return
		}
		var o wire.CancelJob
		if json.Unmarshal(body, &o) == nil {
			c.mu.Lock()
			c.orders = append(c.orders, o)
			c.mu.Unlock()
		}
		data, _ := wire.Marshal(wire.CancelResult{Running: true})
		m.Respond(data)
	})
	h.must(err)
	h.t.Cleanup(func() { sub.Unsubscribe() })
	h.must(h.nc.Flush())
	return c
}

func (c *cancelOrders) wait(t *testing.T, job uint64, reason string) wire.CancelJob {
	t.Helper()
	var got wire.CancelJob
	poll.Until(t, 10*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, o := range c.orders {
			if o.JobID == job && strings.Contains(o.Reason, reason) {
				got = o
				return nil
			}
		}
		return fmt.Errorf("no cancel order for job %d saying %q: %+v", job, reason, c.orders)
	})
	return got
}

// A job the servers fail is stopped where it runs: the storage node and
// the agent each get a cancel order naming the job, its attempt and the
// reason, and the agent asking whether the job still runs hears it does
// not.
func TestFailedJobIsStoppedAtNodeAndAgent(t *testing.T) {
	h := newFakeClockHarness(t, func(c *Config) { c.LivenessTimeout = time.Minute })
	_, orders := h.setup()
	atNode := h.cancelOrders(wire.NodeSubject("sn1", wire.OpCancel))
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/data"}, Level: "full"}, &started))
	<-orders
	h.must(h.agent(wire.OpJobAlive, wire.JobAliveReq{JobID: started.JobID, Attempt: 1}, nil))
	wantCode(t, h.agent(wire.OpJobAlive, wire.JobAliveReq{JobID: started.JobID, Attempt: 2}, nil), wire.CodeAborted)
	var g wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: started.JobID, Pool: "Default"}, &g))

	// The agent goes silent for longer than the liveness timeout: the
	// watchdog ends the attempt.
	h.mu.Lock()
	h.agentSilent = true
	h.mu.Unlock()
	for range 4 {
		h.advance(20 * time.Second)
	}
	o := atNode.wait(t, started.JobID, "agent of client web stopped answering")
	if o.Attempt != 1 {
		t.Fatalf("cancel order %+v: want attempt 1", o)
	}
	poll.Until(t, 10*time.Second, func() error {
		for {
			select {
			case m := <-orders:
				if strings.HasSuffix(m.Subject, "."+wire.OpCancel) {
					return nil
				}
			default:
				return errors.New("the agent got no cancel order")
			}
		}
	})
	wantCode(t, h.agent(wire.OpJobAlive, wire.JobAliveReq{JobID: started.JobID, Attempt: 1}, nil), wire.CodeAborted)
}

// committedBackup runs a backup of entries through the protocol as the
// node and the agent would, and returns its session.
func (h *harness) committedBackup(orders chan *nats.Msg, entries []fileindex.Entry) uuid.UUID {
	h.t.Helper()
	return h.committedBackupOf([]fileindex.Path{"/srv"}, orders, entries)
}

// committedBackupOf is committedBackup of other paths than /srv.
func (h *harness) committedBackupOf(paths []fileindex.Path, orders chan *nats.Msg, entries []fileindex.Entry) uuid.UUID {
	h.t.Helper()
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: paths, Level: "full"}, &started))
	<-orders
	return commitSession(h.t, h.node, started.JobID, entries)
}

// restoreOfFiveFiles backs up five files of /srv and starts a restore of
// them, returning the job and the agent's order.
func (h *harness) restoreOfFiveFiles() (wire.JobStarted, wire.RunRestore) {
	h.t.Helper()
	_, orders := h.setup()
	var entries []fileindex.Entry
	for i := range 5 {
		entries = append(entries, fileindex.Entry{Path: fmt.Sprintf("/srv/f%d", i), Type: fileindex.TypeFile, Size: 10, Loc: fileindex.Location{Seq: uint64(i), EndSeq: uint64(i)}})
	}
	h.committedBackup(orders, entries)
	var rs wire.JobStarted
	h.must(h.api(wire.OpRestoreStart, wire.RestoreStartReq{PointInTime: wire.PointInTime{Client: "web"}, To: "/r"}, &rs))
	m := <-orders
	body, err := wire.Unmarshal(m.Data)
	h.must(err)
	var order wire.RunRestore
	h.must(json.Unmarshal(body, &order))
	return rs, order
}

// A restore that lost entries fails, and says how many of how many it
// restored and lost; its log names every lost entry the agent listed and
// how many more there are, never "every other entry was restored".
func TestRestoreReportAccountsForEveryEntry(t *testing.T) {
	h := newHarness(t)
	rs, order := h.restoreOfFiveFiles()
	if order.Recheck != time.Second {
		t.Fatalf("restore order %+v: want a recheck of half the liveness timeout", order)
	}
	h.must(h.agent(wire.OpJobDone, wire.JobDoneReq{JobID: rs.JobID, Attempt: order.Attempt, Files: 2, Bytes: 20,
		Entries: 5, Restored: 2, Lost: 3, Damaged: []string{"/srv/f2: block seq 2 is damaged", "/srv/f3: the volume was truncated"}}, nil))
	var job wire.JobInfo
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: rs.JobID}, &job))
	if job.State != "failed" || job.ErrorCode != wire.CodeCorrupt || job.Entries != 5 || job.Restored != 2 || job.Lost != 3 ||
		!strings.Contains(job.Error, "3 of 5 entries could not be restored") || !strings.Contains(job.Error, "2 were restored") {
		t.Fatalf("restore with lost entries: %+v", job)
	}
	all := logSays(t, job,
		"error: lost: /srv/f2: block seq 2 is damaged",
		"error: lost: /srv/f3: the volume was truncated",
		"error: ... and 1 more lost entries not listed here",
		"info: restore ended: 2 of 5 entries restored (2 files, 20 B), 3 lost, 0 left out")
	if strings.Contains(all, "every other entry") {
		t.Errorf("the job log claims the rest was restored:\n%s", all)
	}
}

// A restore that failed part way (its target filled up) says what it did
// before: how many entries it restored, lost and left out, and why it left
// each out.
func TestFailedRestoreSaysWhatItLeftOut(t *testing.T) {
	h := newHarness(t)
	rs, order := h.restoreOfFiveFiles()
	h.must(h.agent(wire.OpJobDone, wire.JobDoneReq{JobID: rs.JobID, Attempt: order.Attempt, Files: 2, Bytes: 20,
		Entries: 5, Restored: 2, Refused: 1, Warnings: []string{"/srv/f1: refused: the target would not take it"},
		Error: &wire.Error{Code: wire.CodeDiskFull, Message: "restore target /r is full"}}, nil))
	var job wire.JobInfo
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: rs.JobID}, &job))
	if job.State != "failed" || job.Restored != 2 {
		t.Fatalf("a restore whose target filled up: %+v", job)
	}
	logSays(t, job,
		"warning: /srv/f1: refused: the target would not take it",
		"info: before it failed, the restore restored 2 of 5 entries (2 files, 20 B), lost 0 and left 1 out (the warnings say why)")
}

// logSays checks that job's log holds each of wants ("level: message")
// and returns the whole log, a line each.
func logSays(t *testing.T, job wire.JobInfo, wants ...string) string {
	t.Helper()
	var log []string
	for _, l := range job.Log {
		log = append(log, l.Level+": "+l.Msg)
	}
	all := strings.Join(log, "\n")
	for _, want := range wants {
		if !strings.Contains(all, want) {
			t.Errorf("the job log does not say %q:\n%s", want, all)
		}
	}
	return all
}

// nextOrder returns the next order the agent gets whose subject ends in op.
func nextOrder(t *testing.T, orders chan *nats.Msg, op string) *nats.Msg {
	t.Helper()
	var got *nats.Msg
	poll.Until(t, 10*time.Second, func() error {
		for {
			select {
			case m := <-orders:
				if strings.HasSuffix(m.Subject, "."+op) {
					got = m
					return nil
				}
			default:
				return fmt.Errorf("the agent got no %s order", op)
			}
		}
	})
	return got
}

// The cancel of a running backup is recorded first (the job shows who
// asked, and still runs), then carried out by the leader: the storage node
// and the agent are ordered to stop the attempt, and the job ends as
// canceled, its index dropped and its volume released; a commit the node
// sends after that is refused. cairn_jobs_total counts it as canceled.
func TestCancelRunningBackup(t *testing.T) {
	// The test checks cancel, not liveness: a stall of the loaded machine
	// longer than the harness's 2 s would requeue the attempt.
	h := newHarness(t, func(c *Config) { c.LivenessTimeout = time.Minute })
	_, orders := h.setup()
	atNode := h.cancelOrders(wire.NodeSubject("sn1", wire.OpCancel))
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/data"}, Level: "full"}, &started))
	nextOrder(t, orders, wire.OpRunBackup)
	var g wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: started.JobID, Pool: "Default"}, &g))
	h.must(h.node(wire.OpVolumeLabeled, wire.VolumeLabeled{JobID: started.JobID, VolumeID: g.ID}, nil))

	var asked wire.JobInfo
	h.must(h.api(wire.OpJobCancel, wire.JobCancelReq{ID: started.JobID, By: "alice", Reason: "wrong paths"}, &asked))
	if asked.ID != started.JobID || asked.CanceledBy != "alice" || asked.CancelReason != "wrong paths" {
		t.Fatalf("the cancel's answer %+v", asked)
	}
	o := atNode.wait(t, started.JobID, "canceled by alice: wrong paths")
	if o.Attempt != 1 {
		t.Fatalf("node's cancel order %+v: want attempt 1", o)
	}
	nextOrder(t, orders, wire.OpCancel)
	var job wire.JobInfo
	poll.Until(t, 10*time.Second, func() error {
		job = wire.JobInfo{}
		if err := h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &job); err != nil {
			return err
		}
		if job.State != "canceled" {
			return fmt.Errorf("job %d is %s", job.ID, job.State)
		}
		return nil
	})
	if job.Error != "canceled by alice: wrong paths" || job.CanceledBy != "alice" {
		t.Fatalf("canceled job %+v", job)
	}
	v, err := h.srv.store.Volume(g.ID)
	h.must(err)
	if v.WriterJob != 0 {
		t.Fatalf("the canceled job still holds volume %s: %+v", v.Name, v)
	}
	b, err := h.srv.store.Backup(started.JobID)
	h.must(err)
	if b.State != "aborted" {
		t.Fatalf("the canceled job's backup is %s, want aborted", b.State)
	}
	if err := h.node(wire.OpSessionCommit, wire.SessionCommitReq{
		JobID: started.JobID, SessionID: uuid.New(),
		Parts: []wire.SessionPart{{VolumeID: g.ID, VolumeStart: 256 << 10, DataStart: 256<<10 + 64, End: 512 << 10, Final: true}},
	}, nil); err == nil {
		t.Fatal("the node committed the session of a canceled job")
	}
	if b, _ := h.srv.store.Backup(started.JobID); b.State != "aborted" {
		t.Fatalf("after a late commit the backup is %s", b.State)
	}
	// The counter is raised after the catalog says canceled, on the
	// goroutine that wrote it.
	poll.Until(t, 10*time.Second, func() error {
		if n := jobsEnded(t, h.reg, "canceled"); n != 1 {
			return fmt.Errorf("cairn_jobs_total{state=canceled} = %v, want 1", n)
		}
		return nil
	})
	// A second cancel of it changes nothing; one of a job that does not
	// exist is refused.
	h.must(h.api(wire.OpJobCancel, wire.JobCancelReq{ID: started.JobID, By: "bob"}, &job))
	if job.State != "canceled" || job.CanceledBy != "alice" {
		t.Fatalf("after a second cancel: %+v", job)
	}
	wantCode(t, h.api(wire.OpJobCancel, wire.JobCancelReq{ID: 999, By: "bob"}, nil), wire.CodeNotFound)
}

// A queued job is canceled at once: it never reaches an agent, and the
// list filters it as canceled.
func TestCancelQueuedJob(t *testing.T) {
	h := newFakeClockHarness(t, func(c *Config) { c.LivenessTimeout = time.Minute })
	_, orders := h.setup()
	h.mu.Lock()
	h.agentSilent = true
	h.mu.Unlock()
	for range 4 {
		h.advance(20 * time.Second)
	}
	var cl wire.ClientListResp
	h.must(h.api(wire.OpClientList, wire.Empty{}, &cl))
	if len(cl.Clients) != 1 || cl.Clients[0].Online {
		t.Fatalf("clients %+v: want web offline", cl.Clients)
	}
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/data"}, Level: "full"}, &started))
	var job wire.JobInfo
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &job))
	if job.State != "queued" {
		t.Fatalf("job %+v: want it queued while its agent is offline", job)
	}
	h.must(h.api(wire.OpJobCancel, wire.JobCancelReq{ID: started.JobID, By: "alice"}, &job))
	if job.State != "canceled" || job.Error != "canceled by alice" || job.Ended.IsZero() {
		t.Fatalf("canceled queued job %+v", job)
	}
	h.mu.Lock()
	h.agentSilent = false
	h.mu.Unlock()
	var list wire.JobListResp
	h.must(h.api(wire.OpJobList, wire.JobListReq{States: []string{"canceled"}}, &list))
	if len(list.Jobs) != 1 || list.Jobs[0].ID != started.JobID {
		t.Fatalf("job list --state canceled: %+v", list.Jobs)
	}
	if n := jobsEnded(t, h.reg, "canceled"); n != 1 {
		t.Fatalf("cairn_jobs_total{state=canceled} = %v, want 1", n)
	}
	// The agent is back: the canceled job is not sent to it.
	h.srv.orch.Kick()
	select {
	case m := <-orders:
		t.Fatalf("the agent got %s after the job was canceled", m.Subject)
	case <-time.After(500 * time.Millisecond): // a dispatch takes a loop turn; nothing must come
	}
}

// A restore that waits for a tape is canceled like a running backup: its
// storage node is ordered to stop it (which ends its wait), and it ends as
// canceled, waiting for nothing. The cancel of a job that ended is refused,
// saying how it ended.
func TestCancelRestoreWaitingForTape(t *testing.T) {
	h := newHarness(t)
	_, orders := h.setup()
	atNode := h.cancelOrders(wire.NodeSubject("sn1", wire.OpCancel))
	h.committedBackup(orders, []fileindex.Entry{{Path: "/srv/a", Type: fileindex.TypeFile, Size: 10}})
	var done wire.JobListResp
	h.must(h.api(wire.OpJobList, wire.JobListReq{States: []string{"success"}}, &done))
	if len(done.Jobs) != 1 {
		t.Fatalf("jobs %+v", done.Jobs)
	}
	e := h.api(wire.OpJobCancel, wire.JobCancelReq{ID: done.Jobs[0].ID, By: "alice"}, nil)
	wantCode(t, e, wire.CodeWrongState)
	if !strings.Contains(e.Error(), "already ended (success)") {
		t.Fatalf("cancel of an ended job: %v", e)
	}

	var rs wire.JobStarted
	h.must(h.api(wire.OpRestoreStart, wire.RestoreStartReq{PointInTime: wire.PointInTime{Client: "web"}, To: "/r"}, &rs))
	nextOrder(t, orders, wire.OpRunRestore)
	h.must(h.node(wire.OpJobWaiting, wire.JobWaitingReq{JobID: rs.JobID, Reason: "insert tape CRN001L9 into library lib1"}, nil))
	var job wire.JobInfo
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: rs.JobID}, &job))
	if job.State != "running" || job.Waiting == "" {
		t.Fatalf("restore %+v: want it running and waiting for a tape", job)
	}
	h.must(h.api(wire.OpJobCancel, wire.JobCancelReq{ID: rs.JobID, By: "alice", Reason: "the tape is in the vault"}, nil))
	atNode.wait(t, rs.JobID, "the tape is in the vault")
	poll.Until(t, 10*time.Second, func() error {
		job = wire.JobInfo{}
		if err := h.api(wire.OpJobShow, wire.JobShowReq{ID: rs.JobID}, &job); err != nil {
			return err
		}
		if job.State != "canceled" {
			return fmt.Errorf("restore %d is %s", job.ID, job.State)
		}
		return nil
	})
	if job.Waiting != "" || job.Error != "canceled by alice: the tape is in the vault" {
		t.Fatalf("canceled restore %+v", job)
	}
}
