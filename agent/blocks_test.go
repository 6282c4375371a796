package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/chunk"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
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

// placedBase is the base tree an incremental after stream gets: its
// entries with their digests, the file at path with its block list placed
// in a session of its own (placedAt).
func placedBase(t *testing.T, stream []byte, path string) []fileindex.Entry {
	t.Helper()
	var base []fileindex.Entry
	for _, se := range entriesOf(t, stream) {
		se.e.Hash = se.hash
		if se.e.Path == path {
			se.e.Blocks = placedAt(se.blocks, [16]byte{1})
		}
		base = append(base, se.e)
	}
	return base
}

// entryIn is the entry of path in stream.
func entryIn(t *testing.T, stream []byte, path string) *streamEntry {
	t.Helper()
	for _, se := range entriesOf(t, stream) {
		if se.e.Path == path {
			return &se
		}
	}
	t.Fatalf("no entry of %s in the stream", path)
	return nil
}

// dataOf is the content the Data records of the entry at path in stream
// put at their offsets, in a buffer of size bytes, and which bytes they
// covered.
func dataOf(t *testing.T, stream []byte, path string, size int) (content []byte, covered []bool) {
	t.Helper()
	content, covered = make([]byte, size), make([]bool, size)
	in := false
	for _, r := range parseStream(t, stream) {
		switch r.t {
		case volume.RecFileHeader:
			e, err := fileindex.DecodeEntry(r.body)
			mustDo(t, err)
			in = e.Path == path
		case volume.RecData:
			if !in {
				continue
			}
			off, data, err := volume.DecodeData(r.body)
			mustDo(t, err)
			copy(content[off:], data)
			for i := range data {
				covered[int(off)+i] = true
			}
		}
	}
	return content, covered
}

// A block larger than chunk.PieceSize comes from the cut in pieces: the
// block list is the one of a cut that held blocks whole; a full backup
// sends every piece; an incremental sends only the changed blocks, read
// again once their hash says they are to be sent, and keeps the others.
// Each file version is whole again from what was sent and what was kept.
func TestLargeBlocksGoInPieces(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "disk.img")
	v1 := randomBytes(43, 6<<20)
	mustWrite(t, p, v1, 0o644)
	opts := WalkOptions{Paths: []string{dir}}
	entryOf := func(stream []byte) streamEntry { return *entryIn(t, stream, p) }
	whole, _ := runSource(t, SourceOptions{Walk: opts})
	wholeList := entryOf(whole).blocks

	defer func(n int) { chunk.PieceSize = n }(chunk.PieceSize)
	chunk.PieceSize = 64 << 10 // every block of class 17 is larger
	full, st := runSource(t, SourceOptions{Walk: opts})
	fe := entryOf(full)
	if !reflect.DeepEqual(fe.blocks, wholeList) || len(fe.blocks.Blocks) < 10 {
		t.Fatalf("the block list cut in pieces differs from the one cut whole (%d and %d blocks)", len(fe.blocks.Blocks), len(wholeList.Blocks))
	}
	if sum := sha256.Sum256(v1); fe.status != volume.EndOK || !bytes.Equal(fe.hash, sum[:]) || st.Bytes != int64(len(v1)) {
		t.Fatalf("full: status %d, %d bytes sent of %d", fe.status, st.Bytes, len(v1))
	}
	if got, _ := dataOf(t, full, p, len(v1)); !bytes.Equal(got, v1) {
		t.Fatal("full: the Data records are not the file")
	}

	// The base: the full as placed in a session, block i at Seq i.
	base := placedBase(t, full, p)
	v2 := bytes.Clone(v1)
	copy(v2[1<<20:], "a changed sector")
	copy(v2[4<<20+12345:], "and another one")
	mustWrite(t, p, v2, 0o644)
	inc, st := runSource(t, SourceOptions{Walk: opts, Base: fileindex.SliceIterator(base)})
	ie := entryOf(inc)
	if sum := sha256.Sum256(v2); ie.status != volume.EndOK || !bytes.Equal(ie.hash, sum[:]) {
		t.Fatalf("incremental: status %d, hash %x", ie.status, ie.hash)
	}
	if st.Bytes > 3<<20 || st.Bytes+st.Reused != int64(len(v2)) {
		t.Fatalf("incremental sent %d bytes and kept %d of %d", st.Bytes, st.Reused, len(v2))
	}
	sent, covered := dataOf(t, inc, p, len(v2))
	got := make([]byte, 0, len(v2))
	offs := ie.blocks.Offsets()
	baseOffs := fe.blocks.Offsets()
	for i, b := range ie.blocks.Blocks {
		at, n := offs[i], int64(b.Loc.Len)
		if b.Session == 0 {
			if !covered[at] || !covered[at+n-1] {
				t.Fatalf("block %d, sent, has no Data records", i)
			}
			got = append(got, sent[at:at+n]...)
			continue
		}
		old := baseOffs[b.Loc.Seq]
		got = append(got, v1[old:old+n]...)
	}
	if !bytes.Equal(got, v2) {
		t.Fatal("incremental: the blocks sent and kept are not the file")
	}
}

// A block read again to be sent (resend) that differs from what the cut
// read is sent as it is now, listed by the hash of what was sent, and
// marks the file changed (the rest of it is still sent); one the file no
// longer holds whole is sent as far as it goes, listed so, and is a read
// error. Either way the file's digest becomes that of what was sent.
func TestResendNamesAChangedFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	content := randomBytes(44, 3<<20)
	mustWrite(t, p, content, 0o644)
	f, err := os.Open(p)
	mustDo(t, err)
	defer f.Close()
	s, err := NewSource(SourceOptions{Emit: func([]byte) error { return nil }})
	mustDo(t, err)
	s.batch = make([]byte, 0, BatchSize)
	s.ctx = context.Background()
	s.sum = sha256.New()
	for _, c := range []struct {
		name       string
		start, end int64
		want       [32]byte
		err        error
		listed     int64
	}{
		{"same", 1 << 20, 2<<20 + 7, sha256.Sum256(content[1<<20 : 2<<20+7]), nil, 2<<20 + 7},
		{"changed", 1 << 20, 2 << 20, sha256.Sum256([]byte("before")), nil, 2 << 20},
		{"shrank", 2 << 20, 4 << 20, sha256.Sum256(content[2<<20:]), ErrFileShrank, 3 << 20},
	} {
		bl := &fileindex.BlockList{}
		// The digest before the block, then the block as the cut read
		// it (what want is the hash of).
		s.sum.Reset()
		s.sum.Write(content[:c.start])
		s.held, err = s.saveDigest(s.held[:0])
		mustDo(t, err)
		s.changed = false // as sendBlocks sets it for each file
		s.sum.Write([]byte("what the cut read"))
		y, err := s.resend(int(f.Fd()), c.start, c.end, c.want, bl)
		if !errors.Is(err, c.err) || y != c.listed || s.changed != (c.name == "changed") {
			t.Fatalf("%s: resend reached %d with %v, changed %v; want %d and %v", c.name, y, err, s.changed, c.listed, c.err)
		}
		if c.err != nil && !errors.As(err, new(*readError)) {
			t.Fatalf("%s: %v is not a read error: it would stop the backup", c.name, err)
		}
		if len(bl.Blocks) != 1 || bl.Blocks[0].Loc.Len != uint64(y-c.start) || bl.Blocks[0].Hash != sha256.Sum256(content[c.start:y]) {
			t.Fatalf("%s: listed %+v, want one block of what was sent", c.name, bl.Blocks)
		}
		// The digest is of what the list holds: as the cut read it when
		// that is what was sent, else as it was sent.
		want := sha256.Sum256(append(bytes.Clone(content[:c.start]), "what the cut read"...))
		if c.name != "same" {
			want = sha256.Sum256(content[:y])
		}
		if [32]byte(s.sum.Sum(nil)) != want {
			t.Fatalf("%s: the file's digest is not of what the list holds", c.name)
		}
	}
}

// A file changed between the cut's read of a block and the read that
// sends it is sent as it then was, listed by what was sent, and named
// changed while read; its digest is of what the list holds, so a restore
// checks it and writes it (named incomplete) rather than refuses it as
// damaged.
func TestFileChangedBeforeItsBlockIsSentAgain(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "db")
	v1 := randomBytes(45, 4<<20)
	mustWrite(t, p, v1, 0o644)
	opts := WalkOptions{Paths: []string{dir}}
	defer func(n int) { chunk.PieceSize = n }(chunk.PieceSize)
	chunk.PieceSize = 64 << 10
	full, _ := runSource(t, SourceOptions{Walk: opts})
	base := placedBase(t, full, p)
	v2 := bytes.Clone(v1)
	copy(v2[2<<20:], "changed once")
	mustWrite(t, p, v2, 0o644)
	v3 := bytes.Clone(v2)
	copy(v3[2<<20:], "CHANGED AGAIN")
	beforeResend = func() {
		beforeResend = nil
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		mustDo(t, err)
		_, err = f.WriteAt(v3[2<<20:2<<20+13], 2<<20)
		mustDo(t, err)
		mustDo(t, f.Close())
	}
	defer func() { beforeResend = nil }()
	var warned []error
	inc, st := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{dir}, Warn: func(_ string, err error) { warned = append(warned, err) }}, Base: fileindex.SliceIterator(base)})
	ie := entryIn(t, inc, p)
	if ie.status != volume.EndReadError {
		t.Fatalf("entry %+v: want EndReadError", ie)
	}
	if st.Incomplete != 1 || len(warned) != 1 || !errors.Is(warned[0], ErrFileChanged) {
		t.Fatalf("stats %+v, warnings %v", st, warned)
	}
	sent, _ := dataOf(t, inc, p, len(v3))
	offs := ie.blocks.Offsets()
	for i, b := range ie.blocks.Blocks {
		at, n := offs[i], int64(b.Loc.Len)
		if b.Session == 0 && sha256.Sum256(sent[at:at+n]) != b.Hash {
			t.Fatalf("block %d, sent, is listed by a hash not of what was sent", i)
		}
	}
	if !bytes.Equal(sent[2<<20:2<<20+13], v3[2<<20:2<<20+13]) {
		t.Fatal("the changed block was not sent as the file now is")
	}
	// The digest is of the version the list makes: v3 (every block kept
	// or sent is as v3 has it), which a restore checks and accepts.
	if sum := sha256.Sum256(v3); !bytes.Equal(ie.hash, sum[:]) {
		t.Fatal("the digest is not of what the block list holds")
	}
}
