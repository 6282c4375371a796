package integration

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// TestScheduledRunsOnceWhileLeadersAreKilled runs a policy due every minute
// (the finest a schedule says) on a group of three server processes and
// SIGKILLs the leader around its scheduled instants: at the instant, then
// the next leader as soon as it leads (its scheduler decides at once, so
// the kill lands across its dispatch); at the next instant after a delay in
// the middle of the 1 s tick; and across the third instant two servers, so
// that no leader is there when it falls due. Every instant from the first
// on must have exactly one run, every dispatched run exactly one job, under
// the run's request id, and no run or job twice; the instant with no
// leader is caught up, late, by the leader that comes back (server/DESIGN.md,
// "The scheduler"). About three minutes of wall clock: three instants and
// the wait for the first.
func TestScheduledRunsOnceWhileLeadersAreKilled(t *testing.T) {
	c := newClusterSys(t, clusterOpts{server: map[string]any{"schedule_tick": "1s"}})
	src := filepath.Join(t.TempDir(), "src")
	if err := sample.Generate(src, sample.Spec{TextFiles: 8, MaxFileSize: 4 << 10, Seed: 131}); err != nil {
		t.Fatal(err)
	}
	c.ok("policy", "create", "minutely", "--client", "web01", "--path", src, "--schedule", "cron * * * * *",
		"--timezone", "UTC", "--pool", "Default", "--keep-last", "100")
	created := time.Now()

	// untilAt waits for the wall clock to reach at: a coarse wait, then a
	// fresh fine one, so the kill lands within a few ms of at.
	untilAt := func(at time.Time) {
		t.Helper()
		timeout := time.Until(at) + 5*time.Second
		poll.Until(t, timeout, func() error {
			if d := time.Until(at); d > 150*time.Millisecond {
				return fmt.Errorf("%s to go", d)
			}
			return nil
		})
		poll.Until(t, time.Second, func() error {
			if d := time.Until(at); d > 0 {
				return fmt.Errorf("%s to go", d)
			}
			return nil
		})
	}
	restart := func(m *member) {
		t.Helper()
		m.proc.start()
		c.waitAnswers(m)
	}
	first := created.Truncate(time.Minute).Add(time.Minute)
	if first.Sub(created) < 5*time.Second { // the policy's own change must be applied before its first instant
		first = first.Add(time.Minute)
	}
	instants := []time.Time{first, first.Add(time.Minute), first.Add(2 * time.Minute)}

	// 1. At the instant, then the next leader as it takes over.
	untilAt(instants[0])
	l1 := c.leader()
	if l1 == nil {
		t.Fatal("no leader at the first instant")
	}
	kill(l1.proc)
	restart(l1)
	l2 := c.waitLeader(30*time.Second, l1)
	kill(l2.proc)
	t.Logf("instant %s: killed leader %s at it, then %s as it led", instants[0].Format(time.TimeOnly), l1.name, l2.name)
	restart(l2)
	c.waitSettled()

	// 2. In the middle of the leader's tick after the instant.
	untilAt(instants[1].Add(400 * time.Millisecond))
	l3 := c.leader()
	if l3 == nil {
		t.Fatal("no leader at the second instant")
	}
	kill(l3.proc)
	t.Logf("instant %s: killed leader %s 400ms after it", instants[1].Format(time.TimeOnly), l3.name)
	restart(l3)
	c.waitSettled()

	// 3. No leader at the instant: the leader and a follower are down
	// across it, for a few seconds.
	untilAt(instants[2].Add(-2 * time.Second))
	l4 := c.leader()
	if l4 == nil {
		t.Fatal("no leader before the third instant")
	}
	down := []*member{l4}
	for _, m := range c.servers {
		if m != l4 {
			down = append(down, m)
			break
		}
	}
	for _, m := range down {
		kill(m.proc)
	}
	untilAt(instants[2].Add(4 * time.Second))
	for _, m := range down {
		m.proc.start()
	}
	back := time.Now()
	t.Logf("instant %s: no quorum from 2s before it to 4s after it (%s and %s killed)", instants[2].Format(time.TimeOnly), down[0].name, down[1].name)
	c.waitReady()

	// Every instant's run is recorded and no longer starting, and its job
	// has ended.
	var runs []wire.RunInfo
	poll.Until(t, 60*time.Second, func() error {
		c.failIfCrashed()
		runs = nil
		if err := c.as("").tryJSON(&runs, "job", "runs", "--policy", "minutely", "--limit", "100"); err != nil {
			return err
		}
		for _, at := range instants {
			i := slices.IndexFunc(runs, func(r wire.RunInfo) bool { return r.Scheduled.Equal(at) })
			if i < 0 {
				return fmt.Errorf("no run at %s yet", at.Format(time.TimeOnly))
			}
			if r := runs[i]; r.State == "starting" || r.JobID != 0 && !slices.Contains([]string{"success", "warning", "failed", "canceled", "void"}, r.JobState) {
				return fmt.Errorf("the run at %s is %s, its job %d %s", at.Format(time.TimeOnly), r.State, r.JobID, r.JobState)
			}
		}
		return nil
	})
	var jobs []wire.JobInfo
	c.as("").json(&jobs, "job", "list", "--client", "web01", "--limit", "100")

	perInstant := map[time.Time]int{}
	jobOfRun := map[uint64]wire.RunInfo{}
	for _, r := range runs {
		perInstant[r.Scheduled.UTC()]++
		if r.Scheduled.Sub(r.Scheduled.Truncate(time.Minute)) != 0 {
			t.Errorf("run at %s is not at a minute of the schedule", r.Scheduled)
		}
		if r.JobID == 0 {
			continue
		}
		if other, dup := jobOfRun[r.JobID]; dup {
			t.Errorf("job %d is the job of two runs: %s and %s", r.JobID, other.Scheduled, r.Scheduled)
		}
		jobOfRun[r.JobID] = r
	}
	for at, n := range perInstant {
		if n != 1 {
			t.Errorf("%d runs recorded at %s", n, at)
		}
	}
	for i, at := range instants {
		r := runs[slices.IndexFunc(runs, func(r wire.RunInfo) bool { return r.Scheduled.Equal(at) })]
		t.Logf("run at %s: %s, job %d (%s), recorded %s %s", at.Format(time.TimeOnly), r.State, r.JobID, r.JobState,
			r.Recorded.Format("15:04:05.000"), r.Reason)
		// Each instant's run started: the leaders killed after it left
		// it to the next, and the instant with no leader is within the
		// default catch-up window of 6h.
		if r.State != "dispatched" {
			t.Errorf("the run at %s is %s (%s), not dispatched", at.Format(time.TimeOnly), r.State, r.Reason)
		}
		if i == 2 && r.Recorded.Before(back) {
			t.Errorf("the run at %s, when no server led, was recorded at %s, before the servers came back at %s", at, r.Recorded, back)
		}
	}
	// A scheduled job is the job of exactly one run: no second job for a
	// run, made under its request id or any other.
	byRun := map[time.Time][]uint64{}
	for _, j := range jobs {
		if j.Policy != "minutely" {
			continue
		}
		byRun[j.Scheduled.UTC()] = append(byRun[j.Scheduled.UTC()], j.ID)
		r, ok := jobOfRun[j.ID]
		switch {
		case !ok && j.State == "void":
			// A start whose job was never confirmed: it never ran, and
			// the run's start under the same request id made the job
			// that did.
		case !ok:
			t.Errorf("job %d (%s, scheduled %s) is the job of no run", j.ID, j.State, j.Scheduled)
		case !r.Scheduled.Equal(j.Scheduled):
			t.Errorf("job %d is scheduled %s, its run %s", j.ID, j.Scheduled, r.Scheduled)
		case !strings.HasPrefix(j.RequestID, "run-"):
			t.Errorf("job %d of the run at %s has request id %q, not the run's", j.ID, r.Scheduled, j.RequestID)
		}
	}
	for at, ids := range byRun {
		live := 0
		for _, id := range ids {
			if _, ok := jobOfRun[id]; ok {
				live++
			}
		}
		if live != 1 {
			t.Errorf("the run at %s has %d jobs: %v", at, live, ids)
		}
	}
	for _, at := range instants {
		if len(byRun[at.UTC()]) == 0 {
			t.Errorf("no job for the run at %s", at)
		}
	}
}
