package retention

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/schedule"
)

// fiveYears is one client's five years of daily backups: a full on the first
// Sunday of each month, a differential on the other Sundays, an incremental
// every other day, chained as the catalog chains them.
func fiveYears(client string) []Backup {
	c := newChainer(client, "policy-a", 1)
	t := time.Date(2021, 12, 1, 21, 0, 0, 0, time.UTC)
	for range 5 * 365 {
		l := schedule.Incremental
		if t.Weekday() == time.Sunday {
			l = schedule.Differential
			if t.Day() <= 7 {
				l = schedule.Full
			}
		}
		c.add(t, l, Complete)
		t = t.AddDate(0, 0, 1)
	}
	return c.backups
}

// typicalPolicy is the retention: incrementals 14 days,
// differentials 8 weeks, fulls 12 months.
var typicalPolicy = Policy{Levels: map[schedule.Level]Rules{
	schedule.Incremental:  {Within: 14 * 24 * time.Hour},
	schedule.Differential: {Weekly: 8},
	schedule.Full:         {Monthly: 12},
}}

// BenchmarkExpiryPass is one expiry pass over 10,000 clients with five years
// of daily backups each (18,250,000 backups), one client and fileset at a
// time as the leader's pass reads them from the catalog. One op is the whole
// pass; ns/backup is the cost of one decision.
func BenchmarkExpiryPass(b *testing.B) {
	const clients = 10000
	group := fiveYears("client-00000")
	names := make([]string, clients)
	for i := range names {
		names[i] = fmt.Sprintf("client-%05d", i)
	}
	var p Planner
	out := make([]Decision, 0, len(group))
	kept := 0
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		kept = 0
		for _, name := range names {
			for i := range group {
				group[i].Client = name
			}
			out = p.PlanGroup(group, &typicalPolicy, out[:0])
			for i := range out {
				if out[i].Keep {
					kept++
				}
			}
		}
	}
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(clients*len(group)), "ns/backup")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(clients*len(group)), "cpu-ns/backup")
	b.ReportMetric(float64(kept)/clients, "kept/client")
}

// cpuTime is the CPU time this process has used. The benchmark machines are
// shared, and wall time per op there says more about the neighbours than
// about the code; the pass is one goroutine, so its CPU time is its work
// (the garbage collector's, which runs beside it, included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPlan100Clients is Plan over 100 clients' five years in one call
// (182,500 backups), sorting and grouping included: the path a prune
// --dry-run over a whole catalog takes.
func BenchmarkPlan100Clients(b *testing.B) {
	var all []Backup
	for i := range 100 {
		all = append(all, fiveYears(fmt.Sprintf("client-%05d", i))...)
	}
	policies := one(typicalPolicy)
	b.ReportAllocs()
	for b.Loop() {
		Plan(all, policies)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(all)), "ns/backup")
}

// TestTypicalPolicyKeepsWhatItSays holds the benchmark's figures to the
// rules, so the figures measure the policy the issue names.
func TestTypicalPolicyKeepsWhatItSays(t *testing.T) {
	ds := Plan(fiveYears("c"), one(typicalPolicy))
	count := map[schedule.Level]int{}
	for _, d := range ds {
		if d.Keep {
			count[d.Level]++
		}
		if d.Keep && d.Parent != 0 && !ds[d.Parent-1].Keep {
			t.Fatalf("backup %d kept without its base", d.ID)
		}
	}
	// The newest is Sunday 2026-11-29, a differential: the 14 days back
	// to Sunday 2026-11-15 hold 12 incrementals; the 8 differentials are the
	// newest of the 8 newest weeks that have one; the fulls are the first
	// Sundays of the 12 newest months. The incrementals' bases (the
	// differential of 11-22 and 11-29, the full of 11-01) are among those.
	if count[schedule.Full] != 12 || count[schedule.Differential] != 8 || count[schedule.Incremental] != 12 {
		t.Errorf("kept %v", count)
	}
}
