package sftpvol

import (
	"sync"
	"time"
)

// Stats are what a pool saw of its target since it started: whether the
// last try reached it, what went over the wire, and the errors.
type Stats struct {
	// Reachable: the last connection attempt, or the last operation,
	// reached the target. False before the first try.
	Reachable bool
	// Tried: the pool has tried the target at least once.
	Tried bool
	// BytesWritten and BytesRead count volume bytes sent and received.
	BytesWritten, BytesRead int64
	// WriteBusy and ReadBusy are the time spent in writes and reads; a
	// rate is bytes over busy time, the target's speed while in use.
	WriteBusy, ReadBusy time.Duration
	// Errors counts outages (a connection attempt that failed after one
	// that reached the target, or the first try; the attempts that fail
	// after it, the heartbeats' probes among them, are the same outage)
	// and operations the target or the transport broke.
	Errors int64
	// LastError is the latest of them, at LastErrorAt.
	LastError   string
	LastErrorAt time.Time
}

type stats struct {
	mu sync.Mutex
	s  Stats
	// down: the last connection attempt failed, an outage already counted.
	down bool
}

// Stats is a copy of the pool's figures.
func (p *Pool) Stats() Stats {
	p.stats.mu.Lock()
	defer p.stats.mu.Unlock()
	return p.stats.s
}

func (st *stats) reached() {
	st.mu.Lock()
	st.s.Reachable, st.s.Tried = true, true
	st.down = false
	st.mu.Unlock()
}

// dialFailed records a connection attempt that failed: the start of an
// outage counts, the attempts that fail while it lasts do not.
func (st *stats) dialFailed(err error) {
	st.mu.Lock()
	if !st.down {
		st.s.Errors++
	}
	st.down, st.s.Reachable, st.s.Tried = true, false, true
	st.s.LastError, st.s.LastErrorAt = err.Error(), time.Now()
	st.mu.Unlock()
}

func (st *stats) failed(err error) {
	st.mu.Lock()
	st.s.Tried = true
	st.s.Errors++
	st.s.LastError, st.s.LastErrorAt = err.Error(), time.Now()
	st.mu.Unlock()
}

func (st *stats) unreachable(err error) {
	st.mu.Lock()
	st.s.Reachable, st.s.Tried = false, true
	st.s.LastError, st.s.LastErrorAt = err.Error(), time.Now()
	st.mu.Unlock()
}

func (st *stats) wrote(n int, d time.Duration) {
	st.mu.Lock()
	st.s.BytesWritten += int64(n)
	st.s.WriteBusy += d
	st.mu.Unlock()
}

func (st *stats) read(n int, d time.Duration) {
	st.mu.Lock()
	st.s.BytesRead += int64(n)
	st.s.ReadBusy += d
	st.mu.Unlock()
}
