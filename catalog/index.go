package catalog

import (
	"bytes"
	"path"
	"slices"
	"strings"

	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/fileindex"
)

// SegmentInfo describes one stored index segment without its data.
type SegmentInfo struct {
	No    int
	First string
	Last  string
	Count int
	// Bytes is the size of the encoded (compressed) segment.
	Bytes int
}

// TreeEntry is an entry of the tree at a backup and the backup of the chain
// that stored that version.
type TreeEntry struct {
	fileindex.Entry
	Backup uint64 `json:"backup"`
}

// SegmentInfos lists a backup's index segments, in order.
func (s *Store) SegmentInfos(backupID uint64) ([]SegmentInfo, error) {
	var out []SegmentInfo
	err := s.view(func(tx *bbolt.Tx) error {
		if tx.Bucket(bBackups).Get(u64(backupID)) == nil {
			return notFound("backup %d does not exist", backupID)
		}
		prefix := u64(backupID)
		c := tx.Bucket(bSegMeta).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var m segMeta
			if err := jsonUnmarshal(bSegMeta, k, v, &m); err != nil {
				return err
			}
			no := int(uint32(k[8])<<24 | uint32(k[9])<<16 | uint32(k[10])<<8 | uint32(k[11]))
			out = append(out, SegmentInfo{No: no, First: string(m.First), Last: string(m.Last), Count: m.Count, Bytes: m.Bytes})
		}
		return nil
	})
	return out, err
}

// Index returns a backup's own index, in index order, one chunk in memory
// at a time; it is a fileindex.Seeker. A segment that does not decode ends
// it with an *IndexDamagedError naming the backup and the segment.
func (s *Store) Index(backupID uint64) fileindex.Seeker {
	return &layerReader{s: s, backup: backupID, total: -1, seg: -1, metas: map[int]*segMeta{}}
}

// IndexFrom is Index from the first entry at or after from.
func (s *Store) IndexFrom(backupID uint64, from string) fileindex.Iterator {
	it := s.Index(backupID)
	it.Seek(fileindex.From(from))
	return it
}

// TreeOf merges the indexes of a chain, oldest first, into the tree at its
// last backup; the merge seeks (MergeIterator.Seek) by seeking each index.
// Layer() of the iterator is the position in chain.
func (s *Store) TreeOf(chain []Backup) *fileindex.MergeIterator {
	layers := make([]fileindex.Iterator, len(chain))
	for i, b := range chain {
		layers[i] = s.Index(b.ID)
	}
	return fileindex.Merge(layers...)
}

// Tree returns the tree at a backup: the merge of its chain's indexes, with
// deleted paths left out. Layer() of the iterator is the position in Chain.
func (s *Store) Tree(backupID uint64) (*fileindex.MergeIterator, []Backup, error) {
	chain, err := s.Chain(backupID)
	if err != nil {
		return nil, nil, err
	}
	return s.TreeOf(chain), chain, nil
}

// Lookup finds paths in the tree at a backup. The result holds the paths
// that exist there; a path that is absent or deleted is not in it. Each
// index is sought for each path, so only the chunks that can hold one are
// decoded.
func (s *Store) Lookup(backupID uint64, paths []string) (map[string]TreeEntry, error) {
	chain, err := s.Chain(backupID)
	if err != nil {
		return nil, err
	}
	sorted := slices.Clone(paths)
	slices.SortFunc(sorted, fileindex.Compare)
	sorted = slices.Compact(sorted)
	out := map[string]TreeEntry{}
	decided := map[string]bool{}
	// Newest first: the first layer that holds a path decides it.
	for i := len(chain) - 1; i >= 0 && len(decided) < len(sorted); i-- {
		it := s.Index(chain[i].ID)
		var head *fileindex.Entry // read, not yet matched
		for _, p := range sorted {
			if decided[p] {
				continue
			}
			if head == nil || fileindex.Compare(head.Path, p) < 0 {
				it.Seek(fileindex.From(p))
				e, ok := it.Next()
				if !ok {
					if err := it.Err(); err != nil {
						return nil, err
					}
					break
				}
				head = &e
			}
			if head.Path != p {
				continue
			}
			decided[p] = true
			if head.Type != fileindex.TypeDeleted {
				out[p] = TreeEntry{Entry: *head, Backup: chain[i].ID}
			}
		}
	}
	return out, nil
}

// ListDir returns the entries directly inside dir in the tree at a backup, in
// index order, or dir alone when it is not a directory (ListTree).
func (s *Store) ListDir(backupID uint64, dir string) ([]TreeEntry, error) {
	chain, err := s.Chain(backupID)
	if err != nil {
		return nil, err
	}
	var out []TreeEntry
	_, err = s.ListTree(chain, path.Clean("/"+dir), "", false, func(e *TreeEntry) bool {
		out = append(out, *e)
		return true
	})
	return out, err
}

// ListTree visits what a listing of dir shows in the tree of chain, in index
// order: the entries directly in dir (dir itself when it is not a
// directory) or, recursive, dir and everything below it; after, when set,
// resumes after that path. A subdirectory's subtree is sought over, not
// read, so a listing costs a seek per subdirectory whatever lies below.
// visit returns false to stop. found tells whether the tree holds dir or
// anything below it, as far as the listing went.
func (s *Store) ListTree(chain []Backup, dir, after string, recursive bool, visit func(*TreeEntry) bool) (found bool, err error) {
	it := s.TreeOf(chain)
	from := dir
	if after != "" && fileindex.Compare(after, dir) > 0 {
		from = after
	}
	it.Seek(fileindex.From(from))
	// The page before found the directory; it may hold nothing more.
	found = after != "" && fileindex.Within(after, dir)
	for {
		e, ok := it.Next()
		if !ok || !fileindex.Within(e.Path, dir) {
			break // past the subtree: index order keeps it contiguous
		}
		found = true
		if after != "" && fileindex.Compare(e.Path, after) <= 0 {
			continue
		}
		if e.Path == dir && e.Type == fileindex.TypeDir && !recursive {
			continue // list a directory's content, not the directory
		}
		if !recursive && e.Path != dir && path.Dir(e.Path) != dir {
			it.Seek(fileindex.After(childOf(dir, e.Path)))
			continue
		}
		if !visit(&TreeEntry{Entry: e, Backup: chain[it.Layer()].ID}) {
			break
		}
	}
	return found, it.Err()
}

// childOf is the entry directly in dir that p lies in or is.
func childOf(dir, p string) string {
	prefix := dir
	if dir != "/" {
		prefix += "/"
	}
	rest := p[len(prefix):]
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	return prefix + rest
}

// Index segments are written here as a backup's session sends them
// (OpAddIndexSegment): numbered from 0 without gaps, path ranges ascending
// and disjoint, checked for that and not decoded (DESIGN.md, "The file
// index").

type segMeta struct {
	First fileindex.Path `json:"first"`
	Last  fileindex.Path `json:"last"`
	Count int            `json:"count"`
	Bytes int            `json:"bytes"`
}

func (a *applier) segMeta(backup uint64, no int) (*segMeta, error) {
	var m segMeta
	ok, err := getJSON(a.tx, bSegMeta, segKey(backup, no), &m)
	if err != nil || !ok {
		return nil, err
	}
	return &m, nil
}

func (a *applier) addIndexSegment(s *IndexSegment) error {
	b, err := a.backup(s.BackupID)
	if err != nil {
		return err
	}
	if b == nil {
		return refuse(CodeNotFound, "", "backup %d does not exist", s.BackupID)
	}
	if b.State != BackupWriting {
		return refuse(CodeWrongState, "", "backup %d is %s: it takes no more index segments", b.ID, b.State)
	}
	if s.Node != "" && s.Node != b.Node {
		return refuse(CodeWrongState, "", "backup %d is not being written on storage node %s", b.ID, s.Node)
	}
	switch {
	case s.Count <= 0 || len(s.Data) == 0:
		return refuse(CodeInvalidArgument, "", "index segment %d of backup %d is empty", s.No, b.ID)
	case s.First == "" || s.Last == "" || fileindex.Compare(string(s.First), string(s.Last)) > 0:
		return refuse(CodeInvalidArgument, "", "index segment %d of backup %d has a bad path range %q..%q", s.No, b.ID, s.First, s.Last)
	case s.No < 0 || s.No > b.Segments:
		return refuse(CodeInvalidArgument, "send a backup's index segments in order, from 0",
			"index segment %d of backup %d arrived before segment %d", s.No, b.ID, b.Segments)
	}
	if s.No < b.Segments {
		// A resent segment: accept it if it is the one stored.
		m, err := a.segMeta(b.ID, s.No)
		if err != nil {
			return err
		}
		if m != nil && m.First == s.First && m.Last == s.Last && m.Count == s.Count && segDataEqual(a.tx, segKey(b.ID, s.No), s.Data) {
			return nil
		}
		return refuse(CodeAlreadyExists, "", "backup %d already holds a different index segment %d", b.ID, s.No)
	}
	if s.No > 0 {
		prev, err := a.segMeta(b.ID, s.No-1)
		if err != nil {
			return err
		}
		if prev != nil && fileindex.Compare(string(prev.Last), string(s.First)) >= 0 {
			return refuse(CodeInvalidArgument, "", "index segment %d of backup %d starts at %q, not after %q where segment %d ends",
				s.No, b.ID, s.First, prev.Last, s.No-1)
		}
	}
	k := segKey(b.ID, s.No)
	if err := putJSON(a.tx, bSegMeta, k, &segMeta{First: s.First, Last: s.Last, Count: s.Count, Bytes: len(s.Data)}); err != nil {
		return err
	}
	if err := putSegData(a.tx, k, s.Data); err != nil {
		return err
	}
	if err := addCount(a.tx, "index", "segments", 1); err != nil {
		return err
	}
	if err := addCount(a.tx, "index", "bytes", int64(len(s.Data))); err != nil {
		return err
	}
	old := *b
	b.Segments++
	b.Entries += int64(s.Count)
	return a.putBackup(&old, b)
}

func (a *applier) deleteSegments(backup uint64) error {
	prefix := u64(backup)
	var keys [][]byte
	var size int64
	c := a.tx.Bucket(bSegMeta).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var m segMeta
		if err := jsonUnmarshal(bSegMeta, k, v, &m); err != nil {
			return err
		}
		keys = append(keys, bytes.Clone(k))
		size += int64(m.Bytes)
	}
	// Deleting under a live cursor skips keys in bbolt, hence the two passes.
	for _, k := range keys {
		if err := a.tx.Bucket(bSegMeta).Delete(k); err != nil {
			return err
		}
		if err := deleteSegData(a.tx, k); err != nil {
			return err
		}
	}
	if err := addCount(a.tx, "index", "segments", -int64(len(keys))); err != nil {
		return err
	}
	return addCount(a.tx, "index", "bytes", -size)
}
