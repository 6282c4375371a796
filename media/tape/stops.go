package tape

import (
	"context"
	"time"
)

// writeBuffer is an emulated drive's data buffer as a timing model (see
// "The stop model" in the package doc). It holds no data: records go to
// the cartridge file at once, and only the time they would take to reach
// the tape is modelled.
type writeBuffer struct {
	// level bytes are in the buffer at instant at. While a restart runs,
	// at is in the future: the tape starts taking data then.
	level int64
	at    time.Time
	// moving: the tape streams, taking data from the buffer.
	moving bool
	// stopped: the buffer ran dry and the tape stopped past the last
	// record written; the next start repositions first (Restart).
	stopped bool
}

func (e *Emulator) buffered() bool { return e.profile.BufferBytes > 0 }

func (e *Emulator) minSpeed() int64 {
	if e.profile.MinSpeed > 0 {
		return min(e.profile.MinSpeed, e.profile.Speed)
	}
	return e.profile.Speed // no speed matching: any slower host stops it
}

func bytesTime(n, speed int64) time.Duration {
	return time.Duration(float64(n) / float64(speed) * float64(time.Second))
}

func bytesIn(d time.Duration, speed int64) int64 {
	return int64(float64(d) / float64(time.Second) * float64(speed))
}

// account adds d of drive time spent writing.
func (e *Emulator) account(d time.Duration) {
	if d <= 0 {
		return
	}
	e.mu.Lock()
	e.stats.Busy += d
	e.stats.Writing += d
	e.mu.Unlock()
}

// advance runs the buffer model up to now: the tape takes data at full
// speed while the buffer is more than half full and at the slowest
// matched speed below that, and stops when the buffer runs dry.
func (e *Emulator) advance(now time.Time) {
	b := &e.buf
	if !b.moving || !now.After(b.at) {
		return
	}
	half := e.profile.BufferBytes / 2
	left := now.Sub(b.at)
	var streamed time.Duration
	if b.level > half {
		dt := bytesTime(b.level-half, e.profile.Speed)
		if dt >= left {
			b.level = max(b.level-bytesIn(left, e.profile.Speed), half)
			b.at = now
			e.account(left)
			return
		}
		left -= dt
		streamed += dt
		b.level = half
	}
	slow := e.minSpeed()
	if dt := bytesTime(b.level, slow); dt < left {
		// Dry before now: the drive stopped at b.at + streamed + dt.
		e.account(streamed + dt)
		b.level, b.moving, b.stopped, b.at = 0, false, true, now
		e.mu.Lock()
		e.stats.Stops++
		e.mu.Unlock()
		return
	}
	b.level = max(b.level-bytesIn(left, slow), 0)
	b.at = now
	e.account(streamed + left)
}

// feed takes n bytes of a record into the buffer, starting the tape when
// the buffer is half full, and makes the host wait while it is full.
func (e *Emulator) feed(ctx context.Context, op string, n int) error {
	if !e.buffered() {
		if err := e.spend(ctx, op, e.streamTime(n)); err != nil {
			return err
		}
		e.mu.Lock()
		e.stats.Writing += e.streamTime(n)
		e.mu.Unlock()
		return nil
	}
	now := e.clock.Now()
	e.advance(now)
	b := &e.buf
	if !b.moving {
		b.at = now
	}
	b.level += int64(n)
	if !b.moving && b.level >= e.profile.BufferBytes/2 {
		b.moving = true
		if b.stopped {
			b.stopped = false
			b.at = b.at.Add(e.profile.Restart)
			e.account(e.profile.Restart)
		}
	}
	if over := b.level - e.profile.BufferBytes; over > 0 {
		return e.waitUntil(ctx, op, b.at.Add(bytesTime(over, e.profile.Speed)))
	}
	return nil
}

// drain writes what the buffer holds to tape at full speed (repositioning
// first if the tape stopped) and waits for it: a file mark's flush, or a
// command that moves the tape.
func (e *Emulator) drain(ctx context.Context, op string) error {
	if !e.buffered() {
		return nil
	}
	now := e.clock.Now()
	e.advance(now)
	b := &e.buf
	if b.level == 0 {
		b.moving, b.stopped = false, false
		return nil
	}
	start := b.at
	if start.Before(now) {
		start = now
	}
	var d time.Duration
	if !b.moving && b.stopped {
		d += e.profile.Restart
	}
	d += bytesTime(b.level, e.profile.Speed)
	e.account(d)
	end := start.Add(d)
	*b = writeBuffer{at: end}
	return e.waitUntil(ctx, op, end)
}

// waitUntil makes the host wait until the drive reaches instant t (on
// the real clock only once it is paceSlack ahead, as spend does).
func (e *Emulator) waitUntil(ctx context.Context, op string, t time.Time) error {
	now := e.clock.Now()
	if e.due.Before(t) {
		e.due = t
	}
	if wait := e.due.Sub(now); wait > 0 && wait >= e.slack {
		start := time.Now()
		if err := e.clock.Sleep(ctx, wait); err != nil {
			return ctxError(e.name, op, start, err)
		}
	}
	return nil
}
