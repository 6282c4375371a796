package catalog

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// DiskFullError is a server's catalog or Raft log that cannot be written
// for lack of space: a write failed with ENOSPC or EDQUOT (Err), or the
// free space in Dir fell below the floor the server keeps (Need) before a
// write was tried. errors.Is(err, syscall.ENOSPC) sees through it when a
// write failed.
type DiskFullError struct {
	Dir  string
	Free int64 // bytes free in Dir when it was measured, -1 when not
	Need int64 // the floor it fell below, 0 when a write failed
	Err  error
}

func (e *DiskFullError) Error() string {
	msg := "the disk is full: free space in " + e.Dir
	switch {
	case e.Need > 0:
		return fmt.Sprintf("%s (%s free, below the %s it keeps free)", msg, mib(e.Free), mib(e.Need))
	case e.Err != nil:
		return fmt.Sprintf("%s (%v)", msg, e.Err)
	}
	return msg
}

func (e *DiskFullError) Unwrap() error { return e.Err }

func mib(n int64) string {
	if n < 0 {
		return "? bytes"
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// IsNoSpace reports whether err is a write that failed for lack of space
// or quota.
func IsNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// FreeBytes is the space an unprivileged writer may still use on the
// filesystem that holds dir.
func FreeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// checkSpace refuses to write into dir once less than floor bytes are free
// there; a floor of 0 checks nothing.
func checkSpace(dir string, floor int64) error {
	if floor <= 0 {
		return nil
	}
	free, err := FreeBytes(dir)
	if err != nil {
		return nil // unknown: let the write itself tell
	}
	if free < floor {
		return &DiskFullError{Dir: dir, Free: free, Need: floor}
	}
	return nil
}
