package disk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/media/volume/volumetest"
	"github.com/google/uuid"
)

func testPool(dir string, max int64) *Pool {
	return &Pool{Name: "Default", Dir: dir, MaxVolumeBytes: max, BlockSize: volume.MinBlockSize}
}

func testKey(id string) *volume.Key {
	m := sha256.Sum256([]byte(id))
	return &volume.Key{ID: id, Material: m[:]}
}

type file struct {
	path    string
	content []byte
}

// randomFiles are n files of size random bytes, in index order.
func randomFiles(seed byte, n, size int) []file {
	var out []file
	for i := 0; i < n; i++ {
		c := make([]byte, size)
		rand.NewChaCha8([32]byte{seed, byte(i), byte(i >> 8)}).Read(c)
		out = append(out, file{path: fmt.Sprintf("/srv/f%05d", i), content: c})
	}
	return out
}

// records is what the agent sends for f.
func records(f file) []byte {
	b := volume.AppendRecord(nil, volume.RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: f.path, Type: fileindex.TypeFile, Mode: 0o644, Size: int64(len(f.content))}))
	for off := 0; off < len(f.content); off += 64 << 10 {
		b = volume.AppendDataRecord(b, int64(off), f.content[off:min(off+64<<10, len(f.content))])
	}
	h := sha256.Sum256(f.content)
	return volume.AppendFileEnd(b, volume.EndOK, h[:])
}

func info() volume.SessionInfo {
	return volume.SessionInfo{SessionID: uuid.New(), JobID: 1, Client: "web-01", Level: "full", Pool: "Default", Compression: volume.CompressionZstd, BlockRawSize: volume.MinBlockRawSize}
}

// newVolume creates volume name in p and opens it for appending.
func newVolume(t *testing.T, p *Pool, name string) *Appender {
	t.Helper()
	id := uuid.New()
	if err := p.Create(name, volume.Label{VolumeID: id, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	a, err := p.OpenAppend(name, id, int64(p.blockSize()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func writeFiles(w *volume.SessionWriter, files []file) error {
	for _, f := range files {
		if err := w.Write(records(f)); err != nil {
			return err
		}
	}
	return nil
}

// writeSession writes files as one session in, first and opts.Next on,
// and closes it.
func writeSession(t *testing.T, in volume.SessionInfo, key *volume.Key, first volume.Appender, opts volume.WriterOptions, files []file) *volume.SessionResult {
	t.Helper()
	opts.TempDir = t.TempDir()
	w, err := volume.NewSessionWriter(in, key, first, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFiles(w, files); err != nil {
		t.Fatal(err)
	}
	res, err := w.Close()
	if res != nil {
		t.Cleanup(func() { res.Index.Close() })
	}
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// mountTmpfs mounts a tmpfs of size on a fresh directory: the only honest
// way to get ENOSPC from the kernel. It needs root; without it the test
// fails rather than skips.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a %s tmpfs on %s (this test needs root to produce a real ENOSPC): %v: %s", size, dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// opener reads the pool's volumes by id.
func opener(t *testing.T, p *Pool) volume.Opener {
	return func(id uuid.UUID) (io.ReaderAt, error) {
		names, err := p.Volumes()
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			f, _, err := p.OpenRead(n)
			if err != nil {
				return nil, err
			}
			if l, err := volume.ReadLabel(f); err == nil && l.VolumeID == id {
				return f, nil
			}
			f.Close()
		}
		return nil, fmt.Errorf("no volume %s in pool %s", id, p.Name)
	}
}

type readBack struct {
	cur     string
	got     map[string][]byte
	ok      map[string]bool
	damages []*volume.CorruptBlockError
}

func newReadBack() *readBack { return &readBack{got: map[string][]byte{}, ok: map[string]bool{}} }

func (rb *readBack) fn(t volume.RecordType, body []byte) error {
	switch t {
	case volume.RecFileHeader:
		e, err := fileindex.DecodeEntry(body)
		if err != nil {
			return err
		}
		rb.cur = e.Path
	case volume.RecData:
		_, data, err := volume.DecodeData(body)
		if err != nil {
			return err
		}
		rb.got[rb.cur] = append(rb.got[rb.cur], data...)
	case volume.RecFileEnd:
		_, hash, _, _ := volume.DecodeFileEnd(body)
		h := sha256.Sum256(rb.got[rb.cur])
		rb.ok[rb.cur] = bytes.Equal(h[:], hash)
	}
	return nil
}

func (rb *readBack) damaged(d *volume.CorruptBlockError) error {
	rb.damages = append(rb.damages, d)
	return nil
}

func TestCreate(t *testing.T) {
	dir := t.TempDir()
	p := testPool(dir, 0)
	id := uuid.New()
	created := time.Date(2026, 5, 6, 7, 8, 9, 10, time.UTC)
	if err := p.Create("Default-0001", volume.Label{VolumeID: id, Barcode: "CRN001", Created: created}); err != nil {
		t.Fatal(err)
	}
	f, size, err := p.OpenRead("Default-0001")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := volume.ReadLabel(f)
	if err != nil {
		t.Fatal(err)
	}
	want := volume.Label{FormatVersion: volume.FormatVersion, VolumeID: id, Name: "Default-0001", Barcode: "CRN001", Pool: "Default", BlockSize: volume.MinBlockSize, Created: created, MediaType: "disk", PartAlign: volume.DiskPartAlign}
	if l != want || size != volume.MinBlockSize {
		t.Fatalf("label %+v (file %d bytes), want %+v", l, size, want)
	}
	if names, err := p.Volumes(); err != nil || len(names) != 1 || names[0] != "Default-0001" {
		t.Fatalf("Volumes = %v, %v", names, err)
	}

	err = p.Create("Default-0001", volume.Label{VolumeID: uuid.New()})
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second Create: %v", err)
	}
	if l2, _ := volume.ReadLabel(f); l2 != want {
		t.Fatal("the existing volume was changed")
	}
	for _, bad := range []string{"", ".hidden", "a/b", "../x", "a b", strings.Repeat("x", 201)} {
		if err := p.Create(bad, volume.Label{VolumeID: uuid.New()}); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	if err := p.Create("x", volume.Label{VolumeID: uuid.New(), BlockSize: 1 << 20}); err == nil {
		t.Error("a label with another block size was accepted")
	}
	if err := p.Create("y", volume.Label{}); err == nil {
		t.Error("a label without a volume id was accepted")
	}
	if _, err := os.Stat(filepath.Join(dir, "y.cvol")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed Create left a file: %v", err)
	}
	for _, bad := range []*Pool{{Dir: dir}, {Name: "x", Dir: "relative"}, {Name: "x", Dir: dir, BlockSize: 1000}, {Name: "x", Dir: dir, MaxVolumeBytes: 100}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("pool %+v validates", bad)
		}
	}
}

// A pool that fixes no block size takes each label's, so sessions that
// share it may label volumes of different block sizes, and checks each.
func TestCreateTakesTheLabelsBlockSize(t *testing.T) {
	p := &Pool{Name: "Default", Dir: t.TempDir(), MaxVolumeBytes: 32 * volume.MinBlockSize}
	for i, bs := range []int{volume.MinBlockSize, 2 * volume.MinBlockSize, 0} {
		name := fmt.Sprintf("Default-%04d", i+1)
		if err := p.Create(name, volume.Label{VolumeID: uuid.New(), BlockSize: bs}); err != nil {
			t.Fatal(err)
		}
		r, _, err := p.OpenRead(name)
		if err != nil {
			t.Fatal(err)
		}
		l, err := volume.ReadLabel(r)
		r.Close()
		want := bs
		if bs == 0 {
			want = volume.DefaultBlockSize
		}
		if err != nil || l.BlockSize != want {
			t.Fatalf("%s: label %+v, %v; want block size %d", name, l, err, want)
		}
	}
	if p.BlockSize != 0 {
		t.Fatalf("Create changed the shared pool's block size to %d", p.BlockSize)
	}
	for _, bs := range []int{1000, 8 * volume.MinBlockSize} { // invalid; 8 blocks over the cap
		if err := p.Create("Default-0009", volume.Label{VolumeID: uuid.New(), BlockSize: bs}); err == nil {
			t.Errorf("a label of block size %d was accepted", bs)
		}
	}
}

func TestOpenAppendChecks(t *testing.T) {
	p := testPool(t.TempDir(), 0)
	a := newVolume(t, p, "Default-0001")
	path, _ := p.Path("Default-0001")

	other := uuid.New()
	_, err := p.OpenAppend("Default-0001", other, volume.MinBlockSize)
	want := fmt.Sprintf("volume file %s holds volume %s, catalog expects %s", path, a.VolumeID(), other)
	if !errors.Is(err, ErrWrongVolume) || !strings.Contains(err.Error(), want) {
		t.Fatalf("wrong volume: %v", err)
	}
	if _, err := p.OpenAppend("Default-0001", a.VolumeID(), volume.MinBlockSize); !errors.Is(err, ErrBusy) {
		t.Fatalf("second writer: %v", err)
	}
	a.Close()
	if _, err := p.OpenAppend("Default-0001", a.VolumeID(), 4*volume.MinBlockSize); !errors.Is(err, ErrMissingData) {
		t.Fatalf("committed end past the file: %v", err)
	}
	if _, err := p.OpenAppend("Default-0001", a.VolumeID(), 1000); err == nil {
		t.Fatal("unaligned committed end accepted")
	}
	if _, err := p.OpenAppend("Default-0009", a.VolumeID(), volume.MinBlockSize); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing volume: %v", err)
	}
	os.WriteFile(filepath.Join(p.Dir, "junk.cvol"), []byte("not a volume"), 0o644)
	if _, err := p.OpenAppend("junk", a.VolumeID(), volume.MinBlockSize); !errors.Is(err, volume.ErrNotVolume) {
		t.Fatalf("junk file: %v", err)
	}
}

func TestENOSPC(t *testing.T) {
	dir := mountTmpfs(t, "2m")
	p := testPool(dir, 0)
	a := newVolume(t, p, "Default-0003")
	free, total, err := p.Usage()
	if err != nil || total != 2<<20 || free <= 0 || free > total {
		t.Fatalf("Usage = %d, %d, %v", free, total, err)
	}
	w, err := volume.NewSessionWriter(info(), testKey("k"), a, volume.WriterOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	err = writeFiles(w, randomFiles(1, 40, 100000))
	if err == nil {
		_, err = w.Close()
	}
	w.Abort()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v, want ENOSPC", err)
	}
	var se *SpaceError
	want := fmt.Sprintf("disk pool \"Default\" (%s): no space left on device writing volume Default-0003", dir)
	if !errors.As(err, &se) || se.Error() != want || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %q, want it to say %q", err, want)
	}
	// The caller rolls back; the volume is as it was.
	if err := a.Truncate(volume.MinBlockSize); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "Default-0003.cvol")); st.Size() != volume.MinBlockSize {
		t.Fatalf("after Truncate the file has %d bytes", st.Size())
	}

	// Create on a full filesystem fails the same way and leaves nothing.
	fill, _ := os.Create(filepath.Join(dir, "fill"))
	_, err = fill.Write(make([]byte, 4<<20))
	fill.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the tmpfs: %v", err)
	}
	err = p.Create("Default-0004", volume.Label{VolumeID: uuid.New()})
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "no space left on device writing volume Default-0004") {
		t.Fatalf("Create on a full disk: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "Default-0004.cvol")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a failed Create left its file: %v", err)
	}
}

func TestFullVolumeContinuesOnNext(t *testing.T) {
	p := testPool(t.TempDir(), 1<<20)
	first := newVolume(t, p, "Default-0001")
	var names []string
	next := func(full volume.Appender) (volume.Appender, error) {
		names = append(names, full.(*Appender).Name())
		return newVolume(t, p, fmt.Sprintf("Default-%04d", len(names)+1)), nil
	}
	files := randomFiles(2, 25, 100000)
	key := testKey("pool-Default-1")
	in := info()
	res := writeSession(t, in, key, first, volume.WriterOptions{Next: next}, files)
	vols, _ := p.Volumes()
	if len(vols) < 3 || len(res.Parts) != len(vols) || names[0] != "Default-0001" {
		t.Fatalf("volumes %v, parts %d, Next got %v", vols, len(res.Parts), names)
	}
	for i, n := range vols {
		f, size, err := p.OpenRead(n)
		if err != nil {
			t.Fatal(err)
		}
		if size > p.MaxVolumeBytes || size != res.Parts[i].End {
			t.Errorf("%s: %d bytes, part ends at %d, limit %d", n, size, res.Parts[i].End, p.MaxVolumeBytes)
		}
		v, err := volume.OpenVolume(f, size)
		if err != nil {
			t.Fatal(err)
		}
		ps, err := v.Parts()
		if err != nil || len(ps) != 1 || ps[0].Torn || ps[0].PartEnd.Final != (i == len(vols)-1) {
			t.Fatalf("%s: parts %+v, %v", n, ps, err)
		}
		if i == len(vols)-1 {
			it, err := volume.ReadIndex(f, key, ps[0])
			if err != nil {
				t.Fatal(err)
			}
			idx, err := fileindex.Collect(it)
			if err != nil || len(idx) != len(files) {
				t.Fatalf("index: %d entries, %v", len(idx), err)
			}
			var locs []fileindex.Location
			for _, e := range idx {
				locs = append(locs, e.Loc)
			}
			r := volume.NewSessionReader(in.SessionID, key, res.Refs(), opener(t, p), volume.ReaderOptions{})
			rb := newReadBack()
			if err := r.ReadEntries(context.Background(), locs, rb.fn, nil); err != nil {
				t.Fatal(err)
			}
			r.Close()
			for _, f := range files {
				if !rb.ok[f.path] || !bytes.Equal(rb.got[f.path], f.content) {
					t.Errorf("%s did not read back", f.path)
				}
			}
		}
		f.Close()
	}
}

// fileState is what a reader must not change.
type fileState struct {
	sum   [32]byte
	mtime time.Time
	size  int64
}

func stateOf(t *testing.T, path string) fileState {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	return fileState{sha256.Sum256(b), st.ModTime(), st.Size()}
}

func TestReadingOnDisk(t *testing.T) {
	p := testPool(t.TempDir(), 0)
	a := newVolume(t, p, "Default-0001")
	key := testKey("pool-Default-1")
	in := info()
	files := randomFiles(3, 30, 100000)
	res := writeSession(t, in, key, a, volume.WriterOptions{}, files)
	a.Close()
	path, _ := p.Path("Default-0001")

	// readAll reads the volume every way there is and reports what it saw.
	readAll := func(k *volume.Key) (*readBack, []volume.PartInfo, []fileindex.Entry, error) {
		f, size, err := p.OpenRead("Default-0001")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		v, err := volume.OpenVolume(f, size)
		if err != nil {
			return nil, nil, nil, err
		}
		ps, err := v.Parts()
		if err != nil {
			return nil, nil, nil, err
		}
		var idx []fileindex.Entry
		if it, err := volume.ReadIndex(f, k, ps[0]); err == nil {
			idx, _ = fileindex.Collect(it)
		}
		r := volume.NewSessionReader(in.SessionID, k, res.Refs(), opener(t, p), volume.ReaderOptions{})
		defer r.Close()
		rb := newReadBack()
		err = r.ReadAll(context.Background(), rb.fn, rb.damaged)
		return rb, ps, idx, err
	}

	before := stateOf(t, path)
	rb, _, idx, err := readAll(key)
	if err != nil || len(idx) != len(files) || len(rb.damages) != 0 {
		t.Fatalf("clean read: %v, %d entries, damage %v", err, len(idx), rb.damages)
	}
	t.Run("wrong key", func(t *testing.T) {
		_, _, _, err := readAll(testKey("pool-Other"))
		var ke *volume.KeyError
		if !errors.As(err, &ke) || ke.KeyID != key.ID || !strings.Contains(err.Error(), `needs key "pool-Default-1"`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("missing key", func(t *testing.T) {
		_, _, _, err := readAll(nil)
		var ke *volume.KeyError
		if !errors.As(err, &ke) || ke.KeyID != key.ID || !strings.Contains(err.Error(), "no key given") {
			t.Fatalf("err = %v", err)
		}
	})
	if after := stateOf(t, path); after != before {
		t.Fatalf("reading changed the volume file: %+v, was %+v", after, before)
	}

	t.Run("flipped byte", func(t *testing.T) {
		e := idx[len(idx)/2]
		off := res.Parts[0].DataStart + int64(e.Loc.Off-res.Parts[0].StreamStart)
		f, _ := os.OpenFile(path, os.O_RDWR, 0)
		var b [1]byte
		f.ReadAt(b[:], off+5000)
		b[0] ^= 0x40
		f.WriteAt(b[:], off+5000)
		f.Close()
		defer func() {
			f, _ := os.OpenFile(path, os.O_RDWR, 0)
			b[0] ^= 0x40
			f.WriteAt(b[:], off+5000)
			f.Close()
		}()
		rb, _, _, err := readAll(key)
		if err != nil {
			t.Fatal(err)
		}
		if len(rb.damages) != 1 || rb.damages[0].Seq != e.Loc.Seq || rb.damages[0].Offset != off || rb.damages[0].VolumeID != a.VolumeID() || !strings.Contains(rb.damages[0].Reason, "CRC32C") {
			t.Fatalf("damage %+v, want seq %d at %d", rb.damages, e.Loc.Seq, off)
		}
		for i, x := range idx {
			hit := x.Loc.Seq <= e.Loc.Seq && e.Loc.Seq <= x.Loc.EndSeq
			if ok := rb.ok[x.Path] && bytes.Equal(rb.got[x.Path], files[i].content); ok == hit {
				t.Errorf("%s (blocks %d..%d): read ok = %v", x.Path, x.Loc.Seq, x.Loc.EndSeq, ok)
			}
		}
	})
	t.Run("truncated", func(t *testing.T) {
		e := idx[len(idx)-5]
		cut := res.Parts[0].DataStart + int64(e.Loc.Off-res.Parts[0].StreamStart) + 100
		whole, _ := os.ReadFile(path)
		if err := os.Truncate(path, cut); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(path, whole, 0o640)
		rb, ps, _, err := readAll(key)
		if err != nil {
			t.Fatal(err)
		}
		if !ps[0].Torn || len(rb.damages) != 1 || rb.damages[0].Seq != e.Loc.Seq || !strings.Contains(rb.damages[0].Reason, "truncated") {
			t.Fatalf("parts %+v, damage %+v", ps, rb.damages)
		}
		for i, x := range idx {
			if ok := rb.ok[x.Path] && bytes.Equal(rb.got[x.Path], files[i].content); ok != (x.Loc.EndSeq < e.Loc.Seq) {
				t.Errorf("%s (blocks %d..%d): read ok = %v", x.Path, x.Loc.Seq, x.Loc.EndSeq, ok)
			}
		}
	})
}

// TestCrashLeavesTornPart kills a writer process with SIGKILL half way
// through a session, then checks that readers report the torn part and
// OpenAppend cuts it off.
func TestCrashLeavesTornPart(t *testing.T) {
	if os.Getenv("CAIRN_CRASH_HELPER") != "" {
		return
	}
	dir := t.TempDir()
	p := testPool(dir, 0)
	a := newVolume(t, p, "Default-0001")
	key := testKey("k")
	w, err := volume.NewSessionWriter(info(), key, a, volume.WriterOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFiles(w, randomFiles(4, 3, 1000)); err != nil {
		t.Fatal(err)
	}
	res, err := w.Close()
	if res != nil {
		t.Cleanup(func() { res.Index.Close() })
	}
	if err != nil {
		t.Fatal(err)
	}
	committed := res.Parts[0].End
	a.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
	// The helper is killed, so it never removes a temporary directory of
	// its own: it gets one of ours.
	cmd.Env = append(os.Environ(), "CAIRN_CRASH_HELPER="+dir, "CAIRN_CRASH_SCRATCH="+t.TempDir(), fmt.Sprintf("CAIRN_CRASH_ID=%s", a.VolumeID()), fmt.Sprintf("CAIRN_CRASH_END=%d", committed))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	path, _ := p.Path("Default-0001")
	t.Cleanup(func() { cmd.Process.Kill() })
	poll.Until(t, 30*time.Second, func() error {
		st, err := os.Stat(path)
		if err != nil || st.Size() <= committed+4<<20 {
			return fmt.Errorf("the writer did not get 4 MB into its session: %v", err)
		}
		return nil
	})
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	f, size, err := p.OpenRead("Default-0001")
	if err != nil {
		t.Fatal(err)
	}
	v, _ := volume.OpenVolume(f, size)
	ps, err := v.Parts()
	f.Close()
	if err != nil || len(ps) != 2 || ps[0].Torn || !ps[1].Torn || ps[1].VolumeStart != committed || ps[1].Blocks < 4 {
		t.Fatalf("parts after the crash: %+v, %v", ps, err)
	}
	t.Logf("torn part: %s", ps[1].TornReason)

	a, err = p.OpenAppend("Default-0001", a.VolumeID(), committed)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.TornBytes != size-committed || a.Offset() != committed {
		t.Fatalf("TornBytes %d, offset %d; the file had %d bytes past %d", a.TornBytes, a.Offset(), size-committed, committed)
	}
	if st, _ := os.Stat(path); st.Size() != committed {
		t.Fatalf("file is %d bytes after OpenAppend, want %d", st.Size(), committed)
	}
	// The volume takes the next session as if nothing had happened.
	in := info()
	w, err = volume.NewSessionWriter(in, key, a, volume.WriterOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	files := randomFiles(5, 3, 1000)
	if err := writeFiles(w, files); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, size, _ = p.OpenRead("Default-0001")
	defer f.Close()
	v, _ = volume.OpenVolume(f, size)
	if ps, err := v.Parts(); err != nil || len(ps) != 2 || ps[1].Torn || ps[1].Header.SessionID != in.SessionID {
		t.Fatalf("parts: %+v, %v", ps, err)
	}
}

// TestCrashHelper is the writer TestCrashLeavesTornPart kills: it appends
// a session that never ends.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv("CAIRN_CRASH_HELPER")
	if dir == "" {
		return
	}
	var end int64
	fmt.Sscan(os.Getenv("CAIRN_CRASH_END"), &end)
	p := testPool(dir, 0)
	a, err := p.OpenAppend("Default-0001", uuid.MustParse(os.Getenv("CAIRN_CRASH_ID")), end)
	if err != nil {
		t.Fatal(err)
	}
	w, err := volume.NewSessionWriter(info(), testKey("k"), a, volume.WriterOptions{TempDir: os.Getenv("CAIRN_CRASH_SCRATCH")})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		c := make([]byte, 100000)
		rand.NewChaCha8([32]byte{byte(i), byte(i >> 8), byte(i >> 16)}).Read(c)
		if err := writeFiles(w, []file{{path: fmt.Sprintf("/f%09d", i), content: c}}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAppenderContract(t *testing.T) {
	dir := t.TempDir()
	pools := map[int64]*Pool{}
	byID := map[uuid.UUID]string{}
	n := 0
	volumetest.TestAppender(t, volumetest.Medium{
		New: func(t *testing.T, limit int64) volume.Appender {
			p := pools[limit]
			if p == nil {
				p = testPool(filepath.Join(dir, fmt.Sprint(limit)), limit)
				if err := os.MkdirAll(p.Dir, 0o755); err != nil {
					t.Fatal(err)
				}
				pools[limit] = p
			}
			n++
			name := fmt.Sprintf("Contract-%04d", n)
			a := newVolume(t, p, name)
			byID[a.VolumeID()] = filepath.Join(p.Dir, name+Ext)
			return a
		},
		Read: func(t *testing.T, id uuid.UUID) (io.ReaderAt, int64) {
			f, err := os.Open(byID[id])
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			st, _ := f.Stat()
			return f, st.Size()
		},
	})
}

func TestDelete(t *testing.T) {
	p := testPool(t.TempDir(), 0)
	a := newVolume(t, p, "Default-0001")
	id := a.VolumeID()
	if err := p.Delete("Default-0001", id); !errors.Is(err, ErrBusy) {
		t.Fatalf("delete of a volume being written: %v", err)
	}
	a.Close()
	if err := p.Delete("Default-0001", uuid.New()); !errors.Is(err, ErrWrongVolume) {
		t.Fatalf("delete naming another volume: %v", err)
	}
	// A reader keeps what it opened.
	r, _, err := p.OpenRead("Default-0001")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := p.Delete("Default-0001", id); err != nil {
		t.Fatal(err)
	}
	if names, _ := p.Volumes(); len(names) != 0 {
		t.Fatalf("volumes after delete: %v", names)
	}
	if _, err := volume.ReadLabel(r); err != nil {
		t.Fatalf("open reader after the delete: %v", err)
	}
	// Again: the file is gone, which is what was asked.
	if err := p.Delete("Default-0001", id); err != nil {
		t.Fatalf("repeated delete: %v", err)
	}
}
