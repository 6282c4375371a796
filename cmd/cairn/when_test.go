package main

import (
	"errors"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin on a machine without a zone database
)

// TestParseTime reads every form --at takes against a fixed now: the
// afternoon of the day Berlin moves its clocks forward, so that "yesterday"
// (the same wall clock time) and "24 hours ago" are an hour apart.
func TestParseTime(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 29, 15, 4, 5, 0, berlin) // CEST since 02:00
	at := func(y int, m time.Month, d, h, mi, s int) time.Time { return time.Date(y, m, d, h, mi, s, 0, berlin) }
	for _, c := range []struct {
		in   string
		want time.Time
	}{
		{"now", now},
		{"today", now},
		{" Now ", now},
		{"yesterday", at(2026, 3, 28, 15, 4, 5)}, // CET: 23 hours back
		{"24 hours ago", now.Add(-24 * time.Hour)},
		{"1 hour ago", now.Add(-time.Hour)},
		{"an hour ago", now.Add(-time.Hour)},
		{"90 minutes ago", now.Add(-90 * time.Minute)},
		{"1 minute ago", now.Add(-time.Minute)},
		{"30 mins ago", now.Add(-30 * time.Minute)},
		{"45 seconds ago", now.Add(-45 * time.Second)},
		{"0 seconds ago", now},
		{"3 days ago", at(2026, 3, 26, 15, 4, 5)},
		{"1 day ago", at(2026, 3, 28, 15, 4, 5)},
		{"3d ago", at(2026, 3, 26, 15, 4, 5)},
		{"2 weeks ago", at(2026, 3, 15, 15, 4, 5)},
		{"1 Week Ago", at(2026, 3, 22, 15, 4, 5)},
		{"2h ago", now.Add(-2 * time.Hour)},
		{"2h30m ago", now.Add(-150 * time.Minute)},
		{"today 08:30", at(2026, 3, 29, 8, 30, 0)},
		{"today 01:30", at(2026, 3, 29, 1, 30, 0)}, // before the change: CET
		{"yesterday 22:00", at(2026, 3, 28, 22, 0, 0)},
		{"yesterday 22:00:30", at(2026, 3, 28, 22, 0, 30)},
		{"2026-11-20 13:45", at(2026, 11, 20, 13, 45, 0)},
		{"2026-11-20 13:45:10", at(2026, 11, 20, 13, 45, 10)},
		{"2026-11-20T13:45", at(2026, 11, 20, 13, 45, 0)},
		{"2026-11-20", at(2026, 11, 20, 0, 0, 0)},
		{"2026-11-20T13:45:00Z", time.Date(2026, 11, 20, 13, 45, 0, 0, time.UTC)},
		{"2026-11-20T13:45:00.5+01:00", time.Date(2026, 11, 20, 12, 45, 0, 5e8, time.UTC)},
	} {
		got, err := parseTimeAt(c.in, now)
		if err != nil || !got.Equal(c.want) {
			t.Errorf("parseTimeAt(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, c := range []struct{ in, says string }{
		{"", "not understood"},
		{"last tuesday", "not understood"},
		{"when pigs fly", "not understood"},
		{"tomorrow", "not understood"},
		{"3 fortnights ago", `"fortnights" is not a unit`},
		{"-2h ago", "not a time in the last hundred years"},
		{"-2 hours ago", `"-2" is not a count`},
		{"1.5 hours ago", `"1.5" is not a count`},
		{"ago", "one count and one unit"},
		{"hours ago", `"hours" is not a count and a unit`},
		{"2 big hours ago", "one count and one unit"},
		{"99999999999 days ago", "not a time in the last hundred years"},
		{"9223372036854775807 seconds ago", "not a time in the last hundred years"},
		{"yesterday 25:00", "not a time of day"},
		{"2026-13-01", "not understood"},
	} {
		got, err := parseTimeAt(c.in, now)
		var ue *usageError
		if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "'1 hour ago'") {
			t.Errorf("parseTimeAt(%q) = %v, %v; want a usage error that says %q and lists the forms", c.in, got, err, c.says)
		}
	}
}

// TestParseTimeUsesTheClock: without an injected now, the relative forms
// count back from the clock.
func TestParseTimeUsesTheClock(t *testing.T) {
	before := time.Now()
	got, err := parseTime("1 hour ago")
	after := time.Now()
	if err != nil || got.Before(before.Add(-time.Hour)) || got.After(after.Add(-time.Hour)) {
		t.Fatalf("parseTime(1 hour ago) = %v, %v between %v and %v", got, err, before, after)
	}
}

// FuzzParseTime feeds --at arbitrary text: it never panics, reads the same
// text the same way twice, never takes a relative form into the future or
// past the hundred years it allows, and what it returns reads back exactly
// from its RFC 3339 form.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"now", "yesterday", "1 hour ago", "3d ago", "2h30m ago", "an hour ago", "yesterday 22:00",
		"2026-11-20 13:45", "2026-11-20T13:45:00Z", "99999999999 days ago", "-2h ago", "today 24:00"} {
		f.Add(s)
	}
	now := time.Date(2026, 3, 29, 15, 4, 5, 6, time.FixedZone("X", 3600))
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseTimeAt(s, now)
		again, err2 := parseTimeAt(s, now)
		if !got.Equal(again) || (err == nil) != (err2 == nil) {
			t.Fatalf("%q read twice: %v, %v then %v, %v", s, got, err, again, err2)
		}
		if err != nil {
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("%q: %v is not a usage error", s, err)
			}
			return
		}
		if rel, ok, rerr := relativeTime(strings.Fields(strings.ToLower(strings.TrimSpace(s))), now); ok && rerr == nil && rel.Equal(got) {
			if got.After(now) || got.Before(now.Add(-maxBack-48*time.Hour)) {
				t.Fatalf("%q: %v is not between a hundred years back and now (%v)", s, got, now)
			}
		}
		back, err := parseTimeAt(got.Format(time.RFC3339Nano), now)
		if err != nil || !back.Equal(got) {
			t.Fatalf("%q: %v formats as %q, which reads back as %v, %v", s, got, got.Format(time.RFC3339Nano), back, err)
		}
	})
}
