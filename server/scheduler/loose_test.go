package scheduler

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/server/orchestrator"
)

// TestOrphanedRunEnds: a run a leader left starting (it died after the
// record, or after the start and before the mark) whose policy is then
// deleted or disabled, or no longer names the client, is ended at the next
// tick: failed with the reason when no job was made for it, dispatched with
// its job when one was. Before, a deleted policy's run stayed starting for
// ever, and a disabled policy's run started when the policy was enabled
// again, days later.
func TestOrphanedRunEnds(t *testing.T) {
	at := time.Date(2026, 3, 1, 21, 0, 0, 0, time.UTC)
	put := func(w *world, p catalog.Policy) {
		if p.Retention.All.Last == 0 {
			p.Retention.All.Last = 30
		}
		if res, err := w.orch.Apply(context.Background(), &catalog.Command{Op: catalog.OpPutPolicy,
			PolicyPut: &catalog.PolicyPut{Policy: p, Mode: catalog.PutAny}}); err != nil || res.Err != nil {
			w.t.Fatal(err, res.Err)
		}
	}
	deleted := func(w *world) {
		if _, err := w.orch.Apply(context.Background(), &catalog.Command{Op: catalog.OpDeletePolicy,
			PolicyDelete: &catalog.PolicyDelete{Name: "daily"}}); err != nil {
			w.t.Fatal(err)
		}
	}
	disabled := func(w *world) {
		p, err := w.store.Policy("daily")
		if err != nil {
			w.t.Fatal(err)
		}
		p.Disabled = true
		put(w, *p)
	}
	takenOut := func(w *world) {
		p, err := w.store.Policy("daily")
		if err != nil {
			w.t.Fatal(err)
		}
		p.Clients = []string{"web2"}
		put(w, *p)
	}
	for _, how := range []struct {
		name   string
		orphan func(*world)
		reason string
	}{
		{"policy deleted", deleted, "policy daily was deleted"},
		{"policy disabled", disabled, "policy daily was disabled"},
		{"client taken out", takenOut, "client web1 was taken out of policy daily"},
	} {
		for _, tc := range []struct {
			name string
			die  func(*leader)
			want string
		}{
			{"dies after the record", func(l *leader) { l.dieStart = true }, "Sun 03-01 21:00 web1 incremental failed\n"},
			{"dies across the dispatch", func(l *leader) { l.dieBefore = catalog.OpUpdateRun }, "Sun 03-01 21:00 web1 incremental->full dispatched job 1\n"},
		} {
			t.Run(how.name+"/"+tc.name, func(t *testing.T) {
				w := newWorld(t, at.Add(-time.Minute), "web1", "web2")
				w.setPolicies(daily)
				w.clock.Advance(time.Minute)
				old := w.newLeader()
				tc.die(old)
				if err := old.sched.Decide(context.Background()); err != nil {
					t.Fatal(err)
				}
				if got := w.runs("daily"); got != "Sun 03-01 21:00 web1 incremental starting\n" {
					t.Fatalf("runs after the old leader died:\n%s", got)
				}
				how.orphan(w)
				w.clock.Advance(time.Minute)
				next := w.newLeader()
				next.orch.Adopt(context.Background())
				if err := next.sched.Decide(context.Background()); err != nil {
					t.Fatal(err)
				}
				if got := w.runs("daily"); got != tc.want {
					t.Fatalf("runs once the run was orphaned:\n%s\nwant:\n%s", got, tc.want)
				}
				r, err := w.store.Run(catalog.RunKey{Policy: "daily", Client: "web1", Scheduled: at})
				if err != nil {
					t.Fatal(err)
				}
				if r.State == catalog.RunFailed && !strings.Contains(r.Reason, how.reason) {
					t.Fatalf("reason %q, want it to say %q", r.Reason, how.reason)
				}
				// Later ticks change nothing, and the policy made whole
				// again does not start the run.
				w.clock.Advance(time.Minute)
				if err := next.sched.Decide(context.Background()); err != nil {
					t.Fatal(err)
				}
				if got := w.runs("daily"); got != tc.want || w.jobCount() > 1 {
					t.Fatalf("runs at a later tick:\n%s, %d jobs", got, w.jobCount())
				}
				// Made whole, left starting, orphaned again: the same
				// scheduler ends that run too.
				w.finishRunning()
				d := daily
				d.Created = w.clock.Now()
				put(w, d)
				w.clock.Advance(at.Add(24 * time.Hour).Sub(w.clock.Now()))
				next.dieStart = true
				if err := next.sched.Decide(context.Background()); err != nil {
					t.Fatal(err)
				}
				if got := w.runs("daily"); !strings.HasSuffix(got, "Mon 03-02 21:00 web1 incremental starting\n") {
					t.Fatalf("runs after the policy was made whole again:\n%s", got)
				}
				how.orphan(w)
				next.dieStart = false
				w.clock.Advance(time.Minute)
				if err := next.sched.Decide(context.Background()); err != nil {
					t.Fatal(err)
				}
				if got := w.runs("daily"); !strings.HasSuffix(got, "Mon 03-02 21:00 web1 incremental failed\n") {
					t.Fatalf("runs after the policy was orphaned again:\n%s", got)
				}
			})
		}
	}
}

// TestRunShowsTheLevelItRanAt: the scheduler reads the client's chain in
// every pool, the catalog only in the policy's pools; a client whose only
// full is in another pool gets an incremental from the scheduler that the
// catalog makes a full. The run says full, and why, as its job ran; before,
// it said incremental.
func TestRunShowsTheLevelItRanAt(t *testing.T) {
	w := newWorld(t, daily.Created, "web1")
	ctx := context.Background()
	for _, c := range []*catalog.Command{
		{Op: catalog.OpPutKey, Key: &catalog.Key{ID: "k2", Pool: "Other", Wrapped: []byte("wrapped")}},
		{Op: catalog.OpCreatePool, Pool: &catalog.Pool{Name: "Other", Nodes: []string{"sn1"}, KeyID: "k2", BlockSize: 1 << 16, BlockRawSize: 1 << 20}},
		{Op: catalog.OpRegisterNode, Node: &catalog.StorageNode{ID: "sn1", DataAddr: "127.0.0.1:7020",
			Pools: []catalog.NodePool{{Name: "Default", Dir: "/srv/pool"}, {Name: "Other", Dir: "/srv/other"}}}},
	} {
		if res, err := w.orch.Apply(ctx, c); err != nil || res.Err != nil {
			t.Fatal(err, res.Err)
		}
	}
	if _, err := w.orch.StartBackup(ctx, orchestrator.BackupSpec{Client: "web1", Paths: []fileindex.Path{"/srv"}, Level: "full", Pool: "Other", RequestID: "by-hand"}); err != nil {
		t.Fatal(err)
	}
	w.finishRunning()
	w.setPolicies(daily)
	w.clock.Advance(time.Date(2026, 3, 1, 21, 0, 0, 0, time.UTC).Sub(w.clock.Now()))
	if err := w.sched.Decide(ctx); err != nil {
		t.Fatal(err)
	}
	if got := w.runs("daily"); got != "Sun 03-01 21:00 web1 incremental->full dispatched job 2\n" {
		t.Fatalf("runs:\n%s", got)
	}
	r, err := w.store.Run(catalog.RunKey{Policy: "daily", Client: "web1", Scheduled: time.Date(2026, 3, 1, 21, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	j, err := w.store.Job(r.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if j.Level != catalog.LevelFull || r.Level != j.Level || !strings.HasPrefix(r.Promotion, "promoted to full") {
		t.Fatalf("run %+v, job level %s", r, j.Level)
	}
}
