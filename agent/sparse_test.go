package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/holesdir"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/media/volume"
)

// sparseRegions lists the data regions of a file.
func sparseRegions(t testing.TB, f *os.File, size int64) [][2]int64 {
	t.Helper()
	var out [][2]int64
	for off := int64(0); off < size; {
		start, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		mustDo(t, err)
		end, err := unix.Seek(int(f.Fd()), start, unix.SEEK_HOLE)
		mustDo(t, err)
		out = append(out, [2]int64{start, end})
		off = end
	}
	return out
}

// sameSparseFile compares two files of the same size byte for byte
// without reading their holes: outside the data regions of both, both read
// as zeros.
func sameSparseFile(t testing.TB, want, got string) {
	t.Helper()
	a, err := os.Open(want)
	mustDo(t, err)
	defer a.Close()
	b, err := os.Open(got)
	mustDo(t, err)
	defer b.Close()
	ai, _ := a.Stat()
	bi, _ := b.Stat()
	if ai.Size() != bi.Size() {
		t.Fatalf("%s: size %d, want %d", got, bi.Size(), ai.Size())
	}
	regions := append(sparseRegions(t, a, ai.Size()), sparseRegions(t, b, bi.Size())...)
	for _, r := range regions {
		n := r[1] - r[0]
		wa, ga := make([]byte, n), make([]byte, n)
		_, err := io.ReadFull(io.NewSectionReader(a, r[0], n), wa)
		mustDo(t, err)
		_, err = io.ReadFull(io.NewSectionReader(b, r[0], n), ga)
		mustDo(t, err)
		if !bytes.Equal(wa, ga) {
			t.Fatalf("%s differs from %s in [%d, %d)", got, want, r[0], r[1])
		}
	}
}

// A 64 GiB file holding 1 MiB of data backs up and restores in the time
// its data takes: neither side hashes its holes. Hashing them as zeros,
// which the SHA-256 of the whole content needs, takes seconds per 6 GiB
// each way (BenchmarkSparseFile: 28 to 42 s on two loaded cores), so ten
// times as long here.
func TestSparseFileTakesTheTimeOfItsData(t *testing.T) {
	const size = 64 << 30
	dir := t.TempDir()
	p := filepath.Join(dir, "vm.img")
	data := randomBytes(21, 256<<10)
	makeSparse(t, p, size, data, 0, 1<<30+12345, 40<<30, size-300<<10)
	if b := blocksOf(t, p); b*512 > 4<<20 {
		t.Fatalf("the filesystem did not keep the test file sparse: %d blocks", b)
	}
	t0 := time.Now()
	stream, st := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{p}}})
	backup := time.Since(t0)
	if st.WarningCount != 0 || st.Bytes > 2<<20 {
		t.Fatalf("backup stats %+v", st)
	}
	es := entriesOf(t, stream)
	if len(es) != 1 || es[0].e.HashKind != fileindex.HashSparseSHA256 || !bytes.Equal(es[0].hash, sparseDigestOf(t, p)) {
		t.Fatalf("entries %+v", es)
	}
	dst := filepath.Join(t.TempDir(), "r")
	t0 = time.Now()
	rst := restoreStream(t, stream, RestoreOptions{Root: dst})
	restore := time.Since(t0)
	if rst.WarningCount != 0 || rst.DamagedCount != 0 || rst.Files != 1 {
		t.Fatalf("restore stats %+v", rst)
	}
	sameSparseFile(t, p, dst+p)
	if b := blocksOf(t, dst+p); b*512 > 4<<20 {
		t.Fatalf("restored file allocates %d bytes: holes were filled", b*512)
	}
	// Generous for a loaded machine: the data takes milliseconds, the
	// holes hashed as zeros ten times BenchmarkSparseFile's seconds.
	if backup+restore > 10*time.Second {
		t.Fatalf("backup took %s, restore %s: the holes are being hashed", backup, restore)
	}
	t.Logf("64 GiB file with 1 MiB of data: backup %s, restore %s", backup, restore)
}

// A file with holes whose data or digest went bad on the way is damaged, not
// restored; and a stream of a backup that hashed holes as zeros (every one
// written before the sparse digest) restores as it did.
func TestSparseFileDigestIsChecked(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sparse")
	makeSparse(t, p, 64<<20, randomBytes(22, 100<<10), 4096, 32<<20)
	stream, _ := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{p}}})

	flipped := bytes.Clone(stream)
	recs := parseStream(t, stream)
	pos := 0
	for _, r := range recs {
		if r.t == volume.RecData {
			pos += 1 + 3 + 100 // into the data of the first Data record
			break
		}
		pos += len(volume.AppendRecord(nil, r.t, r.body))
	}
	flipped[pos] ^= 1
	st := restoreStream(t, flipped, RestoreOptions{Root: filepath.Join(t.TempDir(), "r")})
	if st.DamagedCount != 1 || !strings.Contains(st.Damaged[0].Reason, "does not match its SHA-256 of its data regions") {
		t.Fatalf("a changed byte: %+v", st)
	}
	var moved []byte
	for _, r := range recs {
		if r.t == volume.RecData {
			off, b, err := volume.DecodeData(r.body)
			mustDo(t, err)
			if off >= 32<<20 {
				r.body = append(binary.AppendUvarint(nil, uint64(off+4096)), b...) // the same bytes, elsewhere
			}
		}
		moved = volume.AppendRecord(moved, r.t, r.body)
	}
	st = restoreStream(t, moved, RestoreOptions{Root: filepath.Join(t.TempDir(), "r")})
	if st.DamagedCount != 1 {
		t.Fatalf("data moved within the file: %+v", st)
	}

	defer func(k fileindex.HashKind) { sparseHashing = k }(sparseHashing)
	sparseHashing = fileindex.HashSHA256
	old, _ := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{p}}})
	es := entriesOf(t, old)
	if es[0].e.HashKind != fileindex.HashSHA256 || !bytes.Equal(es[0].hash, fileHash(t, p)) {
		t.Fatalf("the old kind: %+v", es[0])
	}
	dst := filepath.Join(t.TempDir(), "r")
	st = restoreStream(t, old, RestoreOptions{Root: dst})
	if st.DamagedCount != 0 || st.WarningCount != 0 {
		t.Fatalf("a stream of the old kind: %+v", st)
	}
	sameSparseFile(t, p, dst+p)
	if !slices.Equal(fileHash(t, dst+p), fileHash(t, p)) {
		t.Fatal("restored content differs")
	}
}

// A file with holes and enough data is sent by blocks, cut run by run: its
// block list records its data runs, no block crosses a hole, and the
// restore of the stream is sparse again with the same content. An
// incremental after a change in place and new data in a hole sends the
// blocks around them, keeps the others where the base has them, and
// records the new runs.
func TestSparseFileByBlocks(t *testing.T) {
	dir := holesdir.Dir(t)
	p := filepath.Join(dir, "vm.img")
	const size = 256 << 20
	data := randomBytes(31, 3<<20)
	f, err := os.Create(p)
	mustDo(t, err)
	for i, at := range []int64{0, 64 << 20, size - 5<<19} { // the last run ends in a hole
		_, err := f.WriteAt(data[i<<20:(i+1)<<20], at)
		mustDo(t, err)
	}
	mustDo(t, f.Truncate(size))
	regions := sparseRegions(t, f, size)

	stream, st := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{p}}})
	es := entriesOf(t, stream)
	if len(es) != 1 || st.Bytes != 3<<20 || es[0].blocks == nil || es[0].e.HashKind != fileindex.HashSparseSHA256 || !bytes.Equal(es[0].hash, sparseDigestOf(t, p)) {
		t.Fatalf("stats %+v, entries %+v", st, es)
	}
	bl := es[0].blocks
	if len(bl.Runs) != len(regions) {
		t.Fatalf("runs %v, the file's data regions %v", bl.Runs, regions)
	}
	for i, r := range regions {
		if bl.Runs[i] != (fileindex.Run{Off: uint64(r[0]), Len: uint64(r[1] - r[0])}) {
			t.Fatalf("run %d %+v, region %v", i, bl.Runs[i], r)
		}
	}
	// Encoded and decoded, the list holds: its blocks tile the runs.
	if _, err := fileindex.DecodeBlockList(fileindex.AppendBlockList(nil, bl)); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "r")
	if rst := restoreStream(t, stream, RestoreOptions{Root: dst}); rst.DamagedCount != 0 || rst.Files != 1 {
		t.Fatalf("restore %+v", rst)
	}
	sameSparseFile(t, p, dst+p)
	if b := blocksOf(t, dst+p) * 512; b > 4<<20 {
		t.Fatalf("restored file allocates %d bytes: holes were filled", b)
	}

	base := placedAt(bl, [16]byte{1})
	_, err = f.WriteAt(randomBytes(32, 64<<10), 64<<20+300<<10)
	mustDo(t, err)
	_, err = f.WriteAt(randomBytes(33, 256<<10), 128<<20) // data in a hole
	mustDo(t, err)
	mustDo(t, f.Close())
	var walked []fileindex.Entry
	mustDo(t, Changes(context.Background(), WalkOptions{Paths: []string{p}}, nil, func(e *fileindex.Entry, _ Change) error {
		walked = append(walked, *e)
		return nil
	}))
	old := walked[len(walked)-1]
	old.MTime--
	old.Blocks = base
	stream, st = runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{p}}, Base: fileindex.SliceIterator(append(walked[:len(walked)-1], old))})
	es = entriesOf(t, stream)
	if len(es) != 1 || es[0].blocks == nil || len(es[0].blocks.Runs) != 4 || !bytes.Equal(es[0].hash, sparseDigestOf(t, p)) {
		t.Fatalf("incremental: entries %+v", es)
	}
	// The change in place costs the blocks around it (192 KiB on
	// average, 1 MiB at most), the new run its own bytes.
	if st.Bytes > 256<<10+2<<20 || st.Reused < 1<<20 || st.Bytes+st.Reused != 3<<20+256<<10 {
		t.Fatalf("incremental sent %d bytes, kept %d", st.Bytes, st.Reused)
	}
	t.Logf("incremental: %d bytes sent, %d kept from the base", st.Bytes, st.Reused)
}

// sparseBlocksSeed is the restore stream of a 1 MiB file with holes sent
// by blocks (format 4): data runs of 4 bytes at 4 and at 512 KiB, the
// second a block kept from an earlier session, which comes first, as a
// chain's read of that session gives it.
func sparseBlocksSeed() []byte {
	s := volume.AppendBlockStart(nil, &volume.BlockStart{Path: "/img", Len: 4, At: []int64{512 << 10}})
	s = volume.AppendDataRecord(s, 100, []byte("abcd"))
	s = volume.AppendRecord(s, volume.RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: "/img", Type: fileindex.TypeFile, Mode: 0o600, Size: 1 << 20, HashKind: fileindex.HashSparseSHA256}))
	s = volume.AppendDataRecord(s, 4, []byte("efgh"))
	h := fileindex.NewSparseHash()
	h.Add(4, []byte("efgh"))
	h.Add(512<<10, []byte("abcd"))
	return volume.AppendFileEndBlocks(s, volume.EndOK, h.Sum(nil, 1<<20), &fileindex.BlockList{Bits: 49, Sessions: [][16]byte{{1}},
		Blocks: []fileindex.Block{{Loc: fileindex.Location{Len: 4}}, {Session: 1, Loc: fileindex.Location{Len: 4}}},
		Runs:   []fileindex.Run{{Off: 4, Len: 4}, {Off: 512 << 10, Len: 4}}})
}

// A file with holes assembled from blocks of two sessions is checked
// against its sparse digest over its runs, has its size, and keeps its
// holes; a kept block that comes wrong loses it.
func TestRestoreAssemblesSparseBlocks(t *testing.T) {
	dir := holesdir.Dir(t)
	root := filepath.Join(dir, "to")
	st := restoreStream(t, sparseBlocksSeed(), RestoreOptions{Root: root})
	if st.Files != 1 || st.DamagedCount != 0 || st.WarningCount != 0 {
		t.Fatalf("restore %+v", st)
	}
	got, err := os.ReadFile(filepath.Join(root, "img"))
	mustDo(t, err)
	want := make([]byte, 1<<20)
	copy(want[4:], "efgh")
	copy(want[512<<10:], "abcd")
	if !bytes.Equal(got, want) {
		t.Fatal("restored content differs")
	}
	if b := blocksOf(t, filepath.Join(root, "img")); b*512 >= 512<<10 {
		t.Fatalf("restored file allocates %d bytes: holes were filled", b*512)
	}
	bad := bytes.Replace(sparseBlocksSeed(), []byte("abcd"), []byte("abcX"), 1)
	if st := restoreStream(t, bad, RestoreOptions{Root: filepath.Join(dir, "bad")}); st.DamagedCount != 1 {
		t.Fatalf("a kept block that came wrong: %+v", st)
	}
}

// A block list whose runs reach past the size its FileHeader gave loses
// the file, as a Data record past it does: the restore reads back and
// hashes the runs, and a list of a few bytes claiming a terabyte of them
// would have it read a terabyte of hole.
func TestRestoreRefusesRunsPastTheSize(t *testing.T) {
	const far = 1 << 40
	s := volume.AppendRecord(nil, volume.RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: "/img", Type: fileindex.TypeFile, Mode: 0o600, Size: 1 << 20, HashKind: fileindex.HashSparseSHA256}))
	s = volume.AppendDataRecord(s, 0, []byte("efgh"))
	h := fileindex.NewSparseHash()
	h.Add(0, []byte("efgh"))
	s = volume.AppendFileEndBlocks(s, volume.EndOK, h.Sum(nil, 1<<20), &fileindex.BlockList{Bits: 49, Sessions: [][16]byte{{1}},
		Blocks: []fileindex.Block{{Loc: fileindex.Location{Len: far}}},
		Runs:   []fileindex.Run{{Off: 0, Len: far}}})
	done := make(chan RestoreStats, 1)
	go func() { done <- restoreStream(t, s, RestoreOptions{Root: filepath.Join(t.TempDir(), "to")}) }()
	var st RestoreStats
	poll.Until(t, 20*time.Second, func() error {
		select {
		case st = <-done:
			return nil
		default:
			return errors.New("the restore is still reading the runs")
		}
	})
	if st.DamagedCount != 1 || st.Files != 0 {
		t.Fatalf("a list with runs up to offset %d for a file of 1 MiB: %+v", int64(far), st)
	}
}
