// Package datadir keeps a data directory to one process at a time: a
// server's (catalog, Raft log, keys) and the whole of a 'cairn dev'. A
// second process started on a directory in use is told at once which
// process holds it, where it would otherwise wait on the catalog's bbolt
// lock and fail with "open catalog: timeout", or, for 'cairn dev', start
// its NATS server and overwrite the first one's client file before it
// failed.
//
// The hold is an flock(2) on LockName in the directory, which the kernel
// drops when the process ends however it ends, so a crash leaves no stale
// lock; the file holds the holder's PID and role, only to name it.
package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockName is the lock file in a data directory.
const LockName = "cairn.lock"

// InUseError is a data directory another process holds.
type InUseError struct {
	Dir string
	// PID and Role name the holder; PID is 0 when its file does not say
	// (it took the lock a moment ago and has not written it yet).
	PID  int
	Role string
}

func (e *InUseError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "PID " + strconv.Itoa(e.PID)
		if e.Role != "" {
			who += " (cairn " + e.Role + ")"
		}
	}
	return fmt.Sprintf("data directory %s is in use by %s", e.Dir, who)
}

// Lock is a data directory held by this process.
type Lock struct {
	f *os.File
}

// Acquire takes dir (creating it, 0700) for this process, whose role
// ("server", "dev", "cluster recover") it records beside its PID. It fails at once with an
// *InUseError when another process, or another Lock of this one, holds it.
func Acquire(dir, role string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	path := filepath.Join(dir, LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data directory %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			e := &InUseError{Dir: dir}
			e.PID, e.Role = holder(f)
			return nil, e
		}
		return nil, fmt.Errorf("lock data directory %s: %w", dir, err)
	}
	// Written after the lock is held, so a reader that finds it empty
	// was merely early.
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+" "+role+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("data directory %s: write %s: %w", dir, LockName, err)
	}
	return &Lock{f: f}, nil
}

// holder reads the PID and role a lock file names.
func holder(f *os.File) (pid int, role string) {
	buf := make([]byte, 128)
	n, _ := f.ReadAt(buf, 0)
	line, _, _ := strings.Cut(string(buf[:n]), "\n")
	first, role, _ := strings.Cut(line, " ")
	pid, _ = strconv.Atoi(first)
	return pid, strings.TrimSpace(role)
}

// Release gives the directory up. The file stays: removing it would let a
// process that opened it just before take a lock on a name nobody else
// sees.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing drops the flock
	l.f = nil
	return err
}
