package catalog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"go.etcd.io/bbolt"
)

// The index of backups by client, file set and time (backup_times, format
// 6): what the scheduler, a backup's parent, the latest backup and the
// expiry pass ask of a client's backups is about the newest of one file
// set, or about every backup's level, state and parent, never about their
// parts. Read from backups_by_client, each of those questions decoded every
// backup the client ever made (1,826 after five years of dailies); from
// this index it reads the few newest keys of one file set, or every key of
// the client without a JSON decode. putBackup and removeBackup keep it, and
// client_backups, the count of each client's complete backups.

// backupTime is one entry of the index: what it says of a backup.
type backupTime struct {
	ID        uint64
	FileSet   string
	StartTime time.Time
	Level     Level
	State     BackupState
	Parent    uint64
	Pool      string
}

// timeKey orders backups by client, file set, start time and id. Unix
// nanoseconds are shifted by 2^63 so that times before 1970 sort first.
func timeKey(client, fileSet string, t time.Time, id uint64) []byte {
	k := make([]byte, 0, len(client)+len(fileSet)+18)
	k = append(k, client...)
	k = append(k, 0)
	k = append(k, fileSet...)
	k = append(k, 0)
	k = binary.BigEndian.AppendUint64(k, timeBits(t))
	return binary.BigEndian.AppendUint64(k, id)
}

func timeBits(t time.Time) uint64 { return uint64(t.UnixNano()) ^ (1 << 63) }

func backupTimeKey(b *Backup) []byte { return timeKey(b.Client, b.FileSet, b.StartTime, b.ID) }

// backupTimeValue is the rest of what the index says: parent, level,
// state, pool.
func backupTimeValue(b *Backup) []byte {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 11+len(b.Level)+len(b.State)+len(b.Pool)), b.Parent)
	v = append(v, byte(len(b.Level)))
	v = append(v, b.Level...)
	v = append(v, byte(len(b.State)))
	v = append(v, b.State...)
	return append(v, b.Pool...)
}

// decodeBackupTime reads an index entry; prefixLen is the length of its
// client's prefix (the client and a 0 byte).
func decodeBackupTime(k, v []byte, prefixLen int) (backupTime, error) {
	rest := k[prefixLen:]
	i := bytes.IndexByte(rest, 0)
	if i < 0 || len(rest) != i+17 {
		return backupTime{}, badTimeEntry(k)
	}
	e := backupTime{FileSet: string(rest[:i]), ID: binary.BigEndian.Uint64(rest[i+9:])}
	e.StartTime = time.Unix(0, int64(binary.BigEndian.Uint64(rest[i+1:])^(1<<63))).UTC()
	parent, level, state, pool, ok := splitTimeValue(v)
	if !ok {
		return backupTime{}, badTimeEntry(k)
	}
	e.Parent, e.Level, e.State, e.Pool = parent, Level(level), BackupState(state), string(pool)
	return e, nil
}

func badTimeEntry(k []byte) error { return fmt.Errorf("catalog %s: bad entry %x", bBackupTimes, k) }

// splitTimeValue takes an entry's value apart without copying it.
func splitTimeValue(v []byte) (parent uint64, level, state, pool []byte, ok bool) {
	if len(v) < 10 {
		return 0, nil, nil, nil, false
	}
	parent = binary.BigEndian.Uint64(v)
	v = v[8:]
	n := int(v[0])
	if len(v) < 2+n || len(v) < 2+n+int(v[1+n]) {
		return 0, nil, nil, nil, false
	}
	level, v = v[1:1+n], v[1+n:]
	m := int(v[0])
	return parent, level, v[1 : 1+m], v[1+m:], true
}

// indexBackupTime moves a backup's entry from where old had it to where b
// has it (old nil: a new backup; b nil: a backup removed), and keeps the
// client's count of complete backups.
func indexBackupTime(tx *bbolt.Tx, old, b *Backup) error {
	idx := tx.Bucket(bBackupTimes)
	if old != nil && b != nil && bytes.Equal(backupTimeKey(old), backupTimeKey(b)) && bytes.Equal(backupTimeValue(old), backupTimeValue(b)) {
		return nil // a new segment, a part: nothing the index says
	}
	if old != nil {
		if err := idx.Delete(backupTimeKey(old)); err != nil {
			return err
		}
	}
	if b != nil {
		if err := idx.Put(backupTimeKey(b), backupTimeValue(b)); err != nil {
			return err
		}
	}
	was := old != nil && old.State == BackupComplete
	is := b != nil && b.State == BackupComplete
	if was == is {
		return nil
	}
	client := b
	if client == nil {
		client = old
	}
	counts := tx.Bucket(bClientBackups)
	n := getU64(counts, []byte(client.Client))
	switch {
	case is:
		n++
	case n > 0:
		n--
	}
	if n == 0 {
		return counts.Delete([]byte(client.Client))
	}
	return counts.Put([]byte(client.Client), u64(n))
}

// indexBackupTimes fills the index and the counts from the backups there
// are, for a catalog of a format before 6: one read of every backup, once.
func indexBackupTimes(tx *bbolt.Tx) error {
	return tx.Bucket(bBackups).ForEach(func(k, v []byte) error {
		var b Backup
		if err := jsonUnmarshal(bBackups, k, v, &b); err != nil {
			return err
		}
		return indexBackupTime(tx, nil, &b)
	})
}

// ErrNoTimeIndex: a catalog of a format before 6, opened read-only, has no
// index of backups by time, and reads that need it cannot answer.
var ErrNoTimeIndex = errors.New("this catalog is of a format before 6 and has no index of backups by time: " +
	"open it once with a server of this version, which upgrades it")

func timeIndex(tx *bbolt.Tx) (*bbolt.Bucket, error) {
	b := tx.Bucket(bBackupTimes)
	if b == nil {
		return nil, ErrNoTimeIndex
	}
	return b, nil
}

// clientPrefix is the start of every index key of a client.
func clientPrefix(client string) []byte { return append([]byte(client), 0) }

// eachFileSet visits the file sets of a client that have a backup, in the
// order of their ids, with a cursor and the prefix of the set's keys
// (client 0 fileset 0), until fn returns false. It seeks from one file set
// to the next, so it costs a seek per file set, not a step per backup.
func eachFileSet(tx *bbolt.Tx, client string, fn func(c *bbolt.Cursor, set []byte) (bool, error)) error {
	idx, err := timeIndex(tx)
	if err != nil {
		return err
	}
	c := idx.Cursor()
	cp := clientPrefix(client)
	for k, _ := c.Seek(cp); k != nil && bytes.HasPrefix(k, cp); {
		i := bytes.IndexByte(k[len(cp):], 0)
		if i < 0 {
			return fmt.Errorf("catalog %s: bad key %x", bBackupTimes, k)
		}
		set := bytes.Clone(k[:len(cp)+i+1])
		more, err := fn(c, set)
		if err != nil || !more {
			return err
		}
		// Past every key of this file set: its 0 separator made 1.
		next := bytes.Clone(set)
		next[len(next)-1] = 1
		k, _ = c.Seek(next)
	}
	return nil
}

// newestFirst visits the entries of one file set (set: client 0 fileset 0)
// that started at or before at (zero: all), newest first, until fn returns
// false.
func newestFirst(c *bbolt.Cursor, set []byte, at time.Time, fn func(e backupTime) (bool, error)) error {
	bits := uint64(math.MaxUint64)
	if !at.IsZero() {
		bits = timeBits(at)
	}
	end := binary.BigEndian.AppendUint64(bytes.Clone(set), bits)
	end = binary.BigEndian.AppendUint64(end, math.MaxUint64)
	k, v := c.Seek(end)
	if k == nil {
		k, v = c.Last()
	} else if bytes.Equal(k, end) {
		// A key equal to end is at or before at: keep it.
	} else {
		k, v = c.Prev()
	}
	cp := bytes.IndexByte(set, 0) + 1
	for ; k != nil && bytes.HasPrefix(k, set); k, v = c.Prev() {
		e, err := decodeBackupTime(k, v, cp)
		if err != nil {
			return err
		}
		more, err := fn(e)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// latestEntry is the newest entry of a client's file set, started at or
// before at (zero: any time), that ok accepts; false when none does. The
// index is read newest first and stops there.
func latestEntry(tx *bbolt.Tx, client, fileSet string, at time.Time, ok func(e *backupTime) bool) (backupTime, bool, error) {
	var found backupTime
	var hit bool
	idx, err := timeIndex(tx)
	if err != nil {
		return found, false, err
	}
	set := append(append(clientPrefix(client), fileSet...), 0)
	err = newestFirst(idx.Cursor(), set, at, func(e backupTime) (bool, error) {
		if ok(&e) {
			found, hit = e, true
			return false, nil
		}
		return true, nil
	})
	return found, hit, err
}

// latestOf is latestEntry's backup, nil when there is none.
func latestOf(tx *bbolt.Tx, client, fileSet string, at time.Time, ok func(e *backupTime) bool) (*Backup, error) {
	e, hit, err := latestEntry(tx, client, fileSet, at, ok)
	if err != nil || !hit {
		return nil, err
	}
	var b Backup
	if err := jsonUnmarshal(bBackups, u64(e.ID), tx.Bucket(bBackups).Get(u64(e.ID)), &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// completeBackups is the number of a client's complete backups.
func completeBackups(tx *bbolt.Tx, client string) (int, error) {
	counts := tx.Bucket(bClientBackups)
	if counts == nil {
		return 0, ErrNoTimeIndex
	}
	return int(getU64(counts, []byte(client))), nil
}

// BackupSummary is what a list of clients shows of a client's backups.
type BackupSummary struct {
	// Complete counts its complete backups.
	Complete int
	// Latest is the start of its latest complete backup, of any file set.
	Latest time.Time
}

// BackupSummary sums up a client's backups from the count and the index,
// at the cost of a seek per file set, not a read of every backup.
func (s *Store) BackupSummary(client string) (BackupSummary, error) {
	var sum BackupSummary
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		if sum.Complete, err = completeBackups(tx, client); err != nil || sum.Complete == 0 {
			return err
		}
		return eachFileSet(tx, client, func(c *bbolt.Cursor, set []byte) (bool, error) {
			return true, newestFirst(c, set, time.Time{}, func(e backupTime) (bool, error) {
				if e.State != BackupComplete {
					return true, nil
				}
				if e.StartTime.After(sum.Latest) {
					sum.Latest = e.StartTime
				}
				return false, nil
			})
		})
	})
	return sum, err
}
