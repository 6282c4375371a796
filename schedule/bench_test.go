package schedule

import (
	"syscall"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

// walk5Years calls next from the start of 2026 until five years have passed
// and reports what one decision cost. One op is the whole five years.
func walk5Years(b *testing.B, next func(time.Time) (time.Time, bool)) {
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	to := from.AddDate(5, 0, 0)
	runs := 0
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		runs = 0
		for t := from; ; runs++ {
			n, ok := next(t)
			if !ok || n.After(to) {
				break
			}
			t = n
		}
	}
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(runs), "runs/op")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(runs), "ns/run")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(runs), "cpu-ns/run")
}

// BenchmarkNext5Years walks five years of a typical schedule (Bacula's
// monthly full, weekly differential, nightly incremental, in a zone with
// daylight saving time) run by run, as a preview or a catch-up does.
func BenchmarkNext5Years(b *testing.B) {
	s := mustParse(b, "Sun 1st 02:00 full\nSun 2nd-5th 02:00 differential\nMon-Sat 21:00 incremental", "Europe/Berlin")
	walk5Years(b, func(t time.Time) (time.Time, bool) { r, ok := s.Next(t); return r.Time, ok })
}

// BenchmarkNext5YearsCron and BenchmarkNext5YearsRobfig are the same nightly
// cron rule evaluated by this package and by robfig/cron's own
// SpecSchedule.Next, the baseline the DST rule is paid against.
func BenchmarkNext5YearsCron(b *testing.B) {
	s := mustParse(b, "cron 0 2 * * *", "Europe/Berlin")
	walk5Years(b, func(t time.Time) (time.Time, bool) { r, ok := s.Next(t); return r.Time, ok })
}

func BenchmarkNext5YearsRobfig(b *testing.B) {
	spec, err := cron.ParseStandard("CRON_TZ=Europe/Berlin 0 2 * * *")
	if err != nil {
		b.Fatal(err)
	}
	walk5Years(b, func(t time.Time) (time.Time, bool) { n := spec.Next(t); return n, !n.IsZero() })
}

// cpuTime is the CPU time this process has used: on shared machines wall
// time per op measures the neighbours as much as the code.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
