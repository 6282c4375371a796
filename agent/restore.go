package agent

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/assemble"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/tmpfile"
	"github.com/cairnbackup/cairn/media/volume"
)

// How a restore touches the filesystem
//
// A restore runs as root and writes where other users may write too: a
// forced target can hold a world-writable directory, and the backup gives
// entries to other users, who own them from their chown on while the
// restore goes on. Any of them can replace a name the restore has just made
// with a symlink, or a directory on the way to it, between two system calls.
// A call that resolves a name may then act on what that user put there: a
// chmod of a fifo's name once made a root-owned 0600 file world-writable
// through a swapped symlink, and an lsetxattr of a full path walked through a
// swapped directory. So, for every call here and in restore_fd.go:
//
//   - A name is resolved only in an open directory, one component at a time,
//     with O_NOFOLLOW: no walk goes through a symlink. The target itself is
//     named by whoever runs the restore; it is opened once, and its last
//     component is not followed either.
//   - What the restore creates it holds by a descriptor at once: a regular
//     file is created unnamed (O_TMPFILE) and linked into place when its
//     hash matches, or, where the filesystem or a missing /proc allows no
//     unnamed file, created O_EXCL under a temporary name and renamed into
//     place; a fifo, device or symlink is opened O_PATH and
//     O_NOFOLLOW right after mknodat or symlinkat and checked to be what was
//     made (type, one name, device numbers, symlink target); a directory
//     made is checked to be empty, and its device and inode are kept for
//     Finish, which checks them again.
//   - Every change of owner, xattrs, mode and times then goes to that
//     descriptor, never to a name: fchown, fsetxattr, fchmod, futimens on an
//     open file or directory; on an O_PATH descriptor fchownat, fchmodat2
//     and utimensat with AT_EMPTY_PATH, and /proc/self/fd/N where the kernel
//     has no such call (setxattr; chmod before Linux 6.6), a magic link that
//     leads to the inode itself, not to a name.
//   - A hard link is made from a descriptor of its target, checked against
//     the inode the restore wrote, so a name swapped meanwhile is never
//     linked.
//   - Owner before mode, since chown clears setuid and setgid; xattrs after
//     chown, which clears file capabilities.
//   - Inode flags (chattr) last, with FS_IOC_SETFLAGS on the descriptor: an
//     immutable or append-only inode takes no change after them, not even
//     a rename or a link. A file gets them once named; one
//     with further names, at Finish once they are linked (reopened from
//     /proc/self/fd of its O_PATH descriptor, the ioctl wanting a file
//     open for reading); a directory after its mode and times, children
//     first. An immutable or append-only inode in a forced target is not
//     the restore's to clear: the entry is refused, saying so. An
//     append-only directory takes a new name (an unnamed file linked in),
//     not a replacement of a name it holds.
//
// What another user can still do is what the directory lets them do anyway:
// move or remove names in it, so an entry may be lost (it is refused, with a
// warning), and in a directory where they may move anything, swap two
// entries of the restore for each other. The restore never changes an inode
// it did not create or, for a directory kept in a forced target, did not
// reach by that walk.

// RestoreOptions configures a Restorer.
type RestoreOptions struct {
	// Root is the directory to restore into: the entry /srv/data/x lands
	// at Root/srv/data/x. It is created, with its parents, when the first
	// entry arrives.
	Root string
	// Force allows a Root that exists and is not empty; restored entries
	// then replace what is in their way.
	Force bool
	// Devices restores block and character device nodes. Without it they
	// are refused: a device node of a volume restored as root would give
	// whoever it belongs to the disk or memory it names.
	Devices bool
	// Logger gets warnings and damage; nil discards them.
	Logger *slog.Logger
	// Admit, when set, is asked before each record is applied: an error
	// stops the restore there, with that error from Record, and Finish
	// then writes nothing more to the target. The agent refuses once the
	// servers ended the job.
	Admit func() error
	// OnEntry, when set, is told the path of every entry whose FileHeader
	// comes, for the caller's accounting of what it asked for.
	OnEntry func(path string)
}

// TargetNotEmptyError refuses to restore into a directory that holds
// something, so a restore never mixes with or overwrites files by accident.
type TargetNotEmptyError struct{ Root string }

func (e *TargetNotEmptyError) Error() string {
	return fmt.Sprintf("restore target %s is not empty; choose an empty directory or pass --force", e.Root)
}

// Damage is an entry that was not restored because its data was lost or
// does not match its hash.
type Damage struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// RestoreStats counts what a Restorer did so far.
type RestoreStats struct {
	Files    int64 `json:"files"`    // regular files restored
	Dirs     int64 `json:"dirs"`     // directories restored
	Links    int64 `json:"links"`    // symlinks and hard links restored
	Specials int64 `json:"specials"` // fifos and devices restored
	Bytes    int64 `json:"bytes"`    // content bytes written
	// Damaged are the first MaxWarnings of DamagedCount: the entries not
	// restored because their data is lost.
	Damaged      []Damage `json:"damaged,omitempty"`
	DamagedCount int64    `json:"damaged_count"`
	// Warnings are the first MaxWarnings of WarningCount: metadata that
	// could not be applied, entries refused or left out.
	Warnings     []Warning `json:"warnings,omitempty"`
	WarningCount int64     `json:"warning_count"`
	// Refused counts the entries that were not restored, though their
	// data was fine: refused (a device without Devices, a path that could
	// leave the target) or failed (the target would not take them, another
	// user replaced them meanwhile). Each also has a warning.
	Refused int64 `json:"refused"`
}

// Restorer writes the records of a restore stream to disk. Record,
// Records, Damaged and Finish are called from one goroutine; Stats from
// any.
//
// An error from Record is fatal to the restore (the stream is malformed, or
// the target cannot be written, as when the disk is full); a problem with
// one entry is a warning or a damage, and the restore goes on. Call Finish
// also after a failed stream: it removes the partial file of an entry left
// open and applies what it can.
type Restorer struct {
	opts  RestoreOptions
	log   *slog.Logger
	root  string
	owner bool // running as root: restore owners and devices

	rootFd   int  // -1 until the first entry creates the root
	rootMade bool // the restore created the root
	dirPath  string
	dir      *dirRef // the last parent directory, open; nil when none
	cur      *current
	skipping bool // drop records until the next FileHeader
	// assembling are the large files whose blocks come in several reads,
	// by path; blk is the block whose Data records are coming.
	assembling map[string]*assembly
	blk        *blockIn
	// held counts the assemblies kept open and unnamed, at most
	// maxHeld; past it they wait under a temporary name.
	held, maxHeld int
	// unnamed: regular files are created without a name (createTemp);
	// tmpSeq and pid make the names of those that have one.
	unnamed bool
	tmpSeq  atomic.Uint64
	pid     string
	// hash digests the content of a file Record writes itself (one
	// assembled from blocks); wk are the workers that write the others
	// (restore_workers.go), frame the copy of the records being applied.
	hash  *contentHash
	wk    *workers
	frame *frameBuf

	dirs  []dirMeta
	links []linkReq
	// ancestors are the directories the plan reads only because they lie
	// above what was chosen (Ancestor); madeDirs, those the restore
	// created, as parents of an entry that came first or for their entry.
	ancestors map[string]bool
	madeDirs  map[inodeID]bool
	stopped   error // what Admit said: the restore stopped

	refused atomic.Int64 // entries not restored for a reason other than damage

	files, dirsN, linksN, specials, bytes atomic.Int64
	// admitMu serializes Admit, which the workers call too.
	admitMu sync.Mutex
	// mu guards what the workers change too.
	mu          sync.Mutex
	linkable    map[string]inodeID // restored files that have further names
	lateFlags   []lateFlags
	damaged     map[string]string // path -> reason
	damage      []Damage
	damageCount int64
	warnings    []Warning
	warnCount   int64
}

// current is the entry between its FileHeader and its FileEnd.
type current struct {
	e       fileindex.Entry
	fd      int    // the temporary file of a regular file; -1 otherwise
	tmp     string // its name in dirfd
	dirfd   int
	name    string
	hashed  int64 // content hashed so far, from offset 0
	end     int64 // end of the last Data record
	badData string
	// w is the worker the file is handed to, nil while Record writes it
	// itself; dir, the reference to dirfd the file holds meanwhile.
	w   *fileWorker
	dir *dirRef
	// assembled: the content came from several reads (assembly), and is
	// checked by reading it back, not as it was written.
	assembled bool
	// runs: of an assembled file with holes, where its data lies.
	runs []fileindex.Run
}

type dirMeta struct {
	path         string
	id           inodeID // the directory restored, checked again at Finish
	mode         uint32
	flags        uint32
	atime, mtime int64
	xattrs       []fileindex.Xattr
}

// inodeID names an inode for as long as it lives.
type inodeID struct{ dev, ino uint64 }

func idOf(st *unix.Stat_t) inodeID { return inodeID{dev: uint64(st.Dev), ino: st.Ino} }

// fdID is the inode open on fd.
func fdID(fd int) (inodeID, error) {
	var st unix.Stat_t
	err := unix.Fstat(fd, &st)
	return idOf(&st), err
}

type linkReq struct{ path, target string }

// NewRestorer checks the target and prepares a restore into it.
func NewRestorer(opts RestoreOptions) (*Restorer, error) {
	if opts.Root == "" {
		return nil, errors.New("restore target is empty: give the directory to restore into")
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("restore target %s: %w", opts.Root, err)
	}
	// A target given as a symlink is the directory it names: from here on
	// its last component is not followed (see ensureRoot).
	if resolved, err := filepath.EvalSymlinks(root); err == nil {
		root = resolved
	}
	fi, err := os.Stat(root)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("restore target %s: %w", root, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("restore target %s exists and is not a directory; choose a directory", root)
	case !opts.Force:
		f, err := os.Open(root)
		if err != nil {
			return nil, fmt.Errorf("restore target %s: %w", root, err)
		}
		names, _ := f.Readdirnames(1)
		f.Close()
		if len(names) > 0 {
			return nil, &TargetNotEmptyError{Root: root}
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Restorer{
		opts: opts, log: log, root: root, owner: os.Geteuid() == 0,
		rootFd: -1, hash: newContentHash(), unnamed: preferUnnamedFiles && procAvailable(), pid: strconv.Itoa(os.Getpid()),
		linkable: map[string]inodeID{}, damaged: map[string]string{}, assembling: map[string]*assembly{},
		ancestors: map[string]bool{}, madeDirs: map[inodeID]bool{}, maxHeld: maxHeldAssemblies(),
	}, nil
}

// Stats may be called at any time, also during the restore, for progress.
func (r *Restorer) Stats() RestoreStats {
	st := RestoreStats{
		Files: r.files.Load(), Dirs: r.dirsN.Load(), Links: r.linksN.Load(),
		Specials: r.specials.Load(), Bytes: r.bytes.Load(), Refused: r.refused.Load(),
	}
	r.mu.Lock()
	st.Damaged = slices.Clone(r.damage)
	st.DamagedCount = r.damageCount
	st.Warnings = slices.Clone(r.warnings)
	st.WarningCount = r.warnCount
	r.mu.Unlock()
	return st
}

func (r *Restorer) warn(p string, err error) {
	r.mu.Lock()
	r.warnCount++
	if len(r.warnings) < MaxWarnings {
		r.warnings = append(r.warnings, Warning{Path: p, Err: err.Error()})
	}
	r.mu.Unlock()
	r.log.Warn("restore warning", "path", p, "err", err)
}

// refuse reports an entry that is not restored, for a reason other than
// its data: it is counted apart, so the restore does not end as a success.
func (r *Restorer) refuse(p string, err error) {
	r.refused.Add(1)
	r.warn(p, err)
}

// Ancestor says that the directory p, when its entry comes, is read only
// because it lies above a path chosen for the restore: missing, it is
// created with its metadata like any directory; there already, and not
// created by this restore, it is left exactly as it is, since it belongs to
// the tree restored into (an in-place restore of /home/bob/.ssh must not
// change /home), and a non-directory there is not replaced.
func (r *Restorer) Ancestor(p string) { r.ancestors[p] = true }

// Damaged marks an entry whose data was lost, as the storage node reports
// for a corrupt block: if it is the entry being written, its partial file
// is removed and its remaining records are dropped. The entry is reported
// in the stats.
func (r *Restorer) Damaged(p, reason string) {
	if r.cur != nil && r.cur.e.Path == p {
		r.discard()
		r.skipping = true
	}
	if r.blk != nil && r.blk.a != nil && r.blk.a.path == p {
		unix.Close(r.blk.fd)
		r.blk.fd, r.blk.a = -1, nil
	}
	if a := r.assembling[p]; a != nil {
		r.dropAssembly(a)
	}
	r.markDamaged(p, reason)
}

func (r *Restorer) markDamaged(p, reason string) {
	r.mu.Lock()
	if _, dup := r.damaged[p]; dup {
		r.mu.Unlock()
		return
	}
	r.damaged[p] = reason
	r.damageCount++
	if len(r.damage) < MaxWarnings {
		r.damage = append(r.damage, Damage{Path: p, Reason: reason})
	}
	r.mu.Unlock()
	r.log.Error("entry not restored: damaged", "path", p, "reason", reason)
}

// admit asks Admit whether the restore may still write; nil without one.
// A worker asks too before it writes or names a file, since the servers may
// have ended the job after the file's records came and before the worker
// got to it (the agent's process stopped meanwhile, say).
func (r *Restorer) admit() error {
	if r.opts.Admit == nil {
		return nil
	}
	r.admitMu.Lock()
	defer r.admitMu.Unlock()
	return r.opts.Admit()
}

// damageOf is why p was named damaged, if it was.
func (r *Restorer) damageOf(p string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reason, ok := r.damaged[p]
	return reason, ok
}

// Records feeds a batch of whole records, as a Records frame carries them.
// The batch is the caller's again when it returns.
func (r *Restorer) Records(batch []byte) error {
	return r.inFrame(batch, nil, r.records)
}

// RecordsLent is Records with a batch the Restorer keeps, without a copy,
// until it calls giveBack(batch), from any goroutine; the caller changes
// nothing of it before.
func (r *Restorer) RecordsLent(batch []byte, giveBack func([]byte)) error {
	return r.inFrame(batch, giveBack, r.records)
}

func (r *Restorer) records(batch []byte) error {
	for len(batch) > 0 {
		t, body, n, err := volume.ParseRestoreRecord(batch)
		if err != nil {
			return fmt.Errorf("restore stream: %w", err)
		}
		if err := r.record(t, body); err != nil {
			return err
		}
		batch = batch[n:]
	}
	return nil
}

// Record consumes one record, in stream order: per entry a FileHeader,
// Data records for a regular file, and a FileEnd, which applies the entry.
// The body is the caller's again when it returns.
func (r *Restorer) Record(t volume.RecordType, body []byte) error {
	return r.inFrame(body, nil, func(body []byte) error { return r.record(t, body) })
}

// inFrame applies b from a copy the workers can hold slices of, or from b
// itself when it is lent (giveBack), and sends them what it gave them.
func (r *Restorer) inFrame(b []byte, giveBack func([]byte), apply func([]byte) error) error {
	f := r.startWorkers().frameOf(b, giveBack)
	r.frame = f
	defer func() {
		r.frame = nil
		r.wk.flush()
		f.release()
	}()
	return apply(f.b)
}

func (r *Restorer) record(t volume.RecordType, body []byte) error {
	if r.stopped != nil {
		return r.stopped
	}
	if err := r.wk.failed(); err != nil {
		return err
	}
	if err := r.admit(); err != nil {
		r.stopped = err
		r.wk.halt.Store(true)
		return err
	}
	if t == volume.RecBlockStart {
		return r.blockStart(body)
	}
	if r.blk != nil {
		if t == volume.RecData {
			off, data, err := volume.DecodeData(body)
			if err != nil {
				// Not r.blk.a's path: a block of a path refused or
				// already lost has no assembly.
				return fmt.Errorf("restore stream: a block of %q: %w", r.blk.path, err)
			}
			return r.blockData(off, data)
		}
		if err := r.endBlock(); err != nil {
			return err
		}
	}
	switch t {
	case volume.RecFileHeader:
		if r.cur != nil {
			r.markDamaged(r.cur.e.Path, "its FileEnd was lost: the stream moved on inside the entry")
			r.discard()
		}
		r.skipping = false
		e, err := fileindex.DecodeEntry(body)
		if err != nil {
			return fmt.Errorf("restore stream: FileHeader: %w", err)
		}
		if r.opts.OnEntry != nil {
			r.opts.OnEntry(e.Path)
		}
		return r.begin(&e)
	case volume.RecData:
		if r.skipping {
			return nil
		}
		if r.cur == nil || r.cur.fd < 0 {
			return fmt.Errorf("restore stream: %w: a Data record outside a regular file's records", volume.ErrBadRecord)
		}
		off, data, err := volume.DecodeData(body)
		if err != nil {
			return fmt.Errorf("restore stream: %s: %w", r.cur.e.Path, err)
		}
		return r.write(off, data)
	case volume.RecFileEnd:
		if r.skipping {
			r.skipping = false
			return nil
		}
		if r.cur == nil {
			return fmt.Errorf("restore stream: %w: a FileEnd without its FileHeader", volume.ErrBadRecord)
		}
		status, sum, blocks, err := volume.DecodeFileEnd(body)
		if err != nil {
			return fmt.Errorf("restore stream: %s: %w", r.cur.e.Path, err)
		}
		if blocks != nil && r.cur.e.Type == fileindex.TypeFile && r.cur.fd >= 0 && len(blocks.Sessions) > 0 {
			return r.endByBlocks(status, sum, blocks)
		}
		return r.end(status, sum)
	}
	return fmt.Errorf("restore stream: %w: record type %d", volume.ErrBadRecord, t)
}

// cleanEntryPath reports whether p names a path inside the target: absolute,
// clean, with no "..", so Root+p cannot climb out of Root.
func cleanEntryPath(p string) bool {
	return strings.HasPrefix(p, "/") && path.Clean(p) == p && !strings.ContainsRune(p, 0)
}

func (r *Restorer) begin(e *fileindex.Entry) error {
	if e.Type == fileindex.TypeDeleted {
		r.skipping = true // a restore brings back a tree; a tombstone has nothing to write
		return nil
	}
	if !cleanEntryPath(e.Path) || (e.Path == "/" && e.Type != fileindex.TypeDir) {
		r.refuse(e.Path, errors.New("refused: the path is not clean and absolute, it could escape the restore target"))
		r.skipping = true
		return nil
	}
	if err := r.ensureRoot(); err != nil {
		return err
	}
	if r.wk.conflicts(e.Path) {
		r.wk.settle()
	}
	c := &current{e: *e, fd: -1, dirfd: -1}
	if e.Path != "/" {
		fd, name, err := r.parent(e.Path)
		if err != nil {
			r.refuse(e.Path, fmt.Errorf("not restored: %w", err))
			r.skipping = true
			return nil
		}
		c.dirfd, c.name = fd, name
	}
	if a := r.assembling[e.Path]; a != nil && e.Type == fileindex.TypeFile {
		// Blocks of it came first, in the reads of earlier sessions.
		fd, err := r.reopenAssembly(c.dirfd, a)
		if errors.Is(err, errTempReplaced) {
			r.refuse(e.Path, fmt.Errorf("not restored: %w", err))
			r.forget(a)
			r.skipping = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("restore %s: reopen its temporary file: %w", e.Path, err)
		}
		// Its content is read back and checked once the last block is
		// in (place): hashing the entry's own records as they come, and
		// the zeros before each, would be work thrown away.
		c.fd, c.tmp, c.assembled = fd, a.tmp, true
		r.hash.reset()
		r.cur = c
		return nil
	}
	if e.Type == fileindex.TypeFile {
		fd, tmp, err := r.createTemp(c.dirfd, e.Mode)
		if errors.Is(err, unix.EPERM) {
			// An immutable or append-only directory in a forced
			// target: this entry cannot go there, the others can.
			r.refuse(e.Path, fmt.Errorf("not restored: %w", r.explainEPERM(c.dirfd, c.name, err)))
			r.skipping = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("restore %s: create a temporary file in %s: %w", e.Path, r.full(path.Dir(e.Path)), err)
		}
		c.fd, c.tmp = fd, tmp
		if early := e.Flags & shapingFlags; early != 0 {
			// Errors are told when all the flags are set, at the end.
			if cur, err := unix.IoctlGetUint32(c.fd, unix.FS_IOC_GETFLAGS); err == nil {
				_ = unix.IoctlSetPointerInt(c.fd, unix.FS_IOC_SETFLAGS, int(cur|early))
			}
		}
		r.handOver(c)
	}
	r.cur = c
	return nil
}

// handOver gives the file c, just created, to a worker, which writes,
// checks and names it; Record goes on with the stream.
func (r *Restorer) handOver(c *current) {
	wk := r.wk
	if len(wk.inflight) >= maxInflight {
		wk.settle()
	}
	wk.inflight[c.e.Path] = true
	c.w, c.dir = wk.pick(), r.dir.hold()
}

// beforePlace, in tests, runs as a file's content is checked: where, and
// while what else goes on.
var beforePlace func(path string)

// handOverAssembled gives a file assembled from blocks, whose temporary
// file Record holds again, to a worker to check and name. Its check reads
// all of it back and hashes it: on Record's goroutine that held up the
// stream for every changed large file of a chain, one after another, while
// the workers waited.
func (r *Restorer) handOverAssembled(c *current) {
	wk := r.wk
	if len(wk.inflight) >= maxInflight {
		wk.settle()
	}
	wk.inflight[c.e.Path] = true
	c.w = wk.pick()
	if c.dir == nil {
		c.dir = r.dir.hold() // the parent r.parent opened it in, still current
	}
}

func (r *Restorer) full(p string) string {
	if p == "/" {
		return r.root
	}
	return r.root + p
}

// ensureRoot creates the target on the first entry, so a restore that fails
// before any data (a wrong key, a missing volume) leaves nothing behind. It
// is created 0700: what lands in it keeps its own modes, and until then
// nobody else should read it.
//
// Its parents are the path its caller gave; its last component is opened
// without following, and checked again, since another user may have put
// something there after NewRestorer looked (in /tmp, say).
func (r *Restorer) ensureRoot() error {
	if r.rootFd >= 0 {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(r.root), 0o700); err != nil {
		return fmt.Errorf("create restore target: %w", err)
	}
	made := false
	if r.root != "/" {
		err := unix.Mkdir(r.root, 0o700)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create restore target %s: %w", r.root, err)
		}
		made = err == nil
	}
	fd, err := unix.Open(r.root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("restore target %s was replaced by a symlink or a file after the restore started; choose a directory only you can write in", r.root)
	}
	if err != nil {
		return fmt.Errorf("open restore target %s: %w", r.root, err)
	}
	switch {
	case made:
		err = checkMadeDir(fd)
		if errors.Is(err, ErrReplaced) {
			err = fmt.Errorf("restore target %s was replaced after the restore created it; choose a directory only you can write in", r.root)
		}
	case !r.opts.Force:
		if names, derr := dirNames(fd, 1); derr != nil {
			err = derr
		} else if len(names) > 0 {
			err = &TargetNotEmptyError{Root: r.root}
		}
	}
	if err != nil {
		unix.Close(fd)
		return err
	}
	r.rootFd, r.rootMade = fd, made
	return nil
}

// dirNames reads up to max names of the directory open on fd ("." and ".."
// left out).
func dirNames(fd, max int) ([]string, error) {
	var names []string
	buf := make([]byte, 4096)
	for len(names) < max {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], max-len(names), names)
	}
	return names, nil
}

// openDir opens the directory p (an entry path) below the root one
// component at a time with O_NOFOLLOW, creating what is missing, so a
// symlink restored earlier (or planted in a forced target) can never lead a
// later entry outside the root. The caller closes the fd.
func (r *Restorer) openDir(p string) (int, error) {
	fd, err := unix.Dup(r.rootFd)
	if err != nil {
		return -1, err
	}
	if p == "/" {
		return fd, nil
	}
	for comp := range strings.SplitSeq(p[1:], "/") {
		next, err := openDirAt(fd, comp)
		if errors.Is(err, unix.ENOENT) {
			// Mode and times of directories with an entry come at
			// Finish; one without (above a backed-up path) keeps these.
			err = unix.Mkdirat(fd, comp, 0o755)
			made := err == nil
			if err == nil || errors.Is(err, unix.EEXIST) {
				next, err = openDirAt(fd, comp)
			}
			if made && err == nil {
				if err = checkMadeDir(next); err != nil {
					unix.Close(next)
				} else if id, ierr := fdID(next); ierr == nil {
					r.madeDirs[id] = true
				}
			}
		}
		unix.Close(fd)
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return -1, fmt.Errorf("%s in the restore target is not a directory (a symlink or a file is in the way)", r.full(p))
		}
		if err != nil {
			return -1, fmt.Errorf("directory %s: %w", r.full(p), err)
		}
		fd = next
	}
	return fd, nil
}

// parent returns the open directory that holds p, and p's name in it.
// Entries come grouped by directory, so the last one stays open.
func (r *Restorer) parent(p string) (int, string, error) {
	dir, name := path.Split(p)
	if dir != "/" {
		dir = dir[:len(dir)-1]
	}
	if r.dir != nil && dir == r.dirPath {
		return r.dir.fd, name, nil
	}
	r.closeDir()
	if r.wk.conflicts(dir) {
		r.wk.settle() // a worker may still be naming a file in the way
	}
	fd, err := r.openDir(dir)
	if err != nil {
		return -1, "", err
	}
	r.dir, r.dirPath = newDirRef(fd), dir
	return fd, name, nil
}

func (r *Restorer) closeDir() {
	if r.dir != nil {
		r.dir.release()
		r.dir, r.dirPath = nil, ""
	}
}

func (r *Restorer) write(off int64, data []byte) error {
	c := r.cur
	if off < 0 || off > c.e.Size-int64(len(data)) {
		// A backup reads no further than the size its FileHeader gave,
		// and a file with a hole is read back to be checked, to its
		// size: data past the end would stretch that to 2^63 bytes.
		c.badData = fmt.Sprintf("a data record at offset %d runs past the file's size %d", off, c.e.Size)
		return nil
	}
	if c.badData != "" {
		return nil
	}
	if off < c.hashed {
		c.badData = fmt.Sprintf("its data records overlap or come out of order at offset %d", off)
	}
	// A hole before the record has the file read back to be checked
	// (contentHash.gap).
	hole := c.badData == "" && off > c.hashed
	if c.badData == "" {
		c.hashed = off + int64(len(data))
	}
	c.end = max(c.end, off+int64(len(data)))
	if c.w != nil {
		r.wk.send(c.w, fileOp{kind: opData, c: c, off: off, hole: hole, data: data, frame: r.frame})
		return nil
	}
	if err := writeHashed(r.hash, c, off, hole, data); err != nil {
		return err
	}
	r.bytes.Add(int64(len(data)))
	return nil
}

// discard drops the entry being written and its temporary file.
func (r *Restorer) discard() {
	c := r.cur
	r.cur = nil
	if c == nil {
		return
	}
	if c.w != nil {
		r.wk.send(c.w, fileOp{kind: opDiscard, c: c})
		return
	}
	removeTemp(c)
	if c.dir != nil {
		c.dir.release()
	}
}

func (r *Restorer) end(status uint8, sum []byte) error {
	c := r.cur
	switch c.e.Type {
	case fileindex.TypeFile:
		return r.endFile(status, sum)
	case fileindex.TypeHardlink:
		if !cleanEntryPath(c.e.Target) || c.e.Target == "/" {
			r.refuse(c.e.Path, fmt.Errorf("hard link refused: its target %q is not a clean absolute path", c.e.Target))
		} else {
			// The target may come later (a chain restore reads its
			// sessions one after another): link at Finish.
			r.links = append(r.links, linkReq{path: c.e.Path, target: c.e.Target})
		}
		r.cur = nil
		return nil
	}
	r.cur = nil
	return r.makeOther(c)
}

// endFile ends the regular file under way: its worker checks and names it,
// or Record itself when it writes the file.
func (r *Restorer) endFile(status uint8, sum []byte) error {
	c := r.cur
	r.cur = nil
	if c.w == nil && c.assembled && r.wk != nil {
		r.handOverAssembled(c)
	}
	if c.w != nil {
		r.wk.send(c.w, fileOp{kind: opEnd, c: c, status: status, sum: sum, frame: r.frame})
		return nil
	}
	err := r.place(c, status, sum, r.hash)
	if c.dir != nil {
		c.dir.release()
	}
	return err
}

// place checks the content of the regular file c against sum and, if it
// holds, gives the file its metadata and its name. h digested the content
// as it was written, unless c was assembled from blocks: then it is read
// back. An error is fatal to the restore; a file that does not check is
// named damaged and removed.
func (r *Restorer) place(c *current, status uint8, sum []byte, h *contentHash) error {
	e := &c.e
	if beforePlace != nil {
		beforePlace(e.Path)
	}
	size := e.Size
	if status != volume.EndOK {
		// The backup read only part of the file; its content is what
		// came, and the hash covers just that.
		size = c.end
		r.warn(e.Path, errors.New("restored incomplete: the file changed or could not be read during the backup"))
	}
	var got []byte
	switch {
	case (c.assembled || h.gap) && e.HashKind == fileindex.HashSHA256:
		var err error
		if got, err = assemble.HashFile(assemble.FD(c.fd), size); err != nil {
			removeTemp(c)
			return fmt.Errorf("restore %s: read back its content: %w", e.Path, err)
		}
	case c.assembled && e.HashKind == fileindex.HashSparseSHA256:
		var err error
		if got, err = assemble.HashRuns(assemble.FD(c.fd), c.runs, size); err != nil {
			removeTemp(c)
			return fmt.Errorf("restore %s: read back its content: %w", e.Path, err)
		}
	case e.HashKind == fileindex.HashSHA256:
		if c.badData == "" && size > c.hashed {
			hashZeros(h.sum, size-c.hashed) // a trailing hole
		}
		got = h.sum.Sum(h.buf[:0])
	case e.HashKind == fileindex.HashSparseSHA256:
		got = h.sparse.Sum(h.buf[:0], size)
	default:
		if len(sum) > 0 {
			r.warn(e.Path, fmt.Errorf("content restored unchecked: its digest is of a kind (%v) this program does not know; a newer one checks it", e.HashKind))
		}
		sum = nil
	}
	switch {
	case c.badData != "":
		r.markDamaged(e.Path, c.badData)
		removeTemp(c)
		return nil
	case len(sum) > 0 && !bytes.Equal(got, sum):
		what := "SHA-256"
		if e.HashKind == fileindex.HashSparseSHA256 {
			what = "SHA-256 of its data regions and their map"
		}
		r.markDamaged(e.Path, fmt.Sprintf("content does not match its %s (got %x, want %x)", what, got, sum))
		removeTemp(c)
		return nil
	}
	if c.end < size || c.runs != nil {
		// Holes stay holes: the size comes from ftruncate, not zeros.
		if err := unix.Ftruncate(c.fd, size); err != nil {
			removeTemp(c)
			return fmt.Errorf("restore %s: truncate: %w", e.Path, err)
		}
	}
	// The file open since its create (unnamed, or O_EXCL) takes all of
	// its metadata, but for what it has already: most files are made
	// with their owner and mode, and a chown and a chmod of each were a
	// tenth of the system time of a restore of many small files.
	f := pinned{fd: c.fd}
	f.known = unix.Fstat(c.fd, &f.st) == nil
	r.applyMeta(&f, e, r.owner)
	// Inode flags come last, and an immutable or append-only file can
	// be neither renamed nor linked to: its flags go to the descriptor
	// once it has its name, or for a file with further names to come, at
	// Finish, once they are made.
	flagsNow := e.Flags != 0 && (e.NLink <= 1 || e.Flags&protectingFlags == 0)
	// Finish finds such a file again by its inode.
	var id inodeID
	if e.NLink > 1 || (e.Flags != 0 && !flagsNow) {
		var err error
		if id, err = fdID(c.fd); err != nil {
			removeTemp(c)
			return fmt.Errorf("restore %s: stat: %w", e.Path, err)
		}
	}
	if e.Flags != 0 && !flagsNow {
		r.mu.Lock()
		r.lateFlags = append(r.lateFlags, lateFlags{path: e.Path, id: id, flags: e.Flags})
		r.mu.Unlock()
	}
	if !flagsNow && c.tmp != "" {
		if err := unix.Close(c.fd); err != nil {
			c.fd = -1
			unix.Unlinkat(c.dirfd, c.tmp, 0)
			return fmt.Errorf("restore %s: close: %w", e.Path, err)
		}
		c.fd = -1
	}
	if err := r.nameFile(c); err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
			c.fd = -1
		}
		if c.tmp != "" {
			unix.Unlinkat(c.dirfd, c.tmp, 0)
		}
		r.refuse(e.Path, fmt.Errorf("not restored: %w", r.explainEPERM(c.dirfd, c.name, err)))
		return nil
	}
	if c.fd >= 0 {
		if flagsNow {
			r.setFlags(c.fd, e.Path, e.Flags)
		}
		err := unix.Close(c.fd)
		c.fd = -1
		if err != nil {
			return fmt.Errorf("restore %s: close: %w", e.Path, err)
		}
	}
	if e.NLink > 1 {
		r.mu.Lock()
		r.linkable[e.Path] = id
		r.mu.Unlock()
	}
	r.files.Add(1)
	return nil
}

// createTemp creates the file an entry's content is written to until it
// checks: unnamed (O_TMPFILE) where it can be, so that no one reaches it by
// a name meanwhile and a restore killed halfway leaves nothing behind; and
// it costs less than a name made and then renamed: the restore of the bench
// tree (50,000 files) took 11-16% less CPU (bench/README.md, "Unnamed
// files").
// Otherwise, and from the first filesystem that takes no unnamed file on,
// it is created O_EXCL under a temporary name, which it returns.
func (r *Restorer) createTemp(dirfd int, mode uint32) (int, string, error) {
	if r.unnamed {
		// Made with its permissions already (the umask allowing), the
		// file needs no chmod at the end; never writable by others, for
		// a name it may get while it waits for blocks. No one else can
		// open it while it has none.
		fd, err := openUnnamed(dirfd, mode&0o755)
		if !tmpfile.Unsupported(err) {
			return fd, "", err
		}
		r.unnamed = false
	}
	return r.createNamed(dirfd)
}

// createNamed creates a file O_EXCL under a temporary name in dirfd. In an
// append-only directory the name could be neither renamed nor removed:
// EPERM, and none is made.
func (r *Restorer) createNamed(dirfd int) (int, string, error) {
	if appendOnly(dirfd) {
		return -1, "", unix.EPERM
	}
	for {
		tmp := r.tempName()
		fd, err := unix.Openat(dirfd, tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
		if !errors.Is(err, unix.EEXIST) {
			return fd, tmp, err
		}
	}
}

// openUnnamed creates an unnamed file in dirfd; tests make it answer as a
// filesystem without O_TMPFILE does.
var openUnnamed = func(dirfd int, perm uint32) (int, error) {
	return unix.Openat(dirfd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, perm)
}

// tempName is a name for a temporary file no other restore uses.
func (r *Restorer) tempName() string {
	return ".cairn-restore-" + r.pid + "-" + strconv.FormatUint(r.tmpSeq.Add(1), 10)
}

// linkTemp gives the unnamed file open on fd a temporary name in dirfd;
// EPERM in an append-only directory, as createNamed.
func (r *Restorer) linkTemp(fd, dirfd int) (string, error) {
	if appendOnly(dirfd) {
		return "", unix.EPERM
	}
	p := pinned{fd: fd}
	for {
		tmp := r.tempName()
		err := p.linkAs(dirfd, tmp)
		if err == nil {
			return tmp, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return "", err
		}
	}
}

// nameFile gives the checked file c its name: it replaces what stood there
// in one step, as rename does, or, a non-directory or an empty directory
// in the way, once that is removed.
func (r *Restorer) nameFile(c *current) error {
	if c.tmp == "" {
		err := (&pinned{fd: c.fd}).linkAs(c.dirfd, c.name)
		if !errors.Is(err, unix.EEXIST) {
			return err
		}
		// Something has the name (a forced target): linkat does not
		// replace it, rename does. An append-only directory takes new
		// names, this one too, but lets none be renamed or removed:
		// linkTemp refuses, leaving no temporary name behind.
		if c.tmp, err = r.linkTemp(c.fd, c.dirfd); err != nil {
			return err
		}
	}
	err := unix.Renameat(c.dirfd, c.tmp, c.dirfd, c.name)
	if err != nil && r.clearWay(c.dirfd, c.name) == nil {
		err = unix.Renameat(c.dirfd, c.tmp, c.dirfd, c.name)
	}
	return err
}

// appendOnly reports whether the directory open on dirfd is append only
// (chattr +a).
func appendOnly(dirfd int) bool {
	var sx unix.Statx_t
	if unix.Statx(dirfd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &sx) != nil {
		return false
	}
	return sx.Attributes&sx.Attributes_mask&unix.STATX_ATTR_APPEND != 0
}

// protectingFlags are the inode flags that stop what a restore does to an
// inode after its content: a rename, a link, a change of its metadata.
const protectingFlags = fileindex.FlagImmutable | fileindex.FlagAppend

// shapingFlags are the inode flags that shape how content is written (no
// copy on write, compression), which a filesystem takes only on a file
// still empty: they go to a file as soon as it is created, and all the
// flags again at the end.
const shapingFlags = fileindex.FlagNoCOW | fileindex.FlagCompress | fileindex.FlagNoCompress

// lateFlags are the inode flags of a restored file, to set at Finish.
type lateFlags struct {
	path  string
	id    inodeID
	flags uint32
}

// setFlags gives the inode open on fd the inode flags of its entry, leaving
// its other flags (the filesystem's own) as they are.
func (r *Restorer) setFlags(fd int, p string, flags uint32) {
	flags &= fileindex.FlagsKept
	if flags == 0 {
		return
	}
	cur, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err == nil {
		err = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(cur&^fileindex.FlagsKept|flags))
	}
	if err != nil {
		if noInodeFlags(err) {
			err = fmt.Errorf("the filesystem of the target does not take them (%w)", err)
		}
		r.warn(p, fmt.Errorf("inode flags %s not restored: %w", fileindex.FlagString(flags), err))
	}
}

// explainEPERM says why the kernel refused to replace name in dirfd with
// EPERM, when what stands there, or the directory, is immutable or append
// only: the restore leaves an inode it did not create as it is, flags
// included, and says what to do.
func (r *Restorer) explainEPERM(dirfd int, name string, err error) error {
	if !errors.Is(err, unix.EPERM) {
		return err
	}
	for _, at := range []struct {
		fd   int
		name string
		what string
	}{{dirfd, name, "what is in the way in the target"}, {dirfd, "", "the directory in the target"}} {
		var sx unix.Statx_t
		flags := unix.AT_SYMLINK_NOFOLLOW
		if at.name == "" {
			flags |= unix.AT_EMPTY_PATH
		}
		if unix.Statx(at.fd, at.name, flags, unix.STATX_BASIC_STATS, &sx) != nil {
			continue
		}
		attrs := sx.Attributes & sx.Attributes_mask
		switch {
		case attrs&unix.STATX_ATTR_IMMUTABLE != 0:
			return fmt.Errorf("%s is immutable (chattr +i), and a restore changes no flag of what it did not create: clear it with 'chattr -i' and restore again (%w)", at.what, err)
		case attrs&unix.STATX_ATTR_APPEND != 0:
			return fmt.Errorf("%s is append only (chattr +a), and a restore changes no flag of what it did not create: clear it with 'chattr -a' and restore again (%w)", at.what, err)
		}
	}
	return err
}

// applyMeta gives the inode held by p the xattrs, mode and times of e, and
// its owner if chown. Owner before mode, since chown clears setuid and
// setgid; xattrs after chown, which clears file capabilities
// (security.capability). A symlink has no mode of its own.
func (r *Restorer) applyMeta(p *pinned, e *fileindex.Entry, chown bool) {
	if chown && !(p.known && p.st.Uid == e.UID && p.st.Gid == e.GID) {
		if err := p.chown(int(e.UID), int(e.GID)); err != nil {
			r.warn(e.Path, fmt.Errorf("owner not restored: %w", err))
		}
	}
	for _, x := range e.Xattrs {
		if err := p.setxattr(x.Name, x.Value); err != nil {
			r.warn(e.Path, fmt.Errorf("extended attribute %s not restored: %w", x.Name, err))
		}
	}
	// A chown clears setuid and setgid, which a file known here does not
	// have yet; an ACL set as an xattr sets the mode's bits.
	if e.Type != fileindex.TypeSymlink && !(p.known && len(e.Xattrs) == 0 && p.st.Mode&0o7777 == e.Mode&0o7777) {
		if err := p.chmod(e.Mode & 0o7777); err != nil {
			r.warn(e.Path, fmt.Errorf("mode not restored: %w", err))
		}
	}
	if err := p.setTimes(times(e)); err != nil {
		r.warn(e.Path, fmt.Errorf("times not restored: %w", err))
	}
}

func times(e *fileindex.Entry) []unix.Timespec {
	return []unix.Timespec{unix.NsecToTimespec(e.ATime), unix.NsecToTimespec(e.MTime)}
}

// clearWay removes what stands at name so an entry can take its place: a
// non-directory, or an empty directory. A directory with content stays,
// and the entry is not restored.
//
// The open parent directory is never below what is cleared: parent() moved
// it to the entry's own parent.
func (r *Restorer) clearWay(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if errors.Is(err, unix.EISDIR) {
		err = unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
	}
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// errDevicesNotAsked refuses a device node without RestoreOptions.Devices.
var errDevicesNotAsked = errors.New("device not restored: block and character devices are restored only when asked; " +
	"pass --devices to 'cairn restore' or 'cairn volume extract' if this backup is trusted")

// makeOther creates an entry without content: directory, symlink, fifo,
// device.
func (r *Restorer) makeOther(c *current) error {
	e := &c.e
	if e.Type == fileindex.TypeDir {
		return r.makeDir(c)
	}
	var create func() error
	var kind uint32
	switch e.Type {
	case fileindex.TypeSymlink:
		kind = unix.S_IFLNK
		create = func() error { return unix.Symlinkat(e.Target, c.dirfd, c.name) }
	case fileindex.TypeFifo:
		kind = unix.S_IFIFO
		create = func() error { return unix.Mknodat(c.dirfd, c.name, unix.S_IFIFO|0o600, 0) }
	case fileindex.TypeCharDev, fileindex.TypeBlockDev:
		if !r.opts.Devices {
			r.refuse(e.Path, errDevicesNotAsked)
			return nil
		}
		if !r.owner {
			r.refuse(e.Path, errors.New("device not restored: creating devices needs root"))
			return nil
		}
		kind = unix.S_IFCHR
		if e.Type == fileindex.TypeBlockDev {
			kind = unix.S_IFBLK
		}
		create = func() error { return unix.Mknodat(c.dirfd, c.name, kind|0o600, int(e.Rdev)) }
	default:
		r.refuse(e.Path, fmt.Errorf("not restored: unknown entry type %s", e.Type))
		return nil
	}
	err := create()
	if errors.Is(err, unix.EEXIST) {
		if err = r.clearWay(c.dirfd, c.name); err == nil {
			err = create()
		}
	}
	var p *pinned
	if err == nil {
		p, err = pinCreated(c.dirfd, c.name, kind, e.Rdev, e.Target)
	}
	if err != nil {
		r.refuse(e.Path, fmt.Errorf("%s not restored: %w", e.Type, r.explainEPERM(c.dirfd, c.name, err)))
		return nil
	}
	defer p.close()
	r.applyMeta(p, e, r.owner)
	if e.Type == fileindex.TypeSymlink {
		r.linksN.Add(1)
	} else {
		r.specials.Add(1)
	}
	return nil
}

// makeDir creates a directory entry, or takes the directory already there,
// and restores its owner. Xattrs, mode and times wait for Finish:
// restoring the children changes the mtime, a read-only mode would stop
// them, and a default ACL (system.posix_acl_default) would be inherited by
// children that never had it.
func (r *Restorer) makeDir(c *current) error {
	e := &c.e
	ancestor := r.ancestors[e.Path]
	delete(r.ancestors, e.Path)
	var fd int
	var err error
	made := false
	if e.Path == "/" {
		fd, err = unix.Dup(r.rootFd)
		made = r.rootMade
	} else {
		err = unix.Mkdirat(c.dirfd, c.name, 0o700)
		made = err == nil
		if errors.Is(err, unix.EEXIST) {
			// Created as a parent of an entry that came first, or kept
			// in a forced target.
			fd, err = openDirAt(c.dirfd, c.name)
			if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
				if ancestor {
					// Not the restore's to replace (a live tree's
					// /home may be a symlink): what lies below it is
					// refused, saying so, when its turn comes.
					return nil
				}
				if err = r.clearWay(c.dirfd, c.name); err == nil {
					err = unix.Mkdirat(c.dirfd, c.name, 0o700)
					made = err == nil
				}
			}
		}
		if made {
			if fd, err = openDirAt(c.dirfd, c.name); err == nil {
				if err = checkMadeDir(fd); err != nil {
					unix.Close(fd)
				}
			}
		}
	}
	if err != nil {
		r.refuse(e.Path, fmt.Errorf("directory not restored: %w", r.explainEPERM(c.dirfd, c.name, err)))
		return nil
	}
	defer unix.Close(fd)
	id, err := fdID(fd)
	if err != nil {
		r.refuse(e.Path, fmt.Errorf("directory not restored: %w", err))
		return nil
	}
	if r.madeDirs[id] {
		made = true // by openDir, for an entry below it that came first
	}
	if ancestor && !made {
		// A directory above what was chosen, there before the restore
		// (a restore in place, or into a forced target): it belongs to
		// that tree, and keeps its mode, owner, times and flags.
		return nil
	}
	if r.owner {
		if err := unix.Fchown(fd, int(e.UID), int(e.GID)); err != nil {
			r.warn(e.Path, fmt.Errorf("owner not restored: %w", err))
		}
	}
	r.dirs = append(r.dirs, dirMeta{path: e.Path, id: id, mode: e.Mode & 0o7777, flags: e.Flags, atime: e.ATime, mtime: e.MTime, xattrs: e.Xattrs})
	r.dirsN.Add(1)
	return nil
}

// Finish applies what had to wait for the whole stream: hard links (their
// target may come in a later session) and, children first, the modes and
// times of directories. It reports an entry left open by the stream as
// damaged. After Admit refused, it only removes the partial file. The
// Restorer is done after it.
func (r *Restorer) Finish() (RestoreStats, error) {
	if r.stopped == nil {
		r.stopped = r.admit() // links and directories write to the target too
	}
	if r.blk != nil {
		_ = r.endBlock()
	}
	if r.cur != nil {
		if r.stopped == nil {
			var werr error
			if r.wk != nil {
				werr = r.wk.failed()
			}
			if werr != nil {
				// The stream stopped because a write failed (a full
				// disk): the file is not restored for that, and its data
				// is not lost, so it is counted with the refused, not
				// the lost.
				r.refuse(r.cur.e.Path, fmt.Errorf("not restored: the restore stopped: %w", werr))
			} else {
				r.markDamaged(r.cur.e.Path, "the stream ended before its FileEnd")
			}
		}
		r.discard()
	}
	var failed error
	if r.wk != nil {
		if r.stopped != nil {
			r.wk.halt.Store(true)
		}
		r.wk.stop()
		failed = r.wk.failed()
	}
	r.finishAssemblies()
	defer func() {
		r.closeDir()
		if r.rootFd >= 0 {
			unix.Close(r.rootFd)
			r.rootFd = -1
		}
	}()
	if r.stopped != nil {
		return r.Stats(), nil
	}
	// The workers are done: what they changed under mu is Finish's alone.
	for _, l := range r.links {
		r.link(l)
	}
	r.links = nil
	for _, f := range r.lateFlags {
		r.setLateFlags(f)
	}
	r.lateFlags = nil
	// Reverse index order puts every directory after all that lies
	// below it, since a directory's subtree follows it in index order.
	slices.SortFunc(r.dirs, func(a, b dirMeta) int { return fileindex.Compare(b.path, a.path) })
	for _, d := range r.dirs {
		r.finishDir(d)
	}
	r.dirs = nil
	return r.Stats(), failed
}

func (r *Restorer) link(l linkReq) {
	if reason, ok := r.damageOf(l.target); ok {
		r.markDamaged(l.path, fmt.Sprintf("its hard link target %s was damaged: %s", l.target, reason))
		return
	}
	id, ok := r.linkable[l.target]
	if !ok {
		r.refuse(l.path, fmt.Errorf("hard link not restored: its target %s was not restored", l.target))
		return
	}
	target, err := r.pinRestored(l.target, id)
	if err != nil {
		r.refuse(l.path, fmt.Errorf("hard link to %s not restored: %w", l.target, err))
		return
	}
	defer target.close()
	dirfd, name, err := r.parent(l.path)
	if err != nil {
		r.refuse(l.path, fmt.Errorf("hard link not restored: %w", err))
		return
	}
	err = target.linkAs(dirfd, name)
	if errors.Is(err, unix.EEXIST) {
		if err = r.clearWay(dirfd, name); err == nil {
			err = target.linkAs(dirfd, name)
		}
	}
	if err != nil {
		r.refuse(l.path, fmt.Errorf("hard link to %s not restored: %w", l.target, err))
		return
	}
	r.linksN.Add(1)
}

// pinRestored opens the file the restore wrote at p, by an O_PATH
// descriptor, if it is still the inode id.
func (r *Restorer) pinRestored(p string, id inodeID) (*pinned, error) {
	dir, name := path.Split(p)
	dfd, err := r.openDir(path.Clean(dir))
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, ErrReplaced
	}
	if err != nil {
		return nil, err
	}
	t := &pinned{fd: fd, opath: true}
	if err := unix.Fstat(fd, &t.st); err != nil {
		t.close()
		return nil, err
	}
	if t.st.Mode&unix.S_IFMT != unix.S_IFREG || idOf(&t.st) != id {
		t.close()
		return nil, ErrReplaced
	}
	return t, nil
}

func (r *Restorer) finishDir(d dirMeta) {
	fd := r.rootFd
	if d.path != "/" {
		dirfd, name, err := r.parent(d.path)
		if err != nil {
			r.warn(d.path, fmt.Errorf("directory mode and times not restored: %w", err))
			return
		}
		fd, err = openDirAt(dirfd, name)
		if err != nil {
			r.warn(d.path, fmt.Errorf("directory mode and times not restored: %w", err))
			return
		}
		defer unix.Close(fd)
	}
	if id, err := fdID(fd); err != nil || id != d.id {
		r.warn(d.path, fmt.Errorf("directory mode and times not restored: %w", ErrReplaced))
		return
	}
	e := fileindex.Entry{Path: d.path, Type: fileindex.TypeDir, Mode: d.mode, ATime: d.atime, MTime: d.mtime, Xattrs: d.xattrs}
	r.applyMeta(&pinned{fd: fd}, &e, false) // the owner was given when it was made
	r.setFlags(fd, d.path, d.flags)         // last: an immutable directory takes no more times
}

// setLateFlags gives a restored file with further names its inode flags,
// once those are made: through the inode the restore wrote, if its name
// still leads there.
func (r *Restorer) setLateFlags(f lateFlags) {
	p, err := r.pinRestored(f.path, f.id)
	if err != nil {
		r.warn(f.path, fmt.Errorf("inode flags %s not restored: %w", fileindex.FlagString(f.flags), err))
		return
	}
	defer p.close()
	// The ioctl wants a descriptor open for reading; the magic link of
	// the O_PATH one opens the inode it holds, a regular file.
	proc, err := procFd(p.fd)
	var fd int
	if err == nil {
		fd, err = unix.Open(proc, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	}
	if err != nil {
		r.warn(f.path, fmt.Errorf("inode flags %s not restored: %w", fileindex.FlagString(f.flags), err))
		return
	}
	defer unix.Close(fd)
	if id, err := fdID(fd); err != nil || id != f.id {
		r.warn(f.path, fmt.Errorf("inode flags %s not restored: %w", fileindex.FlagString(f.flags), ErrReplaced))
		return
	}
	r.setFlags(fd, f.path, f.flags)
}
