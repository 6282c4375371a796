// Package corrupt damages files on disk for tests of what reads them: a
// volume altered on its medium, as bit rot or a tampering hand leaves it.
package corrupt

import (
	"os"
	"testing"
)

// FlipByte inverts the byte at off of the file at path, in place, and
// syncs it, so that a reader in another process sees the damage.
func FlipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}
