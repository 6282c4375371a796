package dropbehind

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairnbackup/cairn/internal/pagecachetest"
)

const mib = 1 << 20

// cachedFile writes size random bytes to a new file on a file system with
// a disk (not tmpfs, whose pages are the file), syncs it and reads it, so
// that all its pages are in the page cache and clean.
func cachedFile(t *testing.T, size int) (*os.File, []byte) {
	t.Helper()
	dir := pagecachetest.Dir(t)
	want := make([]byte, size)
	rand.NewChaCha8([32]byte{7}).Read(want)
	name := filepath.Join(dir, "volume")
	if err := os.WriteFile(name, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, io.NewSectionReader(f, 0, int64(size))); err != nil {
		t.Fatal(err)
	}
	if n, all := cached(t, f, 0, size), (size+os.Getpagesize()-1)/os.Getpagesize(); n != all {
		t.Fatalf("%d of the file's %d pages in the page cache after it was read", n, all)
	}
	return f, want
}

// cached counts the pages of [off, off+n) of f in the page cache.
func cached(t *testing.T, f *os.File, off, n int) int {
	t.Helper()
	return pagecachetest.Cached(t, int(f.Fd()), int64(off), int64(n))
}

func TestWindowGivesBackChunksBehind(t *testing.T) {
	const size = 32 * mib
	f, _ := cachedFile(t, size)
	fd := int(f.Fd())
	w := NewWindow(0)
	// read reads [off, end) in pieces of a MiB, as a stream does.
	read := func(off, end int64) {
		for ; off < end; off += mib {
			w.Read(fd, off, min(off+mib, end))
		}
	}
	read(0, 4*mib)
	if n := cached(t, f, 0, size); n != size/4096 {
		t.Fatalf("less than a chunk read, and %d of %d pages left the cache", size/4096-n, size/4096)
	}
	read(4*mib, Chunk+5*mib)
	// Less than a chunk stays behind the last read (at Chunk+4 MiB).
	if n := cached(t, f, 0, 4*mib); n != 0 {
		t.Errorf("%d pages read a chunk back are still in the cache", n)
	}
	if n := cached(t, f, 0, Chunk+4*mib); n >= Chunk/4096 {
		t.Errorf("%d pages behind the last read are still in the cache, a chunk or more", n)
	}
	if n := cached(t, f, Chunk+4*mib, size-Chunk-4*mib); n != (size-Chunk-4*mib)/4096 {
		t.Errorf("pages not passed left the cache: %d of %d kept", n, (size-Chunk-4*mib)/4096)
	}
	// Back to 2 MiB (a seek): from there on, what is read goes, and
	// nothing after it.
	io.Copy(io.Discard, io.NewSectionReader(f, 0, size))
	read(2*mib, 2*mib+Chunk+mib)
	if n := cached(t, f, 0, 2*mib); n != 2*mib/4096 {
		t.Errorf("pages before the seek left the cache: %d of %d kept", n, 2*mib/4096)
	}
	if n := cached(t, f, 2*mib, Chunk); n != 0 {
		t.Errorf("%d pages read after the seek are still in the cache", n)
	}
	if n := cached(t, f, 2*mib+Chunk, size-2*mib-Chunk); n != (size-2*mib-Chunk)/4096 {
		t.Errorf("pages not passed after the seek left the cache: %d of %d kept", n, (size-2*mib-Chunk)/4096)
	}
	if Cold(fd, 0, size) || !Cold(fd, 2*mib, 2*mib+Chunk) {
		t.Errorf("Cold of the file: %v, of what was given back: %v", Cold(fd, 0, size), Cold(fd, 2*mib, 2*mib+Chunk))
	}
	// A jump ahead to 24 MiB: what was read before it goes, what was
	// jumped over stays (another stream may be reading it).
	io.Copy(io.Discard, io.NewSectionReader(f, 0, size))
	read(24*mib, 26*mib)
	// The stream had read to 11 MiB and given back up to 8: [8, 10) goes
	// now, and [10, 12) in one 2 MiB folio, half of it read, stays.
	if n := cached(t, f, 8*mib, 2*mib); n != 0 {
		t.Errorf("%d pages read before the jump are still in the cache", n)
	}
	if n := cached(t, f, 12*mib, 12*mib); n != 12*mib/4096 {
		t.Errorf("the jump gave back pages it went over: %d of %d kept", n, 12*mib/4096)
	}
	// Done gives back the rest, up to where the stream ends.
	w.Done(fd, size-2*mib)
	if n := cached(t, f, 24*mib, size-26*mib); n != 0 {
		t.Errorf("%d pages the stream passed are still in the cache after Done", n)
	}
	if n := cached(t, f, size-2*mib, 2*mib); n != 2*mib/4096 {
		t.Errorf("Done gave back pages past the stream's end: %d of %d kept", n, 2*mib/4096)
	}
}

func TestReaderGivesBackWhatItPassed(t *testing.T) {
	const size = 40*mib + 1234
	f, want := cachedFile(t, size)
	r := NewReader(f)
	got := make([]byte, size)
	// Blocks and the header after each, as the volume reader reads them.
	for off, step := 0, mib+61; off < size; off += step {
		n, err := r.ReadAt(got[off:min(off+step, size)], int64(off))
		if err != nil && !(err == io.EOF && off+n == size) {
			t.Fatalf("ReadAt %d: %d, %v", off, n, err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("Reader read other bytes than the file holds")
	}
	// What lies more than a chunk and a read behind the last read is gone.
	behind := size - Chunk - 2*mib
	if n := cached(t, f, 0, behind); n != 0 {
		t.Errorf("%d of the %d pages read more than a chunk back are still in the cache", n, behind/4096)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(got[:1], 0); err == nil {
		t.Error("ReadAt after Close: no error")
	}
}
