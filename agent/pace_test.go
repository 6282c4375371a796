package agent

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// The pacer's timing is under test, so it runs on synctest's fake clock:
// the bounds are exact, and a loaded machine cannot stretch them.
func TestPacerHoldsTheRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(4 << 20) // 4 MiB/s
		t0 := time.Now()
		for i := 0; i < 8; i++ {
			if err := p.wait(context.Background(), 256<<10); err != nil {
				t.Fatal(err)
			}
		}
		// 2 MiB at 4 MiB/s: half a second.
		if took := time.Since(t0); took != 500*time.Millisecond {
			t.Errorf("2 MiB at 4 MiB/s took %s, want 500ms", took)
		}
	})
}

func TestPacerUnlimitedAndCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(0)
		t0 := time.Now()
		for i := 0; i < 100; i++ {
			if err := p.wait(context.Background(), 1<<30); err != nil {
				t.Fatal(err)
			}
		}
		if took := time.Since(t0); took != 0 {
			t.Errorf("an unlimited pacer waited %s", took)
		}
		ctx, cancel := context.WithCancel(context.Background())
		slow := newPacer(1)
		time.AfterFunc(50*time.Millisecond, cancel)
		if err := slow.wait(ctx, 1<<20); !errors.Is(err, context.Canceled) {
			t.Errorf("a cancelled wait returned %v, want context.Canceled", err)
		}
		if took := time.Since(t0); took != 50*time.Millisecond {
			t.Errorf("the cancelled wait returned after %s, want 50ms", took)
		}
	})
}
