package agent

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
)

// The racer's environment: set, the test binary is the racer.
const (
	racerEnv       = "CAIRN_RESTORE_RACER"
	racerSecretEnv = "CAIRN_RESTORE_RACER_SECRET"
	racerCopies    = 6
)

// racerDirs are the world-writable directories of the restore target the
// racer works in, and the owner the stream gives their entries: in the
// sticky one the racer may only move what it owns, so the entries are its
// own (the restore chowns them to it); in the other it moves anything.
var racerDirs = []struct {
	name   string
	mode   uint32
	nobody bool
}{
	{"tmp", 0o1777, true},
	{"open", 0o777, false},
}

// racerNames are the entries the stream restores in each racer directory,
// and what the racer's symlink in place of each points to, relative to the
// secret directory: a swapped entry leads to a root-owned file, a swapped
// directory to a root-owned directory whose names (f, g) are those of the
// entries restored below it.
func racerNames() map[string]string {
	m := map[string]string{}
	for i := range racerCopies {
		for _, n := range []string{"fifo", "chr", "blk", "file", "link", "hl"} {
			m[fmt.Sprintf("%s%d", n, i)] = "file"
		}
		m[fmt.Sprintf("dir%d", i)] = "dir"
		m[fmt.Sprintf("sub%d", i)] = "."
	}
	return m
}

// racerStream is the restore the racer attacks: in each racer directory,
// fifos, devices, files, directories, symlinks and hard links, all mode
// 0666 or 0777 with xattrs and times that would show on the secret if the
// restore applied them there.
func racerStream(nobody [2]uint32) []byte {
	var es []fileindex.Entry
	content := []byte("restored content\n")
	when := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC).UnixNano()
	for _, d := range racerDirs {
		es = append(es, fileindex.Entry{Path: "/" + d.name, Type: fileindex.TypeDir, Mode: d.mode, MTime: when, ATime: when})
		uid, gid := uint32(0), uint32(0)
		if d.nobody {
			uid, gid = nobody[0], nobody[1]
		}
		tr := []fileindex.Xattr{{Name: "trusted.cairn-racer", Value: []byte("applied")}}
		us := []fileindex.Xattr{{Name: "user.cairn-racer", Value: []byte("applied")}}
		add := func(e fileindex.Entry) {
			e.Path = "/" + d.name + "/" + e.Path
			if e.Type == fileindex.TypeHardlink {
				e.Target = "/" + d.name + "/" + e.Target
			}
			e.UID, e.GID, e.MTime, e.ATime = uid, gid, when, when
			es = append(es, e)
		}
		for i := range racerCopies {
			n := func(s string) string { return fmt.Sprintf("%s%d", s, i) }
			add(fileindex.Entry{Path: n("fifo"), Type: fileindex.TypeFifo, Mode: 0o666, Xattrs: tr})
			add(fileindex.Entry{Path: n("chr"), Type: fileindex.TypeCharDev, Mode: 0o666, Rdev: unix.Mkdev(1, 3), Xattrs: tr})
			add(fileindex.Entry{Path: n("blk"), Type: fileindex.TypeBlockDev, Mode: 0o666, Rdev: unix.Mkdev(7, 250), Xattrs: tr})
			add(fileindex.Entry{Path: n("file"), Type: fileindex.TypeFile, Mode: 0o6777, Size: int64(len(content)), NLink: 2, Xattrs: us})
			add(fileindex.Entry{Path: n("hl"), Type: fileindex.TypeHardlink, Target: n("file"), NLink: 2})
			add(fileindex.Entry{Path: n("link"), Type: fileindex.TypeSymlink, Mode: 0o777, Target: "elsewhere", Xattrs: tr})
			add(fileindex.Entry{Path: n("dir"), Type: fileindex.TypeDir, Mode: 0o777, Xattrs: us})
			add(fileindex.Entry{Path: n("sub"), Type: fileindex.TypeDir, Mode: 0o777})
			add(fileindex.Entry{Path: n("sub") + "/f", Type: fileindex.TypeFifo, Mode: 0o666, Xattrs: tr})
			add(fileindex.Entry{Path: n("sub") + "/g", Type: fileindex.TypeFile, Mode: 0o666, Size: int64(len(content)), Xattrs: us})
		}
	}
	slices.SortFunc(es, func(a, b fileindex.Entry) int { return fileindex.Compare(a.Path, b.Path) })
	sum := sha256.Sum256(content)
	var stream []byte
	for i := range es {
		stream = volume.AppendRecord(stream, volume.RecFileHeader, fileindex.AppendEntry(nil, &es[i]))
		if es[i].Type == fileindex.TypeFile {
			stream = volume.AppendDataRecord(stream, 0, content)
			stream = volume.AppendFileEnd(stream, volume.EndOK, sum[:])
		} else {
			stream = volume.AppendFileEnd(stream, volume.EndOK, nil)
		}
	}
	return stream
}

// inodeState is what a restore must never change on a file it did not
// create: ctime moves with any change of mode, owner, times or xattrs.
type inodeState struct {
	mode, uid, gid, nlink uint32
	size                  int64
	mtime, ctime          unix.Timespec
	xattrs                string
}

func stateOf(t *testing.T, root string) map[string]inodeState {
	t.Helper()
	m := map[string]inodeState{}
	mustDo(t, filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		var xs []string
		buf := make([]byte, 4096)
		n, err := unix.Llistxattr(p, buf)
		if err != nil {
			return err
		}
		for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
			if name == "" {
				continue
			}
			v := make([]byte, 4096)
			vn, err := unix.Lgetxattr(p, name, v)
			if err != nil {
				return err
			}
			xs = append(xs, name+"="+string(v[:vn]))
		}
		slices.Sort(xs)
		m[p] = inodeState{mode: st.Mode, uid: st.Uid, gid: st.Gid, nlink: uint32(st.Nlink), size: st.Size,
			mtime: st.Mtim, ctime: st.Ctim, xattrs: strings.Join(xs, ",")}
		return nil
	}))
	return m
}

// TestRestoreRacer restores, as root and again and again, into a --force
// target that holds world-writable directories (one sticky, like /tmp),
// while a process running as nobody swaps every restored name for a
// symlink to a root-owned file or directory outside the target, as fast as
// it can. The restore may lose entries to the racer, but it must never
// change the mode, owner, times or xattrs of anything outside the target:
// every metadata call goes to the inode the restore created, never through
// a name the racer can replace.
//
// Each subtest restores for two seconds: on the code that chmod'ed a fifo
// by its name, that was enough to find the secret changed nearly every
// time. It needs root, and fails under CAIRN_CI=1 without it, or when the
// racer does not show that it lost its privileges.
func TestRestoreRacer(t *testing.T) {
	for _, tc := range []struct {
		name            string
		fallback, named bool
	}{
		{"fd-calls", false, false},
		{"proc-fallback", true, false},
		{"named-temporary-files", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			needRoot(t, "a restore runs as root, and the racer drops to nobody")
			if tc.named {
				preferUnnamedFiles = false
				defer func() { preferUnnamedFiles = true }()
			}
			runRacerTest(t, tc.fallback, 2*time.Second)
		})
	}
}

func runRacerTest(t *testing.T, fallback bool, d time.Duration) {
	uid, gid := nobody()
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	mustDo(t, os.Mkdir(secret, 0o700))
	mustDo(t, os.Mkdir(filepath.Join(secret, "dir"), 0o700))
	for _, n := range []string{"file", "f", "g"} {
		p := filepath.Join(secret, n)
		mustWrite(t, p, []byte("root's secret\n"), 0o600)
		mustDo(t, unix.Setxattr(p, "user.secret", []byte("kept"), 0))
	}
	old := []unix.Timespec{{Sec: 1e9}, {Sec: 1e9 + 1}}
	for _, n := range []string{"file", "f", "g", "dir", "."} {
		mustDo(t, unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(secret, n), old, 0))
	}
	before := stateOf(t, secret)

	target := filepath.Join(dir, "target")
	var dirFiles []*os.File
	for _, d := range racerDirs {
		p := filepath.Join(target, d.name)
		mustDo(t, os.MkdirAll(p, 0o755))
		mustDo(t, unix.Chmod(p, d.mode))
		f, err := os.Open(p)
		mustDo(t, err)
		defer f.Close()
		dirFiles = append(dirFiles, f)
	}
	stream := racerStream([2]uint32{uid, gid})

	racer, stop := startRacer(t, uid, gid, secret, dirFiles)
	defer racer.Process.Kill()

	if fallback {
		preferEmptyPathCalls = false
		defer func() { preferEmptyPathCalls = true }()
	}
	var restores, refused, warnings int64
	deadline := time.Now().Add(d)
	for restores == 0 || time.Now().Before(deadline) {
		r, err := NewRestorer(RestoreOptions{Root: target, Force: true, Devices: true})
		mustDo(t, err)
		if err := r.Records(stream); err != nil {
			t.Errorf("restore %d: %v", restores, err)
		}
		st, err := r.Finish()
		mustDo(t, err)
		restores++
		refused += st.Refused
		warnings += st.WarningCount
	}
	swaps := stop()
	t.Logf("%d restores, %d refused entries, %d warnings, racer: %s", restores, refused, warnings, swaps)
	if !strings.Contains(swaps, "swapped=") || strings.Contains(swaps, "swapped=0 ") {
		t.Fatalf("the racer never swapped an entry (%s): the test proves nothing", swaps)
	}

	after := stateOf(t, secret)
	for p, b := range before {
		if a := after[p]; a != b {
			t.Errorf("%s outside the target changed during the restores:\n  before %+v\n  after  %+v", p, b, a)
		}
	}
	if len(after) != len(before) {
		t.Errorf("the secret directory holds %d entries, had %d", len(after), len(before))
	}
}

// nobody is the user and group ids of nobody, 65534 where the system has
// no such user.
func nobody() (uid, gid uint32) {
	uid, gid = 65534, 65534
	if u, err := user.Lookup("nobody"); err == nil {
		a, _ := strconv.Atoi(u.Uid)
		b, _ := strconv.Atoi(u.Gid)
		uid, gid = uint32(a), uint32(b)
	}
	return uid, gid
}

// copyTestBinary copies this test binary into dir, which another user
// can enter, and returns its path: the go tool keeps the binary in a
// directory only root may enter.
func copyTestBinary(t *testing.T, dir string) string {
	t.Helper()
	exe, err := os.Executable()
	mustDo(t, err)
	data, err := os.ReadFile(exe)
	mustDo(t, err)
	bin := filepath.Join(dir, "agent.test")
	mustDo(t, os.WriteFile(bin, data, 0o755))
	return bin
}

// startRacer runs this test binary as the racer, as uid:gid, on the open
// racer directories. It returns once the racer has shown it runs without
// privileges; stop ends it and returns what it did.
func startRacer(t *testing.T, uid, gid uint32, secret string, dirs []*os.File) (*exec.Cmd, func() string) {
	t.Helper()
	binDir, err := os.MkdirTemp("", "cairn-racer-")
	mustDo(t, err)
	t.Cleanup(func() { os.RemoveAll(binDir) })
	mustDo(t, os.Chmod(binDir, 0o755))
	bin := copyTestBinary(t, binDir)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestRestoreRacerProcess$", "-test.count=1")
	cmd.Dir = binDir
	cmd.Env = append(os.Environ(), racerEnv+"=1", racerSecretEnv+"="+secret)
	cmd.ExtraFiles = dirs
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	mustDo(t, err)
	stdout, err := cmd.StdoutPipe()
	mustDo(t, err)
	mustDo(t, cmd.Start())
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case l := <-lines:
		if l != "ready" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the racer could not start without privileges: %q\n%s", l, stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("the racer did not start: %s", stderr.String())
	}
	return cmd, func() string {
		stdin.Close()
		var out []string
		for l := range lines {
			out = append(out, l)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("the racer failed: %v\n%s", err, stderr.String())
		}
		return strings.Join(out, " ")
	}
}

// TestRestoreRacerProcess is the racer, when TestRestoreRacer runs this
// binary as nobody; otherwise it does nothing.
func TestRestoreRacerProcess(t *testing.T) {
	if os.Getenv(racerEnv) == "" {
		return
	}
	os.Exit(racer())
}

// racer swaps, with RENAME_EXCHANGE, each restored name in the directories
// on fds 3 and up with a symlink into the secret directory, until its stdin
// closes. One loop goes over every name again and again: each exchange puts
// the symlink in place of what the restore created, or back, and a name not
// there yet gets the symlink, so the restore finds it in its way. Another
// swaps a name the moment inotify says the restore created it or changed
// its owner, to land between two calls of the restore on the same entry.
func racer() int {
	secret := os.Getenv(racerSecretEnv)
	if os.Getuid() == 0 || os.Geteuid() == 0 || os.Getegid() == 0 {
		fmt.Println("still root")
		return 2
	}
	if f, err := os.Open(filepath.Join(secret, "file")); !errors.Is(err, os.ErrPermission) {
		f.Close()
		fmt.Printf("the secret is not out of reach: %v\n", err)
		return 2
	}
	fmt.Println("ready")
	var stop atomic.Bool
	go func() {
		io.Copy(io.Discard, os.Stdin)
		stop.Store(true)
	}()
	names := racerNames()
	var swapped, planted, onEvent atomic.Int64
	swap := func(fd int, name string) bool {
		sym := ".racer-" + name
		unix.Symlinkat(filepath.Join(secret, names[name]), fd, sym)
		err := unix.Renameat2(fd, sym, fd, name, unix.RENAME_EXCHANGE)
		switch {
		case err == nil:
			swapped.Add(1)
			return true
		case errors.Is(err, unix.ENOENT):
			if unix.Renameat2(fd, sym, fd, name, unix.RENAME_NOREPLACE) == nil {
				planted.Add(1)
			}
		}
		return false
	}
	in, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		fmt.Printf("inotify: %v\n", err)
		return 2
	}
	watched := map[int]int{}
	for fd := 3; fd < 3+len(racerDirs); fd++ {
		// The racer may not walk to the directory, only use the
		// descriptor it was given.
		wd, err := unix.InotifyAddWatch(in, "/proc/self/fd/"+strconv.Itoa(fd), unix.IN_CREATE|unix.IN_ATTRIB|unix.IN_MOVED_TO)
		if err != nil {
			fmt.Printf("inotify watch: %v\n", err)
			return 2
		}
		watched[wd] = fd
	}
	go func() {
		buf := make([]byte, 64<<10)
		for !stop.Load() {
			// A busy wait: a wakeup from a blocking read comes too
			// late for the gap between two calls.
			n, err := unix.Read(in, buf)
			if errors.Is(err, unix.EAGAIN) {
				continue
			}
			if err != nil {
				return
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
				off += unix.SizeofInotifyEvent + int(ev.Len)
				if _, ok := names[name]; ok && swap(watched[int(ev.Wd)], name) {
					onEvent.Add(1)
				}
			}
		}
	}()
	for !stop.Load() {
		for fd := 3; fd < 3+len(racerDirs); fd++ {
			for name := range names {
				swap(fd, name)
			}
		}
	}
	fmt.Printf("swapped=%d planted=%d on-event=%d \n", swapped.Load(), planted.Load(), onEvent.Load())
	return 0
}
