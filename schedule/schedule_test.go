package schedule

import (
	"strings"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

func mustParse(t testing.TB, text, zone string) *Schedule {
	t.Helper()
	s, err := Parse(text, zone)
	if err != nil {
		t.Fatalf("Parse(%q): %v", text, err)
	}
	return s
}

func utc(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04", s)
	if err != nil {
		panic(err)
	}
	return t
}

// runsUTC lists the runs in (from, to] as "UTC time local time level rule".
func runsUTC(s *Schedule, from, to string) string {
	var out []string
	for _, r := range s.Between(utc(from), utc(to)) {
		out = append(out, r.Time.UTC().Format("01-02 15:04Z")+" "+r.Time.Format("15:04 MST")+" "+string(r.Level)+" "+string(rune('0'+r.Rule)))
	}
	return strings.Join(out, "|")
}

// TestDaylightSavingTime holds the rule of the package doc: a run is due at
// the first instant the zone's clock shows its time or later, so a time the
// clock skips runs at the end of the gap, and a time it shows twice runs once,
// the first time.
func TestDaylightSavingTime(t *testing.T) {
	tests := []struct {
		name, zone, rules, from, to, want string
	}{
		{"Berlin spring forward, skipped time runs at 03:00", "Europe/Berlin", "daily 02:30 incremental",
			"2026-03-27 12:00", "2026-03-30 12:00",
			"03-28 01:30Z 02:30 CET incremental 0|03-29 01:00Z 03:00 CEST incremental 0|03-30 00:30Z 02:30 CEST incremental 0"},
		{"Berlin fall back, repeated time runs once, the first time", "Europe/Berlin", "daily 02:30 incremental",
			"2026-10-23 12:00", "2026-10-26 12:00",
			"10-24 00:30Z 02:30 CEST incremental 0|10-25 00:30Z 02:30 CEST incremental 0|10-26 01:30Z 02:30 CET incremental 0"},
		{"Berlin hourly on the spring-forward day", "Europe/Berlin", "hourly :30",
			"2026-03-29 00:00", "2026-03-29 02:00",
			"03-29 00:30Z 01:30 CET incremental 0|03-29 01:00Z 03:00 CEST incremental 0|03-29 01:30Z 03:30 CEST incremental 0"},
		{"Berlin hourly on the fall-back day", "Europe/Berlin", "hourly :30",
			"2026-10-24 23:00", "2026-10-25 03:00",
			"10-24 23:30Z 01:30 CEST incremental 0|10-25 00:30Z 02:30 CEST incremental 0|10-25 02:30Z 03:30 CET incremental 0"},
		{"Berlin a skipped time and the gap's end merge into one run of the higher level", "Europe/Berlin", "daily 02:30 incremental\ndaily 03:00 full",
			"2026-03-28 00:00", "2026-03-30 12:00",
			"03-28 01:30Z 02:30 CET incremental 0|03-28 02:00Z 03:00 CET full 1|03-29 01:00Z 03:00 CEST full 1|03-30 00:30Z 02:30 CEST incremental 0|03-30 01:00Z 03:00 CEST full 1"},
		{"New York spring forward", "America/New_York", "daily 02:30 full",
			"2026-03-07 00:00", "2026-03-09 12:00",
			"03-07 07:30Z 02:30 EST full 0|03-08 07:00Z 03:00 EDT full 0|03-09 06:30Z 02:30 EDT full 0"},
		{"New York fall back", "America/New_York", "daily 01:30 full",
			"2026-10-31 00:00", "2026-11-02 12:00",
			"10-31 05:30Z 01:30 EDT full 0|11-01 05:30Z 01:30 EDT full 0|11-02 06:30Z 01:30 EST full 0"},
		{"New York times outside the change are untouched", "America/New_York", "Sun 00:30,03:30 diff",
			"2026-11-01 00:00", "2026-11-02 00:00",
			"11-01 04:30Z 00:30 EDT differential 0|11-01 08:30Z 03:30 EST differential 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustParse(t, tt.rules, tt.zone)
			if got := runsUTC(s, tt.from, tt.to); got != tt.want {
				t.Errorf("\n got %s\nwant %s", strings.ReplaceAll(got, "|", "\n     "), strings.ReplaceAll(tt.want, "|", "\n     "))
			}
		})
	}
}

// TestSameMinuteHigherLevelWins is Bacula's classic week: a full on the
// first Sunday, differentials on the other Sundays, incrementals daily at the
// same minute. The daily rule is written first on purpose: the level decides,
// not the order.
func TestSameMinuteHigherLevelWins(t *testing.T) {
	s := mustParse(t, "daily 02:00 incremental\nSun 2nd-5th 02:00 differential\nSun 1st 02:00 full\nSun 1st 02:00 full", "UTC")
	got := runsUTC(s, "2026-02-27 00:00", "2026-03-09 00:00")
	want := "02-27 02:00Z 02:00 UTC incremental 0|02-28 02:00Z 02:00 UTC incremental 0|03-01 02:00Z 02:00 UTC full 2|" +
		"03-02 02:00Z 02:00 UTC incremental 0|03-03 02:00Z 02:00 UTC incremental 0|03-04 02:00Z 02:00 UTC incremental 0|" +
		"03-05 02:00Z 02:00 UTC incremental 0|03-06 02:00Z 02:00 UTC incremental 0|03-07 02:00Z 02:00 UTC incremental 0|" +
		"03-08 02:00Z 02:00 UTC differential 1"
	if got != want {
		t.Errorf("\n got %s\nwant %s", strings.ReplaceAll(got, "|", "\n     "), strings.ReplaceAll(want, "|", "\n     "))
	}
}

func TestNextIsStrictlyAfter(t *testing.T) {
	s := mustParse(t, "daily 02:00", "Europe/Berlin")
	first, ok := s.Next(utc("2026-06-01 00:00"))
	if !ok || !first.Time.Equal(utc("2026-06-02 00:00")) {
		t.Fatalf("Next = %v %v, want 2026-06-02 00:00Z", first.Time.UTC(), ok)
	}
	second, _ := s.Next(first.Time)
	if !second.Time.Equal(utc("2026-06-03 00:00")) {
		t.Fatalf("Next(a run's own time) = %v, want the following day", second.Time.UTC())
	}
	if second.Time.Location() != s.Location() {
		t.Fatalf("a run's time is in %v, want the schedule's zone", second.Time.Location())
	}
	if got := s.Between(first.Time, first.Time); len(got) != 0 {
		t.Fatalf("Between(t, t) = %v, want nothing: the span is (a, b]", got)
	}
}

func TestCatchUp(t *testing.T) {
	s := mustParse(t, "daily 02:00 incremental\nSun 02:00 full", "UTC")
	tests := []struct {
		name      string
		last, now string
		window    time.Duration
		due       string // "" when none
		missed    string
	}{
		{"a normal tick runs the run just due", "2026-03-02 02:00", "2026-03-03 02:00", time.Minute,
			"03-03 02:00Z 02:00 UTC incremental 0", ""},
		{"a tick before the next run owes nothing", "2026-03-02 02:00", "2026-03-03 01:59", time.Hour, "", ""},
		{"a week down: the newest within its window runs, the rest are missed", "2026-03-02 02:00", "2026-03-09 05:00", 6 * time.Hour,
			"03-09 02:00Z 02:00 UTC incremental 0",
			"03-03 02:00Z 02:00 UTC incremental 0|03-04 02:00Z 02:00 UTC incremental 0|03-05 02:00Z 02:00 UTC incremental 0|" +
				"03-06 02:00Z 02:00 UTC incremental 0|03-07 02:00Z 02:00 UTC incremental 0|03-08 02:00Z 02:00 UTC full 1"},
		{"back too late for the newest: all are missed", "2026-03-06 02:00", "2026-03-09 05:00", 2 * time.Hour, "",
			"03-07 02:00Z 02:00 UTC incremental 0|03-08 02:00Z 02:00 UTC full 1|03-09 02:00Z 02:00 UTC incremental 0"},
		{"exactly at the window's end still runs", "2026-03-06 02:00", "2026-03-07 04:00", 2 * time.Hour,
			"03-07 02:00Z 02:00 UTC incremental 0", ""},
		{"nothing recorded owes nothing", "", "2026-03-09 05:00", time.Hour, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var last time.Time
			if tt.last != "" {
				last = utc(tt.last)
			}
			c := s.CatchUp(last, utc(tt.now), tt.window)
			due := ""
			if c.Due {
				due = c.Run.Time.UTC().Format("01-02 15:04Z") + " " + c.Run.Time.Format("15:04 MST") + " " + string(c.Run.Level) + " " + string(rune('0'+c.Run.Rule))
			}
			var missed []string
			for _, r := range c.Missed {
				missed = append(missed, r.Time.UTC().Format("01-02 15:04Z")+" "+r.Time.Format("15:04 MST")+" "+string(r.Level)+" "+string(rune('0'+r.Rule)))
			}
			if due != tt.due || strings.Join(missed, "|") != tt.missed {
				t.Errorf("due %q missed %q\nwant due %q missed %q", due, strings.Join(missed, "|"), tt.due, tt.missed)
			}
		})
	}
}

func TestPromote(t *testing.T) {
	at := utc("2026-03-31 02:00")
	day := 24 * time.Hour
	tests := []struct {
		name       string
		asked      Level
		chain      Chain
		lim        Limits
		want       Level
		wantReason string
	}{
		{"no full yet", Incremental, Chain{}, Limits{}, Full, "promoted to full: no full of this fileset yet"},
		{"no full yet, differential asked", Differential, Chain{}, Limits{}, Full, "promoted to full: no full of this fileset yet"},
		{"a full asked stays a full", Full, Chain{}, Limits{}, Full, ""},
		{"the last full too old", Incremental, Chain{LastFull: at.Add(-35 * day)}, Limits{MaxFullAge: 31 * day}, Full,
			"promoted to full: the last full is 35 days old, the policy's maximum is 31 days"},
		{"the last full exactly at the maximum", Incremental, Chain{LastFull: at.Add(-31 * day)}, Limits{MaxFullAge: 31 * day}, Incremental, ""},
		{"a differential with a young full", Differential, Chain{LastFull: at.Add(-3 * day)}, Limits{MaxFullAge: 31 * day}, Differential, ""},
		{"no maximum", Incremental, Chain{LastFull: at.Add(-400 * day)}, Limits{}, Incremental, ""},
		{"an incremental far from the last differential", Incremental,
			Chain{LastFull: at.Add(-20 * day), LastDifferential: at.Add(-8*day - 6*time.Hour)}, Limits{MaxFullAge: 31 * day, MaxDifferentialAge: 7 * day},
			Differential, "promoted to differential: the last differential is 8 days 6 hours old, the policy's maximum is 7 days"},
		{"an incremental with no differential since an old full", Incremental,
			Chain{LastFull: at.Add(-10 * day), LastDifferential: at.Add(-12 * day)}, Limits{MaxDifferentialAge: 7 * day},
			Differential, "promoted to differential: the last full (there is no differential since) is 10 days old, the policy's maximum is 7 days"},
		{"an incremental near its differential", Incremental,
			Chain{LastFull: at.Add(-20 * day), LastDifferential: at.Add(-2 * day)}, Limits{MaxDifferentialAge: 7 * day},
			Incremental, ""},
	}
	for _, tt := range tests {
		got, why := Promote(tt.asked, at, tt.chain, tt.lim)
		if got != tt.want || why != tt.wantReason {
			t.Errorf("%s: Promote = %s %q, want %s %q", tt.name, got, why, tt.want, tt.wantReason)
		}
	}
}

func TestFormatAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		24 * time.Hour:                "1 day",
		35 * 24 * time.Hour:           "35 days",
		25 * time.Hour:                "1 day 1 hour",
		90 * time.Minute:              "1 hour 30 minutes",
		2 * time.Hour:                 "2 hours",
		time.Minute:                   "1 minute",
		30*24*time.Hour + time.Minute: "30 days",
	} {
		if got := FormatAge(d); got != want {
			t.Errorf("FormatAge(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestFarFuture runs a schedule past the last transition written in the zone
// file (2037), where Go derives the periods from the zone's rule and cuts them
// at each new year: resolving a time at such a cut looped forever once.
func TestFarFuture(t *testing.T) {
	s := mustParse(t, "Jan,Jul 1st day 00:30 full", "Europe/Berlin")
	got := runsUTC(s, "2060-06-01 00:00", "2062-01-02 00:00")
	want := "06-30 22:30Z 00:30 CEST full 0|12-31 23:30Z 00:30 CET full 0|06-30 22:30Z 00:30 CEST full 0|12-31 23:30Z 00:30 CET full 0"
	if got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
}

// TestRobfigNextAndDST holds the reason this package evaluates cron rules
// itself (see parseCron): robfig/cron v3.0.1's SpecSchedule.Next, given a
// 02:30 rule in Berlin, finds no 02:30 on the spring-forward day and runs
// next on the following day, and runs twice on the fall-back day; this
// package runs at 03:00 on the first and once on the second.
func TestRobfigNextAndDST(t *testing.T) {
	spec, err := cron.ParseStandard("CRON_TZ=Europe/Berlin 30 2 * * *")
	if err != nil {
		t.Fatal(err)
	}
	from := utc("2026-03-28 12:00")
	if got := spec.Next(from).UTC(); !got.Equal(utc("2026-03-30 00:30")) {
		t.Errorf("robfig/cron's Next = %s; if it now runs on the spring-forward day, reconsider parseCron's comment", got)
	}
	s := mustParse(t, "cron 30 2 * * *", "Europe/Berlin")
	if r, _ := s.Next(from); !r.Time.Equal(utc("2026-03-29 01:00")) {
		t.Errorf("Next = %s, want 2026-03-29 03:00 CEST", r.Time)
	}

	first := spec.Next(utc("2026-10-24 12:00"))
	if second := spec.Next(first).UTC(); !second.Equal(utc("2026-10-25 01:30")) {
		t.Errorf("robfig/cron's Next after %s = %s; if it no longer runs twice on the fall-back day, reconsider parseCron's comment", first.UTC(), second)
	}
	if got := runsUTC(s, "2026-10-24 12:00", "2026-10-26 12:00"); got != "10-25 00:30Z 02:30 CEST incremental 0|10-26 01:30Z 02:30 CET incremental 0" {
		t.Errorf("runs over the fall-back day: %s", got)
	}
}
