package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	unprivEnv    = "CAIRN_RESTORE_UNPRIVILEGED"
	unprivStream = "CAIRN_RESTORE_UNPRIVILEGED_STREAM"
	unprivRoot   = "CAIRN_RESTORE_UNPRIVILEGED_ROOT"
)

// An agent that runs as an ordinary user restores into a directory of its
// own: its files unnamed and linked in by their descriptor (linkat with
// AT_EMPTY_PATH, which kernels from 6.10 allow the file's opener, or
// through /proc/self/fd), or under temporary names; the tree comes back
// whole, with its modes, times, xattrs and hard links, and nothing is left
// beside it.
func TestRestoreAsAnUnprivilegedUser(t *testing.T) {
	needRoot(t, "the restore runs in a child process as nobody")
	u, g := nobody()
	uid, gid := int(u), int(g)
	// Every directory on the way must let nobody through.
	work, err := os.MkdirTemp("", "cairn-unpriv-")
	mustDo(t, err)
	t.Cleanup(func() { os.RemoveAll(work) })
	mustDo(t, os.Chmod(work, 0o755))
	src := filepath.Join(work, "src")
	mustDo(t, os.Mkdir(src, 0o755))
	mustWrite(t, filepath.Join(src, "small"), []byte("small\n"), 0o640)
	mustWrite(t, filepath.Join(src, "large"), randomBytes(7, 3<<20), 0o600)
	mustWrite(t, filepath.Join(src, "exec"), []byte("#!/bin/sh\n"), 0o755)
	mustDo(t, os.Link(filepath.Join(src, "small"), filepath.Join(src, "second-name")))
	mustDo(t, os.Mkdir(filepath.Join(src, "dir"), 0o750))
	mustWrite(t, filepath.Join(src, "dir", "inside"), []byte("inside\n"), 0o644)
	mustDo(t, syscall.Setxattr(filepath.Join(src, "small"), "user.note", []byte("kept"), 0))
	mustDo(t, filepath.Walk(src, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	}))
	stream, _ := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{src}}})
	streamFile := filepath.Join(work, "stream")
	mustDo(t, os.WriteFile(streamFile, stream, 0o644))
	bin := copyTestBinary(t, work)

	for _, mode := range []string{"unnamed", "unnamed-proc", "named"} {
		t.Run(mode, func(t *testing.T) {
			home := filepath.Join(work, "home-"+mode)
			mustDo(t, os.Mkdir(home, 0o700))
			mustDo(t, os.Chown(home, uid, gid))
			dst := filepath.Join(home, "restore")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-test.run=^TestUnprivilegedRestoreProcess$", "-test.count=1")
			cmd.Dir = work
			cmd.Env = append(os.Environ(), unprivEnv+"="+mode, unprivStream+"="+streamFile, unprivRoot+"="+dst)
			cmd.SysProcAttr = &syscall.SysProcAttr{
				Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}},
				Pdeathsig:  syscall.SIGKILL,
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("the restore as nobody failed: %v\n%s", err, out)
			}
			var res struct {
				Unnamed bool
				Stats   RestoreStats
			}
			line := out
			if i := strings.Index(string(out), "{"); i >= 0 {
				line = out[i:]
			}
			if err := json.NewDecoder(strings.NewReader(string(line))).Decode(&res); err != nil {
				t.Fatalf("the child's report: %v\n%s", err, out)
			}
			if res.Unnamed != (mode != "named") {
				t.Fatalf("the restore made its files unnamed: %v, in mode %s", res.Unnamed, mode)
			}
			st := res.Stats
			if st.WarningCount != 0 || st.Refused != 0 || st.DamagedCount != 0 || st.Files != 4 || st.Links != 1 {
				t.Fatalf("stats %+v", st)
			}
			sameTree(t, src, dst+src)
			if under := filesUnderWay(t, dst+src); len(under) != 0 {
				t.Fatalf("left behind: %q", under)
			}
		})
	}
}

// TestUnprivilegedRestoreProcess is the child of
// TestRestoreAsAnUnprivilegedUser: it restores the stream it is given and
// prints what it did.
func TestUnprivilegedRestoreProcess(t *testing.T) {
	mode := os.Getenv(unprivEnv)
	if mode == "" {
		return
	}
	if os.Geteuid() == 0 {
		fmt.Println("still root")
		os.Exit(2)
	}
	preferEmptyPathCalls = mode != "unnamed-proc"
	preferUnnamedFiles = mode != "named"
	stream, err := os.ReadFile(os.Getenv(unprivStream))
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	r, err := NewRestorer(RestoreOptions{Root: os.Getenv(unprivRoot)})
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	if err := r.Records(stream); err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	st, err := r.Finish()
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	b, _ := json.Marshal(struct {
		Unnamed bool
		Stats   RestoreStats
	}{r.unnamed, st})
	fmt.Println(string(b))
	os.Exit(0)
}
