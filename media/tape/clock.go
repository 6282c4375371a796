package tape

import (
	"context"
	"sync"
	"time"
)

// Clock is how the emulator spends the time a real drive takes. Tests use
// a VirtualClock, so an LTO-9 profile costs no wall time while the time it
// would have taken is still measured; benchmarks and `cairn dev` use
// RealClock.
type Clock interface {
	Now() time.Time
	// Sleep returns after d, or earlier with ctx.Err() when ctx is done.
	Sleep(ctx context.Context, d time.Duration) error
}

// RealClock is wall time.
func RealClock() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// VirtualClock advances only when slept on, and at once: a drive emulated
// on it answers immediately, and Elapsed says how long the real drive
// would have taken.
type VirtualClock struct {
	mu    sync.Mutex
	start time.Time
	now   time.Time
}

// NewVirtualClock starts a virtual clock at a fixed instant.
func NewVirtualClock() *VirtualClock {
	t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &VirtualClock{start: t, now: t}
}

func (c *VirtualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *VirtualClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d > 0 {
		c.now = c.now.Add(d)
	}
	return nil
}

// Elapsed is the virtual time spent since the clock was made.
func (c *VirtualClock) Elapsed() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now.Sub(c.start)
}
