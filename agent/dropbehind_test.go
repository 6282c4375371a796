package agent

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/pagecachetest"
)

// pagesCached counts the pages of the file at p in the page cache.
func pagesCached(t *testing.T, p string) int {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return pagecachetest.Cached(t, int(f.Fd()), 0, 0)
}

// setCached writes p's content to the disk, then drops its pages from the
// page cache or reads it all into it.
func setCached(t *testing.T, p string, cached bool) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mustDo(t, f.Sync())
	if cached {
		_, err = io.Copy(io.Discard, f)
	} else {
		err = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	}
	mustDo(t, err)
	if n := pagesCached(t, p); (n == 0) == cached {
		t.Fatalf("%s: %d pages cached, want cached=%v", p, n, cached)
	}
}

// A full backup reads a large file the client did not have in its page
// cache once, and gives its pages back as it goes; a file the client had
// cached keeps them, and an incremental, which may read a changed block
// again, keeps them too.
func TestBackupLeavesThePageCacheAsItFoundIt(t *testing.T) {
	dir := pagecachetest.Dir(t)
	const size = 24 << 20
	cold, hot := filepath.Join(dir, "cold.img"), filepath.Join(dir, "hot.db")
	mustWrite(t, cold, randomBytes(1, size), 0o644)
	mustWrite(t, hot, randomBytes(2, size), 0o644)
	setCached(t, cold, false)
	setCached(t, hot, true)
	opts := WalkOptions{Paths: []string{dir}}
	full, _ := runSource(t, SourceOptions{Walk: opts})
	if n := pagesCached(t, cold); n != 0 {
		t.Errorf("a full backup left %d pages of a file that was not cached in the cache", n)
	}
	if n := pagesCached(t, hot); n != size/4096 {
		t.Errorf("a full backup left %d of the %d pages of a cached file in the cache", n, size/4096)
	}

	// An incremental with the file changed: its blocks are hashed, and
	// the changed one read again to be sent, from the cache.
	f, err := os.OpenFile(cold, os.O_WRONLY, 0)
	mustDo(t, err)
	_, err = f.WriteAt([]byte("changed"), size/2)
	mustDo(t, err)
	mustDo(t, f.Close())
	setCached(t, cold, false)
	runSource(t, SourceOptions{Walk: opts, Base: fileindex.SliceIterator(placedBase(t, full, cold))})
	if n := pagesCached(t, cold); n < size/4096/2 {
		t.Errorf("an incremental left only %d of the %d pages of a changed file in the cache", n, size/4096)
	}
}
