package agent

import (
	"errors"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file holds the descriptor-only calls the restore makes on what it
// created; restore.go says why.

// ErrReplaced says that the name of an entry being restored led to
// something other than what the restore created there: another user
// replaced it meanwhile. The restore leaves it alone.
var ErrReplaced = errors.New("it was replaced while it was restored: another user writes in this directory")

// preferEmptyPathCalls is false only in tests, which run the /proc
// fallbacks of older kernels on this one.
var preferEmptyPathCalls = true

// preferUnnamedFiles is false only in tests, which run the restore with
// named temporary files too, as on a filesystem without O_TMPFILE.
var preferUnnamedFiles = true

// pinned is an inode the restore holds by a descriptor: every change of
// its metadata goes to that inode, whatever its name holds meanwhile.
type pinned struct {
	fd int
	// opath: an O_PATH descriptor (fifo, device, symlink), opened without
	// side effects, which fchown, fchmod and fsetxattr refuse.
	opath bool
	st    unix.Stat_t
	// known: st is what the inode is now, so applyMeta leaves out an
	// owner or a mode it has already.
	known bool
}

func (p *pinned) close() { unix.Close(p.fd) }

// pinCreated opens, without following it, what the restore has just made
// at name (a fifo, a device or a symlink) and checks that it is that: the
// type, one name, the device numbers or the symlink's target. Anything else
// is ErrReplaced. What could pass and not be ours is another user's fifo or
// symlink of the same target, which is worth what we made (no one else may
// create devices), or a twin the restore made elsewhere in a directory that
// user may move anything in.
//
// The owner is not checked: on NFS with root squashed, or vfat, what root
// creates belongs to someone else.
func pinCreated(dirfd int, name string, kind uint32, rdev uint64, target string) (*pinned, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, ErrReplaced
	}
	if err != nil {
		return nil, err
	}
	p := &pinned{fd: fd, opath: true}
	if err := unix.Fstat(fd, &p.st); err != nil {
		p.close()
		return nil, err
	}
	ok := p.st.Mode&unix.S_IFMT == kind && p.st.Nlink == 1
	switch {
	case ok && (kind == unix.S_IFCHR || kind == unix.S_IFBLK):
		ok = uint64(p.st.Rdev) == rdev
	case ok && kind == unix.S_IFLNK:
		buf := make([]byte, len(target)+1)
		n, err := unix.Readlinkat(fd, "", buf)
		ok = err == nil && string(buf[:n]) == target
	}
	if !ok {
		p.close()
		return nil, ErrReplaced
	}
	return p, nil
}

// openDirAt opens the directory name in dirfd, never through a symlink.
func openDirAt(dirfd int, name string) (int, error) {
	return unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// checkMadeDir checks that the directory open on fd can be the one the
// restore has just made: empty. One moved in with its content is
// ErrReplaced; an empty one gives nothing away.
func checkMadeDir(fd int) error {
	buf := make([]byte, 512)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		if _, count, _ := unix.ParseDirent(buf[:n], 1, nil); count > 0 {
			return ErrReplaced
		}
	}
}

func (p *pinned) chown(uid, gid int) error {
	if p.opath {
		return unix.Fchownat(p.fd, "", uid, gid, unix.AT_EMPTY_PATH)
	}
	return unix.Fchown(p.fd, uid, gid)
}

func (p *pinned) setxattr(name string, value []byte) error {
	if !p.opath {
		return unix.Fsetxattr(p.fd, name, value, 0)
	}
	// Neither fsetxattr nor setxattrat(AT_EMPTY_PATH) takes an O_PATH
	// descriptor; /proc/self/fd/N reaches its inode, even a symlink's.
	proc, err := procFd(p.fd)
	if err != nil {
		return err
	}
	return unix.Setxattr(proc, name, value, 0)
}

func (p *pinned) chmod(mode uint32) error {
	if !p.opath {
		return unix.Fchmod(p.fd, mode)
	}
	if p.st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return unix.EOPNOTSUPP // Linux symlinks have no mode; chmod through /proc would follow one
	}
	if preferEmptyPathCalls {
		// fchmodat2, Linux 6.6.
		err := unix.Fchmodat(p.fd, "", mode, unix.AT_EMPTY_PATH)
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
			return err
		}
	}
	proc, err := procFd(p.fd)
	if err != nil {
		return err
	}
	return unix.Chmod(proc, mode)
}

func (p *pinned) setTimes(ts []unix.Timespec) error {
	if !p.opath {
		return futimens(p.fd, ts)
	}
	if preferEmptyPathCalls {
		// utimensat takes AT_EMPTY_PATH since Linux 5.8.
		err := unix.UtimesNanoAt(p.fd, "", ts, unix.AT_EMPTY_PATH)
		if !errors.Is(err, unix.EINVAL) {
			return err
		}
	}
	proc, err := procFd(p.fd)
	if err != nil {
		return err
	}
	return unix.UtimesNanoAt(unix.AT_FDCWD, proc, ts, 0)
}

// linkAs gives the pinned inode a further name in dirfd.
func (p *pinned) linkAs(dirfd int, name string) error {
	if preferEmptyPathCalls {
		err := unix.Linkat(p.fd, "", dirfd, name, unix.AT_EMPTY_PATH)
		// Without CAP_DAC_READ_SEARCH kernels before 6.10 answer ENOENT
		// (later ones let the file's opener link it).
		if !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	proc, err := procFd(p.fd)
	if err != nil {
		return err
	}
	return unix.Linkat(unix.AT_FDCWD, proc, dirfd, name, unix.AT_SYMLINK_FOLLOW)
}

// futimens sets the times of an open file: utimensat with a NULL path,
// which x/sys/unix does not offer.
func futimens(fd int, ts []unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

var (
	procOnce sync.Once
	procErr  error
)

// procAvailable reports whether procFd can name descriptors.
func procAvailable() bool {
	_, err := procFd(0)
	return err == nil
}

// procFd names a descriptor's inode in /proc. The magic link leads to the
// inode itself, not to a name a racer could change; only /proc must be the
// real one.
func procFd(fd int) (string, error) {
	procOnce.Do(func() {
		var fs unix.Statfs_t
		if err := unix.Statfs("/proc/self/fd", &fs); err != nil || fs.Type != unix.PROC_SUPER_MAGIC {
			procErr = errors.New("/proc is not mounted, and this kernel has no call that reaches a fifo, device or symlink by its descriptor")
		}
	})
	if procErr != nil {
		return "", procErr
	}
	return "/proc/self/fd/" + strconv.Itoa(fd), nil
}
