package disk

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/media/volume"
)

// streamOpener reads the pool's volumes by id the way a restore stream
// does, and keeps the readers it opened for the test to look at.
func streamOpener(p *Pool, opened *[]*StreamReader) volume.Opener {
	return func(id uuid.UUID) (io.ReaderAt, error) {
		names, err := p.Volumes()
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			s, err := p.OpenStream(n)
			if err != nil {
				return nil, err
			}
			if l, err := volume.ReadLabel(s); err == nil && l.VolumeID == id {
				*opened = append(*opened, s)
				return s, nil
			}
			s.Close()
		}
		return nil, fmt.Errorf("no volume %s in pool %s", id, p.Name)
	}
}

// cached is the share of path's pages in the page cache.
func cached(t *testing.T, path string) float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	// x/sys has no wrapper for mincore(2).
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	in := 0
	for _, v := range vec {
		in += int(v & 1)
	}
	return float64(in) / float64(len(vec))
}

// uncache drops path's pages from the page cache (they are clean: the
// volume was synced).
func uncache(t testing.TB, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// A restore stream reads a session right, and on a file system that
// reads past the page cache, leaves the volume out of it: a restore of a
// large volume takes neither the node's cache nor a page per byte. The
// same read through the cache is the control that the measure sees it.
func TestStreamReadsPastTheCache(t *testing.T) {
	p := testPool(t.TempDir(), 0)
	a := newVolume(t, p, "Default-0001")
	key := testKey("pool-Default-1")
	in := info()
	files := randomFiles(5, 48, 300000)
	res := writeSession(t, in, key, a, volume.WriterOptions{}, files)
	a.Close()
	path, _ := p.Path("Default-0001")

	readSession := func(open volume.Opener) {
		t.Helper()
		r := volume.NewSessionReader(in.SessionID, key, res.Refs(), open, volume.ReaderOptions{})
		defer r.Close()
		rb := newReadBack()
		if err := r.ReadAll(context.Background(), rb.fn, rb.damaged); err != nil || len(rb.damages) != 0 {
			t.Fatalf("read the session: %v, damage %v", err, rb.damages)
		}
		for _, f := range files {
			if !rb.ok[f.path] {
				t.Fatalf("%s was not read back whole", f.path)
			}
		}
	}

	uncache(t, path)
	readSession(opener(t, p))
	if c := cached(t, path); c < 0.9 {
		t.Fatalf("read through the cache, %.0f%% of the volume is in it: the measure does not see the cache", 100*c)
	}

	uncache(t, path)
	var opened []*StreamReader
	readSession(streamOpener(p, &opened))
	if len(opened) != 1 {
		t.Fatalf("%d stream readers for a session on one volume", len(opened))
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	_, dio := directAlign(f)
	f.Close()
	if !dio {
		t.Logf("the file system of %s reads no file past the page cache: the stream read through it", p.Dir)
		return
	}
	if !opened[0].Direct() {
		t.Fatal("the file system reads past the page cache, and the stream did not")
	}
	if c := cached(t, path); c > 0.25 {
		t.Fatalf("read as a stream, %.0f%% of the volume is in the page cache; want the reads in order past it", 100*c)
	}
}

// On a file system that reads nothing past its cache (tmpfs holds its
// files there), a stream reads through it, and reads right.
func TestStreamOnTmpfs(t *testing.T) {
	p := testPool(mountTmpfs(t, "64m"), 0)
	a := newVolume(t, p, "Default-0001")
	key := testKey("pool-Default-1")
	in := info()
	files := randomFiles(6, 20, 200000)
	res := writeSession(t, in, key, a, volume.WriterOptions{}, files)
	a.Close()
	var opened []*StreamReader
	r := volume.NewSessionReader(in.SessionID, key, res.Refs(), streamOpener(p, &opened), volume.ReaderOptions{})
	defer r.Close()
	rb := newReadBack()
	if err := r.ReadAll(context.Background(), rb.fn, rb.damaged); err != nil || len(rb.damages) != 0 {
		t.Fatalf("read the session: %v, damage %v", err, rb.damages)
	}
	for _, f := range files {
		if !rb.ok[f.path] {
			t.Fatalf("%s was not read back whole", f.path)
		}
	}
}

// BenchmarkStreamReads reads a 256 MiB volume file the way a restore
// reads a session, a block and the next block's header at a time, from a
// dropped page cache: through the cache (cached) and as a stream (stream),
// side by side in one run. -benchtime=Nx with -count to compare; the
// system time is in the sys-ns/op figure.
func BenchmarkStreamReads(b *testing.B) {
	p := testPool(b.TempDir(), 0)
	path, _ := p.Path("Bench-0001")
	const size = 256 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	if err := os.WriteFile(path, data, 0o640); err != nil {
		b.Fatal(err)
	}
	const block = 256<<10 + 64
	for _, c := range []struct {
		name string
		open func() (io.ReaderAt, func() error, error)
	}{
		{"cached", func() (io.ReaderAt, func() error, error) {
			f, _, err := p.OpenRead("Bench-0001")
			if err != nil {
				return nil, nil, err
			}
			return f, f.Close, nil
		}},
		{"stream", func() (io.ReaderAt, func() error, error) {
			s, err := p.OpenStream("Bench-0001")
			if err != nil {
				return nil, nil, err
			}
			return s, s.Close, nil
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, block)
			var sys time.Duration
			for b.Loop() {
				b.StopTimer()
				uncache(b, path)
				var before unix.Rusage
				unix.Getrusage(unix.RUSAGE_SELF, &before)
				b.StartTimer()
				r, closeIt, err := c.open()
				if err != nil {
					b.Fatal(err)
				}
				for off := int64(0); off < size; off += block {
					if _, err := r.ReadAt(buf[:min(block, size-off)], off); err != nil && err != io.EOF {
						b.Fatal(err)
					}
				}
				closeIt()
				b.StopTimer()
				var after unix.Rusage
				unix.Getrusage(unix.RUSAGE_SELF, &after)
				sys += time.Duration(after.Stime.Nano() - before.Stime.Nano())
				b.StartTimer()
			}
			b.SetBytes(size)
			b.ReportMetric(float64(sys.Nanoseconds())/float64(b.N), "sys-ns/op")
		})
	}
}
