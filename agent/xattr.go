package agent

import (
	"errors"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The walk reads an entry's extended attributes by its name in the
// directory it holds open, never by its full path: a full path longer than
// PATH_MAX cannot be named at all (the deep entries' xattrs were lost with
// ENAMETOOLONG), and one resolved again from the root follows whatever a
// user who owns a directory on the way has put there since the walk passed
// it, a symlink to a tree whose trusted.* or security.* attributes only
// root may read.
//
// listxattrat and getxattrat (Linux 6.13) take a directory descriptor and
// AT_SYMLINK_NOFOLLOW. On an older kernel, or under a seccomp filter that
// refuses them, the name is reached through the
// directory's magic link, /proc/self/fd/N/name, which leads to the open
// directory itself, not to a name; only without /proc is the full path
// used, as before.

// xattrAtMissing records that this kernel has no listxattrat/getxattrat.
var xattrAtMissing atomic.Bool

// xattrArgs is the kernel's struct xattr_args.
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

// xattrName is how the fallback reaches name in dirfd: through the
// directory's magic link, or by full path p where /proc is missing.
func xattrName(dirfd int, name, p string) string {
	if dirfd == unix.AT_FDCWD {
		return name
	}
	dir, err := procFd(dirfd)
	if err != nil {
		return p
	}
	return dir + "/" + name
}

// llistxattrAt is llistxattr of name in dirfd (p its full path).
func llistxattrAt(dirfd int, name, p string, buf []byte) (int, error) {
	return xattrCall(func() (int, error) { return listxattrat(dirfd, name, buf) },
		func() (int, error) { return unix.Llistxattr(xattrName(dirfd, name, p), buf) })
}

// lgetxattrAt is lgetxattr of name in dirfd (p its full path).
func lgetxattrAt(dirfd int, name, p, attr string, buf []byte) (int, error) {
	return xattrCall(func() (int, error) { return getxattrat(dirfd, name, attr, buf) },
		func() (int, error) { return unix.Lgetxattr(xattrName(dirfd, name, p), attr, buf) })
}

// xattrCall makes the *xattrat call at, or its older form old where the
// newer is missing or refused.
func xattrCall(at, old func() (int, error)) (int, error) {
	if xattrAtMissing.Load() {
		return old()
	}
	n, err := at()
	if !xattrAtRefused(err) {
		return n, err
	}
	n, oldErr := old()
	noteXattrAtRefused(err, oldErr)
	return n, oldErr
}

// xattrAtRefused says whether the *xattrat call may not have run at all:
// ENOSYS from a kernel before 6.13, or EPERM from a seccomp filter that
// knows no newer calls (container runtimes' default profiles).
func xattrAtRefused(err error) bool {
	return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM)
}

// noteXattrAtRefused stops the *xattrat calls for good when the kernel
// lacks them, or when the older call did what the newer was refused:
// the refusal was the filter's, not the file's.
func noteXattrAtRefused(atErr, fallbackErr error) {
	if errors.Is(atErr, unix.ENOSYS) || !errors.Is(fallbackErr, unix.EPERM) {
		xattrAtMissing.Store(true)
	}
}

func listxattrat(dirfd int, name string, buf []byte) (int, error) {
	path, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	var p unsafe.Pointer
	if len(buf) > 0 {
		p = unsafe.Pointer(&buf[0])
	}
	n, _, e := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(path)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(p), uintptr(len(buf)), 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func getxattrat(dirfd int, name, attr string, buf []byte) (int, error) {
	path, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return 0, err
	}
	args := xattrArgs{size: uint32(len(buf))}
	if len(buf) > 0 {
		args.value = uint64(uintptr(unsafe.Pointer(&buf[0])))
	}
	n, _, e := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(path)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	runtime.KeepAlive(buf) // args.value holds its address as a number
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
