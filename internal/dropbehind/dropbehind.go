// Package dropbehind gives back the page cache a stream of a file has
// passed: the volumes a storage node reads for a restore or a
// consolidation, and the large files an agent reads and sends whole, each
// byte once.
//
// Left in the cache, those pages crowd out what the host reads again (a
// client's own working set, a node's index pages, a spool) for data no one
// reads again soon. A client's file is given back only if none of it was in
// the cache when the backup came to it (Cold): a file the client uses
// keeps its pages. And on a virtual machine whose balloon reports free
// memory to its host, as the development machine's does, every page the
// cache takes from memory freed a while ago costs a fault to the host,
// where a page given back a moment earlier is taken again for nothing:
// reading a 697 MB volume from a dropped cache took 0.06-0.71 s of system
// time at once and 1.02-1.14 s once the host had taken the freed memory
// (bench/coldpages.sh; bench/README.md, "Volumes' pages given back as a
// restore passes them").
//
// Pages go back in chunks (fadvise DONTNEED), a chunk behind the stream,
// so the kernel's read-ahead and the reads of the block that spans a
// chunk's end are done with them by then.
package dropbehind

import (
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Chunk is how far behind a stream the pages it passed are given back,
// and how many at a time.
const Chunk = 8 << 20

// Window follows a stream through one file and gives back the pages it
// has passed. Its methods may be called from several goroutines.
type Window struct {
	mu   sync.Mutex
	from int64 // the first byte whose pages are kept
	next int64 // where the last read ended
}

// NewWindow follows a stream that starts at off.
func NewWindow(off int64) *Window { return &Window{from: off &^ (pageSize - 1), next: off} }

var pageSize = int64(os.Getpagesize())

// largestFolio is the most the page cache holds of a file's pages in one
// piece on x86-64 (a transparent huge page): DONTNEED leaves a piece that
// lies partly outside the range given. Larger pieces elsewhere (arm64
// with 64 KiB pages) leave some pages at each cut: cache, not data.
const largestFolio = 2 << 20

// Read says the stream has read [off, end): once a chunk lies between what
// was given back and off, its pages go. A stream that goes back (a seek)
// starts again from there, and one that jumps ahead gives back what it
// read before the jump: what it jumped over, another stream may be
// reading.
func (w *Window) Read(fd int, off, end int64) {
	at := off &^ (pageSize - 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case at < w.from:
		w.from = at
	case off > w.next:
		if read := w.next &^ (pageSize - 1); read > w.from {
			_ = unix.Fadvise(fd, w.from, read-w.from, unix.FADV_DONTNEED)
		}
		w.from = at
	case at-w.from >= Chunk:
		// Advice only: a failure costs nothing but the cache.
		_ = unix.Fadvise(fd, w.from, at-w.from, unix.FADV_DONTNEED)
		// The piece that holds at, begun before it, stays: the next
		// range starts where it may begin, so it goes next time.
		w.from = max(w.from, (at-1)&^(largestFolio-1))
	}
	w.next = end
}

// Done says the stream has passed all it will of the file, up to end:
// what it passed and did not give back yet goes now.
func (w *Window) Done(fd int, end int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if end > w.from {
		_ = unix.Fadvise(fd, w.from, end-w.from, unix.FADV_DONTNEED)
		w.from = end &^ (pageSize - 1)
	}
}

// Cold says whether none of [off, end) of the file is in the page cache:
// a stream that finds it so leaves it so, and one that finds any of it
// there leaves all of it, for whoever read it. Without cachestat (Linux
// 6.5) it says no.
func Cold(fd int, off, end int64) bool {
	var cs unix.Cachestat_t
	if err := unix.Cachestat(uint(fd), &unix.CachestatRange{Off: uint64(off), Len: uint64(end - off)}, &cs, 0); err != nil {
		return false
	}
	return cs.Cache == 0
}

// Reader reads a file a stream passes over, giving back the pages of what
// lies a chunk behind each read.
type Reader struct {
	f *os.File
	// rc gives the advice the descriptor: a Close meanwhile cannot hand
	// its number to another file before the advice is given.
	rc syscall.RawConn
	w  Window
}

// NewReader reads f.
func NewReader(f *os.File) *Reader {
	rc, _ := f.SyscallConn() // an *os.File always has one
	return &Reader{f: f, rc: rc}
}

// ReadAt reads as f's ReadAt does.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.f.ReadAt(p, off)
	_ = r.rc.Control(func(fd uintptr) { r.w.Read(int(fd), off, off+int64(n)) })
	return n, err
}

// Close closes the file.
func (r *Reader) Close() error { return r.f.Close() }
