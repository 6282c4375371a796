package main

import (
	"fmt"
	"io"
	"math"
	"time"

	"github.com/cairnbackup/cairn/wire"
)

// rateEstimator smooths the transfer rate of a job for its progress line
// and ETA. The byte counts it sees are jumpy: an agent reports progress in
// batches, a tape drive stops to reposition, a file of holes goes by in no
// time; a rate taken between two polls jumped so much that the ETA went
// from seconds to minutes and back. So for its first window the rate is
// the average since the job began moving, and from then on an
// exponentially weighted moving average whose weight follows the time
// between samples (a time constant of window), which forgets a burst in
// a few windows and does not care how often it is fed. Time is the
// caller's, so a test feeds it exactly.
type rateEstimator struct {
	// window is the time constant of the average.
	window time.Duration
	// step is the least time between two samples it takes in: closer ones
	// are merged into the next.
	step time.Duration
	// settle is how long it samples before it offers an ETA.
	settle time.Duration

	start      time.Time // first sample since it last (re)started
	startBytes int64
	last       time.Time // last sample taken in
	lastBytes  int64
	rate       float64 // bytes per second
	samples    int
}

func newRateEstimator() *rateEstimator {
	return &rateEstimator{window: 10 * time.Second, step: time.Second, settle: 5 * time.Second}
}

// observe takes in that the job had moved bytes at now.
func (e *rateEstimator) observe(now time.Time, bytes int64) {
	if bytes < e.lastBytes {
		// A new attempt, counting from zero again.
		e.start, e.last = time.Time{}, time.Time{}
	}
	if e.start.IsZero() {
		e.start, e.startBytes, e.samples = now, bytes, 0
	}
	if e.last.IsZero() {
		// The first sample, or the first after a pause: an anchor.
		e.last, e.lastBytes = now, bytes
		return
	}
	dt := now.Sub(e.last)
	if dt < e.step {
		return
	}
	inst := float64(bytes-e.lastBytes) / dt.Seconds()
	if since := now.Sub(e.start); since <= e.window || e.samples == 0 {
		// Too little history for an average to mean anything yet: the
		// mean since the start is the steadiest guess there is.
		e.rate = float64(bytes-e.startBytes) / since.Seconds()
	} else {
		alpha := 1 - math.Exp(-dt.Seconds()/e.window.Seconds())
		e.rate += alpha * (inst - e.rate)
	}
	e.samples++
	e.last, e.lastBytes = now, bytes
}

// hold says the job is waiting at now (for a tape, a drive): the time
// until it moves again is no part of its rate. A wait early on starts the
// average over.
func (e *rateEstimator) hold(now time.Time) {
	if !e.start.IsZero() && now.Sub(e.start) <= e.window {
		e.start = time.Time{}
	}
	e.last = time.Time{}
}

// bytesPerSecond is the smoothed rate, 0 until there is one.
func (e *rateEstimator) bytesPerSecond() float64 { return e.rate }

// eta is how long the remaining bytes take at the smoothed rate, once the
// estimate has settled; ok is false before.
func (e *rateEstimator) eta(now time.Time, remaining int64) (time.Duration, bool) {
	if e.samples < 2 || now.Sub(e.start) < e.settle || e.rate <= 0 || remaining <= 0 {
		return 0, false
	}
	return time.Duration(float64(remaining) / e.rate * float64(time.Second)), true
}

// progressReporter shows a job that --wait follows. On a terminal it
// rewrites one line at every poll. Elsewhere (cron, CI, a pipe) it prints
// a line every interval, and at once whenever the job starts waiting for
// something or stops waiting, so that a log is never silent for long
// and says what a job waits for ("insert tape X").
type progressReporter struct {
	w        io.Writer
	tty      bool
	interval time.Duration // 0: no periodic lines off a terminal
	id       uint64
	est      *rateEstimator

	printed  bool
	lastLine time.Time
	waiting  string
}

func newProgressReporter(w io.Writer, tty bool, interval time.Duration, id uint64) *progressReporter {
	return &progressReporter{w: w, tty: tty, interval: interval, id: id, est: newRateEstimator()}
}

// update shows the job as a poll at now found it.
func (p *progressReporter) update(now time.Time, j *wire.JobInfo) {
	if j.Waiting != "" {
		p.est.hold(now)
	} else if j.Progress != nil {
		p.est.observe(now, j.Progress.Bytes)
	}
	line := p.line(now, j)
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K"+line)
		return
	}
	changed := j.Waiting != p.waiting
	due := p.interval > 0 && (!p.printed || now.Sub(p.lastLine) >= p.interval)
	if changed || due {
		fmt.Fprintln(p.w, line)
		p.printed, p.lastLine, p.waiting = true, now, j.Waiting
	}
}

// lost says, once per outage, that the servers stopped answering.
func (p *progressReporter) lost(err error) {
	if p.tty {
		// One short line: the next update clears only the last row.
		fmt.Fprintf(p.w, "\r\033[Kjob %d: no answer from the servers; still asking", p.id)
		return
	}
	fmt.Fprintln(p.w, printable(fmt.Sprintf("job %d: no answer from the servers (%v); still asking", p.id, err)))
	p.printed, p.lastLine = true, time.Now()
}

// done clears the live line on a terminal before the summary.
func (p *progressReporter) done() {
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

func (p *progressReporter) line(now time.Time, j *wire.JobInfo) string {
	if j.Waiting != "" {
		// A queued job, or a running one that waits for a tape or a drive.
		return printable(fmt.Sprintf("job %d waiting: %s", p.id, j.Waiting))
	}
	pr := j.Progress
	if pr == nil {
		return fmt.Sprintf("job %d %s", p.id, j.State)
	}
	speed := p.est.bytesPerSecond()
	line := fmt.Sprintf("job %d: %d files, %s, %.1f MB/s", p.id, pr.Files, humanBytes(pr.Bytes), speed/1e6)
	if pr.TotalBytes > 0 {
		line += fmt.Sprintf(", %.0f%%", min(100, 100*float64(pr.Bytes)/float64(pr.TotalBytes)))
		if eta, ok := p.est.eta(now, pr.TotalBytes-pr.Bytes); ok {
			line += ", ETA " + roundETA(eta).String()
		}
	}
	return line
}

// roundETA rounds an ETA to what is worth reading: seconds under a
// minute, ten seconds under ten minutes, minutes beyond. A finer ETA only
// flickers.
func roundETA(d time.Duration) time.Duration {
	switch {
	case d < time.Minute:
		return d.Round(time.Second)
	case d < 10*time.Minute:
		return d.Round(10 * time.Second)
	}
	return d.Round(time.Minute)
}
