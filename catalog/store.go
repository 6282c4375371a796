package catalog

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
)

// Bucket names. They are the catalog's on-disk layout (DESIGN.md): never
// rename one.
var (
	bMeta            = []byte("meta")              // applied index, format, counters
	bClients         = []byte("clients")           // name -> Client
	bNodes           = []byte("nodes")             // id -> StorageNode
	bPools           = []byte("pools")             // name -> Pool
	bKeys            = []byte("keys")              // id -> Key
	bVolumes         = []byte("volumes")           // uuid(16) -> Volume
	bVolumeNames     = []byte("volume_names")      // name -> uuid(16)
	bVolumesHeld     = []byte("volumes_held")      // job(8) uuid(16) -> nil
	bJobs            = []byte("jobs")              // id(8) -> Job without Log
	bJobLog          = []byte("job_log")           // id(8) seq(8) -> LogLine
	bJobsByClient    = []byte("jobs_by_client")    // client 0 id(8) -> nil
	bJobsActive      = []byte("jobs_active")       // id(8) -> nil, jobs not Done
	bBackups         = []byte("backups")           // id(8) -> Backup
	bBackupsByClient = []byte("backups_by_client") // client 0 id(8) -> nil
	bSegMeta         = []byte("segment_meta")      // backup(8) no(4) -> segMeta
	bSegData         = []byte("segment_data")      // backup(8) no(4) -> bucket {"d": encoded segment}
	bRequests        = []byte("requests")          // request id -> Request
	bRequestsByTime  = []byte("requests_by_time")  // unix nanos(8) request id -> nil
	bPolicies        = []byte("policies")          // name -> Policy
	bRuns            = []byte("runs")              // policy 0 client 0 unix nanos(8) -> Run
	bHolds           = []byte("holds")             // "b" id(8) | "c" client -> Hold
	bVolumeBackups   = []byte("volume_backups")    // uuid(16) backup(8) -> nil, the backups with a part on a volume
	bExpiries        = []byte("expiries")          // seq(8) -> Expiry, the expiry history
	bBackupTimes     = []byte("backup_times")      // client 0 fileset 0 start(8) id(8) -> parent(8) level state pool
	bClientBackups   = []byte("client_backups")    // client -> its complete backups(8)
	bAlerts          = []byte("alerts")            // condition -> Alert, owed or a breach sent
)

// buckets1 are the buckets of format 1; format 2 added the request index.
var buckets1 = [][]byte{
	bMeta, bClients, bNodes, bPools, bKeys, bVolumes, bVolumeNames, bVolumesHeld,
	bJobs, bJobLog, bJobsByClient, bJobsActive, bBackups, bBackupsByClient, bSegMeta, bSegData,
}

// buckets2 are the buckets of format 2; format 3 added the policies and
// the runs of their schedules.
var buckets2 = append(slices.Clone(buckets1), bRequests, bRequestsByTime)

// buckets3 are the buckets of format 3; format 4 added holds, the index of
// backups by volume and the expiry history.
var buckets3 = append(slices.Clone(buckets2), bPolicies, bRuns)

// buckets4 are the buckets of formats 4 and 5 (5 chunked the segments);
// format 6 added the index of backups by client, file set and time, and
// the count of each client's complete backups.
var buckets4 = append(slices.Clone(buckets3), bHolds, bVolumeBackups, bExpiries)

// buckets6 are the buckets of format 6; format 7 added the alerts.
var buckets6 = append(slices.Clone(buckets4), bBackupTimes, bClientBackups)

var allBuckets = append(slices.Clone(buckets6), bAlerts)

var (
	keyFormat       = []byte("format")
	keyAppliedIndex = []byte("applied_index")
	keyNextJob      = []byte("next_job")
	keyGroup        = []byte("group")
)

// storeFormat is the layout version in meta/format. A catalog of a newer
// format is refused rather than misread. Format 2 added the request index
// and the pending and void job states, which an older server would leave
// pending forever; format 3 added the policies, which an older server would
// neither run nor keep; format 4 added legal holds, the expiry history and
// the index of backups by volume, which the upgrade fills from the backups
// there are; format 5 stores index segments chunked (layer.go), which an
// older server would not find, and the upgrade chunks the segments there
// are; format 6 added the index of backups by client, file set and time
// and the count of each client's complete backups, which an older server
// would not keep, and the upgrade fills from the backups there are;
// format 7 added the alerts owed and the breaches sent, which an older
// leader would neither send nor clear, and which start empty (a breach
// that goes on is alerted once more by the first leader of format 7).
// Opening a catalog of an older format for writing upgrades it.
const storeFormat = 7

// Store is the catalog in one bbolt file. Reads may run on any goroutine,
// concurrently with Apply and Restore.
type Store struct {
	path string

	// mu guards db, which Restore replaces; transactions take it shared.
	mu     sync.RWMutex
	db     *bbolt.DB
	broken error // why db is nil after a failed Restore

	// decodes counts the chunks the index readers decoded, so tests can
	// prove they skip the others.
	decodes atomic.Int64
	// chunks keeps the chunks decoded last: a restore plan reads the same
	// few chunks of every backup of a chain once per pass.
	chunks chunkCache

	// groupChanges counts the changes of the group's identity applied
	// (its first record, a rotation of its secrets, a restored snapshot),
	// so a reader can keep the group in memory and read it again only
	// when it changed.
	groupChanges atomic.Uint64
}

// GroupVersion changes whenever the group (Group) may have changed.
func (s *Store) GroupVersion() uint64 { return s.groupChanges.Load() }

func boltOptions() *bbolt.Options {
	return &bbolt.Options{
		// A second process on the same file gets an error, not a hang.
		Timeout:      2 * time.Second,
		FreelistType: bbolt.FreelistMapType,
		// A long read transaction (a snapshot being streamed) blocks a
		// writer that must grow the memory map; reserving address space up
		// front makes that rare. It is address space, not memory.
		InitialMmapSize: 1 << 30,
	}
}

// Open opens or creates the catalog file at path.
func Open(path string) (*Store, error) {
	db, err := openDB(path)
	if err != nil {
		return nil, err
	}
	return &Store{path: path, db: db}, nil
}

// OpenReadOnly opens the catalog file at path for reading only, as a copy
// of a stopped server's catalog is inspected: nothing, not even the file's
// own bookkeeping, is written, and other read-only opens may share the file.
// Apply and Restore on it fail.
func OpenReadOnly(path string) (*Store, error) {
	opts := boltOptions()
	opts.ReadOnly = true
	db, err := bbolt.Open(path, 0o600, opts)
	if err != nil {
		return nil, fmt.Errorf("open catalog %s read-only: %w", path, err)
	}
	err = db.View(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bMeta)
		if meta == nil {
			return fmt.Errorf("bucket %s is missing: this is not a catalog", bMeta)
		}
		f := getU64(meta, keyFormat)
		if f > storeFormat {
			return fmt.Errorf("catalog format %d is newer than this server reads (%d); upgrade cairn", f, storeFormat)
		}
		// Read as is: nothing may be written to add the rest.
		need := allBuckets
		switch {
		case f < 2:
			need = buckets1
		case f < 3:
			need = buckets2
		case f < 4:
			need = buckets3
		case f < 6:
			need = buckets4
		case f < 7:
			need = buckets6
		}
		for _, b := range need {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("bucket %s is missing: this is not a catalog, or one of an older layout", b)
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open catalog %s read-only: %w", path, err)
	}
	return &Store{path: path, db: db}, nil
}

func openDB(path string) (*bbolt.DB, error) {
	db, err := bbolt.Open(path, 0o600, boltOptions())
	if err != nil {
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bMeta)
		switch f := getU64(meta, keyFormat); {
		case f < storeFormat:
			// New, or of an older format whose buckets were just added.
			if f > 0 && f < 4 {
				if err := indexVolumeBackups(tx); err != nil {
					return err
				}
			}
			if f > 0 && f < 5 {
				if err := chunkSegments(tx); err != nil {
					return err
				}
			}
			if f > 0 && f < 6 {
				if err := indexBackupTimes(tx); err != nil {
					return err
				}
			}
			return meta.Put(keyFormat, u64(storeFormat))
		case f > storeFormat:
			return fmt.Errorf("catalog format %d is newer than this server reads (%d); upgrade cairn", f, storeFormat)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}
	return db, nil
}

// Close closes the file. Reads after Close return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db = nil
	s.broken = ErrClosed
	return err
}

// Path is the catalog file's path.
func (s *Store) Path() string { return s.path }

func (s *Store) dbLocked() (*bbolt.DB, error) {
	if s.db == nil {
		if s.broken != nil {
			return nil, s.broken
		}
		return nil, ErrClosed
	}
	return s.db, nil
}

func (s *Store) view(fn func(tx *bbolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	db, err := s.dbLocked()
	if err != nil {
		return err
	}
	return db.View(fn)
}

// AppliedIndex is the Raft index of the last command applied.
func (s *Store) AppliedIndex() (uint64, error) {
	var n uint64
	err := s.view(func(tx *bbolt.Tx) error {
		n = getU64(tx.Bucket(bMeta), keyAppliedIndex)
		return nil
	})
	return n, err
}

// errRefused rolls back the transaction of a refused command.
var errRefused = errors.New("refused")

// Apply applies c as the command at Raft index. The change and index go into
// one transaction, and an index at or below the stored applied index is
// skipped, so replaying a log that was partly applied applies nothing twice.
// A refusal (a *Error in the result) changes nothing but the applied index.
func (s *Store) Apply(index uint64, c *Command) ApplyResult {
	s.mu.RLock()
	defer s.mu.RUnlock()
	db, err := s.dbLocked()
	if err != nil {
		return ApplyResult{Err: err}
	}
	var res ApplyResult
	var refusal *Error
	err = db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bMeta)
		if index <= getU64(meta, keyAppliedIndex) {
			res.Skipped = true
			return nil
		}
		a := &applier{tx: tx, now: c.Time.UTC(), res: &res}
		if err := a.apply(c); err != nil {
			if errors.As(err, &refusal) {
				return errRefused
			}
			return err
		}
		return meta.Put(keyAppliedIndex, u64(index))
	})
	if errors.Is(err, errRefused) {
		// The refused command's partial writes are gone with the rolled
		// back transaction; only the index moves on.
		err = db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket(bMeta).Put(keyAppliedIndex, u64(index))
		})
		res = ApplyResult{Err: refusal}
	}
	if err != nil {
		return ApplyResult{Err: fmt.Errorf("apply catalog command %s at index %d: %w", c.Op, index, err)}
	}
	if res.Err == nil && (c.Op == OpInitGroup || c.Op == OpRotateSecrets) {
		s.groupChanges.Add(1)
	}
	return res
}

// WriteTo writes a consistent copy of the whole catalog file, applied index
// included, to w.
func (s *Store) WriteTo(w io.Writer) (int64, error) {
	var n int64
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// beginRead starts a read transaction that outlives the call, for a snapshot
// that is streamed later; the caller must roll it back.
func (s *Store) beginRead() (*bbolt.Tx, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	db, err := s.dbLocked()
	if err != nil {
		return nil, err
	}
	return db.Begin(false)
}

// Restore replaces the whole catalog with a copy written by WriteTo. The copy
// is written beside the file, checked, synced and renamed over it, so a crash
// leaves either the old catalog or the new one. Reads during a Restore wait
// and then see the new catalog, or get an error if it could not be opened.
func (s *Store) Restore(r io.Reader) error {
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, filepath.Base(s.path)+".restore-*")
	if err != nil {
		return fmt.Errorf("restore catalog: %w", err)
	}
	tmpPath := tmp.Name()
	defer os.Remove(tmpPath) // after the rename, this finds nothing
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return fmt.Errorf("restore catalog: receive copy: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("restore catalog: sync copy: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("restore catalog: %w", err)
	}
	// Open it once aside: a copy that is not a catalog must not replace one.
	check, err := openDB(tmpPath)
	if err != nil {
		return fmt.Errorf("restore catalog: the copy is not a usable catalog: %w", err)
	}
	if err := check.Close(); err != nil {
		return fmt.Errorf("restore catalog: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != nil {
		if err := s.db.Close(); err != nil {
			return fmt.Errorf("restore catalog: close the old file: %w", err)
		}
		s.db = nil
	}
	if err := os.Rename(tmpPath, s.path); err != nil {
		s.broken = fmt.Errorf("catalog unavailable: restore could not replace %s: %w", s.path, err)
		// The old file is still in place: keep serving it.
		if db, oerr := openDB(s.path); oerr == nil {
			s.db, s.broken = db, nil
		}
		return fmt.Errorf("restore catalog: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // make the rename durable; not all filesystems allow it
		d.Close()
	}
	db, err := openDB(s.path)
	if err != nil {
		s.broken = fmt.Errorf("catalog unavailable: reopen after restore: %w", err)
		return fmt.Errorf("restore catalog: %w", err)
	}
	s.db, s.broken = db, nil
	s.groupChanges.Add(1)
	return nil
}

// ---- encoding helpers ----

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func getU64(b *bbolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// nameKey is the key of an index by name then id: the name, a 0 byte, the
// id. Names never hold a 0 byte (validName).
func nameKey(name string, id uint64) []byte {
	k := append([]byte(name), 0)
	return binary.BigEndian.AppendUint64(k, id)
}

func segKey(backup uint64, no int) []byte {
	k := u64(backup)
	return binary.BigEndian.AppendUint32(k, uint32(no))
}

func getJSON(tx *bbolt.Tx, bucket, key []byte, v any) (bool, error) {
	data := tx.Bucket(bucket).Get(key)
	if data == nil {
		return false, nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("decode %s/%x: %w", bucket, key, err)
	}
	return true, nil
}

func putJSON(tx *bbolt.Tx, bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s/%x: %w", bucket, key, err)
	}
	return tx.Bucket(bucket).Put(key, data)
}

// countKey names a counter in the meta bucket, kept by the applier so that
// Counts does not scan every job and backup.
func countKey(kind, state string) []byte { return []byte("count/" + kind + "/" + state) }

func addCount(tx *bbolt.Tx, kind, state string, delta int64) error {
	meta := tx.Bucket(bMeta)
	k := countKey(kind, state)
	return meta.Put(k, u64(uint64(int64(getU64(meta, k))+delta)))
}
