// Package scalebench is what the catalog-at-scale benchmarks share (the
// catalog package's BenchmarkScale* and server/scheduler's
// BenchmarkScaleTick, run by bench/catalogscale.sh): where the catalog is
// and how big, and how a measurement repeated n times is reported.
package scalebench

import (
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// Start is the first day of the catalog's history.
var Start = time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)

// Env is the benchmark's catalog: its directory (CAIRN_SCALE_DIR), its
// clients (CAIRN_SCALE_CLIENTS, default 1000) and days of history
// (CAIRN_SCALE_DAYS, default 1826: five years). Without a directory the
// benchmark skips, so that 'make test' never builds gigabytes.
func Env(b *testing.B) (dir string, clients, days int) {
	b.Helper()
	dir = os.Getenv("CAIRN_SCALE_DIR")
	if dir == "" {
		b.Skip("CAIRN_SCALE_DIR is not set: bench/catalogscale.sh runs this")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	return dir, envInt(b, "CAIRN_SCALE_CLIENTS", 1000), envInt(b, "CAIRN_SCALE_DAYS", 1826)
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q is not a positive number", name, v)
	}
	return n
}

// Spread times fn n times and reports its fastest, median and slowest run
// (name-min-µs, name-med-µs, name-max-µs): on a shared machine one figure
// says little, a range more.
func Spread(b *testing.B, name string, n int, fn func()) {
	b.Helper()
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
