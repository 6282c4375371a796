package orchestrator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/wire"
)

// TestQueueOrderAndReasons: past the client's limit backups wait in the
// queue saying what for, and run as the limit frees in priority order, then
// scheduled time; a pool's limit and a library's drives hold a backup the
// same way.
func TestQueueOrderAndReasons(t *testing.T) {
	cfg := testConfig
	cfg.Limits = Limits{PerClient: 1}
	w := newWorld(t, cfg)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 21, 0, 0, 0, time.UTC)
	start := func(name string, prio int, scheduled time.Time) uint64 {
		t.Helper()
		st, err := w.o.StartBackup(ctx, BackupSpec{Client: "web", Paths: []fileindex.Path{fileindex.Path("/" + name)}, Level: "full",
			Policy: name, Priority: prio, Scheduled: scheduled})
		if err != nil {
			t.Fatal(err)
		}
		return st.JobID
	}
	first := start("a", 0, t0)
	if j := w.job(first); j.State != catalog.JobRunning {
		t.Fatalf("the first job is %s", j.State)
	}
	late := start("late", 0, t0.Add(2*time.Hour))
	urgent := start("urgent", 5, t0.Add(3*time.Hour))
	early := start("early", 0, t0.Add(time.Hour))
	w.advance(time.Second, false)
	for _, id := range []uint64{late, urgent, early} {
		j := w.job(id)
		if j.State != catalog.JobQueued || j.Waiting != "client web runs job 1" {
			t.Fatalf("job %d (%s): %s, waiting %q", id, j.Policy, j.State, j.Waiting)
		}
	}
	// Each end frees the client for the next in the queue's order.
	running := first
	for _, next := range []uint64{urgent, early, late} {
		w.o.Fail(ctx, running, wire.Errorf(wire.CodeIO, "", "done"))
		w.advance(time.Second, false)
		if j := w.job(next); j.State != catalog.JobRunning {
			t.Fatalf("after job %d ended, job %d (%s) is %s, waiting %q; want it running", running, next, j.Policy, j.State, j.Waiting)
		}
		running = next
	}
	w.o.Fail(ctx, running, wire.Errorf(wire.CodeIO, "", "done"))

	// A pool's limit, and a tape library's drives.
	w.o.cfg.Limits = Limits{PerPool: map[string]int{"Default": 1}}
	a := start("p1", 0, t0)
	b := start("p2", 0, t0)
	w.advance(time.Second, false)
	if j := w.job(b); j.State != catalog.JobQueued || j.Waiting != "pool Default: 1 of 1 jobs running (the pool's limit)" {
		t.Fatalf("past the pool's limit: %s, waiting %q", j.State, j.Waiting)
	}
	w.o.Fail(ctx, a, wire.Errorf(wire.CodeIO, "", "done"))
	w.advance(time.Second, false)
	w.o.Fail(ctx, b, wire.Errorf(wire.CodeIO, "", "done"))

	w.o.cfg.Limits = Limits{PerNode: 1}
	a = start("n1", 0, t0)
	b = start("n2", 0, t0)
	w.advance(time.Second, false)
	if j := w.job(b); j.State != catalog.JobQueued || j.Waiting != "no storage node of pool Default can take it: sn1 (1 of 1 jobs running, the node's limit)" {
		t.Fatalf("past the node's limit: %s, waiting %q", j.State, j.Waiting)
	}
	w.o.Fail(ctx, a, wire.Errorf(wire.CodeIO, "", "done"))
	w.o.Fail(ctx, b, wire.Errorf(wire.CodeIO, "", "done"))

	// Two drives in the library of pool Tape, one job a drive: the third
	// backup waits.
	w.o.cfg.Limits = Limits{PerDrive: 1}
	for _, c := range []*catalog.Command{
		{Op: catalog.OpRegisterNode, Node: &catalog.StorageNode{ID: "sn1", DataAddr: "127.0.0.1:7020",
			Pools:     []catalog.NodePool{{Name: "Default", Dir: "/srv/pool"}},
			Libraries: []catalog.NodeLibrary{{Name: "lib1", Drives: 2, Slots: 10}}}},
		{Op: catalog.OpCreatePool, Pool: &catalog.Pool{Name: "Tape", Type: catalog.PoolTypeTape, Nodes: []string{"sn1"}, Library: "lib1", KeyID: "k1", BlockSize: 1 << 16, BlockRawSize: 1 << 20}},
	} {
		if _, err := w.o.Apply(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	w.mu.Lock()
	w.nodes["sn1"].Usage["Tape"] = wire.PoolUsage{Name: "Tape", FreeBytes: 1 << 40, TotalBytes: 2 << 40}
	w.mu.Unlock()
	var tape []uint64
	for i := range 3 {
		st, err := w.o.StartBackup(ctx, BackupSpec{Client: "web", Paths: []fileindex.Path{fileindex.Path("/t" + string(rune('a'+i)))}, Level: "full", Pool: "Tape"})
		if err != nil {
			t.Fatal(err)
		}
		tape = append(tape, st.JobID)
	}
	w.o.Round(ctx)
	if j := w.job(tape[2]); j.State != catalog.JobQueued || j.Waiting != "pool Tape: 2 of 2 drives busy" {
		t.Fatalf("a third tape backup with two drives: %s, waiting %q", j.State, j.Waiting)
	}
}

// TestLimitHeldJobDoesNotTimeOut: a backup held by a limit waits its turn
// past the queue timeout; one that nothing can run still times out.
func TestLimitHeldJobDoesNotTimeOut(t *testing.T) {
	cfg := testConfig
	cfg.Limits = Limits{PerClient: 1}
	cfg.QueueTimeout = time.Hour
	w := newWorld(t, cfg)
	ctx := context.Background()
	first, err := w.o.StartBackup(ctx, BackupSpec{Client: "web", Paths: []fileindex.Path{"/a"}, Level: "full"})
	if err != nil {
		t.Fatal(err)
	}
	w.o.Waiting(first.JobID, "insert tape CRN007L9 into library lib1") // not stalled
	second, err := w.o.StartBackup(ctx, BackupSpec{Client: "web", Paths: []fileindex.Path{"/b"}, Level: "full"})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 * 60 { // five hours of rounds, heartbeats every minute
		w.advance(time.Minute, false)
	}
	if j := w.job(second.JobID); j.State != catalog.JobQueued || j.Waiting != fmt.Sprintf("client web runs job %d", first.JobID) {
		t.Fatalf("a backup behind the client's limit for 5 hours: %s %q %q", j.State, j.Waiting, j.Error)
	}
}
