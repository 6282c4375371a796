package agent

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
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

func startPrefetch(roots *prefetchRoots) *prefetcher {
	p := &prefetcher{ch: make(chan string, aheadDepth)}
	for range prefetchWorkers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for path := range p.ch {
				roots.prefetch(path)
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

// prefetchOpen is how a prefetch opens a file, relative to the directory
// above its backup root. The path was walked a moment ago, and a user who
// owns a directory in the tree may have put a symlink in its place since:
// following it, the agent (root) would open whatever it names, and opening
// a device may act (a tape rewinds, a watchdog arms). So no symlink is
// followed from the root down (RESOLVE_NO_SYMLINKS), nor a path that leaves
// it (RESOLVE_BENEATH): such a file, or any on a kernel without openat2
// (before 5.6), is just not prefetched. The root's ancestors, which the
// administrator chose, may be symlinks (/var/lib on another disk): they
// were resolved once, when the backup began.
var prefetchOpen = &unix.OpenHow{
	Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOATIME,
	Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH,
}

// prefetchRoots holds, for each root of a backup, a descriptor of the
// directory above it, which prefetches open their files beneath.
type prefetchRoots struct {
	roots   []string // cleaned, none inside another
	parents []string // filepath.Dir of each
	dirs    []int    // O_PATH descriptors of the parents; -1 if it failed
}

// openPrefetchRoots opens the directories above the backup's paths. What
// fails to open leaves its files without a prefetch.
func openPrefetchRoots(paths []string) *prefetchRoots {
	r := &prefetchRoots{}
	roots, err := cleanRoots(paths)
	if err != nil {
		return r
	}
	for _, root := range roots {
		parent := filepath.Dir(root)
		fd, err := unix.Open(parent, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			fd = -1
		}
		r.roots, r.parents, r.dirs = append(r.roots, root), append(r.parents, parent), append(r.dirs, fd)
	}
	return r
}

func (r *prefetchRoots) close() {
	for i, fd := range r.dirs {
		if fd >= 0 {
			unix.Close(fd)
		}
		r.dirs[i] = -1
	}
}

// prefetch asks the kernel for the content of path, a small regular file
// under one of the roots.
func (r *prefetchRoots) prefetch(path string) {
	var st unix.Stat_t
	if unix.Lstat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size == 0 || st.Size > prefetchMax {
		return
	}
	for i, root := range r.roots {
		if r.dirs[i] < 0 || !fileindex.Within(path, root) {
			continue
		}
		rel := strings.TrimPrefix(path[len(r.parents[i]):], "/")
		fd, err := unix.Openat2(r.dirs[i], rel, prefetchOpen)
		if err != nil {
			return
		}
		unix.Fadvise(fd, 0, 0, unix.FADV_WILLNEED)
		unix.Close(fd)
		return
	}
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

// The scout: a full backup's small files read far ahead of it.
//
// The backup's walk reads the tree in index order, and its stretches differ:
// while it compresses large files of text, both cores are busy and the disk
// is idle; in a stretch of small files, every file waits for the disk and
// the cores are idle (bench/README, "The small files from the disk"). The
// prefetch above reaches only aheadDepth entries ahead, within a directory:
// it overlaps the small files' waits with each other, not with the work
// before them. The scout walks the same tree in the same order, as far
// ahead as its budget lets it, and asks the kernel to read every small file
// it passes, so the small files after a stretch of large ones are read
// while those are compressed.
const (
	// scoutWorkers is how many files the scout is fetching at once: the
	// queue depth a disk turns into throughput (bench/parts.sh CAT=N: 32
	// cats read the e2e tree's small files in 1.3 s, one in 3.4-3.6 s;
	// 32 fetches at once, tried in a build not kept, showed no gain).
	scoutWorkers = 16
	// scoutMaxBudget bounds the page cache the scout fills ahead of the
	// backup. It is not the process's memory, and the kernel takes it back
	// under pressure; a fetch it took back is a read that waits, as before.
	scoutMaxBudget = 256 << 20
	// scoutTick is how often a scout that has used its budget looks again
	// at how far the backup got.
	scoutTick = 2 * time.Millisecond
)

// scoutBudget is the scout's budget on a machine with avail bytes of
// memory available: at most an eighth of it, so a small machine's page
// cache is not churned by fetches evicted before they are read.
func scoutBudget(avail int64) int64 {
	if avail <= 0 {
		return 0
	}
	return min(scoutMaxBudget, avail/8)
}

// memAvailable reads MemAvailable from /proc/meminfo, or 0.
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(f[1], 10, 64) // in kB, as the next field says
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// scout fetches a backup's small files ahead of it. Its position and the
// backup's are both counted in file bytes in walk order: the scout's is the
// sizes of every file it has passed, the backup's the bytes it has read.
type scout struct {
	// budget bounds the bytes of fetched files the backup has not reached,
	// each counted in whole pages, as the page cache holds it.
	budget int64
	// reached is how many file bytes the backup has read so far.
	reached func() int64
	// fetch asks for one file's content: nil for prefetchRoots.prefetch,
	// a recorder in tests.
	fetch func(path string)
	tick  time.Duration
	// waits counts the times the scout stopped for the backup to catch up.
	waits atomic.Int64

	offset  int64     // file bytes, in walk order, of every file passed
	pending []scouted // fetched files the backup has not reached, in order
	ahead   int64     // their pages' bytes
}

type scouted struct{ start, cost int64 }

func newScout(budget int64, reached func() int64) *scout {
	return &scout{budget: budget, reached: reached, tick: scoutTick}
}

// run walks the backup's paths as the backup does and fetches the small
// files, until the walk ends or ctx does. A file that changed or vanished
// since costs nothing but its fetch: what the backup reads is its own walk.
func (s *scout) run(ctx context.Context, opts WalkOptions) error {
	fetch := s.fetch
	if fetch == nil {
		roots := openPrefetchRoots(opts.Paths)
		defer roots.close() // after the workers are done (deferred below)
		fetch = roots.prefetch
	}
	paths := make(chan string, scoutWorkers)
	var wg sync.WaitGroup
	for range scoutWorkers {
		wg.Go(func() {
			for p := range paths {
				fetch(p)
			}
		})
	}
	defer func() {
		close(paths)
		wg.Wait()
	}()
	return walkSizes(ctx, opts, func(e *fileindex.Entry) error {
		if e.Type != fileindex.TypeFile {
			return nil
		}
		start := s.offset
		s.offset += e.Size
		if e.Size == 0 || e.Size > prefetchMax {
			return nil
		}
		cost := (e.Size + pageSize - 1) &^ (pageSize - 1)
		if err := s.room(ctx, cost); err != nil {
			return err
		}
		s.pending = append(s.pending, scouted{start: start, cost: cost})
		s.ahead += cost
		select {
		case paths <- e.Path:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

const pageSize = 4096

// room waits until cost more bytes fit in the budget: until the backup has
// reached enough of the files fetched before.
func (s *scout) room(ctx context.Context, cost int64) error {
	var tick *time.Ticker
	for {
		r := s.reached()
		n := 0
		for n < len(s.pending) && s.pending[n].start < r {
			s.ahead -= s.pending[n].cost
			n++
		}
		s.pending = s.pending[n:]
		if s.ahead+cost <= s.budget {
			return nil
		}
		if tick == nil {
			s.waits.Add(1)
			tick = time.NewTicker(s.tick)
			defer tick.Stop()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
