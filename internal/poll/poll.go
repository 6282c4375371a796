// Package poll is the one way Cairn's tests wait for something: poll a
// condition until it holds or a deadline passes, and fail the test with the
// condition's last error. A bare time.Sleep in a test either wastes time on
// an idle machine or flakes on a loaded one; a deadline poll does neither.
//
// The deadline is wall time on purpose: it bounds work that real processes,
// sockets and disks do. Code whose own timing is under test takes an
// injected clock instead (testing/synctest or a fake clock) and does not
// poll at all.
package poll

import (
	"testing"
	"time"
)

// interval is the first pause between two checks; it doubles up to
// maxInterval so a slow condition is not checked thousands of times.
const (
	interval    = 5 * time.Millisecond
	maxInterval = 100 * time.Millisecond
)

// Until checks cond until it returns nil, and fails t with cond's last error
// when timeout passes first.
func Until(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Wait(timeout, cond); err != nil {
		t.Fatalf("not so after %s: %v", timeout, err)
	}
}

// Wait checks cond until it returns nil and returns nil then, or returns
// cond's last error once timeout has passed. It is Until for a caller that
// has no testing.TB (a benchmark's setup, a helper process).
func Wait(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	pause := interval
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		timer := time.NewTimer(min(pause, time.Until(deadline)+time.Millisecond))
		<-timer.C
		pause = min(2*pause, maxInterval)
	}
}

// Holds checks cond for the whole of d, and fails t the first time it does
// not hold: for what a test asserts about a stretch of time (a job that
// waits is not failed meanwhile), which no wait for a condition can show.
func Holds(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	tick := time.NewTicker(maxInterval)
	defer tick.Stop()
	end := time.Now().Add(d)
	for {
		if err := cond(); err != nil {
			t.Fatalf("no longer so after %s of %s: %v", d-time.Until(end), d, err)
		}
		if !time.Now().Before(end) {
			return
		}
		<-tick.C
	}
}
