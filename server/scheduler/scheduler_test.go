package scheduler

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/alert"
	"github.com/cairnbackup/cairn/catalog"
)

var nightly = catalog.Policy{
	Name: "nightly", Clients: []string{"web1"}, Paths: []string{"/srv"}, Pool: "Default", TimeZone: "UTC",
	Schedule:   "Sun 1st 02:00 full\nSun 2nd-5th 02:00 differential\nMon-Sat 21:00 incremental",
	MaxFullAge: 20 * 24 * time.Hour,
	Created:    time.Date(2026, 2, 28, 12, 0, 0, 0, time.UTC),
}

// simulate ticks the scheduler every step from the clock's time to end,
// but not while down says the servers are down, and lets every job it
// starts finish within the tick.
func (w *world) simulate(end time.Time, step time.Duration, down func(time.Time) bool) {
	w.t.Helper()
	for ; !w.clock.Now().After(end); w.clock.Advance(step) {
		if down(w.clock.Now()) {
			continue
		}
		if err := w.sched.Decide(context.Background()); err != nil {
			w.t.Fatal(err)
		}
		w.finishRunning()
	}
}

// TestMonthOfRuns: a month of a policy on the fake clock, with two
// downtimes: the exact runs and levels. The first run is promoted to full
// (no full yet); a differential past the maximum full age is promoted to
// full; three days down miss three runs and make up with one; a night
// down past the catch-up window misses its run; nothing runs twice.
func TestMonthOfRuns(t *testing.T) {
	w := newWorld(t, nightly.Created, "web1")
	w.setPolicies(nightly)
	down := func(now time.Time) bool {
		return (now.After(time.Date(2026, 3, 10, 20, 0, 0, 0, time.UTC)) && now.Before(time.Date(2026, 3, 13, 23, 0, 0, 0, time.UTC))) ||
			(now.After(time.Date(2026, 3, 27, 20, 0, 0, 0, time.UTC)) && now.Before(time.Date(2026, 3, 28, 4, 0, 0, 0, time.UTC)))
	}
	w.simulate(time.Date(2026, 3, 31, 23, 59, 0, 0, time.UTC), 10*time.Minute, down)
	got := w.runs("nightly")
	t.Logf("runs:\n%s", got)
	if got != monthOfRuns {
		t.Fatalf("runs:\n%s\nwant:\n%s", got, monthOfRuns)
	}
	if n := w.jobCount(); n != strings.Count(monthOfRuns, "dispatched") {
		t.Fatalf("%d jobs for %d dispatched runs", n, strings.Count(monthOfRuns, "dispatched"))
	}
	// The promotions are in the jobs' logs.
	first, err := w.store.Job(1)
	if err != nil {
		t.Fatal(err)
	}
	if !logHas(first, "promoted to full: no full of this fileset yet") || !logHas(first, "run of policy nightly scheduled at 2026-02-28T21:00:00Z, level incremental") {
		t.Fatalf("log of the first run: %+v", first.Log)
	}
	runs, _ := w.store.Runs(catalog.RunFilter{Policy: "nightly", Client: "web1"})
	for _, r := range runs {
		if r.Scheduled.Equal(time.Date(2026, 3, 21, 21, 0, 0, 0, time.UTC)) {
			j, _ := w.store.Job(r.JobID)
			if !logHas(j, "promoted to full: the last full is 20 days 19 hours old, the policy's maximum is 20 days") {
				t.Fatalf("log of the run of 03-21: %+v", j.Log)
			}
		}
	}
	// One alert per downtime, owed by the catalog.
	if als := w.alerts(); len(als) != 2 || als[0].Kind != alert.MissedRun || als[0].Missed != 3 || als[1].Missed != 1 {
		t.Fatalf("alerts %+v", als)
	}
}

func logHas(j *catalog.Job, msg string) bool {
	for _, l := range j.Log {
		if l.Msg == msg {
			return true
		}
	}
	return false
}

// monthOfRuns is what the rules say, checked by hand: the full of 03-01
// 02:00 is 20 days 19 hours old on 03-21 21:00, past the maximum of 20
// days; 03-13 21:00 is 2 hours late when the servers come back at 23:00,
// within the window of 6 hours; 03-27 21:00 is 7 hours late at 04:00.
const monthOfRuns = `Sat 02-28 21:00 web1 incremental->full dispatched job 1
Sun 03-01 02:00 web1 full dispatched job 2
Mon 03-02 21:00 web1 incremental dispatched job 3
Tue 03-03 21:00 web1 incremental dispatched job 4
Wed 03-04 21:00 web1 incremental dispatched job 5
Thu 03-05 21:00 web1 incremental dispatched job 6
Fri 03-06 21:00 web1 incremental dispatched job 7
Sat 03-07 21:00 web1 incremental dispatched job 8
Sun 03-08 02:00 web1 differential dispatched job 9
Mon 03-09 21:00 web1 incremental dispatched job 10
Tue 03-10 21:00 web1 incremental missed
Wed 03-11 21:00 web1 incremental missed
Thu 03-12 21:00 web1 incremental missed
Fri 03-13 21:00 web1 incremental dispatched job 11
Sat 03-14 21:00 web1 incremental dispatched job 12
Sun 03-15 02:00 web1 differential dispatched job 13
Mon 03-16 21:00 web1 incremental dispatched job 14
Tue 03-17 21:00 web1 incremental dispatched job 15
Wed 03-18 21:00 web1 incremental dispatched job 16
Thu 03-19 21:00 web1 incremental dispatched job 17
Fri 03-20 21:00 web1 incremental dispatched job 18
Sat 03-21 21:00 web1 incremental->full dispatched job 19
Sun 03-22 02:00 web1 differential dispatched job 20
Mon 03-23 21:00 web1 incremental dispatched job 21
Tue 03-24 21:00 web1 incremental dispatched job 22
Wed 03-25 21:00 web1 incremental dispatched job 23
Thu 03-26 21:00 web1 incremental dispatched job 24
Fri 03-27 21:00 web1 incremental missed
Sat 03-28 21:00 web1 incremental dispatched job 25
Sun 03-29 02:00 web1 differential dispatched job 26
Mon 03-30 21:00 web1 incremental dispatched job 27
Tue 03-31 21:00 web1 incremental dispatched job 28
`

// TestRunHistoryIsForgotten: with a run history of a week, a month of
// daily runs leaves the last week's runs in the catalog (the jobs stay),
// and the schedule goes on from the newest.
func TestRunHistoryIsForgotten(t *testing.T) {
	p := nightly
	p.Schedule, p.MaxFullAge = "daily 21:00 incremental", 0
	w := newWorld(t, p.Created, "web1")
	w.sched = New(Config{Tick: time.Minute, RunHistory: 7 * 24 * time.Hour}, w.sched.d)
	w.setPolicies(p)
	w.simulate(p.Created.AddDate(0, 1, 0), time.Hour, func(time.Time) bool { return false })
	runs, err := w.store.Runs(catalog.RunFilter{Policy: p.Name})
	if err != nil {
		t.Fatal(err)
	}
	// Recorded at 21:00 each day: the week before it, and itself.
	if len(runs) != 8 || !runs[0].Scheduled.Equal(time.Date(2026, 3, 27, 21, 0, 0, 0, time.UTC)) {
		t.Fatalf("%d runs, newest %v:\n%s", len(runs), runs[0].Scheduled, w.runs(p.Name))
	}
	if n := w.jobCount(); n != 28 {
		t.Fatalf("%d jobs, want one a day from 02-28 to 03-27", n)
	}
}
