package agent

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// aheadDepth is how many entries of a directory the prefetch may run
	// ahead of the walk: enough to keep a disk's queue busy, few enough
	// that what it fetches is still in the page cache when it is read.
	aheadDepth = 32
	// prefetchWorkers is how many files are being fetched at once: the
	// queue depth that a disk (or a virtual one) turns into throughput.
	prefetchWorkers = 8
	// prefetchMax is the largest file prefetched; the kernel's own
	// readahead serves larger files, read sequentially in large chunks.
	prefetchMax = 1 << 20
)

// prefetcher asks the kernel to read small files before Source reaches
// them. Reading one small file after another waits for the disk on every
// file; with several outstanding, a cold backup of small files goes more
// than twice as fast (BenchmarkSource/small-files/cold). It is advisory
// only: it opens nothing but regular files (opening a device or a fifo may
// have effects), and a failure just means no prefetch.
type prefetcher struct {
	ch chan string
	wg sync.WaitGroup
}

func startPrefetch() *prefetcher {
	p := &prefetcher{ch: make(chan string, aheadDepth)}
	for range prefetchWorkers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for path := range p.ch {
				prefetch(path)
			}
		}()
	}
	return p
}

// ahead queues path, or drops it if the workers are behind: a prefetch
// that comes too late is worth nothing.
func (p *prefetcher) ahead(path string) {
	select {
	case p.ch <- path:
	default:
	}
}

func (p *prefetcher) stop() {
	close(p.ch)
	p.wg.Wait()
}

func prefetch(path string) {
	var st unix.Stat_t
	if unix.Lstat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size == 0 || st.Size > prefetchMax {
		return
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOATIME, 0)
	if err != nil {
		return
	}
	unix.Fadvise(fd, 0, 0, unix.FADV_WILLNEED)
	unix.Close(fd)
}

// The prefetch policy; anything but auto is for benchmarks.
const (
	prefetchAuto = iota
	prefetchNever
	prefetchAlways
)

var prefetchPolicy = prefetchAuto

const (
	probeFiles = 32   // files read without prefetch to tell if it is needed
	onFiles    = 1024 // files read with prefetch before the next probe
)

// aheadControl turns the prefetch on only while files come from the disk.
// When they are in the page cache the prefetch is pure overhead (a stat,
// an open and a close more per file on the same cores: a quarter of the
// throughput), so Source measures how long the reads of probeFiles small
// files wait, prefetches for onFiles files if many of them waited for the
// disk, and probes again.
type aheadControl struct {
	on   bool
	left int // files before the current phase ends
	slow int // reads of the current probe that waited for the disk
}

// observe takes the I/O time of one small file: open, fstat and reads.
func (c *aheadControl) observe(d time.Duration, size int64) {
	if c.on {
		if c.left--; c.left <= 0 {
			c.on, c.left, c.slow = false, probeFiles, 0
		}
		return
	}
	if c.left <= 0 {
		c.left = probeFiles
	}
	// From the page cache: a few microseconds of syscalls and a copy at
	// gigabytes per second. From a disk: a seek or a flash read, and the
	// transfer, at most a few hundred megabytes per second.
	if d > 50*time.Microsecond+time.Duration(size/2) {
		c.slow++
	}
	if c.left--; c.left == 0 {
		if c.slow > probeFiles/4 {
			c.on, c.left = true, onFiles
		}
		c.slow = 0
	}
}
