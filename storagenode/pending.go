package storagenode

import (
	"context"
	"net"
	"sync"
	"time"
)

// A connection to the data port holds its TLS state, small buffers, a
// hello of at most 64 KiB and a goroutine from its accept on, before it
// has shown a ticket (dataplane.Conn.Admit gives it a stream's buffers):
// anyone who reaches the port can make the node hold that per connection
// for HelloTimeout. pendingConns bounds those connections: past
// MaxPendingConns in all the node accepts no more until one shows its
// ticket or goes (the kernel's backlog holds the rest, so a burst of
// agents waits instead of failing), and past MaxPendingPerHost from one
// address it closes the new one at once, so one host cannot take every
// place.
type pendingConns struct {
	slots   chan struct{}
	perHost int

	mu      sync.Mutex
	byHost  map[string]int
	refused int       // connections closed since the last log line
	logged  time.Time // when that line was written
}

func newPendingConns(total, perHost int) *pendingConns {
	return &pendingConns{slots: make(chan struct{}, total), perHost: perHost, byHost: map[string]int{}}
}

// wait takes a place for the next connection, or returns false when ctx
// ends first.
func (p *pendingConns) wait(ctx context.Context) bool {
	select {
	case p.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// unused gives back a place wait took for a connection that did not come.
func (p *pendingConns) unused() { <-p.slots }

// admit counts c against its host, with the place wait took. It returns
// the func that gives both back (call it once the connection showed a
// valid ticket or ended; later calls do nothing), or false, having given
// back the place, when the host has too many connections pending.
func (p *pendingConns) admit(c net.Conn) (func(), bool) {
	host := hostOf(c.RemoteAddr())
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byHost[host] >= p.perHost {
		<-p.slots
		p.refused++
		return nil, false
	}
	p.byHost[host]++
	return sync.OnceFunc(func() {
		p.mu.Lock()
		if p.byHost[host]--; p.byHost[host] <= 0 {
			delete(p.byHost, host)
		}
		p.mu.Unlock()
		<-p.slots
	}), true
}

// refusedSince says how many connections were refused since it last said
// so, at most once per interval: an address that keeps trying would
// otherwise write a log line per connection.
func (p *pendingConns) refusedSince(now time.Time, interval time.Duration) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refused == 0 || now.Sub(p.logged) < interval {
		return 0
	}
	n := p.refused
	p.refused, p.logged = 0, now
	return n
}

func hostOf(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
