package cluster

import (
	"sync"

	"github.com/hashicorp/raft"
)

// guardedTransport is the Raft transport with its heartbeat fast path
// fenced from Shutdown. Raft runs a follower's heartbeats on the
// transport's connection goroutines, not its own, so raft.Shutdown does
// not wait for one under way: when the log store closed under it, Raft
// panicked saving the term the heartbeat brought ("failed to save current
// term: database not open"), and took the whole server down on its way
// out. Shutdown fences it first: that waits for the heartbeats under way,
// and refuses the later ones, before the store closes.
type guardedTransport struct {
	*raft.NetworkTransport
	mu     sync.RWMutex
	fenced bool
}

// SetHeartbeatHandler installs Raft's handler behind the fence.
func (g *guardedTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	if cb == nil {
		g.NetworkTransport.SetHeartbeatHandler(nil)
		return
	}
	g.NetworkTransport.SetHeartbeatHandler(func(rpc raft.RPC) {
		g.mu.RLock()
		defer g.mu.RUnlock()
		if g.fenced {
			rpc.Respond(nil, raft.ErrTransportShutdown)
			return
		}
		cb(rpc)
	})
}

// fence returns once no heartbeat is under way; none runs after it.
func (g *guardedTransport) fence() {
	g.mu.Lock()
	g.fenced = true
	g.mu.Unlock()
}
