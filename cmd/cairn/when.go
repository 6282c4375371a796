package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// A time on the command line (--at of restore and ls) is typed by an admin,
// mostly about a day other than the one the example was written on, so the
// relative forms people say are read as GNU date(1) reads them: now and
// today are this moment, yesterday is this time yesterday (the same wall
// clock time, so 23 or 25 hours back across a change of daylight saving
// time, as "1 day ago" is), "N UNIT ago" counts back from now; "today
// 08:30" and "yesterday 22:00" name a time of that day. The absolute forms
// are RFC 3339 and the ISO 8601 dates and times of the local zone.

// parseTime reads a time the admin typed, relative to the clock now.
func parseTime(s string) (time.Time, error) { return parseTimeAt(s, time.Now()) }

// absoluteLayouts are the local forms of an absolute time, tried in order.
var absoluteLayouts = []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"}

// maxBack is as far back as a relative time may go: further is a typo (an
// extra digit), and a count that large would overflow a time.Duration.
const maxBack = 100 * 366 * 24 * time.Hour

// atForms is what the --at flags say they take.
const atForms = "now, yesterday, '1 hour ago', '3 days ago', 'yesterday 22:00', '2026-11-23 10:00' or RFC 3339"

const timeForms = "use now, today, yesterday, '1 hour ago', '30 minutes ago', '3 days ago', 'yesterday 22:00', " +
	"'2026-11-23 10:00' (local time) or RFC 3339"

// parseTimeAt reads s as parseTime does, with now as the present: the
// relative forms count back from it, and the local forms are in its zone.
func parseTimeAt(s string, now time.Time) (time.Time, error) {
	in := strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, in); err == nil {
		return t, nil
	}
	for _, layout := range absoluteLayouts {
		if t, err := time.ParseInLocation(layout, in, now.Location()); err == nil {
			return t, nil
		}
	}
	t, ok, err := relativeTime(strings.Fields(strings.ToLower(in)), now)
	switch {
	case ok && err == nil:
		return t, nil
	case ok:
		return time.Time{}, &usageError{fmt.Errorf("time %q: %w; %s", s, err, timeForms)}
	}
	return time.Time{}, &usageError{fmt.Errorf("time %q is not understood; %s", s, timeForms)}
}

// relativeTime reads the relative forms from the words of a time. ok says
// that the words are one of those forms, right or wrong (so the error can
// say what is wrong with it).
func relativeTime(words []string, now time.Time) (t time.Time, ok bool, err error) {
	if len(words) == 0 {
		return time.Time{}, false, nil
	}
	switch day := words[0]; {
	case (day == "now" || day == "today") && len(words) == 1:
		return now, true, nil
	case day == "yesterday" && len(words) == 1:
		return now.AddDate(0, 0, -1), true, nil
	case (day == "today" || day == "yesterday") && len(words) == 2:
		d := now
		if day == "yesterday" {
			d = now.AddDate(0, 0, -1)
		}
		clock, err := time.Parse("15:04:05", words[1])
		if err != nil {
			if clock, err = time.Parse("15:04", words[1]); err != nil {
				return time.Time{}, true, fmt.Errorf("%q is not a time of day (22:00 or 22:00:30)", words[1])
			}
		}
		y, m, dd := d.Date()
		return time.Date(y, m, dd, clock.Hour(), clock.Minute(), clock.Second(), 0, now.Location()), true, nil
	}
	if words[len(words)-1] != "ago" {
		return time.Time{}, false, nil
	}
	back := words[:len(words)-1]
	var count, unit string
	switch len(back) {
	case 1:
		// A Go duration (2h, 90m, 1h30m), else a count glued to its unit (3d, 2w).
		if d, err := time.ParseDuration(back[0]); err == nil {
			if d < 0 || d > maxBack {
				return time.Time{}, true, fmt.Errorf("%s is not a time in the last hundred years", back[0])
			}
			return now.Add(-d), true, nil
		}
		i := strings.IndexFunc(back[0], func(r rune) bool { return r < '0' || r > '9' })
		if i <= 0 {
			return time.Time{}, true, fmt.Errorf("%q is not a count and a unit", back[0])
		}
		count, unit = back[0][:i], back[0][i:]
	case 2:
		count, unit = back[0], back[1]
	default:
		return time.Time{}, true, fmt.Errorf("say one count and one unit before 'ago'")
	}
	n := 1
	if count != "a" && count != "an" {
		if n, err = strconv.Atoi(count); err != nil || n < 0 {
			return time.Time{}, true, fmt.Errorf("%q is not a count", count)
		}
	}
	step, days, ok := timeUnit(unit)
	if !ok {
		return time.Time{}, true, fmt.Errorf("%q is not a unit (seconds, minutes, hours, days or weeks)", unit)
	}
	if days > 0 {
		step = time.Duration(days) * 24 * time.Hour
	}
	if int64(n) > int64(maxBack/step) {
		return time.Time{}, true, fmt.Errorf("%d %s is not a time in the last hundred years", n, unit)
	}
	if days > 0 {
		// Calendar days, as yesterday: the same wall clock time.
		return now.AddDate(0, 0, -n*days), true, nil
	}
	return now.Add(-time.Duration(n) * step), true, nil
}

// timeUnit is the length of a unit of "N UNIT ago": a duration, or a
// number of calendar days.
func timeUnit(unit string) (step time.Duration, days int, ok bool) {
	switch unit {
	case "s", "sec", "secs", "second", "seconds":
		return time.Second, 0, true
	case "m", "min", "mins", "minute", "minutes":
		return time.Minute, 0, true
	case "h", "hr", "hrs", "hour", "hours":
		return time.Hour, 0, true
	case "d", "day", "days":
		return 0, 1, true
	case "w", "week", "weeks":
		return 0, 7, true
	}
	return 0, 0, false
}
