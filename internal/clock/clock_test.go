package clock

import (
	"testing"
	"testing/synctest"
	"time"
)

// A fake ticker ticks when Advance passes its time, once however far, and
// not before; a stopped one never.
func TestFakeTicksAsAdvanced(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := NewFake(start)
	tk := f.NewTicker(time.Second)
	ticked := func() bool {
		select {
		case <-tk.C():
			return true
		default:
			return false
		}
	}
	f.Advance(999 * time.Millisecond)
	if ticked() {
		t.Fatal("ticked before its time")
	}
	f.Advance(time.Millisecond)
	if !ticked() {
		t.Fatal("no tick at its time")
	}
	f.Advance(10 * time.Second)
	if !ticked() || ticked() {
		t.Fatal("ten seconds at once must tick once: the reader missed the rest")
	}
	if got := f.Since(start); got != 11*time.Second {
		t.Fatalf("Since = %v", got)
	}
	tk.Stop()
	f.Advance(time.Hour)
	if ticked() {
		t.Fatal("a stopped ticker ticked")
	}
}

// The real clock's ticker is time's, which synctest's bubble moves.
func TestRealTicker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := Real()
		start := c.Now()
		tk := c.NewTicker(time.Minute)
		defer tk.Stop()
		<-tk.C()
		if got := c.Since(start); got != time.Minute {
			t.Fatalf("ticked after %v", got)
		}
	})
}
