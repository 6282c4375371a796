package schedule

import (
	"testing"
	"time"
)

// BenchmarkNext5Years walks five years of a typical schedule (Bacula's
// monthly full, weekly differential, nightly incremental, in a zone with
// daylight saving time) run by run, as a preview or a catch-up does. One op
// is the whole five years; runs/op and ns/run say what one decision costs.
func BenchmarkNext5Years(b *testing.B) {
	s := mustParse(b, "Sun 1st 02:00 full\nSun 2nd-5th 02:00 differential\nMon-Sat 21:00 incremental", "Europe/Berlin")
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	to := from.AddDate(5, 0, 0)
	runs := 0
	b.ReportAllocs()
	for b.Loop() {
		runs = 0
		for t := from; ; runs++ {
			r, ok := s.Next(t)
			if !ok || r.Time.After(to) {
				break
			}
			t = r.Time
		}
	}
	b.ReportMetric(float64(runs), "runs/op")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(runs), "ns/run")
}
