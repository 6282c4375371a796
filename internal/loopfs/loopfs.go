// Package loopfs mounts a fresh filesystem on a loop device for a test that
// needs what the test's temporary directory may not give: inode flags
// (chattr), which tmpfs keeps only four of (and none before Linux 6.0) and
// overlayfs none, whatever the machine running the tests put /tmp on.
package loopfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Ext4 makes an ext4 filesystem of size bytes in an image file, mounts it
// on a loop device and returns the mount point; the test's cleanup
// unmounts it before its temporary directory goes, since that cleanup
// could remove neither immutable files nor the mount point. It needs root,
// mkfs.ext4 and a loop device: without them the test fails under
// CAIRN_CI=1, where every test must run, and skips elsewhere.
func Ext4(t testing.TB, size int64) string {
	t.Helper()
	need := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CAIRN_CI") != "" {
			t.Fatalf("this test needs an ext4 filesystem on a loop device: "+format+"; under CAIRN_CI=1 it may not skip", args...)
		}
		t.Skipf("SKIPPED: this test needs an ext4 filesystem on a loop device: "+format+"; it fails instead under CAIRN_CI=1", args...)
	}
	if os.Geteuid() != 0 {
		need("mounting one needs root")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		need("mkfs.ext4 is not installed (Debian: e2fsprogs)")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "ext4.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	// mount(8) sets the loop device up, and frees it at the unmount.
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		need("mount -o loop: %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount the test's ext4: %v", err)
		}
	})
	return mnt
}
