package alert

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
)

// recorder is a sink that keeps what it is given: the dedupe rules are the
// Dispatcher's, before any sink.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) name() string { return "recorder" }
func (r *recorder) close()       {}
func (r *recorder) deliver(_ context.Context, e Event, _ []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) got() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func newRecorded(t *testing.T, cfg Config, kinds ...string) (*Dispatcher, *recorder, *fakeClock) {
	clock := newFakeClock()
	log, _ := testLogger(t)
	d := newDispatcher(cfg, Options{Logger: log, Clock: clock})
	r := &recorder{}
	d.add(r, retryPolicy{attempts: 1, backoff: time.Second, max: time.Second}, kinds, orDefault(cfg.QueueSize, DefaultQueueSize))
	closeDispatcher(t, d)
	return d, r, clock
}

// The same condition in the same state goes out once per repeat interval,
// and the next one says how many were held back; a change of state goes
// out at once, and other subjects are other conditions.
func TestRepeats(t *testing.T) {
	d, r, clock := newRecorded(t, Config{RepeatInterval: time.Hour})
	last := clock.Now().Add(-30 * time.Hour)
	breach := func(client string) Event {
		return NewRPOBreach(clock.Now(), client, "nightly", last, 24*time.Hour)
	}
	steps := []struct {
		advance time.Duration
		e       func() Event
		sent    bool
	}{
		{0, func() Event { return breach("web1") }, true},
		{10 * time.Minute, func() Event { return breach("web1") }, false},
		{10 * time.Minute, func() Event { return breach("db1") }, true}, // another subject
		{39*time.Minute + 59*time.Second, func() Event { return breach("web1") }, false},
		{time.Second, func() Event { return breach("web1") }, true}, // the interval passed: suppressed 2
		{time.Minute, func() Event {
			return NewRPOResolved(clock.Now(), "web1", "nightly", clock.Now().Add(-time.Hour), 24*time.Hour)
		}, true}, // the state changed: at once
		{time.Minute, func() Event {
			return NewRPOResolved(clock.Now(), "web1", "nightly", clock.Now().Add(-time.Hour), 24*time.Hour)
		}, false},
		{time.Minute, func() Event { return breach("web1") }, true}, // a new breach: at once
		{0, func() Event { return NewJobFailed(clock.Now(), 7, "web1", "", "", "x") }, true},
		{0, func() Event { return NewJobFailed(clock.Now(), 8, "web1", "", "", "x") }, true},
		{0, func() Event { return NewJobFailed(clock.Now(), 7, "web1", "", "", "x") }, false},
	}
	want := 0
	for i, s := range steps {
		clock.Advance(s.advance)
		sent, err := d.Send(s.e())
		if err != nil || sent != s.sent {
			t.Errorf("step %d: Send = %v, %v; want %v", i, sent, err, s.sent)
		}
		if sent {
			want++
		}
	}
	poll.Until(t, 10*time.Second, func() error {
		if n := len(r.got()); n != want {
			return fmt.Errorf("%d delivered, want %d", n, want)
		}
		return nil
	})
	var got []string
	for _, e := range r.got() {
		got = append(got, fmt.Sprintf("%s %s %d", e.Kind, e.Subject(), e.Suppressed))
	}
	wantSeq := fmt.Sprint([]string{
		"rpo_breach client=web1 policy=nightly 0",
		"rpo_breach client=db1 policy=nightly 0",
		"rpo_breach client=web1 policy=nightly 2",
		"rpo_resolved client=web1 policy=nightly 0",
		"rpo_breach client=web1 policy=nightly 0",
		"job_failed job=7 0",
		"job_failed job=8 0",
	})
	if fmt.Sprint(got) != wantSeq {
		t.Errorf("delivered\n%v\nwant\n%v", got, wantSeq)
	}
	if n := counter(t, d, "cairn_alerts_suppressed_total", "kind", "rpo_breach"); n != 2 {
		t.Errorf("suppressed rpo_breach = %v, want 2", n)
	}
	if n := counter(t, d, "cairn_alerts_suppressed_total", "kind", "rpo_resolved"); n != 1 {
		t.Errorf("suppressed rpo_resolved = %v, want 1", n)
	}
}

// The memory of sent conditions forgets what the repeat interval would
// send again anyway, so a failed job a minute for a week does not grow it.
func TestRepeatMemoryIsBounded(t *testing.T) {
	d, r, clock := newRecorded(t, Config{RepeatInterval: time.Hour, QueueSize: 7 * 24 * 60})
	for id := uint64(1); id <= 7*24*60; id++ {
		clock.Advance(time.Minute)
		if sent, err := d.Send(NewJobFailed(clock.Now(), id, "c", "", "", "x")); !sent || err != nil {
			t.Fatalf("Send(%d) = %v, %v", id, sent, err)
		}
	}
	d.mu.Lock()
	n := len(d.last)
	d.mu.Unlock()
	if n > 2*60 {
		t.Errorf("%d conditions remembered, want at most two intervals' worth (120)", n)
	}
	poll.Until(t, 10*time.Second, func() error {
		if n := len(r.got()); n != 7*24*60 {
			return fmt.Errorf("%d delivered", n)
		}
		return nil
	})
}

// A sink with kinds gets those kinds only.
func TestSinkKinds(t *testing.T) {
	d, r, clock := newRecorded(t, Config{}, string(RPOBreach), string(RPOResolved))
	now := clock.Now()
	for _, e := range []Event{
		NewJobFailed(now, 1, "c", "", "", "x"),
		NewRPOBreach(now, "c", "p", time.Time{}, time.Hour),
		NewMissedRun(now, "p", "c", now, 1, "down"),
		NewRPOResolved(now, "c", "p", now, time.Hour),
		NewPoolShort(now, "Tape", "p", now, 0, 0, "no writable volume"),
	} {
		if _, err := d.Send(e); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, 10*time.Second, func() error {
		var kinds []Kind
		for _, e := range r.got() {
			kinds = append(kinds, e.Kind)
		}
		if fmt.Sprint(kinds) != "[rpo_breach rpo_resolved]" {
			return fmt.Errorf("delivered %v", kinds)
		}
		return nil
	})
}

// Each wait is between half and all of the backoff doubled per attempt,
// capped.
func TestRetryWait(t *testing.T) {
	p := retryPolicy{attempts: 10, backoff: time.Second, max: 10 * time.Second}
	for attempt, full := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 60: 10 * time.Second} {
		seen := map[bool]bool{}
		for range 1000 {
			w := p.wait(attempt)
			if w < full/2 || w > full {
				t.Fatalf("attempt %d: wait %s, want %s to %s", attempt, w, full/2, full)
			}
			seen[w < full*3/4] = true
		}
		if len(seen) != 2 {
			t.Errorf("attempt %d: 1000 waits all in one half of the range: no jitter", attempt)
		}
	}
}

// Every alert Send accepts is delivered or counted dropped, even when Close
// comes in the middle of the sends. The race it looks for (a Send that
// passed the closed check queues after the worker left) is narrow: before
// Send queued under the lock Close takes, about one run in six caught it
// within 2000 rounds.
func TestSendDuringClose(t *testing.T) {
	for round := range 2000 {
		clock := newFakeClock()
		d := newDispatcher(Config{}, Options{Clock: clock})
		r := &recorder{}
		d.add(r, retryPolicy{attempts: 1, backoff: time.Second, max: time.Second}, nil, 1<<20)
		var accepted sync.WaitGroup
		var mu sync.Mutex
		n := 0
		for g := range 4 {
			accepted.Add(1)
			go func() {
				defer accepted.Done()
				for i := range 3 {
					ok, _ := d.Send(NewJobFailed(clock.Now(), uint64(g*1000+i+1), "c", "", "", "x"))
					if ok {
						mu.Lock()
						n++
						mu.Unlock()
					}
				}
			}()
		}
		if err := d.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		accepted.Wait()
		delivered := len(r.got())
		dropped := counter(t, d, "cairn_alerts_dropped_total", "sink", "recorder")
		if delivered+int(dropped) != n {
			t.Fatalf("round %d: %d accepted, %d delivered and %v dropped", round, n, delivered, dropped)
		}
	}
}

// blocker is a sink that holds every delivery until its context ends.
type blocker struct{ started chan struct{} }

func (b *blocker) name() string { return "blocker" }
func (b *blocker) close()       {}
func (b *blocker) deliver(ctx context.Context, _ Event, _ []byte) error {
	b.started <- struct{}{}
	<-ctx.Done()
	return ctx.Err()
}

// SendAck's done says the Dispatcher is finished with the alert: after its
// delivery, at once when the repeat interval holds it back, and never
// when the Dispatcher closed before the alert went out, so whoever owes
// it still does.
func TestSendAckOnlyWhenFinished(t *testing.T) {
	d, r, clock := newRecorded(t, Config{RepeatInterval: time.Hour})
	var mu sync.Mutex
	acked := 0
	done := func() { mu.Lock(); acked++; mu.Unlock() }
	count := func() int { mu.Lock(); defer mu.Unlock(); return acked }
	e := NewMissedRun(clock.Now(), "nightly", "web1", clock.Now(), 1, "down")
	if sent, err := d.SendAck(e, done); !sent || err != nil {
		t.Fatalf("SendAck = %v, %v", sent, err)
	}
	poll.Until(t, 10*time.Second, func() error {
		if count() != 1 || len(r.got()) != 1 {
			return fmt.Errorf("acked %d, delivered %d", count(), len(r.got()))
		}
		return nil
	})
	if sent, _ := d.SendAck(e, done); sent || count() != 2 {
		t.Fatalf("held back: sent %v, acked %d", sent, count())
	}

	log, _ := testLogger(t)
	bd := newDispatcher(Config{}, Options{Logger: log, Clock: clock})
	b := &blocker{started: make(chan struct{}, 1)}
	bd.add(b, retryPolicy{attempts: 1, backoff: time.Second, max: time.Second}, nil, DefaultQueueSize)
	if _, err := bd.SendAck(e, done); err != nil {
		t.Fatal(err)
	}
	if _, err := bd.SendAck(NewMissedRun(clock.Now(), "nightly", "web2", clock.Now(), 1, "down"), done); err != nil {
		t.Fatal(err)
	}
	<-b.started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := bd.Close(ctx); err == nil {
		t.Fatal("Close with a delivery held: no error")
	}
	if n := count(); n != 2 {
		t.Fatalf("acked %d after a close that dropped two alerts, want the 2 before", n)
	}
}
