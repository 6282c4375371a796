package catalog

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/bbolt"
)

// getOne reads one record or reports it not found, naming it.
func getOne[T any](s *Store, bucket, key []byte, what string) (*T, error) {
	var v T
	err := s.view(func(tx *bbolt.Tx) error {
		ok, err := getJSON(tx, bucket, key, &v)
		if err != nil {
			return err
		}
		if !ok {
			return notFound("%s does not exist", what)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// getAll reads every record of a bucket, in key order.
func getAll[T any](s *Store, bucket []byte) ([]T, error) {
	var out []T
	err := s.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, data []byte) error {
			var v T
			if err := jsonUnmarshal(bucket, k, data, &v); err != nil {
				return err
			}
			out = append(out, v)
			return nil
		})
	})
	return out, err
}

// Client returns the client called name.
func (s *Store) Client(name string) (*Client, error) {
	return getOne[Client](s, bClients, []byte(name), fmt.Sprintf("client %q", name))
}

// Clients returns every client, by name.
func (s *Store) Clients() ([]Client, error) { return getAll[Client](s, bClients) }

// Node returns the storage node with this id.
func (s *Store) Node(id string) (*StorageNode, error) {
	return getOne[StorageNode](s, bNodes, []byte(id), fmt.Sprintf("storage node %q", id))
}

// Nodes returns every storage node, by id.
func (s *Store) Nodes() ([]StorageNode, error) { return getAll[StorageNode](s, bNodes) }

// Pool returns the pool called name.
func (s *Store) Pool(name string) (*Pool, error) {
	return getOne[Pool](s, bPools, []byte(name), fmt.Sprintf("pool %q", name))
}

// Pools returns every pool, by name.
func (s *Store) Pools() ([]Pool, error) { return getAll[Pool](s, bPools) }

// Key returns the (wrapped) key with this id.
func (s *Store) Key(id string) (*Key, error) {
	return getOne[Key](s, bKeys, []byte(id), fmt.Sprintf("key %q", id))
}

// Keys returns every key, by id.
func (s *Store) Keys() ([]Key, error) { return getAll[Key](s, bKeys) }

// Volume returns the volume with this id.
func (s *Store) Volume(id uuid.UUID) (*Volume, error) {
	return getOne[Volume](s, bVolumes, id[:], fmt.Sprintf("volume %s", id))
}

// VolumeByName returns the volume labeled name.
func (s *Store) VolumeByName(name string) (*Volume, error) {
	var v Volume
	err := s.view(func(tx *bbolt.Tx) error {
		id := tx.Bucket(bVolumeNames).Get([]byte(name))
		if id == nil {
			return notFound("volume %q does not exist", name)
		}
		ok, err := getJSON(tx, bVolumes, id, &v)
		if err == nil && !ok {
			err = fmt.Errorf("volume name %q points to missing volume %x", name, id)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// VolumeFilter selects volumes; empty fields match everything.
type VolumeFilter struct {
	Pool  string
	Node  string
	State VolumeState
	// Library selects the tapes of one library (vaulted ones included).
	Library string
}

// Volumes returns the volumes f selects, by name.
func (s *Store) Volumes(f VolumeFilter) ([]Volume, error) {
	var out []Volume
	err := s.view(func(tx *bbolt.Tx) error {
		vols := tx.Bucket(bVolumes)
		// By name, so lists come out in label order.
		return tx.Bucket(bVolumeNames).ForEach(func(name, id []byte) error {
			var v Volume
			if err := jsonUnmarshal(bVolumes, id, vols.Get(id), &v); err != nil {
				return err
			}
			if (f.Pool == "" || v.Pool == f.Pool) && (f.Node == "" || v.Node == f.Node) && (f.State == "" || v.State == f.State) &&
				(f.Library == "" || v.Library == f.Library) {
				out = append(out, v)
			}
			return nil
		})
	})
	return out, err
}

// Job returns the job with this id, with its log.
func (s *Store) Job(id uint64) (*Job, error) {
	var j Job
	err := s.view(func(tx *bbolt.Tx) error {
		ok, err := getJSON(tx, bJobs, u64(id), &j)
		if err != nil {
			return err
		}
		if !ok {
			return notFound("job %d does not exist", id)
		}
		c := tx.Bucket(bJobLog).Cursor()
		prefix := u64(id)
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var l LogLine
			if err := jsonUnmarshal(bJobLog, k, v, &l); err != nil {
				return err
			}
			j.Log = append(j.Log, l)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &j, nil
}

// JobFilter selects jobs; empty fields match everything.
type JobFilter struct {
	Client string
	Type   JobType
	States []JobState
	// Limit caps the number of jobs returned, 0 for no cap.
	Limit int
	// Before, when set, selects only the jobs older than this one: the
	// next page of a list that ended with it.
	Before uint64
}

// Jobs returns the jobs f selects, newest first, without their logs.
func (s *Store) Jobs(f JobFilter) ([]Job, error) {
	var out []Job
	active := len(f.States) > 0 && !slices.ContainsFunc(f.States, JobState.Done)
	err := s.view(func(tx *bbolt.Tx) error {
		jobs := tx.Bucket(bJobs)
		visit := func(id []byte) (bool, error) {
			if f.Before != 0 && binary.BigEndian.Uint64(id) >= f.Before {
				return true, nil
			}
			var j Job
			if err := jsonUnmarshal(bJobs, id, jobs.Get(id), &j); err != nil {
				return false, err
			}
			if (f.Client == "" || j.Client == f.Client) && (f.Type == "" || j.Type == f.Type) &&
				(len(f.States) == 0 || slices.Contains(f.States, j.State)) {
				out = append(out, j)
			}
			return f.Limit <= 0 || len(out) < f.Limit, nil
		}
		switch {
		case active:
			// Running and queued jobs are few; the index spares a scan of
			// every job ever run.
			return reverse(tx.Bucket(bJobsActive), nil, func(k []byte) (bool, error) { return visit(k) })
		case f.Client != "":
			return reverse(tx.Bucket(bJobsByClient), append([]byte(f.Client), 0), func(k []byte) (bool, error) {
				return visit(k[len(k)-8:])
			})
		default:
			return reverse(jobs, nil, func(k []byte) (bool, error) { return visit(k) })
		}
	})
	return out, err
}

// reverse visits the keys of b that start with prefix, last first, until fn
// returns false.
func reverse(b *bbolt.Bucket, prefix []byte, fn func(k []byte) (bool, error)) error {
	c := b.Cursor()
	var k []byte
	if len(prefix) == 0 {
		k, _ = c.Last()
	} else {
		// Seek to the first key after the prefix range, then step back.
		end := append(bytes.Clone(prefix), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
		k, _ = c.Seek(end)
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Prev() {
		more, err := fn(k)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// Backup returns the backup with this id.
func (s *Store) Backup(id uint64) (*Backup, error) {
	return getOne[Backup](s, bBackups, u64(id), fmt.Sprintf("backup %d", id))
}

// BackupFilter selects backups; empty fields match everything.
type BackupFilter struct {
	Client  string
	FileSet string
	States  []BackupState
	// Before, when set, selects only the backups older than this one: the
	// next page of a list that ended with it.
	Before uint64
	// Limit caps the number of backups returned, 0 for no cap.
	Limit int
	// Volume, when set, selects the backups with a part on this volume.
	// The catalog keeps no index of parts by volume: this reads every
	// backup (of the client, when Client is set).
	Volume uuid.UUID
}

// Backups returns the backups f selects, newest first.
func (s *Store) Backups(f BackupFilter) ([]Backup, error) {
	var out []Backup
	keep := func(b *Backup) bool {
		if (f.Before == 0 || b.ID < f.Before) && (f.FileSet == "" || b.FileSet == f.FileSet) && (len(f.States) == 0 || slices.Contains(f.States, b.State)) &&
			(f.Volume == uuid.Nil || slices.ContainsFunc(b.Parts, func(p Part) bool { return p.VolumeID == f.Volume })) {
			out = append(out, *b)
		}
		return f.Limit <= 0 || len(out) < f.Limit
	}
	err := s.view(func(tx *bbolt.Tx) error {
		if f.Client != "" {
			return eachClientBackup(tx, f.Client, keep)
		}
		backups := tx.Bucket(bBackups)
		return reverse(backups, nil, func(k []byte) (bool, error) {
			if f.Before != 0 && binary.BigEndian.Uint64(k) >= f.Before {
				return true, nil
			}
			var b Backup
			if err := jsonUnmarshal(bBackups, k, backups.Get(k), &b); err != nil {
				return false, err
			}
			return keep(&b), nil
		})
	})
	return out, err
}

// eachClientBackup visits a client's backups, newest first, until fn returns
// false.
func eachClientBackup(tx *bbolt.Tx, client string, fn func(*Backup) bool) error {
	backups := tx.Bucket(bBackups)
	return reverse(tx.Bucket(bBackupsByClient), append([]byte(client), 0), func(k []byte) (bool, error) {
		id := k[len(k)-8:]
		var b Backup
		if err := jsonUnmarshal(bBackups, id, backups.Get(id), &b); err != nil {
			return false, err
		}
		return fn(&b), nil
	})
}

// BackupAt returns the client's complete backup that represents the latest
// point in time at or before t.
func (s *Store) BackupAt(client string, t time.Time) (*Backup, error) {
	var best *Backup
	err := s.view(func(tx *bbolt.Tx) error {
		prefix := len(clientPrefix(client))
		return eachFileSet(tx, client, func(_ *bbolt.Cursor, set []byte) (bool, error) {
			b, err := latestOf(tx, client, string(set[prefix:len(set)-1]), t, func(e *backupTime) bool { return e.State == BackupComplete })
			if b != nil && (best == nil || later(b.StartTime, b.ID, best)) {
				best = b
			}
			return err == nil, err
		})
	})
	if err != nil {
		return nil, err
	}
	if best == nil {
		return nil, notFound("client %q has no complete backup at or before %s", client, t.UTC().Format(time.RFC3339))
	}
	return best, nil
}

// Chain returns the backups a restore of backupID reads, oldest first: the
// full it builds on, the backups between, and the backup itself. Every
// backup before the last must be complete.
func (s *Store) Chain(backupID uint64) ([]Backup, error) {
	var chain []Backup
	err := s.view(func(tx *bbolt.Tx) error {
		id := backupID
		for {
			var b Backup
			ok, err := getJSON(tx, bBackups, u64(id), &b)
			if err != nil {
				return err
			}
			if !ok {
				if id == backupID {
					return notFound("backup %d does not exist", id)
				}
				return notFound("backup %d builds on backup %d, which does not exist", chain[len(chain)-1].ID, id)
			}
			if len(chain) > 0 && b.State != BackupComplete {
				return fmt.Errorf("backup %d builds on backup %d, which is %s", chain[len(chain)-1].ID, id, b.State)
			}
			chain = append(chain, b)
			if b.Parent == 0 {
				return nil
			}
			// A parent is created before its child; anything else is a
			// corrupt catalog, and would loop.
			if b.Parent >= b.ID {
				return fmt.Errorf("backup %d names backup %d, a later one, as its parent", b.ID, b.Parent)
			}
			id = b.Parent
		}
	})
	if err != nil {
		return nil, err
	}
	slices.Reverse(chain)
	return chain, nil
}

// Counts is the catalog at a glance, for metrics.
type Counts struct {
	AppliedIndex uint64
	Clients      int
	Nodes        int
	Pools        int
	Keys         int
	Jobs         map[JobState]int64
	Backups      map[BackupState]int64
	// Volumes counts volumes by pool, then state.
	Volumes map[string]map[VolumeState]int
	// PoolBytes sums the committed bytes of each pool's volumes.
	PoolBytes map[string]int64
	// IndexSegments and IndexBytes are the file index the catalog stores.
	IndexSegments int
	IndexBytes    int64
}

// Group is the identity of the group this catalog belongs to; nil when no
// leader recorded one yet (a new member before it received the catalog, or
// a catalog from before groups had one).
func (s *Store) Group() (*Group, error) {
	var g Group
	var found bool
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		found, err = getJSON(tx, bMeta, keyGroup, &g)
		return err
	})
	if err != nil || !found {
		return nil, err
	}
	return &g, nil
}

// Counts reads the catalog's totals. Jobs and backups come from counters the
// applier keeps, so this does not grow with the number of jobs ever run.
func (s *Store) Counts() (Counts, error) {
	c := Counts{
		Jobs: map[JobState]int64{}, Backups: map[BackupState]int64{},
		Volumes: map[string]map[VolumeState]int{}, PoolBytes: map[string]int64{},
	}
	err := s.view(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bMeta)
		c.AppliedIndex = getU64(meta, keyAppliedIndex)
		c.Clients = tx.Bucket(bClients).Stats().KeyN
		c.Nodes = tx.Bucket(bNodes).Stats().KeyN
		c.Pools = tx.Bucket(bPools).Stats().KeyN
		c.Keys = tx.Bucket(bKeys).Stats().KeyN
		for _, st := range JobStates {
			if n := getU64(meta, countKey("job", string(st))); n != 0 {
				c.Jobs[st] = int64(n)
			}
		}
		for _, st := range []BackupState{BackupWriting, BackupComplete, BackupAborted} {
			if n := getU64(meta, countKey("backup", string(st))); n != 0 {
				c.Backups[st] = int64(n)
			}
		}
		c.IndexSegments = int(getU64(meta, countKey("index", "segments")))
		c.IndexBytes = int64(getU64(meta, countKey("index", "bytes")))
		return tx.Bucket(bVolumes).ForEach(func(k, data []byte) error {
			var v Volume
			if err := jsonUnmarshal(bVolumes, k, data, &v); err != nil {
				return err
			}
			if c.Volumes[v.Pool] == nil {
				c.Volumes[v.Pool] = map[VolumeState]int{}
			}
			c.Volumes[v.Pool][v.State]++
			c.PoolBytes[v.Pool] += v.Bytes
			return nil
		})
	})
	return c, err
}

func jsonUnmarshal(bucket, key, data []byte, v any) error {
	if data == nil {
		return fmt.Errorf("catalog %s: index names missing key %x", bucket, key)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s/%x: %w", bucket, key, err)
	}
	return nil
}
