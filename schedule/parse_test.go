package schedule

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// days lists the days of 2026 in UTC a one-rule schedule runs on, as
// "Jan 4 02:00" lines, for rules whose days are easier checked than computed.
func runsIn(t *testing.T, rule string, from, to string) []string {
	t.Helper()
	s, err := Parse(rule, "UTC")
	if err != nil {
		t.Fatalf("Parse(%q): %v", rule, err)
	}
	a, _ := time.Parse("2006-01-02 15:04", from)
	b, _ := time.Parse("2006-01-02 15:04", to)
	var out []string
	for _, r := range s.Between(a, b) {
		out = append(out, r.Time.Format("Mon Jan 2 15:04 ")+string(r.Level))
	}
	return out
}

func TestParseRules(t *testing.T) {
	tests := []struct {
		rule     string
		from, to string
		want     string
	}{
		{"Sun 1st 02:00 full", "2026-01-01 00:00", "2026-04-01 00:00",
			"Sun Jan 4 02:00 full|Sun Feb 1 02:00 full|Sun Mar 1 02:00 full"},
		{"Sun 2nd-5th 02:00 differential", "2026-03-01 00:00", "2026-04-01 00:00",
			"Sun Mar 8 02:00 differential|Sun Mar 15 02:00 differential|Sun Mar 22 02:00 differential|Sun Mar 29 02:00 differential"},
		{"Mon-Sat 21:00 incremental", "2026-03-01 00:00", "2026-03-09 00:00",
			"Mon Mar 2 21:00 incremental|Tue Mar 3 21:00 incremental|Wed Mar 4 21:00 incremental|Thu Mar 5 21:00 incremental|Fri Mar 6 21:00 incremental|Sat Mar 7 21:00 incremental"},
		{"daily 03:30 incremental", "2026-03-01 00:00", "2026-03-03 12:00",
			"Sun Mar 1 03:30 incremental|Mon Mar 2 03:30 incremental|Tue Mar 3 03:30 incremental"},
		{"hourly at :15", "2026-03-01 00:00", "2026-03-01 03:00",
			"Sun Mar 1 00:15 incremental|Sun Mar 1 01:15 incremental|Sun Mar 1 02:15 incremental"},
		{"hourly", "2026-03-01 00:00", "2026-03-01 02:00",
			"Sun Mar 1 01:00 incremental|Sun Mar 1 02:00 incremental"},
		{"Sun 03:00 synthetic-full", "2026-03-01 00:00", "2026-03-09 00:00",
			"Sun Mar 1 03:00 synthetic-full|Sun Mar 8 03:00 synthetic-full"},
		{"Sun 03:00 virtualfull", "2026-03-01 00:00", "2026-03-02 00:00",
			"Sun Mar 1 03:00 synthetic-full"},
		{"hourly :00,:30 diff", "2026-03-01 00:00", "2026-03-01 01:00",
			"Sun Mar 1 00:30 differential|Sun Mar 1 01:00 differential"},
		{"1st day of month 01:00 full", "2026-01-15 00:00", "2026-04-01 00:00",
			"Sun Feb 1 01:00 full|Sun Mar 1 01:00 full"},
		{"last day of the month 23:00 full", "2026-01-15 00:00", "2026-04-01 00:00",
			"Sat Jan 31 23:00 full|Sat Feb 28 23:00 full|Tue Mar 31 23:00 full"},
		{"last Sun of month 04:00 FULL", "2026-01-01 00:00", "2026-04-01 00:00",
			"Sun Jan 25 04:00 full|Sun Feb 22 04:00 full|Sun Mar 29 04:00 full"},
		{"Jan,Jul 1st day 00:30 full", "2026-01-01 00:00", "2027-01-01 00:00",
			"Thu Jan 1 00:30 full|Wed Jul 1 00:30 full"},
		{"Nov-Feb 15 12:00 level=full", "2026-01-01 00:00", "2026-12-31 00:00",
			"Thu Jan 15 12:00 full|Sun Feb 15 12:00 full|Sun Nov 15 12:00 full|Tue Dec 15 12:00 full"},
		{"day 1-2 on Mon-Tue at 06:00", "2026-01-01 00:00", "2026-12-31 00:00",
			"Mon Feb 2 06:00 incremental|Mon Mar 2 06:00 incremental|Mon Jun 1 06:00 incremental|Tue Jun 2 06:00 incremental|Tue Sep 1 06:00 incremental|Mon Nov 2 06:00 incremental|Tue Dec 1 06:00 incremental"},
		{"Mon-Fri 12:00,18:00 07:00 incremental", "2026-03-06 00:00", "2026-03-10 00:00",
			"Fri Mar 6 07:00 incremental|Fri Mar 6 12:00 incremental|Fri Mar 6 18:00 incremental|Mon Mar 9 07:00 incremental|Mon Mar 9 12:00 incremental|Mon Mar 9 18:00 incremental"},
		{"Fri-Mon 1st 05:00", "2026-03-01 00:00", "2026-03-31 00:00",
			"Sun Mar 1 05:00 incremental|Mon Mar 2 05:00 incremental|Fri Mar 6 05:00 incremental|Sat Mar 7 05:00 incremental"},
		{"4th-last Wed 01:00", "2026-03-01 00:00", "2026-04-01 00:00",
			"Wed Mar 25 01:00 incremental"},
		{"5th Fri 01:00 full", "2026-01-01 00:00", "2026-06-01 00:00",
			"Fri Jan 30 01:00 full|Fri May 29 01:00 full"},
		{"Feb 29 day 01:00 full", "2025-01-01 00:00", "2029-01-01 00:00",
			"Tue Feb 29 01:00 full"},
		// cron's day rule: day 1 or any Monday.
		{"cron 0 2 1 * 1 full", "2026-03-01 00:00", "2026-03-17 00:00",
			"Sun Mar 1 02:00 full|Mon Mar 2 02:00 full|Mon Mar 9 02:00 full|Mon Mar 16 02:00 full"},
		{"cron */20 8-9 * * mon-fri", "2026-03-06 07:00", "2026-03-06 12:00",
			"Fri Mar 6 08:00 incremental|Fri Mar 6 08:20 incremental|Fri Mar 6 08:40 incremental|Fri Mar 6 09:00 incremental|Fri Mar 6 09:20 incremental|Fri Mar 6 09:40 incremental"},
		{"cron 30 1 * Jan,Jul * level=diff", "2026-01-30 00:00", "2026-07-02 00:00",
			"Fri Jan 30 01:30 differential|Sat Jan 31 01:30 differential|Wed Jul 1 01:30 differential"},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			got := strings.Join(runsIn(t, tt.rule, tt.from, tt.to), "|")
			if got != tt.want {
				t.Errorf("runs of %q\n got %s\nwant %s", tt.rule, got, tt.want)
			}
		})
	}
}

func TestParseErrorsSayWhere(t *testing.T) {
	tests := []struct{ text, want string }{
		{"Sun 2nd-9th 02:00 differential", `column 5: "2nd-9th": a week of the month is 1st..5th or last`},
		{"Sun 1st,7th 02:00", `column 9: "7th": a week of the month is 1st..5th or last`},
		{"Sun 1st 25:00 full", `column 9: "25:00": a time is HH:MM, hours 00 to 23`},
		{"Sun 1st 02:7 full", `column 9: "02:7": a time is HH:MM, minutes 00 to 59`},
		{"Sun 02:00 full incremental", `column 16: "incremental": a rule has one level (this one already says full): write a second rule for a second level`},
		{"Sun full", `column 9: say when it runs: add a time such as 02:00 (or hourly)`},
		{"Sunny 02:00", `column 1: "Sunny": not a weekday, month, week of the month (1st..5th, last), day of the month, time (HH:MM) or level`},
		{"Mon,,Wed 02:00", `column 5: an empty item in a list: remove the extra comma`},
		{"Mon,Jan 02:00", `column 5: "Jan": a month in a list of weekdays: write it as its own word`},
		{"weekly 02:00", `column 1: "weekly": say which day it runs on, such as "Sun 02:00", "1st day of month 02:00" or "Jan 1st day 02:00"`},
		{"daily Mon 02:00", `column 1: "daily": daily means every day, and "Mon" names days: drop one of them`},
		{"hourly 02:15", `column 8: "02:15": an hourly rule takes minutes past the hour, such as :15`},
		{"Mon :15", `column 5: ":15": minutes past the hour need hourly ("hourly at :15"); a time of day is HH:MM`},
		{"Feb 30 day 02:00", `column 1: "Feb 30 day 02:00": no day of any year matches it: check the days of the month against the weeks, weekdays and months`},
		{"32 day 02:00", `column 1: "32": a day of the month is 1..31 (or 1st..31st, or last)`},
		{"20-10 02:00", `column 1: "20-10": a range runs from the smaller to the larger`},
		{"cron 0 2 * *", `column 13: cron takes five fields: minute hour day-of-month month weekday`},
		{"cron 0 25 * * * full", `column 6: "0 25 * * *": end of range (25) above maximum (23): 25`},
		{"cron , 0 1 1 0", `column 6: an empty item in a list: remove the extra comma`},
		{"cron 0 2,,3 * * *", `column 10: an empty item in a list: remove the extra comma`},
		{"cron 0 2 * * 1,", `column 16: an empty item in a list: remove the extra comma`},
		{"cron 0 2 * * * full weekly", `column 21: "weekly": after the five cron fields only the level may follow (full, differential or incremental)`},
		{"Mon 02:00 cron 0 2 * * *", `column 11: "cron": a cron rule starts with cron and has nothing before it: write it on its own line`},
		{"02:00,:15 Mon", `column 7: ":15": a list of times is all HH:MM or all :MM`},
		{"Mon of 02:00", `column 5: "of": "of" goes in "of month" ("last Sun of month", "1st day of month")`},
	}
	for _, tt := range tests {
		_, err := ParseRule(tt.text)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("ParseRule(%q) = %v, want a *SyntaxError", tt.text, err)
			continue
		}
		if err.Error() != tt.want {
			t.Errorf("ParseRule(%q)\n got %s\nwant %s", tt.text, err, tt.want)
		}
	}
}

func TestParseScheduleNamesTheLine(t *testing.T) {
	_, err := Parse("# nightly\nMon-Sat 21:00 incremental\n\nSun 2nd-9th 02:00 differential # weekly\n", "UTC")
	want := `line 4, column 5: "2nd-9th": a week of the month is 1st..5th or last`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
	if _, err := Parse("  # nothing\n", "UTC"); !errors.Is(err, ErrEmpty) {
		t.Fatalf("an empty schedule: got %v, want ErrEmpty", err)
	}
	_, err = Parse("daily 02:00", "Europe/Nowhere")
	var ze *ZoneError
	if !errors.As(err, &ze) || ze.Zone != "Europe/Nowhere" || !strings.Contains(err.Error(), `time zone "Europe/Nowhere" is not known`) {
		t.Fatalf("an unknown zone: got %v", err)
	}
}
