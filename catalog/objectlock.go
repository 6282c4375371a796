package catalog

import (
	"bytes"
	"fmt"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/bbolt"
)

// Object locks: a pool whose type Locks keeps its volumes' objects under
// the store's object lock. The catalog says what each object must be: locked
// until the backup's LockedUntil, which every later backup building on it
// extends (a restore of that one reads this one's objects), and under legal
// hold while a hold covers its backup or any backup building on it (the
// expiry keeps those, so the store must too). The servers have the storage
// node make the store so (ObjectLocks, server/objectlock.go). DESIGN.md,
// "Object locks".

// extendChainLocks extends to b's LockedUntil the lock of every backup b
// builds on that has a part in a pool that locks, and that volume's
// LockedUntil: extend-only, as the store's retain-until dates are.
func (a *applier) extendChainLocks(b *Backup) error {
	if b.LockedUntil.IsZero() {
		return nil
	}
	for id, child := b.Parent, b.ID; id != 0; {
		if id >= child {
			return fmt.Errorf("backup %d names backup %d, a later one, as its parent", child, id)
		}
		p, err := a.backup(id)
		if err != nil {
			return err
		}
		if p == nil {
			return nil // a broken chain: Chain refuses a restore of it
		}
		locked := false
		for _, part := range p.Parts {
			v, err := a.volume(part.VolumeID)
			if err != nil {
				return err
			}
			if v == nil || !v.MediaType.Locks() {
				continue
			}
			locked = true
			if b.LockedUntil.After(v.LockedUntil) {
				old := *v
				v.LockedUntil = b.LockedUntil
				if err := a.putVolume(&old, v); err != nil {
					return err
				}
			}
		}
		if locked && b.LockedUntil.After(p.LockedUntil) {
			old := *p
			p.LockedUntil = b.LockedUntil
			if err := a.putBackup(&old, p); err != nil {
				return err
			}
		}
		id, child = p.Parent, p.ID
	}
	return nil
}

// ObjectLock is what the store must keep of a volume's objects that start
// in [Start, End): locked until at least Until (zero: no date asked), and
// under legal hold or not.
type ObjectLock struct {
	Start int64
	End   int64
	Until time.Time
	Hold  bool
	// Backup is the backup whose part the objects are; 0 for the label.
	Backup uint64
}

// ObjectLocks is what the store must keep of volume id's objects: one per
// part of a complete backup on it, and first the label's (the object at 0),
// which a volume read with no catalog needs as long as any part: locked
// until the latest of them and the volume's LockedUntil, held while any is.
func (s *Store) ObjectLocks(id uuid.UUID) ([]ObjectLock, error) {
	var out []ObjectLock
	err := s.view(func(tx *bbolt.Tx) error {
		var v Volume
		ok, err := getJSON(tx, bVolumes, id[:], &v)
		if err != nil {
			return err
		}
		if !ok {
			return notFound("volume %s does not exist", id)
		}
		label := ObjectLock{Start: 0, End: 1, Until: v.LockedUntil}
		out = append(out, label)
		kids := map[string]map[uint64][]uint64{}
		c := tx.Bucket(bVolumeBackups).Cursor()
		for k, _ := c.Seek(id[:]); k != nil && bytes.HasPrefix(k, id[:]); k, _ = c.Next() {
			var b Backup
			ok, err := getJSON(tx, bBackups, k[len(id):], &b)
			if err != nil {
				return err
			}
			if !ok || b.State != BackupComplete {
				continue
			}
			if kids[b.Client] == nil {
				if kids[b.Client], err = children(tx, b.Client); err != nil {
					return err
				}
			}
			held, err := heldInChain(tx, &b, kids[b.Client])
			if err != nil {
				return err
			}
			for _, p := range b.Parts {
				if p.VolumeID != id {
					continue
				}
				out = append(out, ObjectLock{Start: p.VolumeStart, End: p.End, Until: b.LockedUntil, Hold: held, Backup: b.ID})
				if b.LockedUntil.After(out[0].Until) {
					out[0].Until = b.LockedUntil
				}
				out[0].Hold = out[0].Hold || held
			}
		}
		return nil
	})
	return out, err
}

// heldInChain: a hold covers b (its own or its client's) or a backup that
// builds on it, directly or through others (kids: children's map).
func heldInChain(tx *bbolt.Tx, b *Backup, kids map[uint64][]uint64) (bool, error) {
	h, err := heldBy(tx, b)
	if err != nil || h != nil {
		return h != nil, err
	}
	holds := tx.Bucket(bHolds)
	if holds == nil {
		return false, nil
	}
	queue := append([]uint64(nil), kids[b.ID]...)
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		if holds.Get(backupHoldKey(id)) != nil {
			return true, nil
		}
		queue = append(queue, kids[id]...)
	}
	return false, nil
}

// LockedVolumesOf is every volume in a pool that locks holding a part of
// one of backups or of a backup it builds on: the volumes whose objects a
// hold, a release or a commit of them may change.
func (s *Store) LockedVolumesOf(backups []uint64) ([]uuid.UUID, error) {
	seen := map[uuid.UUID]bool{}
	var out []uuid.UUID
	err := s.view(func(tx *bbolt.Tx) error {
		for _, id := range backups {
			for id != 0 {
				var b Backup
				ok, err := getJSON(tx, bBackups, u64(id), &b)
				if err != nil || !ok {
					return err
				}
				for _, p := range b.Parts {
					var v Volume
					ok, err := getJSON(tx, bVolumes, p.VolumeID[:], &v)
					if err != nil {
						return err
					}
					if ok && v.MediaType.Locks() && !seen[v.ID] {
						seen[v.ID] = true
						out = append(out, v.ID)
					}
				}
				if b.Parent >= b.ID {
					break
				}
				id = b.Parent
			}
		}
		return nil
	})
	return out, err
}
