package schedule

import (
	"sort"
	"time"
)

// Schedule is a list of rules evaluated in one time zone. It is immutable
// once parsed and safe for use by many goroutines.
type Schedule struct {
	rules []Rule
	loc   *time.Location
}

// Run is one scheduled run.
type Run struct {
	// Time is the instant the run is due, in the schedule's time zone.
	Time time.Time
	// Level is the level the schedule asks for, before any promotion.
	Level Level
	// Rule is the index of the rule that made the run (of those that fired
	// at that minute, the one of the highest level, then the first written).
	Rule int
}

// Rules returns the schedule's rules in the order written.
func (s *Schedule) Rules() []Rule { return append([]Rule(nil), s.rules...) }

// Location returns the time zone the schedule's wall-clock times are in.
func (s *Schedule) Location() *time.Location { return s.loc }

// searchDays bounds how far Next looks: a rule that fires at all fires within
// 8 years (a 29 February), and 30 years is far past that; Parse refuses rules
// that never fire, so the bound is reached only after year 9999 or so.
const searchDays = 30 * 366

// Next returns the first run strictly after after, and false when there is
// none (which Parse makes impossible short of the end of the calendar).
func (s *Schedule) Next(after time.Time) (Run, bool) {
	local := after.In(s.loc)
	y, m, d := local.Date()
	// Start a day early: a time in a day whose clock jumped at midnight can
	// fall on the instant the previous day's last run resolved to.
	day := time.Date(y, m, d-1, 0, 0, 0, 0, time.UTC)
	for range searchDays {
		if run, ok := s.firstOnDay(day, after); ok {
			return run, true
		}
		day = day.AddDate(0, 0, 1)
	}
	return Run{}, false
}

// firstOnDay returns the earliest run after after among the rules that fire
// on the civil date day (a UTC midnight standing for the date).
func (s *Schedule) firstOnDay(day time.Time, after time.Time) (Run, bool) {
	y, m, d := day.Date()
	wd := day.Weekday()
	monthLen := daysIn(y, m)
	var best Run
	found := false
	for i := range s.rules {
		r := &s.rules[i]
		if !r.matches(m, d, wd, monthLen) {
			continue
		}
		// Wall times resolve to instants in the same order (the DST rule
		// never reorders them), so the first one after after is found by
		// bisection: an hourly or */5 cron rule has hundreds a day.
		k := sort.Search(len(r.minutes), func(k int) bool {
			return s.resolve(y, m, d, r.minutes[k]).After(after)
		})
		if k == len(r.minutes) {
			continue
		}
		t := s.resolve(y, m, d, r.minutes[k])
		switch {
		case !found || t.Before(best.Time):
			best, found = Run{Time: t, Level: r.Level, Rule: i}, true
		case t.Equal(best.Time) && r.Level.Higher(best.Level):
			best.Level, best.Rule = r.Level, i
		}
	}
	return best, found
}

// Between returns the runs in the half-open span (a, b], oldest first: a run
// at a belongs to the span before, so consecutive spans never share a run.
func (s *Schedule) Between(a, b time.Time) []Run {
	var runs []Run
	for t := a; ; {
		r, ok := s.Next(t)
		if !ok || r.Time.After(b) {
			return runs
		}
		runs = append(runs, r)
		t = r.Time
	}
}

// resolve returns the instant a wall-clock time of a civil date is due: the
// first instant at which the schedule's clock shows that time or later. When
// the clock springs forward over it (02:30 on a day that goes from 02:00 to
// 03:00), that is the end of the gap, 03:00. When the clock falls back and
// shows it twice, that is the first time.
func (s *Schedule) resolve(y int, m time.Month, d int, minute uint16) time.Time {
	wall := time.Date(y, m, d, int(minute/60), int(minute%60), 0, 0, time.UTC).Unix()
	if s.loc == time.UTC {
		return time.Unix(wall, 0).In(s.loc)
	}
	// Walk the zone's periods from one that began before the earliest
	// instant that can show this wall time (offsets lie within ±14h). In a
	// period [start, end) with offset off the clock shows [start+off,
	// end+off); the first period whose shown times reach wall holds the
	// answer: wall-off itself, or the period's start when the clock jumped
	// past wall on entering it. start is taken as the end of the period
	// walked before, not from ZoneBounds: past the zone file's last
	// transition (2037) Go derives periods from the zone's rule, cuts them at
	// each new year with the same offset on both sides, and at such a cut
	// may report a start after the instant asked or the period just ended.
	at := time.Unix(wall-15*3600, 0).In(s.loc)
	var start int64
	haveStart := false
	for {
		_, off := at.Zone()
		_, end := at.ZoneBounds()
		if end.IsZero() || end.Unix()+int64(off) > wall {
			t := wall - int64(off)
			if haveStart && start > t {
				t = start
			}
			return time.Unix(t, 0).In(s.loc)
		}
		if end.After(at) {
			start, haveStart = end.Unix(), true
			at = end.In(s.loc)
		} else {
			at = at.Add(time.Hour)
		}
	}
}
