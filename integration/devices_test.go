package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A restore of a backup that holds device nodes creates them only with
// --devices, through the server to the agent (which runs as root) and in
// 'cairn volume extract': without it each device is left out and named
// with the flag to pass, everything else is restored, and the command
// exits non-zero with the count.
func TestRestoreDevicesOnlyWithFlag(t *testing.T) {
	var err error
	if os.Geteuid() != 0 {
		err = errors.New("not running as root")
	}
	need(t, "root, to make device nodes and restore them", err)
	s := newStack(t, stackOpts{})
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "file"), []byte("restored all the same\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	devices := map[string]uint32{"null": unix.S_IFCHR | 0o666, "loop": unix.S_IFBLK | 0o660}
	rdev := map[string]uint64{"null": unix.Mkdev(1, 3), "loop": unix.Mkdev(7, 200)}
	for name, mode := range devices {
		if err := unix.Mknod(filepath.Join(src, name), mode, int(rdev[name])); err != nil {
			t.Fatal(err)
		}
		if err := unix.Chmod(filepath.Join(src, name), mode&0o7777); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	s.backup("full", src)
	checkDevices := func(to string, want bool) {
		t.Helper()
		if _, err := os.Stat(filepath.Join(to, src, "file")); err != nil {
			t.Errorf("the file beside the devices was not restored in %s: %v", to, err)
		}
		for name, mode := range devices {
			var st unix.Stat_t
			err := unix.Lstat(filepath.Join(to, src, name), &st)
			switch {
			case !want && !errors.Is(err, unix.ENOENT):
				t.Errorf("device %s restored in %s without --devices (%v)", name, to, err)
			case want && err != nil:
				t.Errorf("device %s not restored in %s with --devices: %v", name, to, err)
			case want && (st.Mode != mode || st.Rdev != rdev[name]):
				t.Errorf("device %s restored as mode %o rdev %d, want %o %d", name, st.Mode, st.Rdev, mode, rdev[name])
			}
		}
	}
	names := func(r result) {
		t.Helper()
		for name := range devices {
			if !strings.Contains(r.output(), filepath.Join(src, name)+": device not restored") {
				t.Errorf("the output does not name device %s as not restored:\n%s", name, r)
			}
		}
	}

	dir := t.TempDir()
	to := filepath.Join(dir, "without")
	r := s.cairn("restore", "--client", s.client, "--to", to)
	checkFailure(t, r, 1, "2 entries were not restored", "pass --devices")
	names(r)
	checkDevices(to, false)

	to = filepath.Join(dir, "with")
	s.ok("restore", "--client", s.client, "--to", to, "--devices")
	checkDevices(to, true)

	// With no server.
	keys := filepath.Join(dir, "keys.json")
	s.ok("key", "export", "--to", keys)
	volPath := s.volumes()[0].Path
	to = filepath.Join(dir, "extract-without")
	r = s.cairn("volume", "extract", volPath, "--key-file", keys, "--to", to)
	checkFailure(t, r, 1, "2 entries were not extracted", "pass --devices")
	names(r)
	checkDevices(to, false)

	to = filepath.Join(dir, "extract-with")
	s.ok("volume", "extract", volPath, "--key-file", keys, "--to", to, "--devices")
	checkDevices(to, true)
}
