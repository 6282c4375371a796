package catalog

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/fileindex"
)

// A file set is the paths and excludes of a backup (FileSetOf): backups
// chain within one file set, and "the latest backup" of a client is the
// latest of the file set that holds what is asked for, so that backing up
// a second tree does not hide the first from 'cairn ls' and 'cairn
// restore'.

// FileSet is one file set of a client, as its complete backups know it.
type FileSet struct {
	ID       string
	Paths    []fileindex.Path
	Excludes []fileindex.Path
	// Latest is its complete backup of the latest point in time, LatestAt
	// that point in time.
	Latest   uint64
	LatestAt time.Time
	// Backups counts its complete backups.
	Backups int
}

// ShortFileSet is a file set id as commands print it; any unambiguous
// prefix of an id selects it (BackupQuery.FileSet).
func ShortFileSet(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// DescribeFileSet writes a file set for a message or a table: its short
// id and its paths (and excludes).
func DescribeFileSet(id string, paths, excludes []fileindex.Path) string {
	s := ShortFileSet(id) + " (" + strings.Join(escapeAll(paths), ", ")
	if len(excludes) > 0 {
		s += " excluding " + strings.Join(escapeAll(excludes), ", ")
	}
	return s + ")"
}

// FileSets returns the file sets of a client's complete backups, the one
// with the latest backup first.
func (s *Store) FileSets(client string) ([]FileSet, error) {
	var out []FileSet
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		out, err = fileSets(tx, client, time.Time{})
		return err
	})
	return out, err
}

func fileSets(tx *bbolt.Tx, client string, at time.Time) ([]FileSet, error) {
	var out []FileSet
	err := eachFileSet(tx, client, func(c *bbolt.Cursor, set []byte) (bool, error) {
		var fs FileSet
		err := newestFirst(c, set, at, func(e backupTime) (bool, error) {
			if e.State == BackupComplete {
				if fs.Latest == 0 {
					fs.ID, fs.Latest, fs.LatestAt = e.FileSet, e.ID, e.StartTime
				}
				fs.Backups++
			}
			return true, nil
		})
		if err != nil || fs.Latest == 0 {
			return err == nil, err
		}
		var b Backup
		if err := jsonUnmarshal(bBackups, u64(fs.Latest), tx.Bucket(bBackups).Get(u64(fs.Latest)), &b); err != nil {
			return false, err
		}
		fs.Paths, fs.Excludes = b.Paths, b.Excludes
		out = append(out, fs)
		return true, nil
	})
	slices.SortStableFunc(out, func(a, b FileSet) int { return b.LatestAt.Compare(a.LatestAt) })
	return out, err
}

// Covers reports whether the backup's file set holds path p (absolute and
// clean): p lies within one of its paths and neither p nor a directory
// between that path and p is excluded, or p is a directory above one of
// its paths ("/" holds every backup's tree).
func (b *Backup) Covers(p string) bool {
	var excludes []fileindex.Exclude
	for _, raw := range b.Excludes {
		if ex, err := fileindex.ParseExclude(string(raw)); err == nil {
			excludes = append(excludes, ex)
		}
	}
	for _, root := range fileindex.Strings(b.Paths) {
		if fileindex.Within(root, p) {
			return true
		}
		if !fileindex.Within(p, root) {
			continue
		}
		excluded := false
		// Each directory from below the root down to p, p last (whose
		// type is not known here).
		for q := p; q != root && !excluded; q = path.Dir(q) {
			isDir := 1
			if q == p {
				isDir = -1
			}
			for i := range excludes {
				if excludes[i].Match(q, path.Base(q), root, isDir) {
					excluded = true
					break
				}
			}
			if q == "/" {
				break
			}
		}
		if !excluded {
			return true
		}
	}
	return false
}

// BackupQuery picks a client's backup when no backup id is given: the
// complete backup of the latest point in time at or before At (zero: the
// latest of all) among those that cover every path of Paths, of the file
// set FileSet when it is given.
type BackupQuery struct {
	Client string
	At     time.Time
	// FileSet is a file set id, or an unambiguous prefix of one
	// (ShortFileSet).
	FileSet string
	// Paths are the paths asked for, absolute and clean; none: any
	// backup.
	Paths []string
}

// UncoveredError says that no complete backup of a client (at or before
// At, of the file set asked for) holds the paths asked for, and lists the
// file sets the client has. It matches ErrNotFound.
type UncoveredError struct {
	Client  string
	Paths   []string
	At      time.Time
	FileSet string // the file set asked for, "" for any
	// UnknownFileSet: the client has no file set FileSet names.
	UnknownFileSet bool
	// FileSets are the client's file sets with a complete backup at or
	// before At, the latest first.
	FileSets []FileSet
}

func (e *UncoveredError) Error() string {
	var b strings.Builder
	switch {
	case e.UnknownFileSet:
		fmt.Fprintf(&b, "client %s has no file set %s", e.Client, e.FileSet)
	case e.FileSet != "":
		fmt.Fprintf(&b, "file set %s of client %s does not hold %s", e.FileSet, e.Client, strings.Join(escapeStrings(e.Paths), ", "))
	default:
		fmt.Fprintf(&b, "no backup of client %s holds %s", e.Client, strings.Join(escapeStrings(e.Paths), ", "))
	}
	if !e.At.IsZero() {
		fmt.Fprintf(&b, " at or before %s", e.At.UTC().Format(time.RFC3339))
	}
	if len(e.FileSets) == 0 {
		return b.String()
	}
	b.WriteString("; its file sets are ")
	for i, fs := range e.FileSets {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(DescribeFileSet(fs.ID, fs.Paths, fs.Excludes))
	}
	return b.String()
}

// Is makes an UncoveredError match ErrNotFound.
func (e *UncoveredError) Is(target error) bool { return target == ErrNotFound }

// LatestBackup returns the backup q picks. With no complete backup at all
// (at or before q.At) its error wraps ErrNotFound; with some, none of
// which holds the paths (or is of the file set) asked for, it is an
// *UncoveredError; a file set prefix that names two file sets is refused
// as ambiguous.
func (s *Store) LatestBackup(q BackupQuery) (*Backup, error) {
	var best *Backup
	var sets []FileSet
	named := map[string]bool{}
	err := s.view(func(tx *bbolt.Tx) error {
		any := false
		prefix := len(clientPrefix(q.Client))
		// The newest backup of each file set that holds the paths; the
		// latest of those is the one.
		err := eachFileSet(tx, q.Client, func(c *bbolt.Cursor, set []byte) (bool, error) {
			fileSet := string(set[prefix : len(set)-1])
			return true, newestFirst(c, set, q.At, func(e backupTime) (bool, error) {
				if e.State != BackupComplete {
					return true, nil
				}
				any = true
				if q.FileSet != "" {
					if !strings.HasPrefix(fileSet, q.FileSet) {
						return false, nil
					}
					named[fileSet] = true
				}
				if best != nil && !later(e.StartTime, e.ID, best) {
					return false, nil // nothing older of this file set wins
				}
				var b Backup
				if err := jsonUnmarshal(bBackups, u64(e.ID), tx.Bucket(bBackups).Get(u64(e.ID)), &b); err != nil {
					return false, err
				}
				if !holdsPaths(tx, &b, q.Paths) {
					return true, nil
				}
				best = &b
				return false, nil
			})
		})
		if err != nil || best != nil || !any {
			return err
		}
		if len(named) > 1 {
			return refuse(CodeInvalidArgument, "give more of the file set's id", "file set %s of client %s is ambiguous: %d file sets begin with it", q.FileSet, q.Client, len(named))
		}
		sets, err = fileSets(tx, q.Client, q.At)
		return err
	})
	switch {
	case err != nil:
		return nil, err
	case best != nil:
		return best, nil
	case sets == nil && q.At.IsZero():
		return nil, notFound("client %q has no complete backup", q.Client)
	case sets == nil:
		return nil, notFound("client %q has no complete backup at or before %s", q.Client, q.At.UTC().Format(time.RFC3339))
	}
	return nil, &UncoveredError{Client: q.Client, Paths: q.Paths, At: q.At, FileSet: q.FileSet,
		UnknownFileSet: q.FileSet != "" && len(named) == 0, FileSets: sets}
}

// later reports whether a backup of start time t and id comes after b: the
// later point in time, or of two at one time the one made last.
func later(t time.Time, id uint64, b *Backup) bool {
	return t.After(b.StartTime) || (t.Equal(b.StartTime) && id > b.ID)
}

// holdsPaths reports whether backup b holds every one of paths: within its
// file set, or as the output of one of its job's command sources, which is
// a file of the backup outside its paths.
func holdsPaths(tx *bbolt.Tx, b *Backup, paths []string) bool {
	var sources []fileindex.Path
	for _, p := range paths {
		if b.Covers(p) {
			continue
		}
		if sources == nil {
			sources = jobSources(tx, b.ID)
		}
		if !slices.ContainsFunc(sources, func(s fileindex.Path) bool { return fileindex.Within(string(s), p) }) {
			return false
		}
	}
	return true
}

// jobSources are the paths of the command sources of backup id's job, an
// empty (not nil) list when it had none.
func jobSources(tx *bbolt.Tx, id uint64) []fileindex.Path {
	out := []fileindex.Path{}
	var j Job
	if ok, err := getJSON(tx, bJobs, u64(id), &j); err != nil || !ok {
		return out
	}
	for _, s := range j.Application.Sources {
		out = append(out, s.Path)
	}
	return out
}

func escapeStrings(ps []string) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = fileindex.Escape(p)
	}
	return out
}
