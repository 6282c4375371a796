package agent

import (
	"context"
	"fmt"

	"github.com/cairnbackup/cairn/fileindex"
)

// Change says how a path compares with the base of an incremental or
// differential backup.
type Change uint8

const (
	// ChangeUnchanged: walked, and equal to the base's entry; nothing is sent.
	ChangeUnchanged Change = iota + 1
	// ChangeNew: walked, and absent from the base.
	ChangeNew
	// ChangeModified: walked, and different from the base's entry.
	ChangeModified
	// ChangeDeleted: in the base and in the backup's scope, and no longer
	// there; the entry is a TypeDeleted tombstone.
	ChangeDeleted
)

func (c Change) String() string {
	switch c {
	case ChangeUnchanged:
		return "unchanged"
	case ChangeNew:
		return "new"
	case ChangeModified:
		return "modified"
	case ChangeDeleted:
		return "deleted"
	}
	return fmt.Sprintf("change(%d)", uint8(c))
}

// Changes walks opts like Walk and joins the walk with base, the tree of the
// base backup in index order (a fileindex.Merge of its chain), in one
// streaming pass: fn gets every walked entry with ChangeNew, ChangeModified
// or ChangeUnchanged, and a tombstone (Type TypeDeleted, Path only) with
// ChangeDeleted for each base path that the walk no longer finds. A base path outside
// opts.Paths, excluded, or below a directory the walk could not read or did
// not enter (OneFileSystem) is not taken for deleted. A nil base makes every
// entry ChangeNew: a full backup. Memory does not grow with either tree.
//
// An entry is modified when its Type, Size, MTime, CTime, Mode, UID, GID,
// Inode or Target (symlink target or hard link's first name) differs: the
// ctime catches changes of content and of metadata that keep the mtime, and
// the inode catches a file replaced by another with the same times.
func Changes(ctx context.Context, opts WalkOptions, base fileindex.Iterator, fn func(e *fileindex.Entry, c Change) error) error {
	w, err := newWalker(ctx, opts)
	if err != nil {
		return err
	}
	return runChanges(w, base, func(n *node, c Change) error { return fn(n.e, c) }, nil)
}

// Changed reports whether a walked entry differs from the base's entry for
// the same path in anything that makes a backup send it again.
func Changed(walked, base *fileindex.Entry) bool {
	return walked.Type != base.Type || walked.Size != base.Size ||
		walked.MTime != base.MTime || walked.CTime != base.CTime ||
		walked.Mode != base.Mode || walked.UID != base.UID || walked.GID != base.GID ||
		walked.Inode != base.Inode || walked.Target != base.Target
}

// joiner is the merge join of a walk (pushed, in index order) with the
// base (pulled, in index order): the base's head is always the smallest
// base path not yet matched.
type joiner struct {
	w       *walker
	base    fileindex.Iterator
	head    fileindex.Entry
	ok      bool
	prev    string
	started bool
	fn      func(n *node, c Change) error
	// outside, if set, gets the base entries outside the backup's scope,
	// which are no deletions: the command sources' among them.
	outside func(e *fileindex.Entry)
	tomb    fileindex.Entry
}

func runChanges(w *walker, base fileindex.Iterator, fn func(n *node, c Change) error, outside func(e *fileindex.Entry)) error {
	j := &joiner{w: w, base: base, fn: fn, outside: outside}
	if err := j.advance(); err != nil {
		return err
	}
	w.visit = j.visit
	w.pruned = j.pruned
	if err := w.run(); err != nil {
		return err
	}
	for j.ok { // what the base holds past the last walked path
		if err := j.deleteHead(); err != nil {
			return err
		}
	}
	return nil
}

func (j *joiner) advance() error {
	if j.base == nil {
		j.ok = false
		return nil
	}
	j.head, j.ok = j.base.Next()
	if !j.ok {
		if err := j.base.Err(); err != nil {
			return fmt.Errorf("read the base backup's index: %w", err)
		}
		return nil
	}
	// A base out of order would turn every later path into a delete and
	// an add; refuse it rather than send a wrong backup.
	if j.started && fileindex.Compare(j.prev, j.head.Path) >= 0 {
		return fmt.Errorf("base backup's index: %w", &fileindex.OrderError{Prev: j.prev, Path: j.head.Path})
	}
	j.prev, j.started = j.head.Path, true
	return nil
}

// deleteHead consumes the base's head, which the walk did not find, and
// sends a tombstone for it if it lies in the backup's scope.
func (j *joiner) deleteHead() error {
	switch {
	case j.head.Type == fileindex.TypeDeleted:
	case j.w.inScope(j.head.Path, j.head.Type):
		j.tomb = fileindex.Entry{Path: j.head.Path, Type: fileindex.TypeDeleted}
		if err := j.fn(&node{e: &j.tomb, dirfd: -1}, ChangeDeleted); err != nil {
			return err
		}
	case j.outside != nil:
		j.outside(&j.head)
	}
	return j.advance()
}

// deleteBefore sends tombstones for the base paths that sort before p.
func (j *joiner) deleteBefore(p string) error {
	for j.ok && fileindex.Compare(j.head.Path, p) < 0 {
		if err := j.deleteHead(); err != nil {
			return err
		}
	}
	return nil
}

func (j *joiner) visit(n *node) error {
	if err := j.deleteBefore(n.e.Path); err != nil {
		return err
	}
	c := ChangeNew
	if j.ok && j.head.Path == n.e.Path {
		if j.head.Type != fileindex.TypeDeleted {
			c = ChangeModified
			if !Changed(n.e, &j.head) {
				c = ChangeUnchanged
			}
			n.base = j.head.Blocks
		}
		if err := j.advance(); err != nil {
			return err
		}
	}
	return j.fn(n, c)
}

// pruned skips the base paths at or below p, which the walk did not look
// at, so they are not taken for deleted.
func (j *joiner) pruned(p string) error {
	if err := j.deleteBefore(p); err != nil {
		return err
	}
	for j.ok && fileindex.Within(j.head.Path, p) {
		if err := j.advance(); err != nil {
			return err
		}
	}
	return nil
}
