package agent

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
	done := make(chan struct{})
	go func() {
		for _, p := range []string{"/fifo", "/null", "/file", "/missing"} {
			prefetch(dir + p)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("prefetch blocked on a fifo")
	}
}
