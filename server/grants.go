package server

import (
	"sync"

	"github.com/cairnbackup/cairn/catalog"
)

// grantLocks serialise the volume grants that choose among the same
// volumes, so two jobs never get one volume (or tape) for appending, while
// grants that cannot meet run at once: a grant holds its lock across Raft
// round trips, and one lock for the cluster made every backup wait for
// every other one's.
type grantLocks struct {
	mu    sync.Mutex
	locks map[string]*grantLock
}

type grantLock struct {
	sync.Mutex
	waiters int // holders and waiters, so an idle lock is dropped
}

// grantKey names what a grant in pool chooses from: a disk pool's own
// volumes, or, for a tape pool, the library's cartridges, since every tape
// pool of a library draws on its one scratch pool.
func grantKey(pool *catalog.Pool, library string) string {
	if pool.Type.HasLibrary() {
		return "library/" + library
	}
	return "pool/" + pool.Name
}

// lock takes the lock of key and returns its release.
func (g *grantLocks) lock(key string) (unlock func()) {
	g.mu.Lock()
	if g.locks == nil {
		g.locks = map[string]*grantLock{}
	}
	l := g.locks[key]
	if l == nil {
		l = &grantLock{}
		g.locks[key] = l
	}
	l.waiters++
	g.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		g.mu.Lock()
		if l.waiters--; l.waiters == 0 {
			delete(g.locks, key)
		}
		g.mu.Unlock()
	}
}
