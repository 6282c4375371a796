package sample

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// HolesDir gives a directory whose files keep their holes, on the first
// filesystem that keeps them, and an error for a parent that is not there.
func TestHolesDir(t *testing.T) {
	dir, err := HolesDir(t.TempDir(), "/var/tmp")
	if err != nil {
		t.Fatal(err)
	}
	if dir == "" {
		t.Skip("neither the test's directory nor /var/tmp keeps holes")
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 1<<30); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil || st.Blocks != 0 {
		t.Fatalf("a 1 GiB hole in %s allocates %d blocks (%v)", dir, st.Blocks, err)
	}
	if _, err := HolesDir(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a parent that is not there: no error")
	}
}
