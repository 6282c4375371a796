package volume

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/google/uuid"
)

func sessionInfo() SessionInfo {
	return SessionInfo{SessionID: uuid.New(), JobID: 7, BackupID: 9, Client: "web-01", Level: "full", Pool: "Default", Compression: CompressionZstd, BlockRawSize: MinBlockRawSize}
}

// checkAll verifies that every file of files came back whole.
func checkAll(t *testing.T, rb *readBack, files []tfile) {
	t.Helper()
	for _, f := range files {
		got, ok := rb.got[f.e.Path]
		if !ok {
			t.Errorf("%s: not read", f.e.Path)
			continue
		}
		if !bytes.Equal(got, f.content) {
			t.Errorf("%s: content differs (%d bytes, want %d)", f.e.Path, len(got), len(f.content))
		}
		if !rb.ended[f.e.Path] {
			t.Errorf("%s: no FileEnd or hash mismatch", f.e.Path)
		}
	}
}

func TestSessionRoundTrip(t *testing.T) {
	key := testKey("pool-Default-1")
	vol := newMemVolume(t, MinBlockSize, 0)
	files := makeTree(1, 300, []int{0, 10, 1000, 20000, 150000, 700000})
	info := sessionInfo()
	res := writeSession(t, key, info, vol, WriterOptions{Workers: 3, TempDir: t.TempDir()}, files, 64<<10)

	if len(res.Parts) != 1 || !res.Parts[0].Final {
		t.Fatalf("parts = %+v", res.Parts)
	}
	if res.Entries != int64(len(files)) {
		t.Fatalf("entries = %d, want %d", res.Entries, len(files))
	}
	var content int64
	var nfiles int64
	for _, f := range files {
		content += int64(len(f.content))
		if f.e.Type == fileindex.TypeFile {
			nfiles++
		}
	}
	if res.ContentBytes != content || res.Files != nfiles {
		t.Fatalf("content %d files %d, want %d %d", res.ContentBytes, res.Files, content, nfiles)
	}
	if res.StoredBytes != vol.size()-int64(MinBlockSize) {
		t.Fatalf("stored %d, volume holds %d after the label", res.StoredBytes, vol.size()-int64(MinBlockSize))
	}
	if vol.size()%int64(MinBlockSize) != 0 || res.Parts[0].End != vol.size() {
		t.Fatalf("volume size %d, part end %d: not padded to the block size", vol.size(), res.Parts[0].End)
	}

	// The volume alone tells the same story as the result.
	v, err := OpenVolume(vol, vol.size())
	if err != nil {
		t.Fatal(err)
	}
	parts, err := v.Parts()
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 1 || parts[0].Torn || parts[0].Ref() != res.Parts[0].Ref() {
		t.Fatalf("Parts = %+v, want %+v", parts, res.Parts)
	}
	pe := parts[0].PartEnd
	if pe.Entries != res.Entries || pe.Files != res.Files || pe.ContentBytes != res.ContentBytes || !pe.Final || pe.Status != StatusComplete {
		t.Fatalf("PartEnd = %+v", pe)
	}
	it, err := ReadIndex(vol, key, parts[0])
	if err != nil {
		t.Fatal(err)
	}
	idx, err := fileindex.Collect(it)
	if err != nil {
		t.Fatal(err)
	}
	want := indexEntries(t, res)
	if len(idx) != len(files) || len(want) != len(files) {
		t.Fatalf("index has %d entries, result %d, want %d", len(idx), len(want), len(files))
	}
	for i := range idx {
		if idx[i].Path != files[i].e.Path || idx[i].Loc != want[i].Loc || !bytes.Equal(idx[i].Hash, want[i].Hash) {
			t.Fatalf("entry %d: %+v, want %+v", i, idx[i], want[i])
		}
		if files[i].e.Type == fileindex.TypeFile {
			h := sha256.Sum256(files[i].content)
			if !bytes.Equal(idx[i].Hash, h[:]) {
				t.Fatalf("%s: hash %x", idx[i].Path, idx[i].Hash)
			}
		}
	}

	r := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vol), ReaderOptions{Workers: 2})
	defer r.Close()
	rb := newReadBack(t)
	if err := r.ReadAll(context.Background(), rb.fn, rb.damaged); err != nil {
		t.Fatal(err)
	}
	checkAll(t, rb, files)

	// A few entries by location.
	var locs []fileindex.Location
	var some []tfile
	for i := 5; i < len(idx); i += 37 {
		locs = append(locs, idx[i].Loc)
		some = append(some, files[i])
	}
	rb = newReadBack(t)
	if err := r.ReadEntries(context.Background(), locs, rb.fn, rb.damaged); err != nil {
		t.Fatal(err)
	}
	if len(rb.order) != len(some) {
		t.Fatalf("read %d entries, want %d: %v", len(rb.order), len(some), rb.order)
	}
	checkAll(t, rb, some)

	var rec []fileindex.Entry
	if err := r.RecoverIndex(context.Background(), func(e fileindex.Entry) error { rec = append(rec, e); return nil }, nil); err != nil {
		t.Fatal(err)
	}
	if len(rec) != len(idx) {
		t.Fatalf("recovered %d entries, want %d", len(rec), len(idx))
	}
	for i := range rec {
		if rec[i].Path != idx[i].Path || rec[i].Loc != idx[i].Loc || !bytes.Equal(rec[i].Hash, idx[i].Hash) {
			t.Fatalf("recovered %+v, index has %+v", rec[i], idx[i])
		}
	}
}

func TestWriterRejectsBadStreams(t *testing.T) {
	key := testKey("k")
	hdr := func(p string, typ fileindex.Type) []byte {
		return AppendRecord(nil, RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: p, Type: typ}))
	}
	end := AppendFileEnd(nil, EndOK, nil)
	cases := []struct {
		name   string
		writes [][]byte
		want   error
	}{
		{"out of order", [][]byte{hdr("/b", fileindex.TypeDir), end, hdr("/a", fileindex.TypeDir), end}, ErrBadStream},
		{"duplicate path", [][]byte{hdr("/a", fileindex.TypeDir), end, hdr("/a", fileindex.TypeDir)}, ErrBadStream},
		{"partial record", [][]byte{hdr("/a", fileindex.TypeFile)[:5]}, ErrBadStream},
		{"data outside an entry", [][]byte{AppendDataRecord(nil, 0, []byte("x"))}, ErrBadStream},
		{"data in a directory", [][]byte{hdr("/a", fileindex.TypeDir), AppendDataRecord(nil, 0, []byte("x"))}, ErrBadStream},
		{"header inside an entry", [][]byte{hdr("/a", fileindex.TypeFile), hdr("/b", fileindex.TypeFile)}, ErrBadStream},
		{"end outside an entry", [][]byte{end}, ErrBadStream},
		{"unknown record", [][]byte{{9, 0}}, ErrBadStream},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vol := newMemVolume(t, MinBlockSize, 0)
			w, err := NewSessionWriter(sessionInfo(), key, vol, WriterOptions{TempDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			var got error
			for _, b := range c.writes {
				if got = w.Write(b); got != nil {
					break
				}
			}
			if !errors.Is(got, c.want) {
				t.Fatalf("err = %v, want %v", got, c.want)
			}
			if c.name == "out of order" {
				var oe *fileindex.OrderError
				if !errors.As(got, &oe) || oe.Prev != "/b" || oe.Path != "/a" {
					t.Fatalf("err = %v, want an OrderError /a after /b", got)
				}
			}
			if err := w.Write(end); !errors.Is(err, c.want) {
				t.Fatalf("the error is not sticky: %v", err)
			}
			if _, err := w.Close(); err == nil {
				t.Fatal("Close succeeded after a stream error")
			}
		})
	}
	t.Run("open entry at close", func(t *testing.T) {
		vol := newMemVolume(t, MinBlockSize, 0)
		w, err := NewSessionWriter(sessionInfo(), key, vol, WriterOptions{TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(hdr("/a", fileindex.TypeFile)); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Close(); !errors.Is(err, ErrBadStream) {
			t.Fatalf("Close = %v", err)
		}
	})
	t.Run("no key", func(t *testing.T) {
		vol := newMemVolume(t, MinBlockSize, 0)
		if _, err := NewSessionWriter(sessionInfo(), nil, vol, WriterOptions{}); err == nil {
			t.Fatal("a session without a key was accepted")
		}
	})
}

// A part header records the chain its backup builds on as far as it lies
// on other volumes: a reader given this volume holds the rest, and a
// session whose chain is all here pays nothing for it.
func TestPartHeaderRecordsTheChainElsewhere(t *testing.T) {
	vol := newMemVolume(t, MinBlockSize, 0)
	other := uuid.New()
	chain := []ChainPart{
		{Session: uuid.New(), Backup: 1, Volume: other, Name: "Default-0001"},
		{Session: uuid.New(), Backup: 2, Volume: vol.id, Name: "Default-0002"},
	}
	info := SessionInfo{SessionID: uuid.New(), BackupID: 3, ParentBackup: 2, Chain: chain, Client: "web01", Level: "incremental"}
	w, err := NewSessionWriter(info, testKey("k"), vol, WriterOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	v, err := OpenVolume(bytes.NewReader(vol.buf), int64(len(vol.buf)))
	if err != nil {
		t.Fatal(err)
	}
	ps, err := v.Parts()
	if err != nil || len(ps) != 1 {
		t.Fatalf("%d parts, %v", len(ps), err)
	}
	h := ps[0].Header
	if h.ParentBackup != 2 || len(h.Chain) != 1 || h.Chain[0] != chain[0] {
		t.Errorf("part header: parent %d, chain %+v; want parent 2 and the part on the other volume alone", h.ParentBackup, h.Chain)
	}
}

// TestSegmentsHandedOnWhileWriting: each index segment goes to
// WriterOptions.Segment as soon as the blocks its entries point into are
// on the volume, not at Close, in order and the same as the trailer's.
func TestSegmentsHandedOnWhileWriting(t *testing.T) {
	vol := newMemVolume(t, MinBlockSize, 0)
	type handed struct {
		seg     fileindex.Segment
		volSize int64 // the volume's size when it was handed on
	}
	var got []handed
	var closing atomic.Bool // set on this goroutine, read on the writer's
	var beforeClose int
	w, err := NewSessionWriter(sessionInfo(), testKey("k"), vol, WriterOptions{TempDir: t.TempDir(), Segment: func(s fileindex.Segment) error {
		// The writer's goroutines call it one at a time, the one that
		// writes the volume among them.
		got = append(got, handed{s, vol.size()})
		if !closing.Load() {
			beforeClose = len(got)
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	content := bytes.Repeat([]byte("0123456789abcdef"), 40)
	var buf []byte
	const n = 20000
	for i := range n {
		f := tfile{e: fileindex.Entry{Path: fmt.Sprintf("/srv/%05d/file-with-a-name.txt", i), Type: fileindex.TypeFile, Mode: 0o644, Size: int64(len(content))}, content: content}
		buf = appendEntryRecords(buf[:0], &f, 1<<20)
		if err := w.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	closing.Store(true)
	res, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	// Close hands on the segments of the blocks still in flight, and the
	// last one.
	trailer := segmentsOf(t, res)
	if len(trailer) < 4 || len(got) != len(trailer) || beforeClose < len(got)/2 {
		t.Fatalf("%d segments in the trailer, %d handed on, %d of them before Close", len(trailer), len(got), beforeClose)
	}
	dataStart := res.Parts[0].DataStart
	count := 0
	for i, h := range got {
		s := trailer[i]
		if h.seg.First != s.First || h.seg.Last != s.Last || h.seg.Count != s.Count || !bytes.Equal(h.seg.Data, s.Data) {
			t.Fatalf("segment %d handed on differs from the trailer's", i)
		}
		es, err := fileindex.DecodeSegment(h.seg.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.Path != fmt.Sprintf("/srv/%05d/file-with-a-name.txt", count) {
				t.Fatalf("entry %d of the index is %q", count, e.Path)
			}
			count++
			if at := dataStart + int64(e.Loc.Off); at+HeaderSize > h.volSize {
				t.Fatalf("segment %d handed on with the volume at %d bytes names %q in the block at %d", i, h.volSize, e.Path, at)
			}
		}
	}
	if count != n {
		t.Fatalf("%d entries in the segments handed on, want %d", count, n)
	}
}

// TestSegmentErrorFailsTheSession: a segment that cannot be handed on
// fails the session with the reason.
func TestSegmentErrorFailsTheSession(t *testing.T) {
	vol := newMemVolume(t, MinBlockSize, 0)
	boom := errors.New("the servers refused the segment")
	calls := 0
	w, err := NewSessionWriter(sessionInfo(), testKey("k"), vol, WriterOptions{TempDir: t.TempDir(), Segment: func(fileindex.Segment) error {
		calls++
		if calls == 2 {
			return boom
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	var buf []byte
	for i := 0; err == nil && i < 50000; i++ {
		f := tfile{e: fileindex.Entry{Path: fmt.Sprintf("/srv/%06d", i), Type: fileindex.TypeFile}}
		err = w.Write(appendEntryRecords(buf[:0], &f, 1<<20))
	}
	if err == nil {
		_, err = w.Close()
	}
	if !errors.Is(err, boom) || calls != 2 {
		t.Fatalf("after %d segments: %v", calls, err)
	}
	if _, err := w.Close(); err == nil {
		t.Fatal("the failed session closed")
	}
}

// TestEncodersKeptWhileUsedOnly: the zstd encoder states of block
// compression go from one block, and one session, to the next while the
// process writes, and with the collector once it is idle, so a node
// between backups does not hold them.
func TestEncodersKeptWhileUsedOnly(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	files := makeTree(9, 40, []int{300 << 10})
	write := func() (made, blocks int64) {
		before := encodersMade.Load()
		res := writeSession(t, testKey("k"), sessionInfo(), newMemVolume(t, MinBlockSize, 0), WriterOptions{Workers: 2, TempDir: t.TempDir()}, files, 64<<10)
		return encodersMade.Load() - before, res.Blocks
	}
	write()
	// The race detector has sync.Pool drop a quarter of what it is given,
	// to shake out code that counts on getting it back: then some are
	// made again, but far fewer than one a block.
	if made, blocks := write(); made != 0 && !raceEnabled || made > blocks/2 {
		t.Fatalf("the second session made %d encoders for its %d blocks; those it used were not given back", made, blocks)
	}
	runtime.GC()
	runtime.GC()
	if made, _ := write(); made == 0 {
		t.Fatal("the encoders of the idle time before were kept past two collections")
	}
}

// TestSpillErrorNamesItsDirectory: a spill file that cannot be made (or
// written) says so with its directory, which the storage node names to
// the operator apart from the pool's.
func TestSpillErrorNamesItsDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gone")
	_, err := NewSessionWriter(sessionInfo(), testKey("k"), newMemVolume(t, MinBlockSize, 0), WriterOptions{TempDir: dir})
	var pe *fs.PathError
	if !errors.As(err, &pe) || filepath.Dir(pe.Path) != dir || !errors.Is(err, fs.ErrNotExist) || strings.Count(err.Error(), dir) != 1 {
		t.Fatalf("a spill file in a directory that is not there: %v", err)
	}
}
