package agent

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/assemble"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/tmpfile"
	"github.com/cairnbackup/cairn/media/volume"
)

// A large file backed up by blocks (package chunk) is restored from
// several sessions: the blocks its version sent with its entry, and the
// blocks it kept from earlier versions, each read where it lies. Those
// come in the reads of their own sessions, before or after the entry,
// since the plan reads each session (each tape) once, in the order the
// media want. The file is assembled in its temporary file until every
// block is in, then checked against the digest of its whole content and
// given its name and metadata, as any other file.
//
// The file waits unnamed (O_TMPFILE), its descriptor held, so that an
// agent killed in the middle leaves nothing behind; a restore with more
// such files waiting than it may hold descriptors for (maxHeldAssemblies)
// names the rest, private, in their directories, and opens them again by
// name (reopenTemp), as on a filesystem without O_TMPFILE.

// assembly is a file being put together from blocks of several reads.
type assembly struct {
	path string
	fd   int    // its unnamed file, held open; -1 when it has a name
	tmp  string // its named temporary file, in the file's directory
	made tempID // that file as the restore made it
	// Of the entry, once its FileEnd came: what endFile needs.
	e      *fileindex.Entry
	status uint8
	sum    []byte
	need   uint64 // bytes of blocks read by location the entry lists
	got    uint64 // bytes of such blocks written so far
	end    int64  // where the content ends: the end of the list's blocks
	runs   []fileindex.Run
}

// blockIn is the block whose Data records are coming.
type blockIn struct {
	a    *assembly // nil: its file is damaged, the data is dropped
	fd   int
	path string // as its BlockStart named it, for errors
	*assemble.Block
}

// blockStart takes a BlockStart: the Data records after it are a block of
// the named file, to be written at the offsets it gives.
func (r *Restorer) blockStart(body []byte) error {
	bs, err := volume.DecodeBlockStart(body)
	if err != nil {
		return fmt.Errorf("restore stream: %w", err)
	}
	if err := r.endBlock(); err != nil {
		return err
	}
	if r.cur != nil {
		r.markDamaged(r.cur.e.Path, "its FileEnd was lost: the stream moved on inside the entry")
		r.discard()
	}
	r.skipping = false
	if r.opts.OnEntry != nil {
		r.opts.OnEntry(bs.Path)
	}
	b := &blockIn{fd: -1, path: bs.Path, Block: assemble.NewBlock(bs.At, bs.Len)}
	r.blk = b
	if _, bad := r.damageOf(bs.Path); bad || !cleanEntryPath(bs.Path) || bs.Path == "/" {
		return nil
	}
	if err := r.ensureRoot(); err != nil {
		return err
	}
	if r.wk.conflicts(bs.Path) {
		r.wk.settle()
	}
	a := r.assembling[bs.Path]
	fresh := a == nil
	if fresh {
		a = &assembly{path: bs.Path, fd: -1}
	}
	fd, err := r.openAssembly(a, fresh)
	if err != nil {
		r.refuse(bs.Path, fmt.Errorf("not restored: %w", err))
		if errors.Is(err, errTempReplaced) {
			a.tmp = "" // what has the name now is not the restore's to remove
		}
		r.dropAssembly(a)
		return nil
	}
	r.assembling[bs.Path] = a
	b.a, b.fd = a, fd
	return nil
}

// errTempReplaced: a file being assembled lost its temporary file to
// another, which the restore does not write into.
var errTempReplaced = errors.New("its temporary file was removed or replaced while the restore ran (someone who can write its directory changed it): the restore wrote nothing into what took its place")

// tempID is a temporary file as the restore made it: its inode, and the
// owner the filesystem gave it (not always the restore's user: NFS with
// root_squash, or a mount with uid=).
type tempID struct {
	dev, ino uint64
	uid      uint32
}

func tempIDOf(fd int) (tempID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return tempID{}, fmt.Errorf("fstat its temporary file: %w", err)
	}
	return tempID{st.Dev, st.Ino, st.Uid}, nil
}

// reopenTemp opens by name a temporary file this restore made earlier, and
// checks that it still is that file: the same inode, a regular file with
// the same owner and one name (an inode number freed by a removal may come
// back for another file). Between the reads of two sessions it lies in the
// target directory under a name anyone who can write there may replace:
// written into, another user's file (of which they keep another name)
// would hold the restored content, readable by them before its owner and
// mode are set. Whatever keeps the name from opening as it did (removed,
// a symlink, a directory, a socket, a file leased by its owner) is the
// same: only running out of descriptors or memory is the restore's own.
func reopenTemp(dirfd int, name string, made tempID) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOMEM) {
		return -1, err
	}
	if err != nil {
		return -1, fmt.Errorf("%w (open: %w)", errTempReplaced, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || (tempID{st.Dev, st.Ino, st.Uid}) != made || st.Nlink != 1 {
		unix.Close(fd)
		return -1, errTempReplaced
	}
	return fd, nil
}

// maxHeldAssemblies is how many files waiting for blocks a restore keeps
// open: a quarter of the descriptors it may have, at most 4096.
func maxHeldAssemblies() int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return int(min(lim.Cur/4, 4096))
}

// reopenAssembly opens a's file again: a copy of its held descriptor, or
// its named temporary file, checked to be the one the restore made.
func (r *Restorer) reopenAssembly(dirfd int, a *assembly) (int, error) {
	if a.fd >= 0 {
		return unix.FcntlInt(uintptr(a.fd), unix.F_DUPFD_CLOEXEC, 0)
	}
	return reopenTemp(dirfd, a.tmp, a.made)
}

// hold keeps fd, a copy of it, as a's unnamed file, when the restore may
// hold one more.
func (r *Restorer) hold(a *assembly, fd int) bool {
	if r.held >= r.maxHeld {
		return false
	}
	kept, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return false
	}
	a.fd = kept
	r.held++
	return true
}

// forget drops a, done or lost: its held file goes with its descriptor.
func (r *Restorer) forget(a *assembly) {
	delete(r.assembling, a.path)
	if a.fd >= 0 {
		unix.Close(a.fd)
		a.fd = -1
		r.held--
	}
}

// openAssembly opens a's temporary file, creating it when fresh: unnamed
// and held where it can be.
func (r *Restorer) openAssembly(a *assembly, fresh bool) (int, error) {
	dirfd, _, err := r.parent(a.path)
	if err != nil {
		return -1, err
	}
	if !fresh {
		return r.reopenAssembly(dirfd, a)
	}
	if r.unnamed && r.held < r.maxHeld {
		fd, err := openUnnamed(dirfd, 0o600)
		switch {
		case err == nil:
			if r.hold(a, fd) {
				return fd, nil
			}
			unix.Close(fd)
		case !tmpfile.Unsupported(err):
			return -1, err
		default:
			r.unnamed = false
		}
	}
	fd, tmp, err := r.createNamed(dirfd)
	if err != nil {
		return -1, r.explainEPERM(dirfd, "", err)
	}
	a.tmp = tmp
	if a.made, err = tempIDOf(fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// blockData writes a Data record of the block under way at each offset
// the block goes to.
func (r *Restorer) blockData(off int64, data []byte) error {
	b := r.blk
	var w io.WriterAt
	if b.a != nil {
		w = assemble.FD(b.fd)
	}
	n, err := b.Write(w, off, data)
	r.bytes.Add(int64(n))
	switch {
	case b.a == nil:
	case errors.Is(err, assemble.ErrOverrun):
		r.markDamaged(b.a.path, err.Error())
		r.dropAssembly(b.a)
		b.a = nil
	case err != nil:
		return fmt.Errorf("restore %s: write: %w", b.a.path, err)
	default:
		b.a.got += n
	}
	if b.Done() {
		return r.endBlock()
	}
	return nil
}

// endBlock closes the block under way; a file whose last block it was is
// finished.
func (r *Restorer) endBlock() error {
	b := r.blk
	if b == nil {
		return nil
	}
	r.blk = nil
	if b.fd >= 0 {
		unix.Close(b.fd)
	}
	a := b.a
	if a == nil {
		return nil
	}
	if !b.Done() {
		r.markDamaged(a.path, "the data of one of its blocks ends early")
		r.dropAssembly(a)
		return nil
	}
	if a.e == nil || a.got < a.need {
		return nil // more to come
	}
	dirfd, name, err := r.parent(a.path)
	if err != nil {
		r.refuse(a.path, fmt.Errorf("not restored: %w", err))
		r.dropAssembly(a)
		return nil
	}
	fd, err := r.reopenAssembly(dirfd, a)
	if errors.Is(err, errTempReplaced) {
		r.refuse(a.path, fmt.Errorf("not restored: %w", err))
		a.tmp = "" // what has the name now is not the restore's to remove
		r.dropAssembly(a)
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore %s: reopen its temporary file: %w", a.path, err)
	}
	r.forget(a)
	r.cur = &current{e: *a.e, fd: fd, tmp: a.tmp, dirfd: dirfd, name: name, end: a.end, assembled: true, runs: a.runs}
	return r.endFile(a.status, a.sum)
}

// endByBlocks ends the entry under way, a file whose block list names
// blocks in other sessions: it is finished now if they all came, and
// otherwise waits for them with its temporary file.
func (r *Restorer) endByBlocks(status uint8, sum []byte, bl *fileindex.BlockList) error {
	c := r.cur
	if c.w != nil {
		// Its content so far is written; the rest is Record's.
		r.wk.wait(c.w, opHandBack)
		c.w = nil
	}
	if bl.End() > uint64(max(c.e.Size, 0)) {
		// As a Data record past the size: the runs are read back and
		// hashed, and a list of a few bytes could claim a terabyte.
		r.markDamaged(c.e.Path, fmt.Sprintf("its block list runs to offset %d, past the file's size %d", bl.End(), c.e.Size))
		if a := r.assembling[c.e.Path]; a != nil {
			r.forget(a) // its blocks that came are in c's file
		}
		r.discard()
		return nil
	}
	need := assemble.Kept(bl)
	a := r.assembling[c.e.Path]
	if a == nil && c.tmp == "" {
		a = &assembly{path: c.e.Path, fd: -1}
		if !r.hold(a, c.fd) {
			a = nil
		}
	}
	if a == nil {
		if c.tmp == "" {
			// It waits closed, to be opened again by this name, and
			// private, as a named temporary file is made: unnamed, it
			// was made with the permissions it will have.
			err := unix.Fchmod(c.fd, 0o600)
			var tmp string
			if err == nil {
				tmp, err = r.linkTemp(c.fd, c.dirfd)
			}
			if err != nil {
				// Another user who may write the directory's parent
				// removed it meanwhile (unnamed, the file kept it
				// empty): this entry is lost, the others are not.
				r.refuse(c.e.Path, fmt.Errorf("not restored: its temporary file could not be named: %w", r.explainEPERM(c.dirfd, "", err)))
				r.discard()
				return nil
			}
			c.tmp = tmp
		}
		made, err := tempIDOf(c.fd)
		if err != nil {
			return fmt.Errorf("restore %s: %w", c.e.Path, err)
		}
		a = &assembly{path: c.e.Path, fd: -1, tmp: c.tmp, made: made}
	}
	a.need = need
	c.assembled, c.runs = true, bl.Runs
	c.end = max(c.end, int64(bl.End()))
	if a.got >= need {
		r.forget(a)
		return r.endFile(status, sum)
	}
	e := c.e
	a.e, a.status, a.sum = &e, status, append([]byte(nil), sum...)
	a.end, a.runs = c.end, c.runs
	r.assembling[a.path] = a
	unix.Close(c.fd)
	r.cur = nil
	if c.dir != nil {
		c.dir.release()
	}
	return nil
}

// dropAssembly forgets a and removes its temporary file.
func (r *Restorer) dropAssembly(a *assembly) {
	r.forget(a)
	if a.tmp == "" {
		return
	}
	if dirfd, _, err := r.parent(a.path); err == nil {
		unix.Unlinkat(dirfd, a.tmp, 0)
	}
}

// finishAssemblies names the files whose blocks did not all come.
func (r *Restorer) finishAssemblies() {
	for _, a := range r.assembling {
		if a.e != nil {
			r.markDamaged(a.path, fmt.Sprintf("%d of the %d bytes of its blocks kept from earlier backups did not come", a.need-a.got, a.need))
		}
		r.dropAssembly(a)
	}
}
