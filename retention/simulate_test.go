package retention

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/schedule"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestSimulate90Days runs one policy for 90 days on computed times, with the
// scheduler's decisions (catch-up, promotion) and the daily expiry pass made
// by this package and the schedule package as the leader will make them:
//
//   - monthly fulls on the first Sunday, differentials on the other Sundays,
//     incrementals Monday to Saturday, all at 02:30 Europe/Berlin (so the
//     5th Sunday of March, the spring-forward day, runs at 03:00);
//   - retention: incrementals 14 days, differentials 8 weeks, fulls 12
//     months; a full is due when the last one is over 40 days old;
//   - a legal hold on the incremental of 10 March from 12 March to 16 April;
//   - the leader down from 1 April 12:00 to 8 April 03:10, so the full of 5
//     April is missed and comes back by promotion.
//
// Every event goes to testdata/simulate90.golden (go test -run
// TestSimulate90Days -update rewrites it); the invariants are checked on the
// way, independently of the golden list.
func TestSimulate90Days(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	s, err := schedule.Parse("Sun 1st 02:30 full\nSun 2nd-5th 02:30 differential\nMon-Sat 02:30 incremental", "Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	policy := Policy{Location: berlin, Levels: map[schedule.Level]Rules{
		schedule.Incremental:  {Within: 14 * 24 * time.Hour},
		schedule.Differential: {Weekly: 8},
		schedule.Full:         {Monthly: 12},
	}}
	if err := policy.Validate(); err != nil {
		t.Fatal(err)
	}
	limits := schedule.Limits{MaxFullAge: 40 * 24 * time.Hour}
	const window = time.Hour

	at := func(m time.Month, d, h, min int) time.Time { return time.Date(2026, m, d, h, min, 0, 0, berlin) }
	start, end := at(time.February, 1, 0, 0), at(time.May, 2, 0, 0)
	downFrom, downTo := at(time.April, 1, 12, 0), at(time.April, 8, 3, 10)
	holdOn, holdOff := at(time.March, 12, 9, 0), at(time.April, 16, 9, 0)
	heldRun := at(time.March, 10, 2, 30)

	var events []string
	logf := func(when time.Time, format string, args ...any) {
		events = append(events, when.Format("2006-01-02 15:04 ")+fmt.Sprintf("%-4s  ", when.Format("MST"))+fmt.Sprintf(format, args...))
	}
	c := newChainer("web1", "policy-web", 1)
	catalog := map[uint64]Backup{} // what the catalog still holds
	held := map[uint64]bool{}
	accounted := map[time.Time]string{} // each scheduled run: "run" or "missed"
	last := start                       // the policy's creation, then the newest run recorded
	var lastFull, lastDiff time.Time

	account := func(r schedule.Run, what string) {
		if prev, dup := accounted[r.Time]; dup {
			t.Fatalf("the run of %s was %s and now %s", r.Time, prev, what)
		}
		accounted[r.Time] = what
	}

	for now := start; !now.After(end); now = now.Add(15 * time.Minute) {
		if !now.Before(downFrom) && now.Before(downTo) {
			continue // no leader: nothing is decided
		}
		if now.Equal(holdOn) || now.Equal(holdOff) {
			for id, b := range catalog {
				if b.Time.Equal(heldRun) {
					held[id] = now.Equal(holdOn)
					verb := map[bool]string{true: "hold", false: "release"}[held[id]]
					logf(now, "%-7s backup %d (%s of %s)", verb, id, b.Level, b.Time.Format("01-02"))
				}
			}
		}

		cu := s.CatchUp(last, now, window)
		for _, r := range cu.Missed {
			account(r, "missed")
			logf(r.Time, "missed  %s (rule %d), noticed at %s", r.Level, r.Rule, now.Format("01-02 15:04"))
			last = r.Time
		}
		if cu.Due {
			r := cu.Run
			account(r, "run")
			level, why := schedule.Promote(r.Level, r.Time, schedule.Chain{LastFull: lastFull, LastDifferential: lastDiff}, limits)
			id := c.add(r.Time, level, Complete)
			b := c.backups[len(c.backups)-1]
			catalog[id] = b
			switch level {
			case schedule.Full:
				lastFull = r.Time
			case schedule.Differential:
				lastDiff = r.Time
			}
			line := fmt.Sprintf("run     %s (rule %d) as backup %d, base %d", level, r.Rule, id, b.Parent)
			if why != "" {
				line += fmt.Sprintf(", asked %s: %s", r.Level, why)
			}
			logf(r.Time, "%s", line)
			last = r.Time
		}

		// The expiry pass, daily at noon.
		if now.Hour() == 12 && now.Minute() == 0 {
			var all []Backup
			for _, b := range catalog {
				b.Held = held[b.ID]
				all = append(all, b)
			}
			for _, d := range Plan(all, one(policy)) {
				if d.Held && !d.Keep {
					t.Fatalf("%s: held backup %d expired", now, d.ID)
				}
				if !d.Keep {
					delete(catalog, d.ID)
					logf(now, "expire  backup %d (%s of %s): %s", d.ID, d.Level, d.Time.Format("01-02"), d.Why())
				}
			}
			for _, b := range catalog {
				if _, ok := catalog[b.Parent]; b.Parent != 0 && !ok {
					t.Fatalf("%s: backup %d (%s) is left without its base %d", now, b.ID, b.Level, b.Parent)
				}
			}
		}
	}

	// Every scheduled run in the 90 days was run or missed, exactly once
	// (account refuses a second time); the missed ones are the downtime's,
	// but for its newest, which the catch-up ran.
	caughtUp := s.Between(downFrom, downTo)
	for _, r := range s.Between(start, end) {
		what, ok := accounted[r.Time]
		if !ok {
			t.Errorf("the run of %s was neither run nor missed", r.Time)
		}
		missed := !r.Time.Before(downFrom) && r.Time.Before(downTo) && !r.Time.Equal(caughtUp[len(caughtUp)-1].Time)
		if (what == "missed") != missed {
			t.Errorf("the run of %s was %s, want missed %v", r.Time, what, missed)
		}
	}
	if len(accounted) != len(s.Between(start, end)) {
		t.Errorf("%d runs accounted for, the schedule has %d", len(accounted), len(s.Between(start, end)))
	}

	// What is left, and why, as the rules say: every incremental of the
	// last 14 days, the newest differential of each week, every full.
	var all []Backup
	for _, b := range catalog {
		all = append(all, b)
	}
	final := Plan(all, one(policy))
	newest := final[len(final)-1].Time
	events = append(events, "", "kept at the end:")
	weeks := map[int]bool{}
	for _, d := range final {
		events = append(events, fmt.Sprintf("backup %d %s of %s: %s", d.ID, d.Level, d.Time.Format("2006-01-02 15:04 MST"), d.Why()))
		if d.Level == schedule.Differential {
			_, w := d.Time.ISOWeek()
			weeks[w] = true
		}
	}
	for _, b := range c.backups {
		_, kept := catalog[b.ID]
		if b.Level == schedule.Incremental && !b.Time.Before(newest.Add(-14*24*time.Hour)) && !kept {
			t.Errorf("incremental %d of %s is within 14 days of the newest and was expired", b.ID, b.Time)
		}
		if b.Level == schedule.Full && !kept {
			t.Errorf("full %d of %s was expired: 90 days hold fewer than 12 months", b.ID, b.Time)
		}
	}
	if len(weeks) != 8 {
		t.Errorf("differentials of %d weeks kept, want 8", len(weeks))
	}

	got := strings.Join(events, "\n") + "\n"
	golden := filepath.Join("testdata", "simulate90.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("the simulation differs from %s; diff it with -update and git diff:\n%s", golden, firstDiff(got, string(want)))
	}
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d\n got %s\nwant %s", i+1, gl, wl)
		}
	}
	return ""
}
