package retention

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/schedule"
)

// chainer hands out IDs and parents the way the catalog does: a full has
// none, a differential chains onto the newest complete full, an incremental
// onto the newest complete backup of any level.
type chainer struct {
	nextID            uint64
	lastFull, lastAny map[Group]uint64
	client, fileSet   string
	backups           []Backup
	states            map[uint64]State
}

func newChainer(client, fileSet string, firstID uint64) *chainer {
	return &chainer{nextID: firstID, lastFull: map[Group]uint64{}, lastAny: map[Group]uint64{}, client: client, fileSet: fileSet}
}

func (c *chainer) add(t time.Time, l schedule.Level, state State) uint64 {
	g := Group{c.client, c.fileSet}
	b := Backup{ID: c.nextID, Time: t, Level: l, Client: c.client, FileSet: c.fileSet, State: state}
	c.nextID++
	switch l {
	case schedule.Differential:
		b.Parent = c.lastFull[g]
	case schedule.Incremental:
		b.Parent = c.lastAny[g]
	}
	if state == Complete {
		c.lastAny[g] = b.ID
		if l == schedule.Full {
			c.lastFull[g] = b.ID
		}
	}
	c.backups = append(c.backups, b)
	return b.ID
}

func day(d int) time.Time { return time.Date(2026, 1, 1, 21, 0, 0, 0, time.UTC).AddDate(0, 0, d) }

func one(p Policy) func(Group) (Policy, bool) {
	return func(Group) (Policy, bool) { return p, true }
}

func render(ds []Decision) string {
	var b strings.Builder
	for i := range ds {
		d := &ds[i]
		verdict := "expire"
		if d.Keep {
			verdict = "keep"
		}
		fmt.Fprintf(&b, "%d %s %s %s: %s\n", d.ID, d.Time.Format("01-02"), d.Level, verdict, d.Why())
	}
	return b.String()
}

func TestPlanRulesAndReasons(t *testing.T) {
	c := newChainer("web1", "etc", 100)
	// Jan 2 (Fri) full, then incrementals, a differential on Thursday Jan 8.
	c.add(day(1), schedule.Full, Complete)
	for d := 2; d <= 10; d++ {
		l := schedule.Incremental
		if d == 7 {
			l = schedule.Differential
		}
		c.add(day(d), l, Complete)
	}
	c.add(day(11), schedule.Incremental, Aborted)
	c.add(day(12), schedule.Incremental, Writing)
	got := render(Plan(c.backups, one(Policy{Rules: Rules{Last: 2}, Levels: map[schedule.Level]Rules{
		schedule.Differential: {Weekly: 4},
	}})))
	want := `100 01-02 full keep: needed by retained incremental 111
101 01-03 incremental expire: no rule keeps it
102 01-04 incremental expire: no rule keeps it
103 01-05 incremental expire: no rule keeps it
104 01-06 incremental expire: no rule keeps it
105 01-07 incremental expire: no rule keeps it
106 01-08 differential keep: differential keep-weekly 4: the newest of week 2026-W02; needed by retained incremental 111
107 01-09 incremental keep: needed by retained incremental 111
108 01-10 incremental keep: keep-last 2; needed by retained incremental 111
109 01-11 incremental keep: keep-last 2; needed by retained incremental 111
110 01-12 incremental expire: aborted: it never became a restore point
111 01-13 incremental keep: still being written
`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestPlanBuckets(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	c := newChainer("db1", "pg", 1)
	// Two restore points a day, fulls only, from Mon Dec 29 2025 for 40 days.
	start := time.Date(2025, 12, 29, 8, 0, 0, 0, berlin)
	for d := range 40 {
		c.add(start.AddDate(0, 0, d), schedule.Full, Complete)
		c.add(start.AddDate(0, 0, d).Add(12*time.Hour), schedule.Full, Complete)
	}
	ds := Plan(c.backups, one(Policy{Rules: Rules{Daily: 3, Weekly: 2, Monthly: Unlimited, Yearly: 1, Within: 20 * time.Hour}, Location: berlin}))
	var kept []string
	for i := range ds {
		if ds[i].Keep {
			kept = append(kept, fmt.Sprintf("%s %s", ds[i].Time.In(berlin).Format("2006-01-02 15h"), ds[i].Why()))
		}
	}
	want := []string{
		"2025-12-31 20h keep-monthly unlimited: the newest of month 2025-12",
		"2026-01-31 20h keep-monthly unlimited: the newest of month 2026-01",
		"2026-02-01 20h keep-weekly 2: the newest of week 2026-W05",
		"2026-02-04 20h keep-daily 3: the newest of day 2026-02-04",
		"2026-02-05 20h keep-daily 3: the newest of day 2026-02-05",
		"2026-02-06 08h keep-within 20 hours",
		"2026-02-06 20h keep-within 20 hours; keep-daily 3: the newest of day 2026-02-06; keep-weekly 2: the newest of week 2026-W06; keep-monthly unlimited: the newest of month 2026-02; keep-yearly 1: the newest of year 2026",
	}
	if strings.Join(kept, "\n") != strings.Join(want, "\n") {
		t.Errorf("kept\n%s\nwant\n%s", strings.Join(kept, "\n"), strings.Join(want, "\n"))
	}
}

func TestHoldKeepsTheBackupAndItsChain(t *testing.T) {
	c := newChainer("web1", "etc", 1)
	c.add(day(0), schedule.Full, Complete)
	c.add(day(1), schedule.Incremental, Complete)
	held := c.add(day(2), schedule.Incremental, Complete)
	c.add(day(3), schedule.Full, Complete)
	c.backups[held-1].Held = true
	got := render(Plan(c.backups, one(Policy{Rules: Rules{Last: 1}})))
	want := `1 01-01 full keep: needed by retained incremental 3
2 01-02 incremental keep: needed by retained incremental 3
3 01-03 incremental keep: on legal hold
4 01-04 full keep: keep-last 1
`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestNoPolicyOrNoRuleKeepsEverything(t *testing.T) {
	c := newChainer("web1", "etc", 1)
	c.add(day(0), schedule.Full, Complete)
	c.add(day(1), schedule.Incremental, Aborted)
	for _, policies := range []func(Group) (Policy, bool){
		func(Group) (Policy, bool) { return Policy{}, false },
		one(Policy{}),
	} {
		for _, d := range Plan(c.backups, policies) {
			if !d.Keep || !strings.Contains(d.Why(), "no retention rule covers") {
				t.Errorf("backup %d: keep %v %q, want kept for lack of a rule", d.ID, d.Keep, d.Why())
			}
		}
	}
	if err := (Policy{}).Validate(); err != ErrKeepsNothing {
		t.Errorf("Validate of an empty policy = %v, want ErrKeepsNothing", err)
	}
	var re *RuleError
	err := (Policy{Levels: map[schedule.Level]Rules{schedule.Full: {Daily: -2}}}).Validate()
	if !errors.As(err, &re) || re.Level != schedule.Full || re.Rule != "keep-daily" ||
		err.Error() != "full keep-daily: -2 is not a count: use a number of periods, or unlimited" {
		t.Errorf("Validate of a negative count = %v", err)
	}
	if err := (Policy{Rules: Rules{Within: -time.Hour}}).Validate(); err == nil || err.Error() != "keep-within: -1h0m0s is negative: use a positive duration" {
		t.Errorf("Validate of a negative duration = %v", err)
	}
	if err := (Policy{Levels: map[schedule.Level]Rules{"weekly": {Last: 1}}}).Validate(); !errors.As(err, &re) || re.Level != "weekly" {
		t.Errorf("Validate of an unknown level = %v", err)
	}
	if err := typicalPolicy.Validate(); err != nil {
		t.Errorf("Validate of the typical policy = %v", err)
	}
}

func TestMissingBaseIsReported(t *testing.T) {
	bs := []Backup{
		{ID: 5, Time: day(1), Level: schedule.Incremental, Parent: 4, Client: "a", FileSet: "f", State: Complete},
		{ID: 6, Time: day(2), Level: schedule.Incremental, Parent: 5, Client: "a", FileSet: "f", State: Complete},
	}
	ds := Plan(bs, one(Policy{Rules: Rules{Last: 1}}))
	if ds[0].MissingBase != 4 || !strings.Contains(ds[0].Why(), "its base 4 is missing") || !ds[0].Keep {
		t.Errorf("got %+v %q", ds[0], ds[0].Why())
	}
}

// TestParentCycleEnds holds the walk of a chain to the group's size: a catalog
// that is wrong (a cycle of parents) must not hang the expiry pass.
func TestParentCycleEnds(t *testing.T) {
	bs := []Backup{
		{ID: 1, Time: day(1), Level: schedule.Incremental, Parent: 2, Client: "a", FileSet: "f", State: Complete},
		{ID: 2, Time: day(2), Level: schedule.Incremental, Parent: 1, Client: "a", FileSet: "f", State: Complete},
	}
	ds := Plan(bs, one(Policy{Rules: Rules{Last: 1}}))
	if !ds[0].Keep || !ds[1].Keep {
		t.Errorf("got %s", render(ds))
	}
}

func TestPlanOrderIsDeterministic(t *testing.T) {
	var bs []Backup
	for _, client := range []string{"b", "a"} {
		for _, fs := range []string{"y", "x"} {
			c := newChainer(client, fs, 1)
			c.add(day(1), schedule.Full, Complete)
			c.add(day(1), schedule.Full, Complete) // same time: the ID orders them
			bs = append(bs, c.backups...)
		}
	}
	ds := Plan(bs, one(Policy{Rules: Rules{Last: 1}}))
	var got []string
	for _, d := range ds {
		got = append(got, fmt.Sprintf("%s/%s/%d/%v", d.Client, d.FileSet, d.ID, d.Keep))
	}
	want := "a/x/1/false a/x/2/true a/y/1/false a/y/2/true b/x/1/false b/x/2/true b/y/1/false b/y/2/true"
	if strings.Join(got, " ") != want {
		t.Errorf("got %s\nwant %s", strings.Join(got, " "), want)
	}
}

// TestInvalidCountKeepsMore holds Plan to err towards keeping when a policy
// that Validate would refuse reaches it: a count below -1 keeps every period
// instead of none.
func TestInvalidCountKeepsMore(t *testing.T) {
	c := newChainer("web1", "etc", 1)
	for d := range 5 {
		c.add(day(d), schedule.Full, Complete)
	}
	for _, d := range Plan(c.backups, one(Policy{Rules: Rules{Daily: -5}})) {
		if !d.Keep {
			t.Errorf("backup %d expired under keep-daily -5", d.ID)
		}
	}
}

// Longest is the longest span any rule may keep a point for, and says
// when no rule gives one.
func TestLongest(t *testing.T) {
	day := 24 * time.Hour
	for _, c := range []struct {
		p    Policy
		want time.Duration
		ok   bool
	}{
		{Policy{Rules: Rules{Within: 10 * day}}, 10 * day, true},
		{Policy{Rules: Rules{Daily: 7, Weekly: 4}}, 5 * 7 * day, true},
		{Policy{Rules: Rules{Daily: 7}, Levels: map[schedule.Level]Rules{schedule.Full: {Monthly: 12}}}, 13 * 31 * day, true},
		{Policy{Rules: Rules{Last: 5, Yearly: Unlimited}}, 0, false},
		{Policy{Rules: Rules{Hourly: 24, Last: 3}}, 25 * time.Hour, true},
	} {
		if d, ok := c.p.Longest(); d != c.want || ok != c.ok {
			t.Errorf("%+v: %s, %v; want %s, %v", c.p, d, ok, c.want, c.ok)
		}
	}
}
