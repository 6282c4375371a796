package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/devstack"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/loopfs"
	"github.com/cairnbackup/cairn/wire"
)

// The tests in this file back up and restore through a dev stack (server,
// storage node and agent), driven by the commands an administrator types.

// devCLI starts a dev stack with the client "web" and points the commands
// at it, as 'cairn dev' does for its user.
func devCLI(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := devstack.Start(ctx, devstack.Config{Dir: t.TempDir(), Client: "web", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	t.Setenv(devFileEnv, filepath.Join(t.TempDir(), "cairn", "dev.json"))
	t.Setenv("CAIRN_NATS", "")
	publishDevClientFile(st, logger)
	return ctx
}

// cliJob runs a command that waits for its job (backup --wait, restore)
// with --json, and returns the job as it ended, its log included.
func cliJob(t *testing.T, ctx context.Context, args ...string) wire.JobInfo {
	t.Helper()
	code, out, stderr := cli(ctx, append([]string{"--json"}, args...)...)
	var j wire.JobInfo
	if err := json.Unmarshal([]byte(out), &j); err != nil || j.ID == 0 {
		t.Fatalf("%v: exit %d, %q %q", args, code, out, stderr)
	}
	code, out, stderr = cli(ctx, "--json", "job", "show", strconv.FormatUint(j.ID, 10))
	if err := json.Unmarshal([]byte(out), &j); code != 0 || err != nil {
		t.Fatalf("job show %d: exit %d, %q %q", j.ID, code, out, stderr)
	}
	return j
}

// logLines are a job's log lines at level, each "level: message".
func logLines(j wire.JobInfo, level string) []string {
	var out []string
	for _, l := range j.Log {
		if l.Level == level {
			out = append(out, l.Msg)
		}
	}
	return out
}

// listed is the set of paths 'cairn ls' shows of a backup below dir.
func listed(t *testing.T, ctx context.Context, backup uint64, dir string) map[string]bool {
	t.Helper()
	code, out, stderr := cli(ctx, "--json", "ls", "--client", "web", "--backup", strconv.FormatUint(backup, 10), dir)
	var ls struct {
		Entries []struct {
			Path    string `json:"path"`
			PathB64 []byte `json:"path_b64"`
		} `json:"entries"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &ls) != nil {
		t.Fatalf("ls %s: exit %d, %q %q", dir, code, out, stderr)
	}
	got := map[string]bool{}
	for _, e := range ls.Entries {
		if e.PathB64 != nil {
			e.Path = string(e.PathB64)
		}
		got[e.Path] = true
	}
	return got
}

// inodeFlags reads the inode flags a backup keeps of p, as lsattr(1) does.
func inodeFlags(t *testing.T, p string) uint32 {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	f, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Fatalf("lsattr %s: %v", p, err)
	}
	return f & fileindex.FlagsKept
}

// setInodeFlags adds inode flags to p, as chattr(1) +flags does.
func setInodeFlags(t *testing.T, p string, flags uint32) {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	cur, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err == nil {
		err = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(cur|flags))
	}
	if err != nil {
		t.Fatalf("chattr %s: %v", p, err)
	}
}

func mustWriteFile(t *testing.T, p string, content []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, content, mode); err != nil {
		t.Fatal(err)
	}
}

// TestInodeFlagsEndToEnd: chattr flags (immutable, append only, no atime,
// no dump, on files and directories) come back from a restore through the
// roles; a backup asked to --skip-nodump leaves out what has the nodump
// flag, a directory with what it holds, counts it in the job log at level
// info and still ends in success.
func TestInodeFlagsEndToEnd(t *testing.T) {
	fs := loopfs.Ext4(t, 256<<20) // ext4 on every machine: tmpfs and overlayfs keep few flags or none
	ctx := devCLI(t)
	src := filepath.Join(fs, "src")
	content := map[string]string{
		"immutable":            "cannot change\n",
		"append-only.log":      "line 1\n",
		"noatime":              "read me quietly\n",
		"locked/inside":        "in an immutable directory\n",
		"nodump.iso":           "not worth a backup\n",
		"scratch/nodump/x.tmp": "below a nodump directory\n",
		"plain":                "nothing special\n",
	}
	for name, c := range content {
		mustWriteFile(t, filepath.Join(src, name), []byte(c), 0o640)
	}
	flags := map[string]uint32{
		"immutable":       fileindex.FlagImmutable,
		"append-only.log": fileindex.FlagAppend,
		"noatime":         fileindex.FlagNoatime | fileindex.FlagNodump,
		"locked":          fileindex.FlagImmutable | fileindex.FlagNoatime,
		"nodump.iso":      fileindex.FlagNodump,
		"scratch/nodump":  fileindex.FlagNodump,
		"plain":           0,
	}
	for name, f := range flags {
		setInodeFlags(t, filepath.Join(src, name), f)
	}

	full := cliJob(t, ctx, "backup", "--client", "web", "--path", src, "--level", "full", "--wait")
	if full.State != "success" {
		t.Fatalf("backup: %s %s %q", full.State, full.Error, full.Log)
	}
	to := filepath.Join(fs, "restored")
	if r := cliJob(t, ctx, "restore", "--client", "web", "--backup", strconv.FormatUint(full.ID, 10), "--to", to); r.State != "success" {
		t.Fatalf("restore: %s %s %q", r.State, r.Error, r.Log)
	}
	for name, c := range content {
		if got, err := os.ReadFile(filepath.Join(to, src, name)); err != nil || string(got) != c {
			t.Errorf("%s restored as %q, %v; want %q", name, got, err, c)
		}
	}
	for name, want := range flags {
		if got := inodeFlags(t, filepath.Join(to, src, name)); got != want {
			t.Errorf("%s restored with flags %q, want %q", name, fileindex.FlagString(got), fileindex.FlagString(want))
		}
	}

	// As dump(8) does: what has the nodump flag stays out, and says so.
	skip := cliJob(t, ctx, "backup", "--client", "web", "--path", src, "--level", "full", "--skip-nodump", "--wait")
	if skip.State != "success" || !skip.SkipNodump {
		t.Fatalf("backup --skip-nodump: %s %s %q", skip.State, skip.Error, skip.Log)
	}
	var noted bool
	for _, l := range logLines(skip, "info") {
		if strings.Contains(l, "left out 3 entries with the nodump flag") && strings.Contains(l, filepath.Join(src, "nodump.iso")) &&
			strings.Contains(l, filepath.Join(src, "scratch", "nodump")) {
			noted = true
		}
	}
	if !noted {
		t.Errorf("the job log does not say what --skip-nodump left out: %q", skip.Log)
	}
	for name, want := range map[string]bool{
		"nodump.iso": false, "noatime": false, "scratch/nodump": false,
		"immutable": true, "plain": true, "scratch": true, "locked": true, "locked/inside": true,
	} {
		p := filepath.Join(src, name)
		if got := listed(t, ctx, skip.ID, filepath.Dir(p))[p]; got != want {
			t.Errorf("backup --skip-nodump holds %s: %v, want %v", name, got, want)
		}
	}
}

// TestExcludesEndToEnd: an --exclude pattern with a slash is anchored at
// the backup root (var/cache is <root>/var/cache, not a var/cache deeper
// down), one without is a name at any depth, and a pattern that left
// nothing out is a warning of the job log that names it. A malformed one
// is refused with the request.
func TestExcludesEndToEnd(t *testing.T) {
	ctx := devCLI(t)
	src := t.TempDir()
	for _, name := range []string{"var/cache/pkg.deb", "srv/var/cache/keep", "logs/a.tmp", "logs/deep/b.tmp", "keep.txt"} {
		mustWriteFile(t, filepath.Join(src, name), []byte(name), 0o644)
	}
	// A pattern the walk cannot take is refused at once, and makes no job.
	code, out, stderr := cli(ctx, "backup", "--client", "web", "--path", src, "--exclude", "var//cache", "--wait")
	if code == 0 || !strings.Contains(stderr, `"var//cache" has an empty part`) || !strings.Contains(stderr, "hint: ") {
		t.Fatalf("a malformed pattern: exit %d, %q %q", code, out, stderr)
	}
	j := cliJob(t, ctx, "backup", "--client", "web", "--path", src, "--exclude", "var/cache", "--exclude", "*.tmp",
		"--exclude", "var/cahce", "--wait")
	if j.ID != 1 {
		t.Fatalf("the backup is job %d: the refused request made a job", j.ID)
	}
	if j.State != "warning" {
		t.Fatalf("backup with a pattern that matches nothing: %s %s %q", j.State, j.Error, j.Log)
	}
	warnings := logLines(j, "warning")
	if len(warnings) != 1 || !strings.Contains(warnings[0], `exclude pattern "var/cahce" left nothing out`) {
		t.Fatalf("warnings %q", warnings)
	}
	for name, want := range map[string]bool{
		"var": true, "var/cache": false, "srv/var/cache": true, "srv/var/cache/keep": true,
		"logs": true, "logs/a.tmp": false, "logs/deep/b.tmp": false, "keep.txt": true,
	} {
		p := filepath.Join(src, name)
		if got := listed(t, ctx, j.ID, filepath.Dir(p))[p]; got != want {
			t.Errorf("backup holds %s: %v, want %v", name, got, want)
		}
	}
}

// TestSparseFileEndToEnd: a 64 GiB disk image holding 1 MiB of data backs
// up and restores through the roles in the time its data takes, and comes
// back with the same data in the same places and its holes as holes. The
// SHA-256 of the whole content hashed the holes as zeros on both sides,
// seconds per 6 GiB each way (agent's BenchmarkSparseFile), so minutes
// here.
func TestSparseFileEndToEnd(t *testing.T) {
	ctx := devCLI(t)
	const size = 64 << 30
	src := t.TempDir()
	p := filepath.Join(src, "vm.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 256<<10)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	offsets := []int64{0, 1<<30 + 12345, 40 << 30, size - 256<<10}
	for _, off := range offsets {
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if blocks(t, p)*512 > 4<<20 {
		t.Fatalf("the filesystem of %s did not keep the test image sparse", src)
	}

	b := cliJob(t, ctx, "backup", "--client", "web", "--path", src, "--level", "full", "--wait")
	if b.State != "success" {
		t.Fatalf("backup: %s %s %q", b.State, b.Error, b.Log)
	}
	to := t.TempDir()
	r := cliJob(t, ctx, "restore", "--client", "web", "--backup", strconv.FormatUint(b.ID, 10), "--to", to, "--force")
	if r.State != "success" {
		t.Fatalf("restore: %s %s %q", r.State, r.Error, r.Log)
	}
	backup, restore := b.Ended.Sub(b.Started), r.Ended.Sub(r.Started)
	t.Logf("64 GiB with 1 MiB of data: backup job %s, restore job %s", backup, restore)

	got := filepath.Join(to, p)
	fi, err := os.Stat(got)
	if err != nil || fi.Size() != size {
		t.Fatalf("restored %v, %v; want %d bytes", fi, err, int64(size))
	}
	if n := blocks(t, got) * 512; n > 4<<20 {
		t.Fatalf("the restored image allocates %d bytes: its holes were filled", n)
	}
	g, err := os.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for _, off := range offsets {
		back := make([]byte, len(data))
		if _, err := g.ReadAt(back, off); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		if !bytes.Equal(back, data) {
			t.Fatalf("the data at %d did not come back", off)
		}
	}
	// Generous for a loaded machine: each job takes well under a second.
	if backup+restore > 15*time.Second {
		t.Fatalf("backup took %s, restore %s: the holes are being hashed", backup, restore)
	}
}

// blocks is the number of 512-byte blocks p allocates.
func blocks(t *testing.T, p string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks
}
