package agent

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
)

// placedAt is the block list bl as the storage node placed it, in a
// session of its own: what the base tree of an incremental gives.
func placedAt(bl *fileindex.BlockList, session [16]byte) *fileindex.BlockList {
	out := &fileindex.BlockList{Bits: bl.Bits, Sessions: [][16]byte{session}, Runs: bl.Runs}
	for i, b := range bl.Blocks {
		b.Session, b.Loc.Seq = 1, uint64(i)
		out.Blocks = append(out.Blocks, b)
	}
	return out
}

// A command source's output (a dump) is sent by blocks once large: the
// next backup, whose dump changed in place and grew, sends the blocks
// around the changes and keeps the others from the version of that path
// in the base, which the walk itself never visits (it lies outside the
// backup's paths).
func TestSpooledFileByBlocks(t *testing.T) {
	tree := t.TempDir()
	mustDo(t, os.WriteFile(filepath.Join(tree, "app.conf"), []byte("db=app\n"), 0o644))
	dump := randomBytes(41, 6<<20)
	spool := func(content []byte) []SpooledFile {
		f, err := os.CreateTemp(t.TempDir(), "spool")
		mustDo(t, err)
		t.Cleanup(func() { f.Close() })
		_, err = f.Write(content)
		mustDo(t, err)
		return []SpooledFile{{Path: "/db/app.sql", File: f, Size: int64(len(content)), MTime: time.Unix(1700000000, 0)}}
	}
	stream, st := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{tree}}, Spooled: spool(dump)})
	var first *streamEntry
	es := entriesOf(t, stream)
	for i := range es {
		if es[i].e.Path == "/db/app.sql" {
			first = &es[i]
		}
	}
	if sum := sha256.Sum256(dump); first == nil || first.blocks == nil || !bytes.Equal(first.hash, sum[:]) || st.Reused != 0 {
		t.Fatalf("full: stats %+v, dump entry %+v", st, first)
	}

	// The base tree, in index order: the dump's entry sorts first.
	var base []fileindex.Entry
	for _, e := range es {
		e.e.Hash = e.hash
		if e.e.Path == "/db/app.sql" {
			e.e.Blocks = placedAt(e.blocks, [16]byte{1})
		}
		base = append(base, e.e)
	}
	next := bytes.Clone(dump)
	copy(next[3<<20:], "a row changed")
	next = append(next, []byte("-- and a new row\n")...)
	stream, st = runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{tree}}, Spooled: spool(next), Base: fileindex.SliceIterator(base)})
	var second *streamEntry
	es = entriesOf(t, stream)
	for i := range es {
		if es[i].e.Path == "/db/app.sql" {
			second = &es[i]
		}
	}
	if sum := sha256.Sum256(next); second == nil || second.blocks == nil || !bytes.Equal(second.hash, sum[:]) {
		t.Fatalf("incremental: dump entry %+v", second)
	}
	if st.Bytes > 2<<20 || st.Reused < 4<<20 {
		t.Fatalf("incremental sent %d bytes of the dump and kept %d: want only the blocks around the changes sent", st.Bytes, st.Reused)
	}
	t.Logf("incremental: %d bytes sent, %d kept from the base", st.Bytes, st.Reused)
}
