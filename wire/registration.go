package wire

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Group is the servers' group a role (an agent, a storage node) names in
// its requests: the one in its config, or else the one its first
// registration answered; empty until it knows, and then the same until the
// role stops. A nil *Group is one not known.
type Group struct {
	mu sync.Mutex
	id string
}

// NewGroup is a group known from the start as id ("" when not).
func NewGroup(id string) *Group { return &Group{id: id} }

// ID is the group, empty until it is known.
func (g *Group) ID() string {
	if g == nil {
		return ""
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.id
}

// Learn keeps id, a registration's answer, when the group is not known
// yet, and reports whether it did.
func (g *Group) Learn(id string) bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.id != "" || id == "" {
		return false
	}
	g.id = id
	return true
}

// ReregisterEvery is how often a registered role registers again, so that
// a server that lost its state learns it again.
const ReregisterEvery = time.Minute

// KeepRegistered is a role's registration and heartbeat loop, until ctx
// ends. While the role is not registered it registers, and on failure
// says why and tries again after 250 ms, twice as long each time up to
// 5 s; once registered it beats every interval, and registers again every
// ReregisterEvery. A registration that fails then leaves the role
// registered, and is tried again at the next beat.
func KeepRegistered(ctx context.Context, log *slog.Logger, interval time.Duration, registered func() bool, register func(context.Context) error, beat func()) {
	var lastRegister time.Time
	retry := 250 * time.Millisecond
	for {
		if !registered() || time.Since(lastRegister) > ReregisterEvery {
			err := register(ctx)
			switch {
			case err == nil:
				lastRegister = time.Now()
			case ctx.Err() != nil:
				return
			case !registered():
				log.Warn("registration with the servers failed; retrying", "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(retry):
				}
				retry = min(2*retry, 5*time.Second)
				continue
			}
		}
		beat()
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
