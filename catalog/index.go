package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"sort"

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

// Segments returns a source of a backup's encoded index segments, in order.
// Each call copies one segment out in its own short read transaction, so a
// slow reader never holds the catalog open. If the backup is aborted while
// being read, the source reports an error rather than ending early.
func (s *Store) Segments(backupID uint64) fileindex.SegmentSource {
	return s.segmentsAt(backupID, 0)
}

// SegmentsFrom is Segments without the leading segments that hold only
// paths before from, in index order: a listing or a pager that resumes in
// the middle of a tree starts there instead of decoding all that comes
// before. Entries before from can still come first; the caller skips them.
func (s *Store) SegmentsFrom(backupID uint64, from string) fileindex.SegmentSource {
	var src fileindex.SegmentSource
	return func() ([]byte, bool, error) {
		if src == nil {
			first, err := s.firstSegmentFor(backupID, from)
			if err != nil {
				return nil, false, err
			}
			src = s.segmentsAt(backupID, first)
		}
		return src()
	}
}

// firstSegmentFor is the number of the first segment of a backup that can
// hold from or a path after it.
func (s *Store) firstSegmentFor(backupID uint64, from string) (int, error) {
	infos, err := s.SegmentInfos(backupID)
	if err != nil {
		return 0, err
	}
	// Ranges ascend without overlap, numbered from 0.
	return sort.Search(len(infos), func(j int) bool { return fileindex.Compare(infos[j].Last, from) >= 0 }), nil
}

func (s *Store) segmentsAt(backupID uint64, first int) fileindex.SegmentSource {
	no, total := first, -1
	return func() ([]byte, bool, error) {
		var data []byte
		err := s.view(func(tx *bbolt.Tx) error {
			if total < 0 {
				var b Backup
				ok, err := getJSON(tx, bBackups, u64(backupID), &b)
				if err != nil {
					return err
				}
				if !ok {
					return notFound("backup %d does not exist", backupID)
				}
				total = b.Segments
			}
			if no >= total {
				return nil
			}
			v := getSegData(tx, segKey(backupID, no))
			if v == nil {
				return fmt.Errorf("index segment %d of backup %d is gone: the backup was aborted or removed while being read", no, backupID)
			}
			data = bytes.Clone(v)
			return nil
		})
		if err != nil || data == nil {
			return nil, false, err
		}
		no++
		return data, true, nil
	}
}

// segment decodes one segment, counting the decode.
func (s *Store) segment(backupID uint64, no int) ([]fileindex.Entry, error) {
	var data []byte
	err := s.view(func(tx *bbolt.Tx) error {
		v := getSegData(tx, segKey(backupID, no))
		if v == nil {
			return notFound("index segment %d of backup %d", no, backupID)
		}
		data = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.decodes.Add(1)
	entries, err := fileindex.DecodeSegment(data)
	if err != nil {
		return nil, &IndexDamagedError{Backup: backupID, Segment: no, Err: err}
	}
	return entries, nil
}

// Index returns a backup's own index, in index order, decoded one segment
// at a time. A segment that does not decode ends it with an
// *IndexDamagedError naming the backup.
func (s *Store) Index(backupID uint64) fileindex.Iterator {
	return s.index(backupID, func() (int, error) { return 0, nil })
}

// IndexFrom is Index from the first segment that can hold from, as
// SegmentsFrom; entries before from can still come first.
func (s *Store) IndexFrom(backupID uint64, from string) fileindex.Iterator {
	return s.index(backupID, func() (int, error) { return s.firstSegmentFor(backupID, from) })
}

func (s *Store) index(backupID uint64, first func() (int, error)) fileindex.Iterator {
	it := &indexIterator{backup: backupID}
	var src fileindex.SegmentSource
	it.Iterator = fileindex.SegmentIterator(func() ([]byte, bool, error) {
		if src == nil {
			no, err := first()
			if err != nil {
				return nil, false, err
			}
			src, it.no = s.segmentsAt(backupID, no), no-1
		}
		data, ok, err := src()
		if ok {
			it.no++
		}
		return data, ok, err
	})
	return it
}

// indexIterator names the backup and segment of a decoding error.
type indexIterator struct {
	fileindex.Iterator
	backup uint64
	no     int // the segment read last
}

func (it *indexIterator) Err() error {
	err := it.Iterator.Err()
	if errors.Is(err, fileindex.ErrCorrupt) {
		return &IndexDamagedError{Backup: it.backup, Segment: it.no, Err: err}
	}
	return err
}

// Tree returns the tree at a backup: the merge of its chain's indexes, with
// deleted paths left out. Layer() of the iterator is the position in Chain.
func (s *Store) Tree(backupID uint64) (*fileindex.MergeIterator, []Backup, error) {
	chain, err := s.Chain(backupID)
	if err != nil {
		return nil, nil, err
	}
	layers := make([]fileindex.Iterator, len(chain))
	for i, b := range chain {
		layers[i] = s.Index(b.ID)
	}
	return fileindex.Merge(layers...), chain, nil
}

// Lookup finds paths in the tree at a backup. The result holds the paths
// that exist there; a path that is absent or deleted is not in it. Only the
// segments whose range can hold a path are decoded.
func (s *Store) Lookup(backupID uint64, paths []string) (map[string]TreeEntry, error) {
	chain, err := s.Chain(backupID)
	if err != nil {
		return nil, err
	}
	out := map[string]TreeEntry{}
	decided := map[string]bool{}
	// Newest first: the first layer that holds a path decides it.
	for i := len(chain) - 1; i >= 0 && len(decided) < len(paths); i-- {
		b := chain[i]
		infos, err := s.SegmentInfos(b.ID)
		if err != nil {
			return nil, err
		}
		bySeg := map[int][]string{}
		for _, p := range paths {
			if decided[p] {
				continue
			}
			// Ranges ascend without overlap: the first segment ending at or
			// after p is the only one that can hold it.
			j := sort.Search(len(infos), func(j int) bool { return fileindex.Compare(infos[j].Last, p) >= 0 })
			if j < len(infos) && fileindex.Compare(infos[j].First, p) <= 0 {
				bySeg[infos[j].No] = append(bySeg[infos[j].No], p)
			}
		}
		for no, ps := range bySeg {
			entries, err := s.segment(b.ID, no)
			if err != nil {
				return nil, err
			}
			for _, p := range ps {
				k := sort.Search(len(entries), func(k int) bool { return fileindex.Compare(entries[k].Path, p) >= 0 })
				if k == len(entries) || entries[k].Path != p {
					continue
				}
				decided[p] = true
				if entries[k].Type != fileindex.TypeDeleted {
					out[p] = TreeEntry{Entry: entries[k], Backup: b.ID}
				}
			}
		}
	}
	return out, nil
}

// ListDir returns the entries directly inside dir in the tree at a backup, in
// index order. Only the segments whose range can hold something below dir
// are decoded.
func (s *Store) ListDir(backupID uint64, dir string) ([]TreeEntry, error) {
	dir = path.Clean("/" + dir)
	chain, err := s.Chain(backupID)
	if err != nil {
		return nil, err
	}
	layers := make([]fileindex.Iterator, len(chain))
	for i, b := range chain {
		infos, err := s.SegmentInfos(b.ID)
		if err != nil {
			return nil, err
		}
		var children []fileindex.Entry
		for _, info := range infos {
			if !mayHoldBelow(info, dir) {
				continue
			}
			entries, err := s.segment(b.ID, info.No)
			if err != nil {
				return nil, err
			}
			for _, e := range entries {
				if e.Path != dir && path.Dir(e.Path) == dir {
					children = append(children, e)
				}
			}
		}
		layers[i] = fileindex.SliceIterator(children)
	}
	it := fileindex.Merge(layers...)
	var out []TreeEntry
	for {
		e, ok := it.Next()
		if !ok {
			return out, it.Err()
		}
		out = append(out, TreeEntry{Entry: e, Backup: chain[it.Layer()].ID})
	}
}

// mayHoldBelow reports whether a segment's range can hold a path below dir.
// In index order everything below dir follows dir directly and comes before
// any path after dir that is not below it, so the range can hold one exactly
// when it ends after dir and does not start past dir's subtree.
func mayHoldBelow(info SegmentInfo, dir string) bool {
	if dir == "/" {
		return true
	}
	return fileindex.Compare(info.Last, dir) > 0 &&
		(fileindex.Compare(info.First, dir) <= 0 || fileindex.Within(info.First, dir))
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
		if m != nil && m.First == s.First && m.Last == s.Last && m.Count == s.Count &&
			bytes.Equal(getSegData(a.tx, segKey(b.ID, s.No)), s.Data) {
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
