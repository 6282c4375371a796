package assemble

import (
	"errors"
	"io"

	"golang.org/x/sys/unix"
)

// FD is a file open on a descriptor, as the agent's restore holds its
// files (opened relative to their directory, never by a path that could
// be swapped), read and written in place.
type FD int

// WriteAt writes all of p at off, across short writes and interrupts.
func (fd FD) WriteAt(p []byte, off int64) (int, error) {
	for done := 0; done < len(p); {
		n, err := unix.Pwrite(int(fd), p[done:], off+int64(done))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return done, err
		}
		done += n
	}
	return len(p), nil
}

// ReadAt reads p at off; past the end of the file it returns io.EOF with
// what it read.
func (fd FD) ReadAt(p []byte, off int64) (int, error) {
	for done := 0; done < len(p); {
		n, err := unix.Pread(int(fd), p[done:], off+int64(done))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return done, err
		}
		if n == 0 {
			return done, io.EOF
		}
		done += n
	}
	return len(p), nil
}
