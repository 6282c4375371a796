package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
)

func TestAheadControlFollowsTheDisk(t *testing.T) {
	var c aheadControl
	feed := func(n int, d time.Duration) {
		for range n {
			c.observe(d, 16<<10)
		}
	}
	feed(10*probeFiles, 5*time.Microsecond) // page cache
	if c.on {
		t.Fatal("prefetch on while files come from the page cache")
	}
	feed(probeFiles, 2*time.Millisecond) // disk
	if !c.on {
		t.Fatal("prefetch off while files wait for the disk")
	}
	feed(onFiles, 5*time.Microsecond) // prefetched: fast, but stays on until the probe
	if c.on {
		t.Fatal("no probe after onFiles files")
	}
	feed(probeFiles, 5*time.Microsecond)
	if c.on {
		t.Fatal("prefetch back on although the probe read from the page cache")
	}
	feed(probeFiles/8, 2*time.Millisecond) // a few slow files in a probe are not enough
	feed(probeFiles-probeFiles/8, 5*time.Microsecond)
	if c.on {
		t.Fatal("prefetch on for a few slow files")
	}
}

// Opening a fifo for reading blocks until a writer comes, and opening a
// device may act (a tape rewinds): the prefetch opens regular files only.
func TestPrefetchSkipsFifosAndDevices(t *testing.T) {
	dir := t.TempDir()
	mustDo(t, unix.Mkfifo(dir+"/fifo", 0o644))
	mustDo(t, unix.Mknod(dir+"/null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	mustWrite(t, dir+"/file", []byte("x"), 0o644)
	roots := openPrefetchRoots([]string{dir})
	defer roots.close()
	done := make(chan struct{})
	go func() {
		for _, p := range []string{"/fifo", "/null", "/file", "/missing"} {
			roots.prefetch(dir + p)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("prefetch blocked on a fifo")
	}
}

// The scout fetches the small regular files in walk order, no further
// ahead of the backup than its budget, and goes on as the backup reaches
// what it fetched.
func TestScoutFetchesAheadWithinItsBudget(t *testing.T) {
	dir := t.TempDir()
	const big = prefetchMax + 1
	mustDo(t, os.WriteFile(dir+"/a-big", make([]byte, big), 0o644))
	mustWrite(t, dir+"/b-empty", nil, 0o644)
	mustDo(t, os.Symlink("a-big", dir+"/c-link"))
	mustDo(t, unix.Mkfifo(dir+"/d-fifo", 0o644))
	var want []string
	for i := range 20 {
		p := fmt.Sprintf("%s/f%02d", dir, i)
		mustWrite(t, p, bytes.Repeat([]byte{'x'}, pageSize), 0o644)
		want = append(want, p)
	}
	mustDo(t, os.Mkdir(dir+"/g", 0o755))
	for i := range 5 {
		p := fmt.Sprintf("%s/g/h%02d", dir, i)
		mustWrite(t, p, []byte("a small file"), 0o644) // a page in the budget
		want = append(want, p)
	}

	var reached atomic.Int64
	var mu sync.Mutex
	var fetched []string
	s := newScout(5*pageSize, reached.Load)
	s.fetch = func(p string) {
		mu.Lock()
		fetched = append(fetched, p)
		mu.Unlock()
	}
	done := make(chan error, 1)
	go func() { done <- s.run(t.Context(), WalkOptions{Paths: []string{dir}}) }()
	// waitFor: the scout fetched exactly want[:n] and waits for the backup.
	waitFor := func(n int, waits int64) {
		t.Helper()
		poll.Until(t, 10*time.Second, func() error {
			mu.Lock()
			got := slices.Clone(fetched)
			mu.Unlock()
			slices.Sort(got)
			if !slices.Equal(got, want[:n]) || s.waits.Load() < waits {
				return fmt.Errorf("fetched %q, %d waits; want %q and %d waits", got, s.waits.Load(), want[:n], waits)
			}
			return nil
		})
	}
	waitFor(5, 1)
	// The backup passed the large file and began f02: f00-f02 are no
	// longer ahead of it, and three more fit.
	reached.Store(big + 2*pageSize + 1)
	waitFor(8, 2)
	reached.Store(math.MaxInt64)
	poll.Until(t, 10*time.Second, func() error {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("scout: %v", err)
			}
			return nil
		default:
			return errors.New("the scout is still walking")
		}
	})
	waitFor(len(want), 2)
}

// A backup that ends stops its scout, even one waiting for the backup.
func TestScoutStopsWithTheBackup(t *testing.T) {
	dir := t.TempDir()
	for i := range 4 {
		mustWrite(t, fmt.Sprintf("%s/f%d", dir, i), []byte("x"), 0o644)
	}
	s := newScout(pageSize, func() int64 { return 0 })
	s.fetch = func(string) {}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx, WalkOptions{Paths: []string{dir}}) }()
	poll.Until(t, 10*time.Second, func() error {
		if s.waits.Load() == 0 {
			return errors.New("the scout has not waited for the backup")
		}
		return nil
	})
	cancel()
	poll.Until(t, 10*time.Second, func() error {
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("scout ended with %v, want context.Canceled", err)
			}
			return nil
		default:
			return errors.New("the scout has not stopped")
		}
	})
}

func TestScoutBudgetFollowsTheMemory(t *testing.T) {
	for _, c := range []struct{ avail, want int64 }{
		{0, 0},
		{-1, 0},
		{1 << 30, 128 << 20},
		{24 << 30, scoutMaxBudget},
	} {
		if got := scoutBudget(c.avail); got != c.want {
			t.Errorf("scoutBudget(%d) = %d, want %d", c.avail, got, c.want)
		}
	}
	if memAvailable() <= 0 {
		t.Errorf("memAvailable() = %d: /proc/meminfo has no MemAvailable this code can read", memAvailable())
	}
}

// watchOpens reports whether files in dir were opened since it last
// asked, by inotify.
func watchOpens(t *testing.T, dir string) func() bool {
	t.Helper()
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	mustDo(t, err)
	t.Cleanup(func() { unix.Close(in) })
	_, err = unix.InotifyAddWatch(in, dir, unix.IN_OPEN)
	mustDo(t, err)
	return func() bool {
		buf := make([]byte, 4096)
		n, err := unix.Read(in, buf)
		if errors.Is(err, unix.EAGAIN) {
			return false
		}
		mustDo(t, err)
		return n > 0
	}
}

// A directory of the path swapped for a symlink between the walk and the
// prefetch (a user who owns it can) does not make the agent open what the
// symlink names: the prefetch follows no symlink below the backup's root.
func TestPrefetchFollowsNoSymlinkInThePath(t *testing.T) {
	dir := t.TempDir()
	mustDo(t, os.MkdirAll(dir+"/root/elsewhere", 0o755))
	mustWrite(t, dir+"/root/elsewhere/f", []byte("not the user's to make root open"), 0o644)
	mustDo(t, os.Symlink("elsewhere", dir+"/root/mine"))
	mustDo(t, os.Symlink("..", dir+"/root/up"))
	mustWrite(t, dir+"/outside", []byte("above the root"), 0o644)
	roots := openPrefetchRoots([]string{dir + "/root"})
	defer roots.close()
	opened := watchOpens(t, dir+"/root/elsewhere")
	openedAbove := watchOpens(t, dir)

	roots.prefetch(dir + "/root/mine/f")
	if opened() {
		t.Fatal("the prefetch opened a file through a symlink in its path")
	}
	roots.prefetch(dir + "/root/up/outside")
	if openedAbove() {
		t.Fatal("the prefetch opened a file above the root through a symlink")
	}
	// The same file by its own path is opened: the watch sees opens.
	roots.prefetch(dir + "/root/elsewhere/f")
	if !opened() {
		t.Fatal("no open seen of the file by its own path: the test sees nothing")
	}
}

// The directories above a backup root are the administrator's to choose,
// and one may be a symlink (/var/lib on a disk of its own): the files
// below that root are still prefetched.
func TestPrefetchUnderASymlinkedAncestor(t *testing.T) {
	dir := t.TempDir()
	mustDo(t, os.MkdirAll(dir+"/disk2/lib/tree", 0o755))
	mustWrite(t, dir+"/disk2/lib/tree/f", []byte("a small file"), 0o644)
	mustDo(t, os.Symlink("disk2/lib", dir+"/lib"))
	roots := openPrefetchRoots([]string{dir + "/lib/tree"})
	defer roots.close()
	opened := watchOpens(t, dir+"/disk2/lib/tree")
	roots.prefetch(dir + "/lib/tree/f")
	if !opened() {
		t.Fatal("a file under a root whose parent is a symlink was not prefetched")
	}
	roots.prefetch(dir + "/disk2/lib/tree/f") // not under the root as given
	if opened() {
		t.Fatal("a path under no root of the backup was prefetched")
	}
}

// BenchmarkScout is what the scout costs beside the backup it runs with:
// a pass over bench/e2e.sh's small files in small (smallDirsTree, 20,000
// files of 1-16 KiB in 1,000 directories), in the page cache, never held
// back by its budget. walk is the sizes-only walk alone (the count a full
// backup makes anyway); scout is that walk with an open, a fadvise and a
// close of every file, on its workers. CPU-µs/file is the whole process's.
//
//	go test -run '^$' -bench BenchmarkScout -count 3 ./agent
func BenchmarkScout(b *testing.B) {
	tree := smallDirsTree(b)
	opts := WalkOptions{Paths: []string{tree.dir}}
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"walk", func() error {
			return walkSizes(b.Context(), opts, func(*fileindex.Entry) error { return nil })
		}},
		{"scout", func() error {
			return newScout(math.MaxInt64, func() int64 { return math.MaxInt64 }).run(b.Context(), opts)
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			mustDo(b, tc.run()) // the names, inodes and content in the page cache
			c0 := cpuTime(b)
			for b.Loop() {
				mustDo(b, tc.run())
			}
			b.ReportMetric(float64((cpuTime(b)-c0).Microseconds())/float64(b.N*20000), "CPU-µs/file")
		})
	}
}
