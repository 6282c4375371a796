// Package volumetest is the contract test suite of volume.Appender: every
// medium (disk, SFTP, S3, tape, the storage node's tape spool) runs it in a
// few lines, so they all keep the contract the session writer relies on.
// An Appender that is also a volume.RecoverableAppender runs the
// recoverable half of the contract too (Durable, ReadBack), and with
// Medium.Fail set, across a failure of the medium.
package volumetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/google/uuid"
)

// Medium is what the suite needs from an implementation.
type Medium struct {
	// New returns a freshly labelled volume open for appending, at the end
	// of its label. Limit caps the volume's size (0: no cap); the medium
	// may use less.
	New func(t *testing.T, limit int64) volume.Appender
	// Read returns what has been written to the volume, to check it.
	Read func(t *testing.T, id uuid.UUID) (io.ReaderAt, int64)
	// Fail, for a medium whose Appenders are recoverable, makes volume
	// id's medium fail every write from where it is now on, as a bad
	// spot of a tape does: a write to it fails with an error that
	// errors.Is finds volume.ErrMediumLost in. Nil leaves the failure
	// out of the recoverable subtest.
	Fail func(t *testing.T, id uuid.UUID)
}

// TestAppender runs the contract tests.
func TestAppender(t *testing.T, m Medium) {
	t.Run("Offset", func(t *testing.T) { testOffset(t, m) })
	t.Run("Session", func(t *testing.T) { testSession(t, m) })
	t.Run("Spanning", func(t *testing.T) { testSpanning(t, m) })
	t.Run("Label", func(t *testing.T) { testLabel(t, m) })
	probe := m.New(t, 0)
	if _, ok := probe.(volume.RecoverableAppender); ok {
		t.Run("Recoverable", func(t *testing.T) { testRecoverable(t, m) })
	} else if m.Fail != nil {
		t.Errorf("Medium.Fail is set, but its Appender %T is not a volume.RecoverableAppender", probe)
	}
}

// testRecoverable holds a RecoverableAppender to its half of the
// contract: Durable never moves back and never passes Offset, and is
// Offset after a Sync on a block boundary; at rest (after a Sync, or
// after the write the medium failed, which errors.Is finds
// volume.ErrMediumLost in) ReadBack gives back what was written from
// Durable minus MaxBlockBytes (or the first byte written) to Offset.
func testRecoverable(t *testing.T, m Medium) {
	a := m.New(t, 0)
	ra := a.(volume.RecoverableAppender)
	start := a.Offset()
	if d := ra.Durable(); d != start {
		t.Fatalf("a new volume is durable up to %d, its offset is %d", d, start)
	}
	var written []byte // every byte written, from start
	rnd := rand.NewChaCha8([32]byte{'r', 'e', 'c'})
	bs := a.BlockSize()
	// Whole blocks, as the session writer writes them, and odd sizes.
	sizes := []int{bs, 3 * bs / 2, 100_000, 7, 4 * bs, bs - 7, 2 * bs}
	last := start
	durable := func(when string) int64 {
		t.Helper()
		d := ra.Durable()
		if d < last || d > a.Offset() {
			t.Fatalf("%s: Durable %d; it was %d, and Offset is %d", when, d, last, a.Offset())
		}
		last = d
		return d
	}
	write := func(n int) error {
		t.Helper()
		p := make([]byte, n)
		rnd.Read(p)
		k, err := a.Write(p)
		if k < 0 || k > n || (err == nil && k != n) {
			t.Fatalf("Write of %d bytes = %d, %v", n, k, err)
		}
		written = append(written, p[:k]...)
		if a.Offset() != start+int64(len(written)) {
			t.Fatalf("Offset %d after writing %d bytes from %d", a.Offset(), len(written), start)
		}
		durable(fmt.Sprintf("after writing %d bytes", len(written)))
		return err
	}
	readBack := func(when string) {
		t.Helper()
		d := durable(when)
		from := max(start, d-volume.MaxBlockBytes)
		got := make([]byte, a.Offset()-from)
		if err := ra.ReadBack(got, from); err != nil {
			t.Fatalf("%s: ReadBack from %d to %d (durable %d): %v", when, from, a.Offset(), d, err)
		}
		if !bytes.Equal(got, written[from-start:]) {
			t.Fatalf("%s: ReadBack from %d to %d gave other bytes than were written", when, from, a.Offset())
		}
	}
	for round := range 2 {
		for i := range 12 {
			if err := write(sizes[i%len(sizes)]); err != nil {
				t.Fatal(err)
			}
		}
		// The writer syncs at the end of a part, on a block boundary:
		// there everything is durable. (Elsewhere a tape holds the
		// partial record back, to write it whole with what follows.)
		if rest := a.Offset() % int64(bs); rest != 0 {
			if err := write(bs - int(rest)); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.Sync(); err != nil {
			t.Fatal(err)
		}
		if d := durable("after Sync"); d != a.Offset() {
			t.Fatalf("after Sync, Durable %d and Offset %d", d, a.Offset())
		}
		readBack(fmt.Sprintf("after Sync %d", round+1))
	}
	if m.Fail == nil {
		return
	}
	synced := a.Offset()
	m.Fail(t, a.VolumeID())
	var err error
	for i := 0; err == nil && i < 64; i++ {
		err = write(sizes[i%len(sizes)])
	}
	if err == nil {
		err = a.Sync()
	}
	if !errors.Is(err, volume.ErrMediumLost) {
		t.Fatalf("writing on a failed medium: %v, want an error that is volume.ErrMediumLost", err)
	}
	if d := durable("after the failure"); d < synced {
		t.Fatalf("after the failure, Durable %d is before %d, which a Sync made durable", d, synced)
	}
	readBack("after the failure")
}

func testOffset(t *testing.T, m Medium) {
	a := m.New(t, 0)
	if err := volume.ValidBlockSize(a.BlockSize()); err != nil {
		t.Fatal(err)
	}
	off := a.Offset()
	if off < int64(a.BlockSize()) || off%int64(a.BlockSize()) != 0 {
		t.Fatalf("a new volume is at offset %d; want the end of its label, a multiple of %d", off, a.BlockSize())
	}
	rem := a.Remaining()
	p := bytes.Repeat([]byte{0xa5}, 1000)
	if n, err := a.Write(p); n != len(p) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if a.Offset() != off+1000 {
		t.Fatalf("Offset %d after writing 1000 bytes at %d", a.Offset(), off)
	}
	if rem != math.MaxInt64-off && a.Remaining() != rem-1000 {
		t.Fatalf("Remaining %d after writing 1000 bytes with %d left", a.Remaining(), rem)
	}
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	r, size := m.Read(t, a.VolumeID())
	if size < off+1000 {
		t.Fatalf("volume holds %d bytes, %d were written", size, off+1000)
	}
	got := make([]byte, 1000)
	if _, err := r.ReadAt(got, off); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read back: %v", err)
	}
	l, err := volume.ReadLabel(r)
	if err != nil || l.VolumeID != a.VolumeID() || l.BlockSize != a.BlockSize() || l.PartAlignment() != volume.PartAlignOf(a) {
		t.Fatalf("label %+v, %v; the appender says volume %s, block size %d, part alignment %d", l, err, a.VolumeID(), a.BlockSize(), volume.PartAlignOf(a))
	}
}

type file struct {
	path    string
	content []byte
}

func files(n, size int) []file {
	var out []file
	for i := 0; i < n; i++ {
		c := make([]byte, size)
		rand.NewChaCha8([32]byte{byte(i), byte(n)}).Read(c)
		out = append(out, file{fmt.Sprintf("/contract/f%04d", i), c})
	}
	return out
}

func write(t *testing.T, first volume.Appender, next func(volume.Appender) (volume.Appender, error), fs []file) (volume.SessionInfo, *volume.SessionResult) {
	m := sha256.Sum256([]byte(t.Name()))
	key := &volume.Key{ID: "contract", Material: m[:]}
	info := volume.SessionInfo{SessionID: uuid.New(), Compression: volume.CompressionZstd, BlockRawSize: volume.MinBlockRawSize}
	w, err := volume.NewSessionWriter(info, key, first, volume.WriterOptions{Next: next, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, f := range fs {
		if err := w.Write(AppendFile(nil, f.path, f.content)); err != nil {
			t.Fatal(err)
		}
	}
	res, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Index.Close() })
	return info, res
}

func readBack(t *testing.T, m Medium, info volume.SessionInfo, res *volume.SessionResult, fs []file) {
	m2 := sha256.Sum256([]byte(t.Name()))
	key := &volume.Key{ID: "contract", Material: m2[:]}
	last := res.Parts[len(res.Parts)-1]
	r, size := m.Read(t, last.VolumeID)
	v, err := volume.OpenVolume(r, size)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := v.Parts()
	if err != nil || len(ps) == 0 {
		t.Fatalf("Parts: %v", err)
	}
	it, err := volume.ReadIndex(r, key, ps[len(ps)-1])
	if err != nil {
		t.Fatal(err)
	}
	idx, err := fileindex.Collect(it)
	if err != nil || len(idx) != len(fs) {
		t.Fatalf("index: %d entries, %v", len(idx), err)
	}
	var locs []fileindex.Location
	for _, e := range idx {
		locs = append(locs, e.Loc)
	}
	sr := volume.NewSessionReader(info.SessionID, key, res.Refs(), func(id uuid.UUID) (io.ReaderAt, error) {
		r, _ := m.Read(t, id)
		return r, nil
	}, volume.ReaderOptions{})
	defer sr.Close()
	got := Contents{}
	err = sr.ReadEntries(context.Background(), locs, got.OnRecord(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if !bytes.Equal(got[f.path], f.content) {
			t.Fatalf("%s does not read back", f.path)
		}
	}
}

func testSession(t *testing.T, m Medium) {
	a := m.New(t, 0)
	fs := files(12, 200000)
	info, res := write(t, a, nil, fs)
	if len(res.Parts) != 1 || res.Parts[0].End != a.Offset() || a.Offset()%int64(volume.PartAlignOf(a)) != 0 {
		t.Fatalf("parts %+v, appender at %d, part alignment %d", res.Parts, a.Offset(), volume.PartAlignOf(a))
	}
	readBack(t, m, info, res, fs)
	// A second session appends after the first.
	fs2 := files(3, 1000)
	info2, res2 := write(t, a, nil, fs2)
	if res2.Parts[0].VolumeStart != res.Parts[0].End {
		t.Fatalf("second session starts at %d, the first ends at %d", res2.Parts[0].VolumeStart, res.Parts[0].End)
	}
	readBack(t, m, info2, res2, fs2)
	// A part takes its blocks and its header and end, padded to the part
	// alignment and no further: a tiny session on disk costs a few KiB,
	// not a block.
	p2 := res2.Parts[0]
	if got, max := p2.End-p2.VolumeStart, int64(volume.PartAlignOf(a))+16<<10; got > max || got != res2.StoredBytes || p2.End%int64(volume.PartAlignOf(a)) != 0 {
		t.Fatalf("the second session's part (3 files of 1000 bytes) takes %d bytes on the volume, ending at %d; it wrote %d; want at most %d, ending on a multiple of %d", got, p2.End, res2.StoredBytes, max, volume.PartAlignOf(a))
	}
}

// testLabel: the Appender says its volume's label (volume.Labeled), as the
// volume holds it, so the writer puts on it only what its format holds.
func testLabel(t *testing.T, m Medium) {
	a := m.New(t, 0)
	l, ok := a.(volume.Labeled)
	if !ok {
		t.Fatalf("%T is not a volume.Labeled: the writer would take every volume for one of format %d", a, volume.FormatVersion)
	}
	write(t, a, nil, files(2, 1000))
	r, size := m.Read(t, a.VolumeID())
	onVolume, err := volume.ReadLabel(io.NewSectionReader(r, 0, size))
	if err != nil {
		t.Fatal(err)
	}
	got := l.Label()
	if got.VolumeID != a.VolumeID() || got.FormatVersion != onVolume.FormatVersion || got.VolumeID != onVolume.VolumeID {
		t.Fatalf("Label() says volume %s of format %d; the volume's label says %s of format %d; Appender.VolumeID %s",
			got.VolumeID, got.FormatVersion, onVolume.VolumeID, onVolume.FormatVersion, a.VolumeID())
	}
	if volume.FormatOf(a) != onVolume.FormatVersion {
		t.Fatalf("volume.FormatOf says format %d, the label %d", volume.FormatOf(a), onVolume.FormatVersion)
	}
}

func testSpanning(t *testing.T, m Medium) {
	const limit = 2 << 20
	first := m.New(t, limit)
	n := 0
	next := func(full volume.Appender) (volume.Appender, error) {
		if full.Remaining() < 0 {
			t.Errorf("volume %s overfilled: Remaining %d", full.VolumeID(), full.Remaining())
		}
		n++
		return m.New(t, limit), nil
	}
	fs := files(40, 100000)
	info, res := write(t, first, next, fs)
	if n < 1 || len(res.Parts) != n+1 {
		t.Fatalf("Next called %d times, %d parts", n, len(res.Parts))
	}
	for i, p := range res.Parts {
		r, size := m.Read(t, p.VolumeID)
		if size > limit {
			t.Fatalf("volume %s holds %d bytes, over the %d limit", p.VolumeID, size, limit)
		}
		// Each part after the first names the volume of the part before
		// it, for a reader given this volume and not that one.
		v, err := volume.OpenVolume(r, size)
		if err != nil {
			t.Fatal(err)
		}
		ps, err := v.Parts()
		if err != nil || len(ps) != 1 {
			t.Fatalf("volume %s: %d parts, %v", p.VolumeID, len(ps), err)
		}
		want := uuid.Nil
		if i > 0 {
			want = res.Parts[i-1].VolumeID
		}
		if got := ps[0].Header.PrevVolume; got != want {
			t.Errorf("part %d on volume %s names %s as the volume of the part before, want %s", i, p.VolumeID, got, want)
		}
	}
	readBack(t, m, info, res, fs)
}

// AppendFile appends the records of a file as an agent sends them: its
// header, its content in one data record (none when empty), and its end
// with the content's SHA-256. The media's tests write their sessions with
// it.
func AppendFile(b []byte, path string, content []byte) []byte {
	b = volume.AppendRecord(b, volume.RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: path, Type: fileindex.TypeFile, Size: int64(len(content))}))
	if len(content) > 0 {
		b = volume.AppendDataRecord(b, 0, content)
	}
	h := sha256.Sum256(content)
	return volume.AppendFileEnd(b, volume.EndOK, h[:])
}

// Contents is what a session reader gave back, by path: the media's tests
// read their sessions into it.
type Contents map[string][]byte

// OnRecord is the session reader's record callback that fills c: every
// file it starts, with the data that follows.
func (c Contents) OnRecord() func(volume.RecordType, []byte) error {
	var cur string
	return func(rt volume.RecordType, body []byte) error {
		switch rt {
		case volume.RecFileHeader:
			e, err := fileindex.DecodeEntry(body)
			if err != nil {
				return err
			}
			cur = e.Path
			c[cur] = []byte{}
		case volume.RecData:
			_, d, err := volume.DecodeData(body)
			if err != nil {
				return err
			}
			c[cur] = append(c[cur], d...)
		}
		return nil
	}
}
