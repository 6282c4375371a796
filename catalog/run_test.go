package catalog

import (
	"github.com/cairnbackup/cairn/fileindex"
	"strings"
	"testing"
	"time"
)

// TestRunIsRecordedOnce: a second record of the same run (another leader,
// a retry) is refused and changes nothing, a record of several runs is all
// or none, and a starting run moves on once.
func TestRunIsRecordedOnce(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	at := time.Date(2026, 3, 2, 21, 0, 0, 0, time.UTC)
	run := Run{Policy: "nightly", Client: "web1", Scheduled: at, Asked: LevelIncremental, Level: LevelFull,
		Promotion: "promoted to full: no full of this fileset yet", State: RunStarting}
	c.must(&Command{Op: OpRecordRuns, Runs: &RunsRecord{Runs: []Run{run}}})

	other := run
	other.Level = LevelIncremental
	e := c.refused(CodeAlreadyExists, &Command{Op: OpRecordRuns, Runs: &RunsRecord{Runs: []Run{other}}})
	if !strings.Contains(e.Msg, "already recorded") {
		t.Fatalf("refusal %q", e.Msg)
	}
	got, err := c.s.Run(run.Key())
	if err != nil {
		t.Fatal(err)
	}
	if got.Level != LevelFull || got.State != RunStarting || got.Promotion == "" {
		t.Fatalf("run after the refused second record: %+v", got)
	}

	// All or none: a missed run with the one already recorded is refused
	// whole, so the missed one is not recorded either.
	missed := Run{Policy: "nightly", Client: "web1", Scheduled: at.Add(-24 * time.Hour), State: RunMissed, Reason: "down"}
	c.refused(CodeAlreadyExists, &Command{Op: OpRecordRuns, Runs: &RunsRecord{Runs: []Run{missed, run}}})
	if _, err := c.s.Run(missed.Key()); err == nil {
		t.Fatal("the missed run of a refused record was kept")
	}

	up := &RunUpdate{Key: run.Key(), State: RunDispatched, JobID: 7}
	c.must(&Command{Op: OpUpdateRun, RunUpdate: up})
	c.must(&Command{Op: OpUpdateRun, RunUpdate: up}) // the same again: a new leader finishing it
	c.refused(CodeWrongState, &Command{Op: OpUpdateRun, RunUpdate: &RunUpdate{Key: run.Key(), State: RunDispatched, JobID: 8}})
	c.refused(CodeNotFound, &Command{Op: OpUpdateRun, RunUpdate: &RunUpdate{Key: missed.Key(), State: RunDispatched, JobID: 8}})
	c.refused(CodeInvalidArgument, &Command{Op: OpRecordRuns, Runs: &RunsRecord{Runs: []Run{{Policy: "nightly", Client: "web1", Scheduled: at.Add(time.Hour), State: RunDispatched}}}})

	last, err := c.s.LastRun("nightly", "web1")
	if err != nil || last == nil || last.JobID != 7 || last.State != RunDispatched || !last.Scheduled.Equal(at) {
		t.Fatalf("last run %+v, %v", last, err)
	}
	if none, err := c.s.LastRun("nightly", "web"); err != nil || none != nil {
		t.Fatalf("last run of a client whose name is a prefix of another: %+v, %v", none, err)
	}
	c.must(&Command{Op: OpRecordRuns, Runs: &RunsRecord{Runs: []Run{missed}}})
	runs, err := c.s.Runs(RunFilter{Policy: "nightly"})
	if err != nil || len(runs) != 2 || !runs[0].Scheduled.Equal(at) || runs[1].State != RunMissed {
		t.Fatalf("runs %+v, %v", runs, err)
	}
	if RunRequestID(run.Key()) == RunRequestID(missed.Key()) || !strings.HasPrefix(RunRequestID(run.Key()), "run-") {
		t.Fatal("run request ids")
	}
}

// TestChainOfStopsAtTheFull: the chain a run builds on is the newest full
// of the file set and the newest differential after it.
func TestChainOfStopsAtTheFull(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	entries := []fileindex.Entry{file("/srv/a", 1)}
	full := c.backup(LevelFull, entries)
	c.backup(LevelDifferential, entries)
	diff := c.backup(LevelDifferential, entries)
	c.backup(LevelIncremental, entries)
	ch, err := c.s.ChainOf("web1", FileSetOf([]string{"/srv"}, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	fb, _ := c.s.Backup(full)
	db, _ := c.s.Backup(diff)
	if !ch.LastFull.Equal(fb.StartTime) || !ch.LastDifferential.Equal(db.StartTime) {
		t.Fatalf("chain %+v, full at %s, differential at %s", ch, fb.StartTime, db.StartTime)
	}
	if ch, err := c.s.ChainOf("web1", FileSetOf([]string{"/etc"}, nil), nil); err != nil || !ch.LastFull.IsZero() {
		t.Fatalf("chain of another file set: %+v, %v", ch, err)
	}
	// A policy's chain lies in its pools: a full in another pool is no
	// base of it, as createJob will not take it for one.
	if ch, err := c.s.ChainOf("web1", FileSetOf([]string{"/srv"}, nil), []string{"Weekly"}); err != nil || !ch.LastFull.IsZero() {
		t.Fatalf("chain in a pool that holds none of it: %+v, %v", ch, err)
	}
	if ch, err := c.s.ChainOf("web1", FileSetOf([]string{"/srv"}, nil), []string{"Weekly", fb.Pool}); err != nil || !ch.LastFull.Equal(fb.StartTime) {
		t.Fatalf("chain in the policy's pools: %+v, %v", ch, err)
	}
}

// TestRunsAreForgotten: a record that says so drops the runs of its
// policies and clients scheduled before a time, and never the newest of
// each, nor another client's.
func TestRunsAreForgotten(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	at := time.Date(2026, 3, 1, 21, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	rec := func(client string, when time.Time, forget time.Time) {
		t.Helper()
		c.must(&Command{Op: OpRecordRuns, Runs: &RunsRecord{ForgetBefore: forget, Runs: []Run{
			{Policy: "nightly", Client: client, Scheduled: when, State: RunSkipped, Reason: "test"}}}})
	}
	for i := range 5 {
		rec("web1", at.Add(time.Duration(i)*day), time.Time{})
		rec("web2", at.Add(time.Duration(i)*day), time.Time{})
	}
	// Keep three days: the runs of web1 before day 3 go, web2's stay.
	rec("web1", at.Add(5*day), at.Add(3*day))
	runs, err := c.s.Runs(RunFilter{Policy: "nightly", Client: "web1"})
	if err != nil || len(runs) != 3 || !runs[2].Scheduled.Equal(at.Add(3*day)) {
		t.Fatalf("web1's runs after forgetting: %+v, %v", runs, err)
	}
	if runs, _ := c.s.Runs(RunFilter{Policy: "nightly", Client: "web2"}); len(runs) != 5 {
		t.Fatalf("web2's runs: %d", len(runs))
	}
	// A record older than the cutoff (a long downtime) keeps the newest.
	rec("web2", at.Add(5*day), at.Add(30*day))
	runs, err = c.s.Runs(RunFilter{Policy: "nightly", Client: "web2"})
	if err != nil || len(runs) != 1 || !runs[0].Scheduled.Equal(at.Add(5*day)) {
		t.Fatalf("web2's runs after forgetting them all: %+v, %v", runs, err)
	}
}

// TestRunDispatchCarriesTheLevelRun: a dispatch may say the level the job
// was made at, which the run then shows; a failure may not, nor a level
// that is not one. RunPolicies names each policy with runs once, policies
// whose names are prefixes of others included.
func TestRunDispatchCarriesTheLevelRun(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	at := time.Date(2026, 3, 2, 21, 0, 0, 0, time.UTC)
	var runs []Run
	for _, p := range []string{"night", "nightly", "a"} {
		for _, cl := range []string{"web1", "web2"} {
			runs = append(runs, Run{Policy: p, Client: cl, Scheduled: at, Asked: LevelIncremental, Level: LevelIncremental, State: RunStarting})
		}
	}
	c.must(&Command{Op: OpRecordRuns, Runs: &RunsRecord{Runs: runs}})
	names, err := c.s.RunPolicies()
	if err != nil || strings.Join(names, ",") != "a,night,nightly" {
		t.Fatalf("policies of the runs %q, %v", names, err)
	}
	key := runs[0].Key()
	c.refused(CodeInvalidArgument, &Command{Op: OpUpdateRun, RunUpdate: &RunUpdate{Key: key, State: RunFailed, Reason: "x", Level: LevelFull}})
	c.refused(CodeInvalidArgument, &Command{Op: OpUpdateRun, RunUpdate: &RunUpdate{Key: key, State: RunDispatched, JobID: 3, Level: "weekly"}})
	c.must(&Command{Op: OpUpdateRun, RunUpdate: &RunUpdate{Key: key, State: RunDispatched, JobID: 3, Level: LevelFull, Promotion: "promoted to full: none in the pool"}})
	got, err := c.s.Run(key)
	if err != nil || got.Level != LevelFull || got.Asked != LevelIncremental || got.Promotion != "promoted to full: none in the pool" {
		t.Fatalf("run %+v, %v", got, err)
	}
}
