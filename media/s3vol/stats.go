package s3vol

import (
	"errors"
	"sync"
	"time"
)

// Stats are how the pool's store has fared since the pool was made, for
// the storage node's report of its target (pool list, the metrics); the
// fields are those of an SFTP target's.
type Stats struct {
	// Reachable: the last request got an answer (a refusal is one).
	// False before the first try.
	Reachable bool
	// Tried: the pool has sent the store a request; Checked is when the
	// last one ended.
	Tried   bool
	Checked time.Time
	// BytesWritten and BytesRead count volume bytes sent and received.
	BytesWritten, BytesRead int64
	// WriteBusy and ReadBusy are the time spent sending and receiving
	// them; a rate is bytes over busy time, the store's speed while in
	// use.
	WriteBusy, ReadBusy time.Duration
	// Errors counts requests the store refused or failed, and outages: of
	// the requests that get no answer, only the first after one that got
	// one counts (the probes while it lasts are the same outage).
	// LastError is the latest, at LastErrorAt.
	Errors      int64
	LastError   string
	LastErrorAt time.Time
}

type stats struct {
	mu sync.Mutex
	s  Stats
}

// note records the outcome of a request to the store.
func (st *stats) note(err error, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if err == nil || errors.Is(err, ErrLocked) {
		st.s.Tried, st.s.Checked = true, now
		st.s.Reachable = true
		return
	}
	var se *StoreError
	was := st.s.Reachable || !st.s.Tried
	st.s.Tried, st.s.Checked = true, now
	st.s.Reachable = errors.As(err, &se) && !se.Unreachable()
	if st.s.Reachable || was {
		st.s.Errors++
	}
	st.s.LastError, st.s.LastErrorAt = err.Error(), now
}

func (st *stats) wrote(n int64, busy time.Duration) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.s.BytesWritten += n
	st.s.WriteBusy += busy
}

func (st *stats) read(n int64, busy time.Duration) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.s.BytesRead += n
	st.s.ReadBusy += busy
}

// Stats is a copy of the pool's figures.
func (p *Pool) Stats() Stats {
	p.stats.mu.Lock()
	defer p.stats.mu.Unlock()
	return p.stats.s
}
