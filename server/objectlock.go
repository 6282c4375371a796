package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/wire"
)

// Object locks follow the catalog (DESIGN.md, "Object locks"): the objects
// of a volume in a pool that locks are kept, by the store, as the catalog
// says (catalog.ObjectLocks: legal holds from the holds, retain-until dates
// extended along chains). The leader orders each volume's node to make them
// so after what changes it (a hold, a release, a commit), for every volume
// of a node that registers, and for every such volume each ExpiryInterval.
// The order names the whole volume's state and the node changes only what
// differs, so an order lost with a node that was down, one that failed, or
// one a former leader never sent is caught by the next.

// relockTimeout bounds a node's work on one volume's objects: a HEAD per
// object, and a request for each one changed.
const relockTimeout = 2 * time.Minute

// relocks is the set of volumes whose objects wait for an order.
type relocks struct {
	mu      sync.Mutex
	pending map[uuid.UUID]bool
	kick    chan struct{}
	// trace, set by tests before Start, hears each order's outcome.
	trace func(volume string, res wire.ObjectLockResult, err error)
}

func (r *relocks) queue(ids []uuid.UUID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		r.pending = map[uuid.UUID]bool{}
	}
	for _, id := range ids {
		r.pending[id] = true
	}
}

// markRelock queues the volumes' orders and wakes the loop.
func (s *Server) markRelock(ids ...uuid.UUID) {
	if len(ids) == 0 {
		return
	}
	s.relock.queue(ids)
	select {
	case s.relock.kick <- struct{}{}:
	default:
	}
}

// relockBackups queues the volumes that a hold, a release or a commit of
// backups (and of what they build on) may change.
func (s *Server) relockBackups(backups ...uint64) {
	ids, err := s.store.LockedVolumesOf(backups)
	if err != nil {
		s.log.Warn("volumes of held or committed backups not read; the periodic pass sets their locks", "backups", backups, "err", err)
		return
	}
	s.markRelock(ids...)
}

// relockWhere queues every volume of a pool that locks that f selects
// (a client's hold covers backups anywhere; a node that registers
// has all its volumes checked).
func (s *Server) relockWhere(f catalog.VolumeFilter) {
	vols, err := s.store.Volumes(f)
	if err != nil {
		s.log.Warn("volumes not read; the periodic pass sets their locks", "err", err)
		return
	}
	var ids []uuid.UUID
	for _, v := range vols {
		if v.MediaType.Locks() {
			ids = append(ids, v.ID)
		}
	}
	s.markRelock(ids...)
}

// relockLoop sends the queued orders while this server leads, and queues
// every volume that locks each ExpiryInterval.
func (s *Server) relockLoop(ctx context.Context) {
	t := s.clock.NewTicker(s.cfg.ExpiryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			s.relockWhere(catalog.VolumeFilter{})
		case <-s.relock.kick:
		}
		lctx, ok := s.decide()
		if !ok {
			continue
		}
		s.relock.mu.Lock()
		todo := s.relock.pending
		s.relock.pending = nil
		s.relock.mu.Unlock()
		var failed []uuid.UUID
		for id := range todo {
			if err := s.relockVolume(lctx, id); err != nil {
				s.log.Warn("the locks of a volume's objects are not set yet; tried again later", "volume", id, "err", err)
				failed = append(failed, id)
			}
		}
		if len(failed) > 0 {
			// Again at the next tick, not at once: the node is away or
			// failing, and a kick would spin.
			s.relock.queue(failed)
		}
	}
}

// relockVolume orders volume id's node to make its objects keep the
// catalog's locks. A volume the catalog forgot needs nothing.
func (s *Server) relockVolume(ctx context.Context, id uuid.UUID) error {
	v, err := s.store.Volume(id)
	if err != nil {
		if errors.Is(err, catalog.ErrNotFound) {
			return nil
		}
		return err
	}
	// An expired volume still gets its order: the holds on its objects
	// must go, or the store refuses its deletion for ever.
	if !v.MediaType.Locks() || v.State == catalog.VolumeLabeling {
		return nil
	}
	locks, err := s.store.ObjectLocks(id)
	if err != nil {
		return err
	}
	if ok, seen := s.online(s.nodes, v.Node); !ok {
		return fmt.Errorf("storage node %s is offline (last seen %s)", v.Node, seen.UTC().Format(time.RFC3339))
	}
	o := wire.ObjectLockOrder{Pool: v.Pool, Volume: v.Name, VolumeID: v.ID}
	for _, l := range locks {
		o.Objects = append(o.Objects, wire.ObjectLock{Start: l.Start, End: l.End, Until: l.Until, Hold: l.Hold})
	}
	// Last, and so for the objects no part above covers: those of a
	// backup expired or deleted since a hold on it was set (a release
	// whose order had not gone out yet), which no hold keeps any more.
	// No date is asked of them, and what a session writing now stores
	// is born without a hold.
	o.Objects = append(o.Objects, wire.ObjectLock{Start: 0, End: math.MaxInt64})
	octx, cancel := context.WithTimeout(ctx, relockTimeout)
	defer cancel()
	var res wire.ObjectLockResult
	err = wire.RequestIn(octx, s.nc, s.groupName(), wire.NodeSubject(v.Node, wire.OpNodeObjectLocks), o, &res)
	if tr := s.relock.trace; tr != nil {
		tr(v.Name, res, err)
	}
	if err != nil {
		return fmt.Errorf("volume %s on storage node %s: %w", v.Name, v.Node, err)
	}
	return nil
}
