package scheduler

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkScaleTick measures the scheduler on the catalog that the
// catalog package's BenchmarkScaleBuild left in CAIRN_SCALE_DIR (10,000
// clients with five years of daily backups each, when
// bench/catalogscale.sh runs it at full size): one tick over every client
// when nothing is due, and one decision for a client whose run is due,
// which reads its chain in a history of 1,826 backups. Without
// CAIRN_SCALE_DIR it skips.
func BenchmarkScaleTick(b *testing.B) {
	dir := os.Getenv("CAIRN_SCALE_DIR")
	if dir == "" {
		b.Skip("CAIRN_SCALE_DIR is not set: bench/catalogscale.sh runs this")
	}
	days := 1826
	if v := os.Getenv("CAIRN_SCALE_DAYS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("CAIRN_SCALE_DAYS=%q is not a positive number", v)
		}
		days = n
	}
	// The catalog's clock stopped after its last day's runs.
	now := time.Date(2021, 1, 1, 0, 1, 0, 0, time.UTC).AddDate(0, 0, days)
	w := openWorld(b, filepath.Join(dir, "catalog.db"), now)
	defer w.store.Close()
	clients, err := w.store.Clients()
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	spread(b, "tick", 5, func() {
		if err := w.sched.Decide(ctx); err != nil {
			b.Fatal(err)
		}
	})
	p, err := w.store.Policy("p000")
	if err != nil {
		b.Fatal(err)
	}
	sch, err := p.ParsedSchedule()
	if err != nil {
		b.Fatal(err)
	}
	next, _ := sch.Next(now)
	due := next.Time.Add(time.Minute)
	spread(b, "decision", 200, func() {
		plan, err := w.sched.Plan(p, sch, p.Clients[len(p.Clients)/2], due)
		if err != nil || plan.Start == nil {
			b.Fatalf("plan %+v, %v", plan, err)
		}
	})
	b.ReportMetric(float64(len(clients)), "clients")
}

// spread times fn n times and reports its fastest, median and slowest run.
func spread(b *testing.B, name string, n int, fn func()) {
	ts := make([]time.Duration, n)
	for i := range ts {
		t0 := time.Now()
		fn()
		ts[i] = time.Since(t0)
	}
	slices.Sort(ts)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	b.Logf("%s: %d runs, fastest %s, median %s, slowest %s", name, n, ts[0], ts[n/2], ts[n-1])
	b.ReportMetric(us(ts[0]), name+"-min-µs")
	b.ReportMetric(us(ts[n/2]), name+"-med-µs")
	b.ReportMetric(us(ts[n-1]), name+"-max-µs")
}
