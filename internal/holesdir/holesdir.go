// Package holesdir gives a test a directory whose files keep their holes
// (sample.HolesDir: the test's temporary directory, else /var/tmp). A
// machine with neither fails the test under CAIRN_CI=1, where every test
// must run, and skips it elsewhere.
package holesdir

import (
	"os"
	"testing"

	"github.com/cairnbackup/cairn/sample"
)

// Dir is the directory, removed when the test ends.
func Dir(t testing.TB) string {
	t.Helper()
	dir, err := sample.HolesDir("", "/var/tmp")
	if err != nil {
		t.Fatal(err)
	}
	if dir == "" {
		if os.Getenv("CAIRN_CI") != "" {
			t.Fatal("this test needs a filesystem that keeps holes (ext4, xfs) for the temporary directory or /var/tmp; under CAIRN_CI=1 it may not skip")
		}
		t.Skip("SKIPPED: neither the temporary directory nor /var/tmp keeps holes; the test fails instead under CAIRN_CI=1")
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
