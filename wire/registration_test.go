package wire

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestGroupIsLearnedOnce(t *testing.T) {
	var none *Group
	if none.ID() != "" || none.Learn("g1") {
		t.Fatal("a nil group knows something, or learns")
	}
	g := NewGroup("")
	if g.Learn("") || g.ID() != "" {
		t.Fatalf("an empty answer was learned: %q", g.ID())
	}
	if !g.Learn("g1") || g.Learn("g2") || g.ID() != "g1" {
		t.Fatalf("the group after two answers: %q, want the first", g.ID())
	}
	if c := NewGroup("cfg"); c.Learn("g1") || c.ID() != "cfg" {
		t.Fatalf("a configured group was replaced: %q", c.ID())
	}
}

// KeepRegistered retries a registration that fails, backing off from
// 250 ms to 5 s, beats only once registered, every interval, registers
// again every ReregisterEvery, and goes on beating when that fails.
func TestKeepRegistered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var mu sync.Mutex
		var registered bool
		var registers, beats []time.Duration
		failFirst, failAgain := 6, false
		register := func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			registers = append(registers, time.Since(start))
			if len(registers) <= failFirst || failAgain {
				return errors.New("no server answers")
			}
			registered = true
			return nil
		}
		isRegistered := func() bool {
			mu.Lock()
			defer mu.Unlock()
			return registered
		}
		beat := func() {
			mu.Lock()
			defer mu.Unlock()
			beats = append(beats, time.Since(start))
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			KeepRegistered(ctx, slog.New(slog.DiscardHandler), 10*time.Second, isRegistered, register, beat)
			close(done)
		}()
		defer func() {
			cancel()
			<-done
		}()
		snapshot := func() ([]time.Duration, []time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(registers), slices.Clone(beats)
		}
		time.Sleep(30 * time.Second)
		synctest.Wait()
		regs, bs := snapshot()
		// 250 ms, 500 ms, 1 s, 2 s, 4 s, then 5 s: the seventh succeeds.
		wantRegisters := []time.Duration{0, 250 * time.Millisecond, 750 * time.Millisecond, 1750 * time.Millisecond, 3750 * time.Millisecond, 7750 * time.Millisecond, 12750 * time.Millisecond}
		if !slices.Equal(regs, wantRegisters) {
			t.Fatalf("registrations at %v, want %v", regs, wantRegisters)
		}
		if want := []time.Duration{12750 * time.Millisecond, 22750 * time.Millisecond}; !slices.Equal(bs, want) {
			t.Fatalf("beats at %v, want %v", bs, want)
		}
		mu.Lock()
		failAgain = true
		mu.Unlock()
		time.Sleep(ReregisterEvery)
		synctest.Wait()
		regs, bs = snapshot()
		if n := len(regs); n < 8 || regs[7] <= 12750*time.Millisecond+ReregisterEvery {
			t.Fatalf("registrations at %v: none again a minute after the last", regs)
		}
		again := len(regs) - 7
		if got := len(bs) - 2; got < again {
			t.Fatalf("%d beats in the minute after, with %d registrations failing: a failed registration stopped the beats", got, again)
		}
	})
}
