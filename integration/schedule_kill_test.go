package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/catalog"
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

	// leaderBefore is the leader a second before at, found then so that
	// the kill at at is not late by the questions to find it.
	leaderBefore := func(at time.Time) *member {
		t.Helper()
		untilAt(at.Add(-time.Second))
		l := c.waitLeader(10*time.Second, nil)
		untilAt(at)
		return l
	}

	// killInDispatch SIGKILLs the server that writes the job log line of
	// the run at at ("run of policy ..."), the last thing a leader does
	// before it marks the run dispatched: so between the start, which made
	// the job, and the mark, a few Raft writes. Only the logs written since
	// from are read. A server that wrote it and is dead already (killed at
	// the instant just after) is not waited for: the run is then its
	// successor's to finish.
	logSizes := func() map[*member]int64 {
		sizes := map[*member]int64{}
		for _, m := range c.servers {
			sizes[m] = int64(len(m.proc.logText()))
		}
		return sizes
	}
	killInDispatch := func(at time.Time, from map[*member]int64) string {
		t.Helper()
		line := "run of policy minutely scheduled at " + at.UTC().Format(time.RFC3339)
		logs := map[*member]*logFollower{}
		for _, m := range c.servers {
			logs[m] = followLog(t, m.proc.logPath, from[m])
		}
		victim := watchLogs(t, 30*time.Second, logs, line)
		if !victim.proc.alive() {
			return victim.name + ", killed already, had written the run's job log"
		}
		kill(victim.proc)
		restart(victim)
		return victim.name + " killed in its dispatch"
	}

	// 1. At the instant, then the next leader across its dispatch.
	before := logSizes()
	l1 := leaderBefore(instants[0])
	kill(l1.proc)
	restart(l1)
	t.Logf("instant %s: killed leader %s at it; then %s", instants[0].Format(time.TimeOnly), l1.name, killInDispatch(instants[0], before))
	c.waitSettled()

	// 2. Somewhere in the leader's tick after the instant, a delay
	// drawn anew each run; then the next leader as it leads, across its
	// first decision.
	delay := 100*time.Millisecond + rand.N(800*time.Millisecond)
	l2 := leaderBefore(instants[1].Add(delay))
	kill(l2.proc)
	restart(l2)
	l3 := c.waitLeader(30*time.Second, nil) // l2 itself, restarted, may win
	kill(l3.proc)
	t.Logf("instant %s: killed leader %s %s after it, then %s as it led", instants[1].Format(time.TimeOnly), l2.name, delay, l3.name)
	restart(l3)
	c.waitSettled()

	// 3. No leader at the instant: the leader and a follower are down
	// across it, for a few seconds.
	before = logSizes()
	l4 := leaderBefore(instants[2].Add(-2 * time.Second))
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
	t.Logf("instant %s: no quorum from 2s before it to 4s after it (%s and %s killed); then %s", instants[2].Format(time.TimeOnly),
		down[0].name, down[1].name, killInDispatch(instants[2], before))
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
	for _, j := range jobs {
		t.Logf("job %d: %s, policy %q scheduled %s, request id %s", j.ID, j.State, j.Policy, j.Scheduled.Format(time.TimeOnly), j.RequestID)
	}

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
		if j.State != "void" {
			byRun[j.Scheduled.UTC()] = append(byRun[j.Scheduled.UTC()], j.ID)
		}
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
		case j.RequestID != catalog.RunRequestID(catalog.RunKey{Policy: r.Policy, Client: r.Client, Scheduled: r.Scheduled}):
			t.Errorf("job %d of the run at %s has request id %q, not the run's", j.ID, r.Scheduled, j.RequestID)
		}
	}
	for _, at := range instants {
		if len(byRun[at.UTC()]) == 0 {
			t.Errorf("no job for the run at %s", at)
		}
	}
	for at, ids := range byRun {
		if len(ids) > 1 {
			t.Errorf("the run at %s has %d jobs that were not voided: %v", at, len(ids), ids)
		}
	}
}

// logFollower reads what a process appends to its log, from an offset, a
// read of the new bytes at a time.
type logFollower struct {
	f    *os.File
	off  int64
	seen strings.Builder
}

func followLog(t *testing.T, path string, from int64) *logFollower {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &logFollower{f: f, off: from}
}

// has reports whether the log holds line since the offset.
func (l *logFollower) has(line string) bool {
	buf := make([]byte, 64<<10)
	for {
		n, _ := l.f.ReadAt(buf, l.off)
		l.off += int64(n)
		l.seen.Write(buf[:n])
		if n < len(buf) {
			break
		}
	}
	return strings.Contains(l.seen.String(), line)
}

// watchLogs waits for one of the logs to hold line and returns its
// member, looking every millisecond: poll.Until's pauses grow to 100 ms,
// longer than the few Raft writes a kill must land between.
func watchLogs(t *testing.T, timeout time.Duration, logs map[*member]*logFollower, line string) *member {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for m, l := range logs {
			if l.has(line) {
				return m
			}
		}
		<-tick.C
	}
	t.Fatalf("no server wrote %q within %s", line, timeout)
	return nil
}
