package rpo

import (
	"errors"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type point struct {
	id uint64
	at time.Time
}

func lookup(points map[string]point) Latest {
	return func(client, fileSet string) (uint64, time.Time, bool, error) {
		p, ok := points[client+"/"+fileSet]
		return p.id, p.at, ok, nil
	}
}

func TestAssess(t *testing.T) {
	day := 24 * time.Hour
	targets := []Target{
		{Client: "web", Policy: "nightly", FileSet: "fs1", RPO: 26 * time.Hour, Since: t0.Add(-30 * day)},
		{Client: "db", Policy: "nightly", FileSet: "fs1", RPO: 26 * time.Hour, Since: t0.Add(-30 * day)},
		{Client: "db", Policy: "hourly", FileSet: "fs2", RPO: 2 * time.Hour, Since: t0.Add(-time.Hour)},
		{Client: "mail", Policy: "nightly", FileSet: "fs1", RPO: 26 * time.Hour, Since: t0.Add(-27 * time.Hour)},
		{Client: "tmp", Policy: "best-effort", FileSet: "fs3"},
	}
	points := map[string]point{
		"web/fs1": {7, t0.Add(-26 * time.Hour)}, // exactly the RPO: not a breach
		"db/fs1":  {9, t0.Add(-26*time.Hour - time.Second)},
		"db/fs2":  {0, time.Time{}},
	}
	delete(points, "db/fs2")
	sts, err := Assess(t0, targets, lookup(points))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		client, policy string
		backup         uint64
		age            time.Duration
		breach         bool
	}{
		{"db", "hourly", 0, time.Hour, false},                  // none yet, applies since 1 h
		{"db", "nightly", 9, 26*time.Hour + time.Second, true}, // one second past
		{"mail", "nightly", 0, 27 * time.Hour, true},           // none, since 27 h
		{"web", "nightly", 7, 26 * time.Hour, false},           // at the bound
	}
	if len(sts) != len(want) {
		t.Fatalf("got %d statuses, want %d (a target without an RPO is left out): %+v", len(sts), len(want), sts)
	}
	for i, w := range want {
		s := sts[i]
		if s.Client != w.client || s.Policy != w.policy || s.Backup != w.backup || s.Age != w.age || s.Breach != w.breach {
			t.Errorf("status %d = %s/%s backup %d age %v breach %v, want %+v", i, s.Client, s.Policy, s.Backup, s.Age, s.Breach, w)
		}
	}
	if b := Breaches(sts); len(b) != 2 || b[0].Client != "db" || b[1].Client != "mail" {
		t.Errorf("breaches = %+v", b)
	}
}

func TestAssessPassesTheLookupError(t *testing.T) {
	bad := errors.New("catalog closed")
	_, err := Assess(t0, []Target{{Client: "c", RPO: time.Hour}}, func(string, string) (uint64, time.Time, bool, error) {
		return 0, time.Time{}, false, bad
	})
	if !errors.Is(err, bad) {
		t.Fatalf("err = %v, want the lookup's", err)
	}
}

func TestAssessNeverGivesANegativeAge(t *testing.T) {
	// A backup stamped by a node whose clock runs ahead.
	sts, err := Assess(t0, []Target{{Client: "c", Policy: "p", RPO: time.Hour}}, lookup(map[string]point{"c/": {1, t0.Add(time.Minute)}}))
	if err != nil || len(sts) != 1 || sts[0].Age != 0 || sts[0].Breach {
		t.Fatalf("got %+v, %v", sts, err)
	}
}

func TestTrackerSaysABreachOnceWhenItBeginsAndOnceWhenItEnds(t *testing.T) {
	var tr Tracker
	st := func(client string, breach bool) Status {
		return Status{Target: Target{Client: client, Policy: "p"}, Breach: breach}
	}
	steps := []struct {
		in           []Status
		began, ended []string
	}{
		{[]Status{st("a", false), st("b", true)}, []string{"b"}, nil},
		{[]Status{st("a", false), st("b", true)}, nil, nil},
		{[]Status{st("a", true), st("b", true)}, []string{"a"}, nil},
		{[]Status{st("a", true), st("b", false)}, nil, []string{"b"}},
		{[]Status{st("b", false)}, nil, []string{"a"}}, // a's policy went away
		{[]Status{st("a", true)}, []string{"a"}, nil},
	}
	names := func(sts []Status) []string {
		var out []string
		for _, s := range sts {
			out = append(out, s.Client)
		}
		return out
	}
	for i, s := range steps {
		began, ended := tr.Update(s.in)
		if g, w := names(began), s.began; !slices.Equal(g, w) {
			t.Errorf("step %d: began %v, want %v", i, g, w)
		}
		if g, w := names(ended), s.ended; !slices.Equal(g, w) {
			t.Errorf("step %d: ended %v, want %v", i, g, w)
		}
	}
}

// A Tracker given the breaches alerted already (the catalog's, on a new
// leader) does not say them again, and says their end, with what it was
// given when the target went away.
func TestTrackerRemembersBreachesKeptElsewhere(t *testing.T) {
	var tr Tracker
	tr.Remember(Status{Target: Target{Client: "a", Policy: "p", RPO: time.Hour}, LastGood: t0, Breach: true})
	tr.Remember(Status{Target: Target{Client: "b", Policy: "p", RPO: time.Hour}, Breach: true})
	began, ended := tr.Update([]Status{{Target: Target{Client: "a", Policy: "p"}, LastGood: t0, Breach: true}})
	if len(began) != 0 || len(ended) != 1 || ended[0].Client != "b" || ended[0].RPO != time.Hour {
		t.Fatalf("began %+v, ended %+v", began, ended)
	}
	began, ended = tr.Update(nil)
	if len(began) != 0 || len(ended) != 1 || ended[0].Client != "a" || !ended[0].LastGood.Equal(t0) {
		t.Fatalf("began %+v, ended %+v", began, ended)
	}
}
