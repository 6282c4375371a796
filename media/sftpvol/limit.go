package sftpvol

import (
	"context"
	"time"

	"golang.org/x/time/rate"
)

// minBytesPerSecond is the least bandwidth limit: below it a single SFTP
// request (32 KiB) waits more than a second.
const minBytesPerSecond = 32 << 10

// limiter is a pool's bandwidth limit, a token bucket shared by every
// stream: a transfer takes its bytes from the bucket before it goes out,
// so the pool's mean rate stays at or below the limit, with bursts of at
// most a quarter of a second's worth.
type limiter struct {
	b     *rate.Limiter
	burst int
}

func newLimiter(bytesPerSecond int64) *limiter {
	burst := int(max(bytesPerSecond/4, minBytesPerSecond))
	b := rate.NewLimiter(rate.Limit(bytesPerSecond), burst)
	// Start with an empty bucket: a pool's first burst is not free.
	b.AllowN(time.Now(), burst)
	return &limiter{b: b, burst: burst}
}

// wait takes n bytes from the bucket, waiting until it holds them. A nil
// limiter lets everything through.
func (l *limiter) wait(ctx context.Context, n int) error {
	if l == nil {
		return nil
	}
	for n > 0 {
		k := min(n, l.burst)
		if err := l.b.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
