package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/media/volume"
)

// record is one parsed stream record, its body copied.
type record struct {
	t    volume.RecordType
	body []byte
}

// checkBatch fails unless b is at most BatchSize bytes of whole records.
func checkBatch(t testing.TB, b []byte) {
	t.Helper()
	if len(b) > BatchSize {
		t.Fatalf("batch of %d bytes, more than BatchSize %d", len(b), BatchSize)
	}
	for p := 0; p < len(b); {
		_, _, n, err := volume.ParseRecord(b[p:])
		if err != nil {
			t.Fatalf("batch does not hold whole records: at %d of %d: %v", p, len(b), err)
		}
		p += n
	}
}

// runSource backs up opts and returns the stream it emitted.
func runSource(t testing.TB, opts SourceOptions) ([]byte, SourceStats) {
	t.Helper()
	var stream []byte
	emit := opts.Emit
	opts.Emit = func(b []byte) error {
		checkBatch(t, b)
		stream = append(stream, b...)
		if emit != nil {
			return emit(b)
		}
		return nil
	}
	s, err := NewSource(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err != nil {
		t.Fatalf("source: %v", err)
	}
	return stream, s.Stats()
}

func parseStream(t testing.TB, stream []byte) []record {
	t.Helper()
	var out []record
	for len(stream) > 0 {
		typ, body, n, err := volume.ParseRecord(stream)
		if err != nil {
			t.Fatalf("parse stream: %v", err)
		}
		out = append(out, record{typ, bytes.Clone(body)})
		stream = stream[n:]
	}
	return out
}

// streamEntry is an entry of a stream with its content and FileEnd.
type streamEntry struct {
	e       fileindex.Entry
	offsets []int64 // of its Data records
	data    int64   // content bytes in Data records
	status  uint8
	hash    []byte
	blocks  *fileindex.BlockList
}

// entriesOf checks the stream's grammar (FileHeader, Data*, FileEnd) and
// returns its entries.
// baseOf is what an incremental after the backup that made stream
// compares against: its entries.
func baseOf(t testing.TB, stream []byte) []fileindex.Entry {
	t.Helper()
	var base []fileindex.Entry
	for _, se := range entriesOf(t, stream) {
		base = append(base, se.e)
	}
	return base
}

func entriesOf(t testing.TB, stream []byte) []streamEntry {
	t.Helper()
	var out []streamEntry
	var cur *streamEntry
	for _, r := range parseStream(t, stream) {
		switch r.t {
		case volume.RecFileHeader:
			if cur != nil {
				t.Fatalf("FileHeader inside %s", cur.e.Path)
			}
			e, err := fileindex.DecodeEntry(r.body)
			if err != nil {
				t.Fatal(err)
			}
			if len(e.Hash) > 0 || e.Loc != (fileindex.Location{}) {
				t.Fatalf("%s: header carries a hash or a location", e.Path)
			}
			cur = &streamEntry{e: e}
		case volume.RecData:
			if cur == nil || cur.e.Type != fileindex.TypeFile {
				t.Fatalf("Data record outside a file")
			}
			off, data, err := volume.DecodeData(r.body)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) > volume.MaxDataBody {
				t.Fatalf("%s: Data record of %d bytes", cur.e.Path, len(data))
			}
			cur.offsets = append(cur.offsets, off)
			cur.data += int64(len(data))
		case volume.RecFileEnd:
			if cur == nil {
				t.Fatal("FileEnd outside an entry")
			}
			st, h, bl, err := volume.DecodeFileEnd(r.body)
			if err != nil {
				t.Fatal(err)
			}
			cur.status, cur.hash, cur.blocks = st, h, bl
			out = append(out, *cur)
			cur = nil
		}
	}
	if cur != nil {
		t.Fatalf("stream ends inside %s", cur.e.Path)
	}
	return out
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// makeSparse makes a file of size bytes with data only at the given
// offsets (len(data) each).
func makeSparse(t testing.TB, p string, size int64, data []byte, at ...int64) {
	t.Helper()
	f, err := os.Create(p)
	mustDo(t, err)
	defer f.Close()
	for _, off := range at {
		_, err := f.WriteAt(data, off)
		mustDo(t, err)
	}
	mustDo(t, f.Truncate(size))
}

func fileHash(t testing.TB, p string) []byte {
	t.Helper()
	f, err := os.Open(p)
	mustDo(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	mustDo(t, err)
	return h.Sum(nil)
}

// sparseDigestOf computes the fileindex.HashSparseSHA256 digest of a file
// as media/volume/FORMAT.md spells it out, from its data regions.
func sparseDigestOf(t testing.TB, p string) []byte {
	t.Helper()
	f, err := os.Open(p)
	mustDo(t, err)
	defer f.Close()
	fi, err := f.Stat()
	mustDo(t, err)
	data, runs := sha256.New(), sha256.New()
	for off := int64(0); off < fi.Size(); {
		start, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		mustDo(t, err)
		end, err := unix.Seek(int(f.Fd()), start, unix.SEEK_HOLE)
		mustDo(t, err)
		_, err = io.Copy(data, io.NewSectionReader(f, start, end-start))
		mustDo(t, err)
		runs.Write(binary.AppendUvarint(binary.AppendUvarint(nil, uint64(start)), uint64(end-start)))
		off = end
	}
	in := []byte("cairn sparse-sha256 v1")
	in = append(in, data.Sum(nil)...)
	in = append(in, runs.Sum(nil)...)
	in = binary.AppendUvarint(in, uint64(fi.Size()))
	d := sha256.Sum256(in)
	return d[:]
}

func TestSourceFullStream(t *testing.T) {
	dir := t.TempDir()
	big := randomBytes(1, 3<<20+12345)
	mustWrite(t, filepath.Join(dir, "big"), big, 0o644)
	mustWrite(t, filepath.Join(dir, "empty"), nil, 0o644)
	mustWrite(t, filepath.Join(dir, "sub", "small"), []byte("small file\n"), 0o600)
	mustDo(t, os.Symlink("sub/small", filepath.Join(dir, "link")))
	const sparseSize = 200 << 20
	makeSparse(t, filepath.Join(dir, "sparse"), sparseSize, randomBytes(2, 100<<10), 1<<20, 150<<20)
	if b := blocksOf(t, filepath.Join(dir, "sparse")); b*512 > 1<<20 {
		t.Fatalf("the filesystem did not keep the test file sparse: %d blocks", b)
	}

	stream, st := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{dir}}})
	es := entriesOf(t, stream)
	var got []string
	for _, se := range es {
		got = append(got, se.e.Path)
	}
	want := paths(walkAll(t, WalkOptions{Paths: []string{dir}}))
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("stream entries %q, want the walk's %q", got, want)
	}
	for _, se := range es {
		if se.status != volume.EndOK {
			t.Fatalf("%s: status %d", se.e.Path, se.status)
		}
		if se.e.Type != fileindex.TypeFile {
			if len(se.hash) != 0 || se.data != 0 {
				t.Fatalf("%s: %s with content or hash", se.e.Path, se.e.Type)
			}
			continue
		}
		want, kind := fileHash(t, se.e.Path), fileindex.HashSHA256
		if filepath.Base(se.e.Path) == "sparse" {
			want, kind = sparseDigestOf(t, se.e.Path), fileindex.HashSparseSHA256
		}
		if !bytes.Equal(se.hash, want) || se.e.HashKind != kind {
			t.Fatalf("%s: FileEnd hash %x of kind %v, want %x of kind %v", se.e.Path, se.hash, se.e.HashKind, want, kind)
		}
		switch filepath.Base(se.e.Path) {
		case "sparse":
			if se.data > 1<<20 {
				t.Fatalf("sparse file: %d bytes sent, holes were read", se.data)
			}
			for _, off := range se.offsets {
				if !(off >= 1<<20-4096 && off < 1<<20+200<<10) && !(off >= 150<<20-4096 && off < 150<<20+200<<10) {
					t.Fatalf("sparse file: Data at offset %d, in a hole", off)
				}
			}
		default:
			if se.data != se.e.Size {
				t.Fatalf("%s: %d bytes sent of %d", se.e.Path, se.data, se.e.Size)
			}
		}
	}
	if st.Entries != int64(len(es)) || st.Files != 4 || st.Dirs != 2 || st.WarningCount != 0 || st.Incomplete != 0 {
		t.Fatalf("stats %+v", st)
	}
	if st.Bytes < int64(len(big)) || st.Bytes > int64(len(big))+2<<20 {
		t.Fatalf("bytes read %d", st.Bytes)
	}
}

func TestSourceIncremental(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "same"), []byte("same"), 0o644)
	mustWrite(t, filepath.Join(dir, "edit"), []byte("v1"), 0o644)
	mustWrite(t, filepath.Join(dir, "gone"), []byte("gone"), 0o644)
	opts := WalkOptions{Paths: []string{dir}}
	full, _ := runSource(t, SourceOptions{Walk: opts})
	base := baseOf(t, full)
	mustWrite(t, filepath.Join(dir, "edit"), []byte("v2 is longer"), 0o644)
	mustDo(t, os.Remove(filepath.Join(dir, "gone")))

	inc, st := runSource(t, SourceOptions{Walk: opts, Base: fileindex.SliceIterator(base)})
	got := map[string]string{}
	for _, se := range entriesOf(t, inc) {
		got[filepath.Base(se.e.Path)] = fmt.Sprintf("%s/%d", se.e.Type, se.data)
	}
	want := map[string]string{filepath.Base(dir): "dir/0", "edit": "file/12", "gone": "deleted/0"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("incremental sent %v, want %v", got, want)
	}
	if st.Unchanged != 1 || st.Deleted != 1 || st.Entries != 3 || st.Files != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A file that changes size while it is read is sent with what was read,
// an EndReadError whose hash covers that, and a warning.
func TestSourceFileChangingSizeWhileRead(t *testing.T) {
	// Large enough that the change comes while the file is still being
	// read (a 3 MiB file could be read whole before the first Emit).
	const changingSize = 16 << 20
	for _, tc := range []struct {
		name   string
		change func(f *os.File) error
		want   error
		sent   int64
	}{
		{"grows", func(f *os.File) error { _, err := f.WriteAt([]byte("more"), changingSize); return err }, ErrFileGrew, changingSize},
		{"shrinks", func(f *os.File) error { return f.Truncate(changingSize * 5 / 8) }, ErrFileShrank, changingSize * 5 / 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "log")
			content := randomBytes(3, changingSize)
			mustWrite(t, p, content, 0o644)
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			mustDo(t, err)
			defer f.Close()
			changed := false
			var warned []error
			// The first batch goes out while the file is being read: the
			// blocks' stream reads a few batches of about 1 MiB ahead of
			// Emit (chunk.Stream), far less than 5/8 of the file.
			stream, st := runSource(t, SourceOptions{
				Walk: WalkOptions{Paths: []string{dir}, Warn: func(_ string, err error) { warned = append(warned, err) }},
				Emit: func([]byte) error {
					if !changed {
						changed = true
						return tc.change(f)
					}
					return nil
				},
			})
			es := entriesOf(t, stream)
			fe := es[1]
			// A large file goes by blocks: of what was read, the whole
			// blocks go out, which the hash and the block list cover.
			if fe.status != volume.EndReadError || fe.data > tc.sent || (tc.want == ErrFileGrew && fe.data != tc.sent) {
				t.Fatalf("status %d, %d bytes sent; want EndReadError and up to %d", fe.status, fe.data, tc.sent)
			}
			sum := sha256.Sum256(content[:fe.data])
			if !bytes.Equal(fe.hash, sum[:]) {
				t.Fatal("the hash does not cover what was sent")
			}
			if st.Incomplete != 1 || st.WarningCount != 1 || len(warned) != 1 || !errors.Is(warned[0], tc.want) || st.Warnings[0].Path != p {
				t.Fatalf("stats %+v, warnings %v", st, warned)
			}
		})
	}
}

func TestSourceDropsXattrsThatOverflowTheHeader(t *testing.T) {
	s, err := NewSource(SourceOptions{Emit: func([]byte) error { return nil }})
	mustDo(t, err)
	s.batch = make([]byte, 0, BatchSize)
	e := &fileindex.Entry{Path: "/big-xattrs", Type: fileindex.TypeFile, Xattrs: []fileindex.Xattr{
		{Name: "user.a", Value: make([]byte, 200<<10)}, {Name: "user.b", Value: make([]byte, 100<<10)},
	}}
	mustDo(t, s.appendHeader(e))
	rs := parseStream(t, s.batch)
	got, err := fileindex.DecodeEntry(rs[0].body)
	mustDo(t, err)
	if len(got.Xattrs) != 0 || len(e.Xattrs) != 2 || s.Stats().WarningCount != 1 {
		t.Fatalf("header xattrs %d, entry's %d, stats %+v", len(got.Xattrs), len(e.Xattrs), s.Stats())
	}
}

func TestSourceStopsOnEmitError(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "f"), randomBytes(5, 3<<20), 0o644)
	boom := errors.New("connection reset")
	s, err := NewSource(SourceOptions{Walk: WalkOptions{Paths: []string{dir}}, Emit: func([]byte) error { return boom }})
	mustDo(t, err)
	if err := s.Run(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the emit error", err)
	}
	if st := s.Stats(); st.Incomplete != 0 || st.WarningCount != 0 {
		t.Fatalf("an emit error was taken for a read error: %+v", st)
	}
}

func TestSourceCancelledInsideALargeFile(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "big"), randomBytes(6, 8<<20), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	batches := 0
	s, err := NewSource(SourceOptions{Walk: WalkOptions{Paths: []string{dir}}, Emit: func([]byte) error {
		batches++
		cancel()
		return nil
	}})
	mustDo(t, err)
	if err := s.Run(ctx); !errors.Is(err, context.Canceled) || batches != 1 {
		t.Fatalf("err %v after %d batches", err, batches)
	}
	if st := s.Stats(); st.Incomplete != 0 {
		t.Fatalf("cancellation taken for a read error: %+v", st)
	}
}

// While Emit sends a batch, Run reads the next: sending (TLS and the
// socket) and reading and hashing take turns on one core otherwise.
func TestSourceReadsTheNextBatchWhileEmitSends(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "big"), randomBytes(7, 4<<20), 0o644)
	var s *Source
	batches := 0
	s, err := NewSource(SourceOptions{Walk: WalkOptions{Paths: []string{dir}}, Emit: func(batch []byte) error {
		if batches++; batches > 1 {
			return nil
		}
		// The content read so far is less than this batch holds (its
		// records have headers): only reading on meanwhile passes it.
		return poll.Wait(5*time.Second, func() error {
			if got := s.Stats().Bytes; got <= int64(len(batch)) {
				return fmt.Errorf("%d content bytes read while the first batch of %d bytes was being sent: the read waits for the send", got, len(batch))
			}
			return nil
		})
	}})
	mustDo(t, err)
	mustDo(t, s.Run(context.Background()))
	if st := s.Stats(); st.Bytes != 4<<20 {
		t.Fatalf("read %d bytes, want %d", st.Bytes, 4<<20)
	}
}
