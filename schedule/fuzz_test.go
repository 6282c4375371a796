package schedule

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds schedule text from outside the process (a policy file, an
// admin's command line) to Parse: it must return a schedule or an error that
// points inside the text, never panic, and a schedule it returns must produce
// runs in strictly ascending order with valid levels.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"Sun 1st 02:00 full\nSun 2nd-5th 02:00 differential\nMon-Sat 21:00 incremental",
		"daily 03:30 incremental", "hourly at :15", "1st day of month 01:00 full",
		"last Sun of month 04:00 full", "Jan,Jul 1st day 00:30 full", "cron */30 8-18 * * 1-5 incremental",
		"Sun 2nd-9th 02:00 differential", "Fri-Mon 4th-last 23:59", "Feb 29 day 00:00 full",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := Parse(text, "Europe/Berlin")
		if err != nil {
			var se *SyntaxError
			switch {
			case errors.As(err, &se):
				lines := strings.Split(text, "\n")
				if se.Line < 1 || se.Line > len(lines) || se.Column < 1 || se.Column > len(lines[se.Line-1])+1 {
					t.Fatalf("error %q points outside the text", err)
				}
			case !errors.Is(err, ErrEmpty):
				t.Fatalf("Parse returned %T %v, want a *SyntaxError or ErrEmpty", err, err)
			}
			return
		}
		from := time.Date(2026, 3, 28, 0, 0, 0, 0, time.UTC)
		prev := from
		for range 50 {
			r, ok := s.Next(prev)
			if !ok {
				t.Fatalf("a parsed schedule has no run after %v", prev)
			}
			if !r.Time.After(prev) || !r.Level.Valid() || r.Rule < 0 || r.Rule >= len(s.rules) {
				t.Fatalf("Next(%v) = %+v", prev, r)
			}
			prev = r.Time
		}
	})
}
