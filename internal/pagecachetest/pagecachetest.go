// Package pagecachetest helps tests that check what a file leaves in the
// page cache: a directory whose files have pages of their own, and a count
// of a file's pages in the cache.
package pagecachetest

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// Dir is a directory on a file system with a disk under it: the test's
// temporary directory, or one in /var/tmp where that is a tmpfs, whose
// pages are the files themselves and never leave the cache.
func Dir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type != unix.TMPFS_MAGIC {
		return dir
	}
	dir, err := os.MkdirTemp("/var/tmp", "cairn-pagecache-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Cached counts the pages of [off, off+n) of the open file fd in the page
// cache; n 0 counts to the end of the file.
func Cached(t testing.TB, fd int, off, n int64) int {
	t.Helper()
	var cs unix.Cachestat_t
	if err := unix.Cachestat(uint(fd), &unix.CachestatRange{Off: uint64(off), Len: uint64(n)}, &cs, 0); err != nil {
		t.Fatalf("cachestat (Linux 6.5): %v", err)
	}
	return int(cs.Cache)
}
