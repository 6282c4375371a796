// Package clock is the time a role decides by: the wall clock in a
// running process, a clock a test moves (Fake) where timing is under test.
// Code whose decisions depend on how long something took (a liveness
// timeout, a stall, a job's time in the queue) reads the time and waits on
// tickers through a Clock, so that a test of a one-minute timeout runs in
// milliseconds instead of a minute.
package clock

import (
	"sync"
	"time"
)

// Clock tells the time and ticks.
type Clock interface {
	Now() time.Time
	// Since is Now().Sub(t).
	Since(t time.Time) time.Duration
	// NewTicker ticks every d, as time.NewTicker does: a tick a slow
	// reader missed is dropped, not queued.
	NewTicker(d time.Duration) Ticker
}

// Ticker is a time.Ticker behind an interface.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real is the wall clock.
func Real() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time                  { return time.Now() }
func (realClock) Since(t time.Time) time.Duration { return time.Since(t) }
func (realClock) NewTicker(d time.Duration) Ticker {
	return realTicker{time.NewTicker(d)}
}

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

// Fake is a clock that moves only when Advance moves it. Its tickers tick
// as Advance passes their times: once per Advance at most, since a ticker
// drops the ticks its reader has not taken.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	tickers map[*fakeTicker]bool
}

// NewFake returns a clock that reads start until it is advanced.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, tickers: map[*fakeTicker]bool{}}
}

func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *Fake) Since(t time.Time) time.Duration { return f.Now().Sub(t) }

func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTicker{f: f, every: d, next: f.now.Add(d), c: make(chan time.Time, 1)}
	f.tickers[t] = true
	return t
}

// Advance moves the clock by d and ticks every ticker whose time came.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	for t := range f.tickers {
		if t.next.After(f.now) {
			continue
		}
		for !t.next.After(f.now) {
			t.next = t.next.Add(t.every)
		}
		select {
		case t.c <- f.now:
		default: // the reader has not taken the last tick: dropped, as time.Ticker does
		}
	}
}

type fakeTicker struct {
	f     *Fake
	every time.Duration
	next  time.Time
	c     chan time.Time
}

func (t *fakeTicker) C() <-chan time.Time { return t.c }

func (t *fakeTicker) Stop() {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	delete(t.f.tickers, t)
}
