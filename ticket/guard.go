package ticket

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

var usedBucket = []byte("used_tickets")

// Guard remembers the tickets a storage node accepted until they expire, in
// a bbolt file, so a ticket cannot be replayed even across a node restart.
type Guard struct {
	mu sync.Mutex
	db *bolt.DB
}

// OpenGuard opens (or creates) the guard's file.
func OpenGuard(path string) (*Guard, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open ticket guard %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(usedBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open ticket guard %s: %w", path, err)
	}
	return &Guard{db: db}, nil
}

// Use records t as used. It fails with a Replayed error when t was used
// before, and forgets tickets that expired before now.
func (g *Guard) Use(t Ticket, now time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(usedBucket)
		if b.Get([]byte(t.ID)) != nil {
			return &Error{Reason: Replayed, JobID: t.JobID}
		}
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) == 8 && int64(binary.BigEndian.Uint64(v)) < now.Add(-time.Hour).UnixNano() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		var exp [8]byte
		binary.BigEndian.PutUint64(exp[:], uint64(t.Expires.UnixNano()))
		return b.Put([]byte(t.ID), exp[:])
	})
}

// Close closes the file.
func (g *Guard) Close() error { return g.db.Close() }
