package catalog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/fileindex"
)

// hugeCountSegment is a segment of n bytes whose header claims 2^30
// entries: what a bad node or a few flipped bits can leave in catalog.db
// (bbolt keeps no checksum of values). A decoder that trusted the count
// allocated for a billion entries and died of out of memory.
func hugeCountSegment(n int) []byte {
	bad := []byte("CRNX\x01\x00") // version 1, not compressed
	bad = binary.AppendUvarint(bad, 1<<30)
	for k := 1; ; k++ { // the raw length covers the rest, as a valid segment's does
		rest := n - len(bad) - k
		if len(binary.AppendUvarint(nil, uint64(rest))) == k {
			bad = binary.AppendUvarint(bad, uint64(rest))
			break
		}
	}
	return append(bad, bytes.Repeat([]byte{0}, n-len(bad))...)
}

// damageFile overwrites data, in place in the catalog's file, with bad of
// the same length: every copy of it, since pages bbolt freed can still
// hold one.
func damageFile(t *testing.T, path string, data, bad []byte) {
	t.Helper()
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(file, data) {
		t.Fatalf("the segment is not in %s", path)
	}
	for at := bytes.Index(file, data); at >= 0; at = bytes.Index(file, data) {
		copy(file[at:], bad)
	}
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
}

// storedChunks is the compressed chunks the catalog stores for a segment.
func storedChunks(t *testing.T, s *Store, backup uint64, no int) []byte {
	t.Helper()
	var data []byte
	err := s.view(func(tx *bbolt.Tx) error {
		data = bytes.Clone(tx.Bucket(bSegData).Bucket(segKey(backup, no)).Get(segChunksKey))
		return nil
	})
	if err != nil || data == nil {
		t.Fatalf("segment %d of backup %d is not stored chunked: %v", no, backup, err)
	}
	return data
}

func TestDamagedSegmentInTheFileNamesTheBackup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	c := openTestCatalog(t, path)
	s := c.s
	c.setup()
	entries := []fileindex.Entry{dir("/srv"), file("/srv/a", 1), file("/srv/b", 2)}
	good := c.backup(LevelFull, entries)
	damaged := c.backup(LevelFull, []fileindex.Entry{dir("/srv"), file("/srv/c", 3), file("/srv/d", 4)})
	// A segment that came damaged is stored whole, as it came.
	whole := c.startBackup(LevelFull, "/srv")
	c.must(&Command{Op: OpAddIndexSegment, Segment: &IndexSegment{BackupID: whole, No: 0, First: "/srv", Last: "/srv/z", Count: 3, Data: hugeCountSegment(300)}})
	data := storedChunks(t, s, damaged, 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	damageFile(t, path, data, hugeCountSegment(len(data)))

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, damaged := range []uint64{damaged, whole} {
		want := func(what string, err error) {
			t.Helper()
			var de *IndexDamagedError
			if !errors.As(err, &de) || de.Backup != damaged || de.Segment != 0 || !errors.Is(err, fileindex.ErrCorrupt) {
				t.Fatalf("%s: %v, want the index of backup %d damaged", what, err, damaged)
			}
			if msg := "index of backup " + strconv.FormatUint(damaged, 10) + " is damaged"; !strings.Contains(err.Error(), msg) {
				t.Fatalf("%s: %q does not say %q", what, err, msg)
			}
		}
		it, _, err := s.Tree(damaged)
		if err != nil {
			t.Fatal(err)
		}
		for _, ok := it.Next(); ok; _, ok = it.Next() {
		}
		want("Tree", it.Err())
		_, err = s.ListDir(damaged, "/srv")
		want("ListDir", err)
		_, err = s.Lookup(damaged, []string{"/srv/c"})
		want("Lookup", err)
		idx := s.Index(damaged)
		if _, ok := idx.Next(); ok {
			t.Fatal("Index yielded an entry of a damaged segment")
		}
		want("Index", idx.Err())
		from := s.IndexFrom(damaged, "/srv/d")
		for _, ok := from.Next(); ok; _, ok = from.Next() {
		}
		want("IndexFrom", from.Err())
	}

	// The other backup reads as before.
	got, err := s.ListDir(good, "/srv")
	if err != nil || len(got) != 2 || got[1].Path != "/srv/b" {
		t.Fatalf("ListDir of the sound backup: %v, %v", got, err)
	}
}
