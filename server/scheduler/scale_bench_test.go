package scheduler

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/scalebench"
)

// BenchmarkScaleTick measures the scheduler on the catalog that the
// catalog package's BenchmarkScaleBuild left in CAIRN_SCALE_DIR (10,000
// clients with five years of daily backups each, when
// bench/catalogscale.sh runs it at full size): one tick over every client
// when nothing is due, and one decision for a client whose run is due,
// which reads its chain in a history of 1,826 backups. Without
// CAIRN_SCALE_DIR it skips.
func BenchmarkScaleTick(b *testing.B) {
	dir, _, days := scalebench.Env(b)
	// The catalog's clock stopped after its last day's runs.
	now := scalebench.Start.AddDate(0, 0, days).Add(time.Minute)
	w := openWorld(b, filepath.Join(dir, "catalog.db"), now)
	defer w.store.Close()
	clients, err := w.store.Clients()
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	scalebench.Spread(b, "tick", 5, func() {
		if err := w.sched.Decide(ctx); err != nil {
			b.Fatal(err)
		}
	})
	p, sch, due := nextDue(b, w)
	scalebench.Spread(b, "decision", 200, func() {
		plan, err := w.sched.Plan(p, sch, p.Clients[len(p.Clients)/2], due)
		if err != nil || plan.Start == nil {
			b.Fatalf("plan %+v, %v", plan, err)
		}
	})
	b.ReportMetric(float64(len(clients)), "clients")
}
