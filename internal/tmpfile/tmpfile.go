// Package tmpfile makes scratch files that nothing can find by name and
// that go with the process: a spool, a spill, a staging file.
package tmpfile

import (
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Open makes a file without a name in dir (O_TMPFILE), open for reading and
// writing: a process killed while it holds the file leaves nothing behind.
// On a filesystem without O_TMPFILE it makes a file named after pattern
// (as os.CreateTemp) and removes the name at once; only a kill between the
// two leaves that name. what names the file in the returned file's Name,
// DIR/(what), and in errors, which are *os.PathError on that name: as a
// write's, so a caller tells a full disk under dir from another by the path.
func Open(dir, pattern, what string) (*os.File, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	name := filepath.Join(dir, "("+what+")")
	fd, err := openUnnamed(dir)
	if err == nil {
		return os.NewFile(uintptr(fd), name), nil
	}
	if !Unsupported(err) {
		return nil, makeError(name, err)
	}
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, makeError(name, err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, makeError(name, err)
	}
	return f, nil
}

// makeError is err, from making the file name stands for, on that name.
func makeError(name string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &os.PathError{Op: "make", Path: name, Err: err}
}

// Unsupported tells whether err, from an open with O_TMPFILE, says the
// file system makes no unnamed files, so a named one must do: EOPNOTSUPP
// from a filesystem without them, EISDIR from a kernel before 3.11 (which
// takes the flag for O_DIRECTORY), EINVAL from some FUSE filesystems.
func Unsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL)
}

// openUnnamed opens an unnamed file in dir; tests make it answer as a
// filesystem without O_TMPFILE does.
var openUnnamed = func(dir string) (int, error) {
	return unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
}
