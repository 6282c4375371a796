package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/wire"
)

// burstyJob is the bytes a job has moved at t: R bytes per second on
// average, reported in bursts every 2 s (an agent's batches, a node's
// commits), with nothing at all from 40 s to 43 s (a tape drive
// repositioning), made up at 43 s.
func burstyJob(t time.Duration) int64 {
	const rate = 10e6
	if t > 40*time.Second && t < 43*time.Second {
		t = 40 * time.Second
	}
	return int64((t - t%(2*time.Second)).Seconds() * rate)
}

// TestRateEstimatorIsSteady feeds the estimator a bursty job on a clock
// of the test's, polled every 50 ms as --wait polls: the rate it shows
// stays within 30% of the true average, where a per-poll average swung
// between a quarter and twice of it (an ETA from 33 s to 5 min), and it
// offers no ETA before it has settled.
func TestRateEstimatorIsSteady(t *testing.T) {
	const rate = 10e6
	t0 := time.Date(2026, 11, 20, 2, 0, 0, 0, time.UTC)
	e := newRateEstimator()
	lo, hi := rate, rate
	for d := time.Duration(0); d < 118*time.Second; d += jobPollInterval {
		now := t0.Add(d)
		e.observe(now, burstyJob(d))
		eta, ok := e.eta(now, 1200e6-burstyJob(d))
		if d < e.settle {
			if ok {
				t.Fatalf("an ETA (%v) at %v, before the estimate settled", eta, d)
			}
			continue
		}
		if !ok {
			t.Fatalf("no ETA at %v", d)
		}
		lo, hi = min(lo, e.bytesPerSecond()), max(hi, e.bytesPerSecond())
	}
	if lo < 0.7*rate || hi > 1.3*rate {
		t.Errorf("the shown rate went from %.1f to %.1f MB/s for a steady %.1f MB/s", lo/1e6, hi/1e6, rate/1e6)
	}
}

// TestRateEstimatorLeavesOutWaits: a job that waits a minute for a tape
// (Waiting set) resumes at the rate it had, and a new attempt, counting
// from zero again, starts the estimate over.
func TestRateEstimatorLeavesOutWaits(t *testing.T) {
	const rate = 10e6
	t0 := time.Date(2026, 11, 20, 2, 0, 0, 0, time.UTC)
	e := newRateEstimator()
	var d time.Duration
	moved := int64(0)
	run := func(until time.Duration) {
		for ; d <= until; d += jobPollInterval {
			e.observe(t0.Add(d), moved+int64(jobPollInterval.Seconds()*rate))
			moved += int64(jobPollInterval.Seconds() * rate)
		}
	}
	run(30 * time.Second)
	for ; d <= 90*time.Second; d += jobPollInterval {
		e.hold(t0.Add(d))
	}
	run(92 * time.Second)
	if got := e.bytesPerSecond(); got < 0.9*rate || got > 1.1*rate {
		t.Errorf("after a minute's wait for a tape the rate is %.1f MB/s, want about %.1f", got/1e6, rate/1e6)
	}
	// Attempt 2 starts from zero.
	moved = 0
	e.observe(t0.Add(d), 0)
	if _, ok := e.eta(t0.Add(d+time.Second), 1e9); ok {
		t.Error("an ETA right at the start of a new attempt")
	}
}

// TestProgressOffATerminal: off a terminal, --wait prints a line when the
// job starts or stops waiting (saying what for) and every interval in
// between, never one per poll.
func TestProgressOffATerminal(t *testing.T) {
	var out bytes.Buffer
	p := newProgressReporter(&out, false, 5*time.Second, 7)
	t0 := time.Date(2026, 11, 20, 2, 0, 0, 0, time.UTC)
	const tape = "insert tape CRN004L9 of pool Weekly into library lib1 (mail slot or an empty slot)"
	for d := time.Duration(0); d < 30*time.Second; d += jobPollInterval {
		j := &wire.JobInfo{ID: 7, State: "running"}
		if d >= 3*time.Second && d < 8*time.Second {
			j.Waiting = tape
		} else {
			j.Progress = &wire.Progress{JobID: 7, Files: int64(d / time.Millisecond), Bytes: int64(d.Seconds() * 10e6), TotalBytes: 400e6}
		}
		p.update(t0.Add(d), j)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	// 0 s, 3 s (waits), 8 s (goes on), then 5 s after: 13, 18, 23, 28.
	if len(lines) != 7 {
		t.Fatalf("%d lines over 30 s, want 7:\n%s", len(lines), out.String())
	}
	if !strings.HasPrefix(lines[0], "job 7: 0 files") || lines[1] != "job 7 waiting: "+tape || !strings.HasPrefix(lines[2], "job 7: ") {
		t.Errorf("lines do not say when the job waits and what for:\n%s", out.String())
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, "MB/s") || !strings.Contains(last, "%, ETA ") {
		t.Errorf("the last line has no rate and ETA: %q", last)
	}
	if strings.Contains(out.String(), "\r") || strings.Contains(out.String(), "\033") {
		t.Errorf("terminal controls off a terminal: %q", out.String())
	}

	// With no interval, only the waits.
	out.Reset()
	p = newProgressReporter(&out, false, 0, 7)
	p.update(t0, &wire.JobInfo{ID: 7, State: "running", Progress: &wire.Progress{Bytes: 1}})
	p.update(t0.Add(time.Minute), &wire.JobInfo{ID: 7, State: "running", Waiting: tape})
	if out.String() != "job 7 waiting: "+tape+"\n" {
		t.Errorf("--progress-interval 0 printed %q", out.String())
	}
}

// TestProgressOnATerminal: on a terminal the line is rewritten in place
// at every poll, and cleared before the summary.
func TestProgressOnATerminal(t *testing.T) {
	var out bytes.Buffer
	p := newProgressReporter(&out, true, time.Hour, 7)
	t0 := time.Date(2026, 11, 20, 2, 0, 0, 0, time.UTC)
	p.update(t0, &wire.JobInfo{ID: 7, State: "running", Progress: &wire.Progress{Bytes: 1}})
	p.update(t0.Add(jobPollInterval), &wire.JobInfo{ID: 7, State: "running", Waiting: "a drive\x1b[2J"})
	p.done()
	if got, want := out.String(), "\r\033[Kjob 7: 0 files, 1 B, 0.0 MB/s\r\033[Kjob 7 waiting: a drive\\x1b[2J\r\033[K"; got != want {
		t.Errorf("on a terminal: %q, want %q", got, want)
	}
}
