package poll

import (
	"errors"
	"testing"
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
