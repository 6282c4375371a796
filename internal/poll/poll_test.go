package poll

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestWaitReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	err := Wait(10*time.Second, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Wait = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestWaitGivesTheLastErrorAtTheDeadline(t *testing.T) {
	last := errors.New("still not")
	err := Wait(20*time.Millisecond, func() error { return last })
	if !errors.Is(err, last) {
		t.Fatalf("Wait = %v, want the condition's last error", err)
	}
}

func TestHoldsChecksForTheWholeStretch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var at []time.Duration
		Holds(t, time.Second, func() error {
			at = append(at, time.Since(start))
			return nil
		})
		if took := time.Since(start); took < time.Second || took > time.Second+maxInterval {
			t.Fatalf("Holds returned after %s, want 1s", took)
		}
		if len(at) < 10 || at[0] != 0 || at[len(at)-1] < time.Second {
			t.Fatalf("checked at %v, want from the start to the end, every %s", at, maxInterval)
		}
	})
}
