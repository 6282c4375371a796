package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
)

// WalkOptions says what a backup reads.
type WalkOptions struct {
	// Paths are the absolute paths to back up; each must exist. A path
	// inside another one is walked once, and the directories above a path
	// are not part of the backup.
	Paths []string
	// Excludes are patterns of what to leave out; a directory they match
	// is pruned with everything below it.
	//
	//   - A pattern without a slash matches an entry's name, at any depth:
	//     "*.tmp", "node_modules".
	//   - A pattern with a slash is anchored: at the backup root (each of
	//     Paths) when it does not start with one, "var/cache" being
	//     ROOT/var/cache only; at / when it does, "/var/cache" being that
	//     absolute path.
	//   - A trailing slash matches directories only: "cache/".
	//   - Each part between slashes is a path.Match glob (*, ?, [a-z]), and
	//     a part "**" matches any number of directories, none included:
	//     "**/build/*.o", "home/*/.cache".
	//
	// A pattern that left nothing out is worth a warning: it is most likely
	// a typo (Source gives one).
	Excludes []string
	// OneFileSystem keeps the walk on the filesystem of each path: the
	// mount point of another filesystem is backed up, not what is mounted
	// on it.
	OneFileSystem bool
	// SkipNodump leaves out the files and directories that carry the
	// nodump inode flag (chattr +d), a directory with everything below it,
	// as dump(8) does. Like an excluded path, one that an earlier backup
	// holds is not taken for deleted.
	SkipNodump bool
	// Warn hears about what the walk cannot read (an unreadable
	// directory); the walk goes on. Nil: nobody is told.
	Warn func(path string, err error)
	// Skipped hears of what the walk leaves out on purpose, which is no
	// warning: a socket, or an entry with the nodump flag under
	// SkipNodump. Excluded paths are not told. Nil: nobody is told.
	Skipped func(path string, why Skip)
}

// Skip says why the walk left out an entry it found.
type Skip uint8

const (
	// SkipSocket: a socket is a live endpoint of a running process, not
	// data, so there is nothing to back up.
	SkipSocket Skip = iota + 1
	// SkipNodump: the entry carries the nodump flag, and the backup was
	// asked to leave those out (WalkOptions.SkipNodump).
	SkipNodump
)

func (s Skip) String() string {
	switch s {
	case SkipSocket:
		return "socket"
	case SkipNodump:
		return "nodump"
	}
	return fmt.Sprintf("skip(%d)", uint8(s))
}

// MissingPathError says that a path to back up does not exist on the client.
type MissingPathError struct{ Path string }

func (e *MissingPathError) Error() string {
	return fmt.Sprintf("path %s does not exist on client", e.Path)
}

// Walk calls fn for every entry under opts.Paths, in index order
// (fileindex.Compare) across all of them. Entries are read with lstat:
// symlinks are never followed. A regular file whose inode was already
// visited under another name comes as a TypeHardlink whose Target is that
// first name. fn must not keep e after it returns: the walk reuses it. An
// error from fn, or ctx ending, stops the walk and is returned.
func Walk(ctx context.Context, opts WalkOptions, fn func(e *fileindex.Entry) error) error {
	w, err := newWalker(ctx, opts)
	if err != nil {
		return err
	}
	w.visit = func(n *node) error { return fn(n.e) }
	return w.run()
}

// walkSizes is Walk for what only types and sizes are read of: the count
// that sizes a full backup for its progress, which runs beside the backup's
// own walk. It reads no extended attributes, inode flags, symlink targets
// or owner names, which cost that walk a third of its CPU (a path lookup and
// a syscall or two per entry) and would be thrown away.
func walkSizes(ctx context.Context, opts WalkOptions, fn func(e *fileindex.Entry) error) error {
	w, err := newWalker(ctx, opts)
	if err != nil {
		return err
	}
	w.sizesOnly = true
	w.visit = func(n *node) error { return fn(n.e) }
	return w.run()
}

// node is an entry as the walk found it, with what Source needs to read
// its content without resolving its path again.
type node struct {
	e      *fileindex.Entry
	dirfd  int    // open directory that holds the entry (unix.AT_FDCWD for a root)
	name   string // the entry's name in dirfd
	blocks int64  // allocated 512-byte blocks; fewer than the size means holes
	// base is the block list of the path's version in the base backup,
	// for a large file sent by blocks: what an incremental need not send.
	base *fileindex.BlockList
}

type devIno struct{ dev, ino uint64 }

// linkGroup is a hard-linked inode whose other names are still to come.
type linkGroup struct {
	first string
	left  uint64
}

type walker struct {
	ctx      context.Context
	opts     WalkOptions
	roots    []string
	excludes []*excludePattern
	root     string // the root being walked
	rootDev  uint64
	noStatx  bool // the kernel has no statx: lstat, and no attributes
	visit    func(n *node) error
	// pruned hears, in index order, of paths the walk leaves out on
	// purpose or cannot read: p itself, unless it was visited already, and
	// everything below it. Changes uses it so that what the walk did not
	// look at is not taken for deleted.
	pruned   func(p string) error
	users    map[uint32]string
	groups   map[uint32]string
	links    map[devIno]*linkGroup
	entry    fileindex.Entry
	nd       node
	listBuf  []byte
	valueBuf []byte
	visited  int
	// sizesOnly: entries carry their type, size and stat fields only
	// (walkSizes).
	sizesOnly bool
	// ahead, when set, hears of the names the walk will reach soon (up to
	// aheadDepth entries before it), so their content can be fetched from
	// the disk while earlier files are read.
	ahead func(dir, name string)
	// closeDir closes a directory's descriptor when the walk leaves it:
	// Source closes it later if files it holds are still to be read.
	closeDir func(fd int)
}

func newWalker(ctx context.Context, opts WalkOptions) (*walker, error) {
	roots, err := cleanRoots(opts.Paths)
	if err != nil {
		return nil, err
	}
	excludes, err := compileExcludes(opts.Excludes)
	if err != nil {
		return nil, err
	}
	return &walker{
		ctx: ctx, opts: opts, roots: roots, excludes: excludes,
		users: map[uint32]string{}, groups: map[uint32]string{}, links: map[devIno]*linkGroup{},
		listBuf: make([]byte, 1024), valueBuf: make([]byte, 4096),
		closeDir: func(fd int) { unix.Close(fd) },
	}, nil
}

// cleanRoots cleans the paths, sorts them in index order and drops those
// inside another: index order keeps a root's subtree contiguous, so the
// last root kept is the only one that can hold the next.
func cleanRoots(paths []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, errors.New("no paths to back up: give at least one absolute path")
	}
	roots := make([]string, 0, len(paths))
	for _, p := range paths {
		if !path.IsAbs(p) {
			return nil, fmt.Errorf("path %q is not absolute: give the full path of what to back up", p)
		}
		p = path.Clean(p)
		// Every path must exist, also one inside another path.
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				return nil, &MissingPathError{Path: p}
			}
			return nil, fmt.Errorf("path %s cannot be read: %w", p, err)
		}
		roots = append(roots, p)
	}
	slices.SortFunc(roots, fileindex.Compare)
	out := roots[:1]
	for _, r := range roots[1:] {
		if !fileindex.Within(r, out[len(out)-1]) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (w *walker) warn(p string, err error) {
	if w.opts.Warn != nil {
		w.opts.Warn(p, err)
	}
}

func (w *walker) prune(p string) error {
	if w.pruned != nil {
		return w.pruned(p)
	}
	return nil
}

func (w *walker) skipped(p string, why Skip) error {
	if w.opts.Skipped != nil {
		w.opts.Skipped(p, why)
	}
	return w.prune(p)
}

// excluded reports whether an exclude pattern leaves out the entry at full,
// named name, below root; isDir as fileindex.Exclude.Match takes it, and
// dirOnly limits the check to the patterns for directories only. A walk
// that prunes the entry marks the pattern as matched.
func (w *walker) excluded(full, name, root string, isDir int, mark bool) bool {
	for _, p := range w.excludes {
		if isDir == 1 && !p.DirOnly {
			continue // checked already, before the type was known
		}
		if p.Match(full, name, root, isDir) {
			if mark {
				p.matched = true
			}
			return true
		}
	}
	return false
}

// unmatchedExcludes are the exclude patterns that left nothing out.
func (w *walker) unmatchedExcludes() []string {
	var out []string
	for _, p := range w.excludes {
		if !p.matched {
			out = append(out, p.Raw)
		}
	}
	return out
}

// inScope reports whether p, an entry of type typ, is something this walk
// would back up if it existed: below a root, with neither itself nor a
// directory above it (up to the root) excluded.
func (w *walker) inScope(p string, typ fileindex.Type) bool {
	root := ""
	for _, r := range w.roots {
		if fileindex.Within(p, r) {
			root = r
			break
		}
	}
	if root == "" {
		return false
	}
	isDir := 0
	if typ == fileindex.TypeDir {
		isDir = 1
	}
	for q := p; ; q = path.Dir(q) {
		if w.excluded(q, path.Base(q), root, -1, false) || isDir == 1 && w.excluded(q, path.Base(q), root, 1, false) {
			return false
		}
		if q == root || q == "/" {
			return true
		}
		isDir = 1 // what holds p
	}
}

func (w *walker) run() error {
	for _, r := range w.roots {
		w.root = r
		if w.excluded(r, path.Base(r), r, -1, true) {
			if err := w.prune(r); err != nil {
				return err
			}
			continue
		}
		var st unix.Stat_t
		attrs, err := w.lstatAt(unix.AT_FDCWD, r, &st)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				return &MissingPathError{Path: r}
			}
			return fmt.Errorf("path %s cannot be read: %w", r, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR && w.excluded(r, path.Base(r), r, 1, true) {
			if err := w.prune(r); err != nil {
				return err
			}
			continue
		}
		w.rootDev = st.Dev
		if err := w.visitEntry(unix.AT_FDCWD, r, r, &st, attrs); err != nil {
			return err
		}
	}
	return nil
}

// lstatAt reads name in dirfd without following a symlink, with the
// attributes statx gives (the STATX_ATTR_* it knows for the entry's
// filesystem, nodump among them), which lstat does not.
func (w *walker) lstatAt(dirfd int, name string, st *unix.Stat_t) (attrs uint64, err error) {
	if !w.noStatx {
		var sx unix.Statx_t
		err := unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_SYNC_AS_STAT, unix.STATX_BASIC_STATS, &sx)
		if err == nil {
			statFromStatx(st, &sx)
			return sx.Attributes & sx.Attributes_mask, nil
		}
		if !errors.Is(err, unix.ENOSYS) {
			return 0, err
		}
		w.noStatx = true // Linux before 4.11, or a sandbox that forbids it
	}
	return 0, unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
}

// statFromStatx fills st as lstat would have: device numbers in the
// kernel's encoding (what fstat of the open file gives, which the read
// compares), times to the nanosecond.
func statFromStatx(st *unix.Stat_t, sx *unix.Statx_t) {
	*st = unix.Stat_t{
		Dev: unix.Mkdev(sx.Dev_major, sx.Dev_minor), Ino: sx.Ino, Nlink: uint64(sx.Nlink),
		Mode: uint32(sx.Mode), Uid: sx.Uid, Gid: sx.Gid, Rdev: unix.Mkdev(sx.Rdev_major, sx.Rdev_minor),
		Size: int64(sx.Size), Blksize: int64(sx.Blksize), Blocks: int64(sx.Blocks),
		Atim: unix.Timespec{Sec: sx.Atime.Sec, Nsec: int64(sx.Atime.Nsec)},
		Mtim: unix.Timespec{Sec: sx.Mtime.Sec, Nsec: int64(sx.Mtime.Nsec)},
		Ctim: unix.Timespec{Sec: sx.Ctime.Sec, Nsec: int64(sx.Ctime.Nsec)},
	}
}

func joinPath(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

func typeOf(mode uint32) fileindex.Type {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return fileindex.TypeFile
	case unix.S_IFDIR:
		return fileindex.TypeDir
	case unix.S_IFLNK:
		return fileindex.TypeSymlink
	case unix.S_IFIFO:
		return fileindex.TypeFifo
	case unix.S_IFCHR:
		return fileindex.TypeCharDev
	case unix.S_IFBLK:
		return fileindex.TypeBlockDev
	}
	return 0
}

// visitEntry hands one entry to visit and, for a directory, walks below it.
// attrs are its statx attributes.
func (w *walker) visitEntry(dirfd int, name, p string, st *unix.Stat_t, attrs uint64) error {
	if w.visited++; w.visited%64 == 0 {
		if err := w.ctx.Err(); err != nil {
			return err
		}
	}
	typ := typeOf(st.Mode)
	if typ == 0 {
		if st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			return w.skipped(p, SkipSocket)
		}
		w.warn(p, fmt.Errorf("skipped: unknown file type %o", st.Mode&unix.S_IFMT))
		return w.prune(p)
	}
	if w.opts.SkipNodump && attrs&unix.STATX_ATTR_NODUMP != 0 {
		return w.skipped(p, SkipNodump)
	}
	// A directory is opened before it is visited, so that its entry
	// carries its inode flags; the same descriptor reads its names.
	dirFd, dirErr := -1, error(nil)
	var flags uint32
	if typ == fileindex.TypeDir {
		dirFd, dirErr = unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if dirErr == nil {
			defer w.closeDir(dirFd)
		}
		if dirErr == nil && (!w.sizesOnly || w.opts.SkipNodump) {
			var err error
			if flags, err = inodeFlags(dirFd); err != nil {
				w.warn(p, fmt.Errorf("inode flags not backed up: %w", err))
			}
			if w.opts.SkipNodump && flags&fileindex.FlagNodump != 0 {
				return w.skipped(p, SkipNodump)
			}
		}
	}
	e := &w.entry
	*e = fileindex.Entry{
		Path: p, Type: typ, Mode: st.Mode & 0o7777,
		UID: st.Uid, GID: st.Gid,
		Size:  st.Size,
		MTime: st.Mtim.Nano(), ATime: st.Atim.Nano(), CTime: st.Ctim.Nano(),
		Dev: st.Dev, Inode: st.Ino, NLink: uint32(st.Nlink), Rdev: st.Rdev, Flags: flags,
	}
	if !w.sizesOnly {
		e.User, e.Group = w.userName(st.Uid), w.groupName(st.Gid)
		if typ == fileindex.TypeSymlink {
			t, err := w.readlink(dirfd, name, st.Size)
			if err != nil {
				w.warn(p, fmt.Errorf("skipped: read symlink: %w", err))
				return w.prune(p)
			}
			e.Target = t
		}
		xs, err := w.xattrs(dirfd, name, p)
		if err != nil {
			w.warn(p, fmt.Errorf("extended attributes not backed up: %w", err))
		}
		e.Xattrs = xs
	}
	if typ == fileindex.TypeFile && st.Nlink > 1 {
		k := devIno{st.Dev, st.Ino}
		if g := w.links[k]; g != nil {
			e.Type, e.Target = fileindex.TypeHardlink, g.first
			// Forget the inode once all its names were seen, so the
			// map holds only groups still open.
			if g.left--; g.left == 0 {
				delete(w.links, k)
			}
		} else {
			w.links[k] = &linkGroup{first: p, left: uint64(st.Nlink) - 1}
		}
	}
	w.nd = node{e: e, dirfd: dirfd, name: name, blocks: st.Blocks}
	if err := w.visit(&w.nd); err != nil {
		return err
	}
	if typ != fileindex.TypeDir {
		return nil
	}
	if w.opts.OneFileSystem && st.Dev != w.rootDev {
		return w.prune(p)
	}
	if dirErr != nil {
		w.warn(p, fmt.Errorf("directory content not backed up: open: %w", dirErr))
		return w.prune(p)
	}
	return w.walkDir(dirFd, p)
}

// walkDir walks below the directory p, open on fd, which it does not close.
func (w *walker) walkDir(fd int, p string) error {
	// The os.File only reads the names, from a descriptor of its own.
	dup, err := unix.Dup(fd)
	if err != nil {
		w.warn(p, fmt.Errorf("directory content not backed up: %w", err))
		return w.prune(p)
	}
	unix.CloseOnExec(dup)
	f := os.NewFile(uintptr(dup), p)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		w.warn(p, fmt.Errorf("directory content not backed up: read: %w", err))
		return w.prune(p)
	}
	// Byte order of the names, walked depth first, is index order.
	slices.Sort(names)
	if w.ahead != nil {
		for _, n := range names[:min(aheadDepth, len(names))] {
			w.ahead(p, n)
		}
	}
	for i, n := range names {
		if w.ahead != nil && i+aheadDepth < len(names) {
			w.ahead(p, names[i+aheadDepth])
		}
		cp := joinPath(p, n)
		if w.excluded(cp, n, w.root, -1, true) {
			if err := w.prune(cp); err != nil {
				return err
			}
			continue
		}
		var st unix.Stat_t
		attrs, err := w.lstatAt(fd, n, &st)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // deleted since the directory was read: as if before the walk
			}
			w.warn(cp, fmt.Errorf("skipped: lstat: %w", err))
			if err := w.prune(cp); err != nil {
				return err
			}
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR && w.excluded(cp, n, w.root, 1, true) {
			if err := w.prune(cp); err != nil {
				return err
			}
			continue
		}
		if err := w.visitEntry(fd, n, cp, &st, attrs); err != nil {
			return err
		}
	}
	return nil
}

func (w *walker) readlink(dirfd int, name string, size int64) (string, error) {
	n := max(int(size)+1, 256)
	for {
		buf := make([]byte, n)
		got, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if got < n {
			return string(buf[:got]), nil
		}
		n *= 2 // the link changed since lstat; try again with room
	}
}

// xattrs reads every extended attribute of name in dirfd (p, its full path)
// that the process may read, ACLs (system.posix_acl_*) included. A
// filesystem without xattrs has none.
func (w *walker) xattrs(dirfd int, name, p string) ([]fileindex.Xattr, error) {
	var n int
	for {
		var err error
		n, err = llistxattrAt(dirfd, name, p, w.listBuf)
		if err == nil {
			break
		}
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		if !errors.Is(err, unix.ERANGE) {
			return nil, fmt.Errorf("list: %w", err)
		}
		size, err := llistxattrAt(dirfd, name, p, nil)
		if err != nil {
			return nil, fmt.Errorf("list: %w", err)
		}
		w.listBuf = make([]byte, size*2)
	}
	if n == 0 {
		return nil, nil
	}
	var xs []fileindex.Xattr
	var firstErr error
	for attr := range strings.SplitSeq(string(w.listBuf[:n]), "\x00") {
		if attr == "" {
			continue
		}
		v, err := w.xattr(dirfd, name, p, attr)
		if err != nil {
			if errors.Is(err, unix.ENODATA) {
				continue // removed since the list was read
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("get %s: %w", attr, err)
			}
			continue
		}
		xs = append(xs, fileindex.Xattr{Name: attr, Value: v})
	}
	return xs, firstErr
}

func (w *walker) xattr(dirfd int, name, p, attr string) ([]byte, error) {
	for {
		n, err := lgetxattrAt(dirfd, name, p, attr, w.valueBuf)
		if err == nil {
			return slices.Clone(w.valueBuf[:n]), nil
		}
		if !errors.Is(err, unix.ERANGE) {
			return nil, err
		}
		size, err := lgetxattrAt(dirfd, name, p, attr, nil)
		if err != nil {
			return nil, err
		}
		w.valueBuf = make([]byte, size*2)
	}
}

// userName caches lookups, hits and misses alike: a tree has few owners
// and each lookup may read /etc/passwd or ask NSS.
func (w *walker) userName(uid uint32) string {
	if n, ok := w.users[uid]; ok {
		return n
	}
	n := ""
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		n = u.Username
	}
	w.users[uid] = n
	return n
}

func (w *walker) groupName(gid uint32) string {
	if n, ok := w.groups[gid]; ok {
		return n
	}
	n := ""
	if g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10)); err == nil {
		n = g.Name
	}
	w.groups[gid] = n
	return n
}
