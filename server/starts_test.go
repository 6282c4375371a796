package server

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/wire"
)

func backupReq(rid string, retry bool, paths ...string) wire.BackupStartReq {
	return wire.BackupStartReq{Client: "web", Paths: fileindex.Paths(paths), Level: "full", Start: wire.Start{RequestID: rid, Retry: retry}}
}

// noOrder checks that the fake agent got no order for job id.
func (h *harness) noOrder(id uint64) {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, j := range h.running {
		if j == id {
			h.t.Fatalf("job %d was ordered to the agent", id)
		}
	}
}

// A start carries a request id: repeats of it answer the job the first
// made, whatever state it is in, and never start another; the same id for
// another request is refused; the job can be found by its request id.
func TestStartRequestIDAnswersTheSameJob(t *testing.T) {
	h := newHarness(t)
	_, orders := h.setup()
	var first wire.JobStarted
	h.must(h.api(wire.OpBackupStart, backupReq("r-1", false, "/data"), &first))
	if first.JobID == 0 || first.Repeated || first.RequestID != "r-1" || first.State != "running" {
		t.Fatalf("first answer %+v", first)
	}
	<-orders
	for _, retry := range []bool{true, false} {
		var again wire.JobStarted
		h.must(h.api(wire.OpBackupStart, backupReq("r-1", retry, "/data"), &again))
		if again.JobID != first.JobID || !again.Repeated || again.State != "running" {
			t.Fatalf("repeat (retry %v): %+v, first %+v", retry, again, first)
		}
	}
	select {
	case m := <-orders:
		t.Fatalf("a repeated start ordered the agent again: %s", m.Data)
	default:
	}
	err := h.api(wire.OpBackupStart, backupReq("r-1", true, "/other"), nil)
	wantCode(t, err, wire.CodeAlreadyExists)
	wantCode(t, h.api(wire.OpBackupStart, backupReq("bad id!", false, "/data"), nil), wire.CodeInvalidArgument)

	var list wire.JobListResp
	h.must(h.api(wire.OpJobList, wire.JobListReq{RequestID: "r-1"}, &list))
	if len(list.Jobs) != 1 || list.Jobs[0].ID != first.JobID || list.Jobs[0].RequestID != "r-1" {
		t.Fatalf("jobs of request r-1: %+v", list.Jobs)
	}
	h.must(h.api(wire.OpJobList, wire.JobListReq{RequestID: "r-none"}, &list))
	if len(list.Jobs) != 0 {
		t.Fatalf("jobs of an unknown request: %+v", list.Jobs)
	}
	// A request that came without an id gets one, and a job of its own.
	var anon wire.JobStarted
	h.must(h.api(wire.OpBackupStart, backupReq("", false, "/data"), &anon))
	if anon.JobID == first.JobID || anon.RequestID == "" {
		t.Fatalf("start without a request id: %+v", anon)
	}
}

// A start whose create is committed but could not be applied here (the
// catalog stopped at its space floor) is told it failed, that the disk is
// full and where; once the catalog goes on, the job it left is voided and
// never dispatched.
func TestStartToldFailedNeverRuns(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.StartConfirmTimeout = time.Second; c.MinFreeBytes = 0 })
	h.setup()
	fsm := h.srv.raft.FSM()
	fsm.SetSpaceFloor(1 << 62) // no disk has that much free: the next command stops the catalog
	err := h.api(wire.OpBackupStart, backupReq("r-full", false, "/data"), nil)
	wantCode(t, err, wire.CodeDiskFull)
	for _, want := range []string{"server s1", "the disk is full: free space in " + h.srv.cfg.DataDir, "was not started"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
	}
	var st wire.ServerStatus
	h.must(wire.Request(h.ctx, h.nc, wire.ServerSubject("s1", wire.OpServerStatus), wire.Empty{}, &st))
	if !strings.Contains(st.CatalogError, "the disk is full") || st.CatalogBehind != 1 {
		t.Fatalf("status of a server whose catalog stopped: %+v", st)
	}
	// Nothing more is proposed while it is stopped: another start fails at once.
	wantCode(t, h.api(wire.OpBackupStart, backupReq("r-other", false, "/data"), nil), wire.CodeDiskFull)
	// A repeat cannot be told it failed: an earlier try of it may be in
	// the log past where this catalog stopped.
	err = h.api(wire.OpBackupStart, backupReq("r-full", true, "/data"), nil)
	wantCode(t, err, wire.CodeOutcomeUnknown)
	if !strings.Contains(err.Error(), "the disk is full") || !strings.Contains(wire.AsError(err).Hint, "--request-id r-full") {
		t.Fatalf("repeat while the catalog is stopped: %v (hint %q)", err, wire.AsError(err).Hint)
	}

	fsm.SetSpaceFloor(0) // room again: the server resumes by itself
	var job *catalog.Job
	poll.Until(t, 20*time.Second, func() error {
		r, err := h.srv.store.Request("r-full")
		if err != nil {
			return fmt.Errorf("the start committed while the catalog was stopped is not applied yet: %v", err)
		}
		if job, err = h.srv.store.Job(r.JobID); err != nil {
			return err
		}
		if job.State != catalog.JobVoid {
			return fmt.Errorf("job %d is %s", job.ID, job.State)
		}
		return nil
	})
	if job.Attempt != 0 || !job.Started.IsZero() || !strings.Contains(job.Error, orchestrator.VoidReason) {
		t.Fatalf("voided job %+v", job)
	}
	h.noOrder(job.ID)
	if _, err := h.srv.store.Request("r-other"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("the start refused while the catalog was stopped reached the log: %v", err)
	}
	// A repeat of the voided request says so, and starts nothing.
	err = h.api(wire.OpBackupStart, backupReq("r-full", true, "/data"), nil)
	wantCode(t, err, wire.CodeWrongState)
	if !strings.Contains(err.Error(), "nothing of it ran") {
		t.Fatalf("repeat of a voided start: %v", err)
	}
	// And a new backup starts.
	var ok wire.JobStarted
	h.must(h.api(wire.OpBackupStart, backupReq("r-new", false, "/data"), &ok))
	if ok.State != "running" {
		t.Fatalf("start after recovery: %+v", ok)
	}
}

// Below MinFreeBytes the leader starts nothing: the disk is full, and no
// job is made.
func TestStartRefusedWhenTheDiskIsNearlyFull(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MinFreeBytes = 1 << 62 })
	h.setup()
	err := h.api(wire.OpBackupStart, backupReq("r-1", false, "/data"), nil)
	wantCode(t, err, wire.CodeDiskFull)
	if !strings.Contains(err.Error(), "server s1 cannot write its catalog: the disk is full: free space in "+h.srv.cfg.DataDir) {
		t.Fatalf("error %q", err)
	}
	// A retry cannot have been started either while the catalog runs.
	wantCode(t, h.api(wire.OpBackupStart, backupReq("r-1", true, "/data"), nil), wire.CodeDiskFull)
	if jobs, _ := h.srv.store.Jobs(catalog.JobFilter{}); len(jobs) != 0 {
		t.Fatalf("jobs made while the disk was full: %+v", jobs)
	}
}

// A pending job left by a start whose server gave up before accepting it
// (it died, say) is voided by the leader; one accepted is left alone; a
// repeat of the request before the void accepts and runs it.
func TestPendingStartsAreVoidedOrAcceptedByARepeat(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.StartConfirmTimeout = 2 * time.Second; c.RequestIDTTL = 3 * time.Second })
	_, orders := h.setup()
	create := func(rid, path string) uint64 {
		t.Helper()
		res, err := h.srv.apply(h.ctx, &catalog.Command{Op: catalog.OpCreateJob, Request: &catalog.RequestKey{ID: rid},
			Job: &catalog.Job{Type: catalog.JobBackup, Client: "web", Level: catalog.LevelFull, State: catalog.JobPending, Pool: "Default", Paths: []fileindex.Path{fileindex.Path(path)}}})
		h.must(err)
		return res.JobID
	}
	lost := create("r-lost", "/a")
	repeated := create("r-again", "/b")
	var st wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/b"}, Level: "full",
		Start: wire.Start{RequestID: "r-again", Retry: true}}, &st))
	if st.JobID != repeated || !st.Repeated || st.State != "running" {
		t.Fatalf("a repeat of a pending start: %+v", st)
	}
	<-orders
	poll.Until(t, 20*time.Second, func() error {
		j, err := h.srv.store.Job(lost)
		if err != nil || j.State != catalog.JobVoid {
			return fmt.Errorf("job %d: %+v %v", lost, j, err)
		}
		return nil
	})
	h.noOrder(lost)
	if j, _ := h.srv.store.Job(repeated); j.State != catalog.JobRunning {
		t.Fatalf("the accepted job is %s", j.State)
	}
	// Request ids are forgotten after RequestIDTTL.
	poll.Until(t, 20*time.Second, func() error {
		if at, err := h.srv.store.OldestRequest(); err != nil || !at.IsZero() {
			return fmt.Errorf("oldest request id still known from %v (%v)", at, err)
		}
		return nil
	})
}
