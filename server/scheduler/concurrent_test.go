package scheduler

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/wire"
)

// gate is the orchestrator as the scheduler starts jobs through it,
// holding each start until every run of the same priority due at the tick
// is starting too: starts made one after another never get past the
// first, which gives up (and every start after it) at a deadline.
type gate struct {
	w      *world
	mu     sync.Mutex
	want   map[int]int // priority -> runs due together
	in     map[int]int
	open   map[int]chan struct{}
	order  []int // the priorities, in the order their starts began
	broken error
}

func (g *gate) StartBackup(ctx context.Context, spec orchestrator.BackupSpec) (wire.JobStarted, error) {
	g.mu.Lock()
	if g.broken != nil {
		g.mu.Unlock()
		return wire.JobStarted{}, g.broken
	}
	p := spec.Priority
	g.order = append(g.order, p)
	g.in[p]++
	ch := g.open[p]
	if g.in[p] == g.want[p] {
		close(ch)
	}
	g.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		g.mu.Lock()
		g.broken = fmt.Errorf("only %d of the %d runs of priority %d were starting together", g.in[p], g.want[p], p)
		g.mu.Unlock()
		return wire.JobStarted{}, g.broken
	}
	return g.w.orch.StartBackup(ctx, spec)
}

func (g *gate) JobLog(ctx context.Context, id uint64, level string, format string, args ...any) {
	g.w.orch.JobLog(ctx, id, level, format, args...)
}

// TestDueRunsStartTogether: 24 clients due at 21:00 under two policies of
// different priorities. One tick of the fake clock starts them all: the 12
// of the higher priority together, then the 12 of the lower together, never
// one of the lower before every one of the higher has started; each run is
// recorded once and has one job.
func TestDueRunsStartTogether(t *testing.T) {
	created := time.Date(2026, 3, 2, 20, 0, 0, 0, time.UTC)
	var gold, bronze []string
	for i := range 12 {
		gold = append(gold, fmt.Sprintf("g%02d", i))
		bronze = append(bronze, fmt.Sprintf("b%02d", i))
	}
	w := newWorld(t, created, append(slices.Clone(gold), bronze...)...)
	g := &gate{w: w, want: map[int]int{10: 12, 1: 12}, in: map[int]int{},
		open: map[int]chan struct{}{10: make(chan struct{}), 1: make(chan struct{})}}
	w.sched = New(Config{Tick: time.Minute}, Deps{Store: w.store, Policies: w, Raft: w.orch, Jobs: g, Alerts: w, Clock: w.clock,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w.setPolicies(
		catalog.Policy{Name: "bronze", Clients: bronze, Paths: []string{"/srv"}, Pool: "Default", TimeZone: "UTC", Schedule: "daily 21:00 incremental", Priority: 1},
		catalog.Policy{Name: "gold", Clients: gold, Paths: []string{"/srv"}, Pool: "Default", TimeZone: "UTC", Schedule: "daily 21:00 incremental", Priority: 10},
	)
	w.clock.Advance(time.Hour)
	if err := w.sched.Decide(context.Background()); err != nil {
		t.Fatal(err)
	}
	if g.broken != nil {
		t.Fatal(g.broken)
	}
	want := append(slices.Repeat([]int{10}, 12), slices.Repeat([]int{1}, 12)...)
	if !slices.Equal(g.order, want) {
		t.Fatalf("starts by priority %v, want every 10 before any 1", g.order)
	}
	for _, p := range []string{"gold", "bronze"} {
		runs, err := w.store.Runs(catalog.RunFilter{Policy: p})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range runs {
			if r.State != catalog.RunDispatched || r.JobID == 0 {
				t.Fatalf("%s: run %+v", p, r)
			}
		}
		if len(runs) != 12 {
			t.Fatalf("%s: %d runs", p, len(runs))
		}
	}
	if n := w.jobCount(); n != 24 {
		t.Fatalf("%d jobs for 24 runs", n)
	}
}
