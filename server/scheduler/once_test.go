package scheduler

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/alert"
	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/wire"
)

var daily = catalog.Policy{
	Name: "daily", Clients: []string{"web1"}, Paths: []string{"/srv"}, Pool: "Default", TimeZone: "UTC",
	Schedule: "daily 21:00 incremental",
	Created:  time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
}

// leader is another server's scheduler on the same catalog: its own
// orchestrator and scheduler, with a Raft that can lose the leadership
// before a given op, and a start that can die before it is made.
type leader struct {
	w         *world
	orch      *orchestrator.Orchestrator
	sched     *Scheduler
	dieBefore catalog.Op // proposing this op fails as a lost leadership
	dieStart  bool       // the start dies before it is made
}

var errLost = errors.New("leadership lost")

func (w *world) newLeader() *leader {
	l := &leader{w: w}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	l.orch = orchestrator.New(testOrchestratorConfig, orchestrator.Deps{Store: w.store, Raft: l, Member: w, Roles: w, Liveness: w, Clock: w.clock, Log: log})
	l.sched = New(Config{Tick: time.Minute}, Deps{Store: w.store, Policies: w, Raft: l.orch, Jobs: l, Alerts: w, Clock: w.clock, Log: log})
	return l
}

func (l *leader) Apply(ctx context.Context, c *catalog.Command) (catalog.ApplyResult, error) {
	if c.Op == l.dieBefore {
		return catalog.ApplyResult{}, errLost
	}
	return l.w.Apply(ctx, c)
}
func (l *leader) Barrier(context.Context) error { return nil }

func (l *leader) StartBackup(ctx context.Context, spec orchestrator.BackupSpec) (wire.JobStarted, error) {
	if l.dieStart {
		return wire.JobStarted{}, wire.Errorf(wire.CodeNotLeader, "", "leadership lost")
	}
	return l.orch.StartBackup(ctx, spec)
}
func (l *leader) JobLog(ctx context.Context, id uint64, level string, format string, args ...any) {
	l.orch.JobLog(ctx, id, level, format, args...)
}

// TestRunHappensOnce: two leaders deciding at the scheduled instant start
// one job; a leader that dies after recording a run, or after starting its
// job but before recording it dispatched, leaves the run to the next
// leader, which starts it once, the same job.
func TestRunHappensOnce(t *testing.T) {
	at := time.Date(2026, 3, 1, 21, 0, 0, 0, time.UTC)
	t.Run("two leaders at once", func(t *testing.T) {
		w := newWorld(t, at.Add(-time.Minute), "web1")
		w.setPolicies(daily)
		w.clock.Advance(time.Minute)
		a, b := w.newLeader(), w.newLeader()
		var wg sync.WaitGroup
		for _, l := range []*leader{a, b} {
			wg.Go(func() {
				if err := l.sched.Decide(context.Background()); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if n := w.jobCount(); n != 1 {
			t.Fatalf("%d jobs", n)
		}
		if got := w.runs("daily"); got != "Sun 03-01 21:00 web1 incremental->full dispatched job 1\n" {
			t.Fatalf("runs:\n%s", got)
		}
	})
	t.Run("dies after the record", func(t *testing.T) {
		w := newWorld(t, at.Add(-time.Minute), "web1")
		w.setPolicies(daily)
		w.clock.Advance(time.Minute)
		old := w.newLeader()
		old.dieStart = true
		if err := old.sched.Decide(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := w.runs("daily"); got != "Sun 03-01 21:00 web1 incremental starting\n" || w.jobCount() != 0 {
			t.Fatalf("runs after the old leader died:\n%s, %d jobs", got, w.jobCount())
		}
		w.clock.Advance(time.Minute)
		if err := w.newLeader().sched.Decide(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := w.runs("daily"); got != "Sun 03-01 21:00 web1 incremental->full dispatched job 1\n" || w.jobCount() != 1 {
			t.Fatalf("runs after the new leader:\n%s, %d jobs", got, w.jobCount())
		}
	})
	t.Run("dies across the dispatch", func(t *testing.T) {
		w := newWorld(t, at.Add(-time.Minute), "web1")
		w.setPolicies(daily)
		w.clock.Advance(time.Minute)
		old := w.newLeader()
		old.dieBefore = catalog.OpUpdateRun
		if err := old.sched.Decide(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := w.runs("daily"); got != "Sun 03-01 21:00 web1 incremental starting\n" || w.jobCount() != 1 {
			t.Fatalf("runs after the old leader died:\n%s, %d jobs", got, w.jobCount())
		}
		w.clock.Advance(time.Minute)
		next := w.newLeader()
		next.orch.Adopt(context.Background())
		if err := next.sched.Decide(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := w.runs("daily"); got != "Sun 03-01 21:00 web1 incremental->full dispatched job 1\n" || w.jobCount() != 1 {
			t.Fatalf("runs after the new leader:\n%s, %d jobs", got, w.jobCount())
		}
		// Nothing more at later ticks of the same night.
		for range 10 {
			w.clock.Advance(time.Minute)
			if err := next.sched.Decide(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if w.jobCount() != 1 {
			t.Fatalf("%d jobs", w.jobCount())
		}
	})
}

// TestOverlappingRunIsSkipped: a run due while the policy's previous job
// for the client still runs is recorded skipped, naming that job, and
// alerted; the run after it starts again.
func TestOverlappingRunIsSkipped(t *testing.T) {
	w := newWorld(t, daily.Created, "web1")
	w.setPolicies(daily)
	ctx := context.Background()
	w.clock.Advance(9 * time.Hour) // 03-01 21:00
	if err := w.sched.Decide(ctx); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(24 * time.Hour) // the job still runs
	if err := w.sched.Decide(ctx); err != nil {
		t.Fatal(err)
	}
	w.finishRunning()
	w.clock.Advance(24 * time.Hour)
	if err := w.sched.Decide(ctx); err != nil {
		t.Fatal(err)
	}
	want := "Sun 03-01 21:00 web1 incremental->full dispatched job 1\n" +
		"Mon 03-02 21:00 web1 incremental skipped\n" +
		"Tue 03-03 21:00 web1 incremental dispatched job 2\n"
	if got := w.runs("daily"); got != want {
		t.Fatalf("runs:\n%s\nwant:\n%s", got, want)
	}
	r, err := w.store.Run(catalog.RunKey{Policy: "daily", Client: "web1", Scheduled: time.Date(2026, 3, 2, 21, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	if r.Reason != "job 1 of the run at 2026-03-01T21:00:00Z is still running" {
		t.Fatalf("reason %q", r.Reason)
	}
	if als := w.alerts(); len(als) != 1 || als[0].Kind != alert.MissedRun || !strings.Contains(als[0].Summary, "still running") || w.raised != 1 {
		t.Fatalf("alerts %+v (raised %d)", als, w.raised)
	}
}

// TestStalePlanIsRefused: two leaders that planned the same run from
// different moments (one saw the previous job running and skips the run,
// the other saw it done and starts it) cannot both have their way: the
// catalog takes the first record and refuses the second, which starts
// nothing.
func TestStalePlanIsRefused(t *testing.T) {
	w := newWorld(t, daily.Created, "web1")
	w.setPolicies(daily)
	ctx := context.Background()
	w.clock.Advance(9 * time.Hour) // 03-01 21:00
	if err := w.sched.Decide(ctx); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(24 * time.Hour)
	a, b := w.newLeader(), w.newLeader()
	p := daily
	sch, err := p.ParsedSchedule()
	if err != nil {
		t.Fatal(err)
	}
	skip, err := a.sched.Plan(&p, sch, "web1", w.clock.Now())
	if err != nil || len(skip.Record) != 1 || skip.Record[0].State != catalog.RunSkipped {
		t.Fatalf("plan while job 1 runs: %+v, %v", skip, err)
	}
	w.finishRunning()
	start, err := b.sched.Plan(&p, sch, "web1", w.clock.Now())
	if err != nil || start.Start == nil {
		t.Fatalf("plan once job 1 ended: %+v, %v", start, err)
	}
	if err := a.sched.carryOut(ctx, &p, skip, w.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if err := b.sched.carryOut(ctx, &p, start, w.clock.Now()); err != nil {
		t.Fatal(err)
	}
	want := "Sun 03-01 21:00 web1 incremental->full dispatched job 1\nMon 03-02 21:00 web1 incremental skipped\n"
	if got := w.runs("daily"); got != want || w.jobCount() != 1 {
		t.Fatalf("runs:\n%s%d jobs; want:\n%s1 job", got, w.jobCount(), want)
	}
}

// TestLabelledClientsAreScheduled: a policy that selects clients by label
// runs for every client whose agent reports its labels, and for none
// other.
func TestLabelledClientsAreScheduled(t *testing.T) {
	w := newWorld(t, daily.Created, "web1")
	for _, c := range []*catalog.Client{{Name: "db1", Labels: map[string]string{"role": "db"}}, {Name: "db2", Labels: map[string]string{"role": "db"}}} {
		if _, err := w.orch.Apply(context.Background(), &catalog.Command{Op: catalog.OpRegisterClient, Client: c}); err != nil {
			t.Fatal(err)
		}
	}
	p := daily
	p.Name, p.Clients, p.ClientLabels = "databases", nil, map[string]string{"role": "db"}
	w.setPolicies(p)
	w.clock.Advance(9 * time.Hour)
	if err := w.sched.Decide(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := w.runs("databases")
	if !strings.Contains(got, "db1 incremental->full dispatched") || !strings.Contains(got, "db2 incremental->full dispatched") || strings.Contains(got, "web1") {
		t.Fatalf("runs:\n%s", got)
	}
}

// TestRunThatCannotStartFails: a run whose backup the servers refuse (its
// client's agent says the path does not exist) is recorded failed with the
// refusal, makes no job, and is not tried again; the next run is decided
// afresh.
func TestRunThatCannotStartFails(t *testing.T) {
	w := newWorld(t, daily.Created, "web1")
	w.refusePath = "/srv"
	w.setPolicies(daily)
	ctx := context.Background()
	for range 3 {
		w.clock.Advance(3 * time.Hour) // 15:00, 18:00, 21:00
		if err := w.sched.Decide(ctx); err != nil {
			t.Fatal(err)
		}
	}
	w.clock.Advance(time.Minute)
	if err := w.sched.Decide(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := w.store.Run(catalog.RunKey{Policy: "daily", Client: "web1", Scheduled: time.Date(2026, 3, 1, 21, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	if r.State != catalog.RunFailed || r.Reason != "/srv does not exist on the client" || w.jobCount() != 0 {
		t.Fatalf("run %+v, %d jobs", r, w.jobCount())
	}
	w.refusePath = ""
	w.clock.Advance(24 * time.Hour)
	if err := w.sched.Decide(ctx); err != nil {
		t.Fatal(err)
	}
	if got := w.runs("daily"); !strings.HasSuffix(got, "Mon 03-02 21:00 web1 incremental->full dispatched job 1\n") {
		t.Fatalf("runs:\n%s", got)
	}
}

// TestRunCarriesThePolicysWalk: a scheduled run's job walks as its policy
// says: its excludes, and one filesystem when the policy asks.
func TestRunCarriesThePolicysWalk(t *testing.T) {
	at := time.Date(2026, 3, 1, 21, 0, 0, 0, time.UTC)
	w := newWorld(t, at.Add(-time.Minute), "web1")
	p := daily
	p.OneFileSystem = true
	p.Excludes = []string{"*.tmp"}
	w.setPolicies(p)
	w.clock.Advance(time.Minute)
	if err := w.newLeader().sched.Decide(context.Background()); err != nil {
		t.Fatal(err)
	}
	j, err := w.store.Job(1)
	if err != nil {
		t.Fatal(err)
	}
	if !j.OneFileSystem || len(j.Excludes) != 1 || j.Excludes[0] != "*.tmp" {
		t.Fatalf("job of the run: one filesystem %v, excludes %v", j.OneFileSystem, j.Excludes)
	}
}
