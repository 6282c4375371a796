// Package sample makes the file trees that the demo, the integration tests
// and the benchmarks back up, and checks restored trees against snapshots of
// the originals. The checker reads the filesystem with its own code, not the
// agent's walker, so a walker that misses something cannot hide it.
package sample

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Spec sizes a generated tree.
type Spec struct {
	TextFiles   int   // log-like text files
	RandomFiles int   // files of random bytes
	MaxFileSize int   // upper bound of a text or random file
	SparseSize  int64 // apparent size of the sparse file; 0 = none
	Seed        uint64
}

// DemoSpec is the demo's few hundred files.
func DemoSpec() Spec {
	return Spec{TextFiles: 160, RandomFiles: 60, MaxFileSize: 256 << 10, SparseSize: 256 << 20, Seed: 1}
}

var levels = []string{"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"}
var services = []string{"nginx", "postgres", "kubelet", "sshd", "cron", "backup-agent", "haproxy"}
var messages = []string{
	"request completed", "connection accepted from 10.0.%d.%d", "checkpoint starting: time",
	"GET /api/v1/items/%d HTTP/1.1 200", "session opened for user root", "pulled image sha256:%x",
	"slow query took %dms", "retrying in %ds", "health check passed", "evicting pod default/web-%d",
}

// LogText returns n bytes of realistic log lines.
func LogText(r *rand.Rand, n int) []byte {
	var b strings.Builder
	t := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for b.Len() < n {
		t = t.Add(time.Duration(r.IntN(2000)) * time.Millisecond)
		msg := messages[r.IntN(len(messages))]
		if strings.Contains(msg, "%") {
			args := []any{r.IntN(255), r.IntN(255)}
			msg = fmt.Sprintf(msg, args[:strings.Count(msg, "%")]...)
		}
		fmt.Fprintf(&b, "%s host-%02d %s[%d]: %s %s\n", t.Format(time.RFC3339Nano), r.IntN(40),
			services[r.IntN(len(services))], 1000+r.IntN(30000), levels[r.IntN(len(levels))], msg)
	}
	return []byte(b.String()[:n])
}

// RandomBytes returns n bytes that do not compress.
func RandomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func write(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		return err
	}
	return os.Chmod(path, mode) // WriteFile's mode passes through the umask
}

// Generate fills root (which must exist) with a tree of every kind of entry
// a backup must keep: text, random data, a large sparse file, symlinks, a
// hard link, an empty directory, a fifo, odd names, modes, owners, times
// and extended attributes.
func Generate(root string, spec Spec) error {
	r := rand.New(rand.NewPCG(spec.Seed, spec.Seed^0x5eed))
	size := func() int { return 1 + r.IntN(spec.MaxFileSize) }
	for i := 0; i < spec.TextFiles; i++ {
		dir := filepath.Join(root, "logs", fmt.Sprintf("host-%02d", i%12))
		if err := write(filepath.Join(dir, fmt.Sprintf("app-%03d.log", i)), LogText(r, size()), 0o644); err != nil {
			return err
		}
	}
	for i := 0; i < spec.RandomFiles; i++ {
		dir := filepath.Join(root, "data", fmt.Sprintf("set-%d", i%5), "blobs")
		if err := write(filepath.Join(dir, fmt.Sprintf("blob-%03d.bin", i)), RandomBytes(r, size()), 0o640); err != nil {
			return err
		}
	}
	deep := filepath.Join(root, "deep", "a", "b", "c", "d", "e", "f", "g")
	if err := write(filepath.Join(deep, "bottom.txt"), []byte("the bottom of a deep tree\n"), 0o600); err != nil {
		return err
	}
	odd := filepath.Join(root, "odd names")
	for _, name := range []string{"with spaces.txt", "ünïcödé – 日本語.txt", "quote'and\"double.txt", "tab\there.txt", "new\nline.txt", "-starts-with-dash", ".hidden", "a.b", "a"} {
		if err := write(filepath.Join(odd, name), []byte("name: "+name+"\n"), 0o644); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(odd, "a.d"), 0o755); err != nil {
		return err
	}
	if err := write(filepath.Join(odd, "a.d", "inside"), []byte("index order test\n"), 0o644); err != nil {
		return err
	}
	misc := filepath.Join(root, "misc")
	if err := write(filepath.Join(misc, "empty-file"), nil, 0o644); err != nil {
		return err
	}
	if err := write(filepath.Join(misc, "script.sh"), []byte("#!/bin/sh\necho hello\n"), 0o755); err != nil {
		return err
	}
	if err := write(filepath.Join(misc, "setuid-tool"), []byte("not really a tool\n"), 0o4755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(misc, "sticky"), 0o755); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(misc, "sticky"), 0o1777); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(root, "empty-dir"), 0o750); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(misc, "private"), 0o700); err != nil {
		return err
	}
	if err := write(filepath.Join(misc, "private", "secret"), []byte("s3cr3t\n"), 0o600); err != nil {
		return err
	}
	owned := filepath.Join(misc, "owned-by-1234")
	if err := write(owned, []byte("someone else's file\n"), 0o644); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if err := os.Lchown(owned, 1234, 5678); err != nil {
			return err
		}
	}
	if err := unix.Mkfifo(filepath.Join(misc, "fifo"), 0o644); err != nil {
		return fmt.Errorf("mkfifo: %w", err)
	}
	// Hard links: three names of one file.
	hard := filepath.Join(root, "links", "hard-original")
	if err := write(hard, LogText(r, 5000), 0o644); err != nil {
		return err
	}
	for _, n := range []string{"hard-second", "zz-hard-third"} {
		if err := os.Link(hard, filepath.Join(root, "links", n)); err != nil {
			return err
		}
	}
	for name, target := range map[string]string{
		"to-file-relative": "hard-original",
		"to-dir":           "../deep/a",
		"absolute":         "/etc/hostname",
		"dangling":         "does/not/exist",
	} {
		if err := os.Symlink(target, filepath.Join(root, "links", name)); err != nil {
			return err
		}
	}
	xf := filepath.Join(misc, "with-xattrs")
	if err := write(xf, []byte("carries extended attributes\n"), 0o644); err != nil {
		return err
	}
	if err := unix.Setxattr(xf, "user.comment", []byte("backed up by cairn"), 0); err != nil && err != unix.ENOTSUP {
		return fmt.Errorf("setxattr: %w", err)
	}
	_ = unix.Setxattr(xf, "user.binary", []byte{0, 1, 2, 255}, 0)
	if spec.SparseSize > 0 {
		if err := makeSparse(filepath.Join(root, "images", "disk.img"), spec.SparseSize, r); err != nil {
			return err
		}
	}
	big := filepath.Join(root, "data", "big.bin")
	if err := write(big, RandomBytes(r, 4<<20), 0o644); err != nil {
		return err
	}
	// Times with nanoseconds, some in the past; directories last, since
	// creating their content changed them.
	return setTimes(root, r)
}

func makeSparse(path string, size int64, r *rand.Rand) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, at := range []int64{0, size / 3, size - 4096} {
		if _, err := f.WriteAt(RandomBytes(r, 64<<10)[:min(64<<10, int(size-at))], at); err != nil {
			return err
		}
	}
	return f.Truncate(size)
}

func setTimes(root string, r *rand.Rand) error {
	var dirs []string
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		return touch(p, r)
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := touch(dirs[i], r); err != nil {
			return err
		}
	}
	return nil
}

func touch(p string, r *rand.Rand) error {
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.Int64N(int64(700 * 24 * time.Hour))))
	ts := []unix.Timespec{
		unix.NsecToTimespec(base.Add(time.Duration(r.Int64N(1e15))).UnixNano()),
		unix.NsecToTimespec(base.UnixNano() + r.Int64N(1e9)),
	}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// Change alters a generated tree the way a day of work does: files edited,
// added, deleted, renamed, a directory removed, modes and link targets
// changed. A backup after it must bring back exactly the new tree.
func Change(root string, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, seed^0xc4a9))
	logs, err := filepath.Glob(filepath.Join(root, "logs", "*", "*.log"))
	if err != nil || len(logs) < 20 {
		return fmt.Errorf("tree at %s was not made by Generate", root)
	}
	for i := 0; i < 10; i++ {
		f, err := os.OpenFile(logs[r.IntN(len(logs))], os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.Write(LogText(r, 1000+r.IntN(20000)))
		f.Close()
		if err != nil {
			return err
		}
	}
	for i := 0; i < 5; i++ {
		if err := os.Remove(logs[i*3]); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	if err := os.RemoveAll(filepath.Join(root, "data", "set-3")); err != nil {
		return err
	}
	for i := 0; i < 10; i++ {
		if err := write(filepath.Join(root, "new", fmt.Sprintf("file-%02d.txt", i)), LogText(r, 500+r.IntN(5000)), 0o644); err != nil {
			return err
		}
	}
	if err := os.Rename(filepath.Join(root, "misc", "script.sh"), filepath.Join(root, "misc", "renamed-script.sh")); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(root, "misc", "empty-file"), 0o600); err != nil {
		return err
	}
	link := filepath.Join(root, "links", "to-file-relative")
	if err := os.Remove(link); err != nil {
		return err
	}
	if err := os.Symlink("hard-second", link); err != nil {
		return err
	}
	// A file becomes a directory.
	odd := filepath.Join(root, "odd names", "a")
	if err := os.Remove(odd); err != nil {
		return err
	}
	if err := write(filepath.Join(odd, "now-a-dir.txt"), []byte("was a file\n"), 0o644); err != nil {
		return err
	}
	// The sparse image gets a write in a hole.
	if f, err := os.OpenFile(filepath.Join(root, "images", "disk.img"), os.O_WRONLY, 0); err == nil {
		_, err = f.WriteAt(RandomBytes(r, 8192), 7<<20)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// HolesDir makes a directory for files with holes in the first of parents
// ("" for the system's temporary directory) whose filesystem keeps holes,
// and returns it, or "" when none does: a test of sparse files needs real
// holes, and some filesystems (an overlay's, an old tmpfs) fill them. The
// caller removes it.
func HolesDir(parents ...string) (string, error) {
	for _, parent := range parents {
		dir, err := os.MkdirTemp(parent, "cairn-sparse-")
		if err != nil {
			return "", err
		}
		probe := filepath.Join(dir, "probe")
		err = os.WriteFile(probe, []byte{1}, 0o600)
		if err == nil {
			err = os.Truncate(probe, 64<<20)
		}
		var st unix.Stat_t
		if err == nil {
			err = unix.Stat(probe, &st)
		}
		os.Remove(probe)
		if err == nil && st.Blocks*512 < 1<<20 {
			return dir, nil
		}
		os.RemoveAll(dir)
		if err != nil {
			return "", fmt.Errorf("probe %s for holes: %w", dir, err)
		}
	}
	return "", nil
}
