package agent

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/chunk"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
)

// BatchSize is about how many bytes of whole records Source hands to Emit
// at a time: large enough that per-batch costs (a frame, a syscall) vanish,
// small enough to keep a data-port frame well under dataplane.MaxFrame.
const BatchSize = 1 << 20

// MaxWarnings is how many warnings stats keep; more are only counted, so a
// tree of a million unreadable files cannot exhaust memory.
const MaxWarnings = 1000

// Warning is one problem that did not stop a backup or a restore.
type Warning struct {
	Path string `json:"path"` // empty for a warning about no one path
	Err  string `json:"error"`
}

// String is the warning as a job log gives it: its path escaped
// (fileindex.Escape), so that a name that is not UTF-8 survives the trip and
// a hostile one cannot drive a terminal, and so is the message, which may
// quote names too.
func (w Warning) String() string {
	if w.Path == "" {
		return fileindex.Escape(w.Err)
	}
	return fileindex.Escape(w.Path) + ": " + fileindex.Escape(w.Err)
}

// Read errors of a file's content; the file is sent with what was read and
// a FileEnd with volume.EndReadError.
var (
	ErrFileShrank   = errors.New("the file shrank while it was read: its content is incomplete")
	ErrFileGrew     = errors.New("the file grew while it was read: only its size at the walk was read")
	ErrFileReplaced = errors.New("the file was replaced by another between the walk and the read")
	ErrFileChanged  = errors.New("the file changed while it was read: a block of it read twice differed")
)

// SourceOptions configures a Source.
type SourceOptions struct {
	Walk WalkOptions
	// Base is the tree of the level's base backup in index order: the
	// last backup of any level for an incremental, the last full for a
	// differential. Nil makes a full backup: everything is sent.
	Base fileindex.Iterator
	// Emit receives the stream, as batches of whole records of at most
	// about BatchSize bytes, in order, from one goroutine at a time: not
	// Run's, which reads the next batch meanwhile. The batch is reused
	// once Emit returns, so Emit must not keep it. An error from Emit
	// stops the backup and is returned by Run; no Emit runs after Run
	// returned.
	Emit func(batch []byte) error
	// Logger gets the warnings; nil discards them.
	Logger *slog.Logger
	// Spooled are files that are no part of the walk (the output of
	// command sources), sent as regular files at their place in index
	// order. Their paths must lie outside Walk.Paths and differ.
	Spooled []SpooledFile
}

// SpooledFile is content the agent holds in a file of its own, to be
// stored in the backup under Path, as a regular file owned by root with
// mode 0600 and the times MTime.
type SpooledFile struct {
	Path  string
	File  *os.File
	Size  int64
	MTime time.Time
}

// SourceStats counts what a Source did so far.
type SourceStats struct {
	Entries   int64 `json:"entries"`   // entries sent (FileHeaders), tombstones included
	Files     int64 `json:"files"`     // regular files sent with their content
	Dirs      int64 `json:"dirs"`      // directories sent
	Unchanged int64 `json:"unchanged"` // entries equal to the base, not sent
	Deleted   int64 `json:"deleted"`   // tombstones sent
	Bytes     int64 `json:"bytes"`     // content bytes read from files and sent
	// Reused counts the content bytes of large files read and not sent:
	// blocks the file's version in the base backup holds.
	Reused int64 `json:"reused,omitempty"`
	// Incomplete counts files sent with volume.EndReadError.
	Incomplete int64 `json:"incomplete"`
	// Warnings are the first MaxWarnings of WarningCount.
	Warnings     []Warning `json:"warnings,omitempty"`
	WarningCount int64     `json:"warning_count"`
	// Sockets and Nodump count what the walk left out on purpose
	// (WalkOptions.Skipped), which is no warning: sockets, and entries
	// with the nodump flag (a directory once, what it holds not counted).
	// SocketPaths and NodumpPaths are the first MaxSkippedNamed of each.
	Sockets     int64    `json:"sockets,omitempty"`
	Nodump      int64    `json:"nodump,omitempty"`
	SocketPaths []string `json:"socket_paths,omitempty"`
	NodumpPaths []string `json:"nodump_paths,omitempty"`
}

// MaxSkippedNamed is how many of the entries a backup left out on purpose
// its job log names, of each kind; the others are counted.
const MaxSkippedNamed = 10

// Notes are the lines a backup's job log gives, at level info, to what the
// walk left out on purpose: a socket in the tree is worth knowing about,
// not a warning on every backup.
func (st *SourceStats) Notes() []string {
	var out []string
	note := func(n int64, paths []string, what string) {
		if n == 0 {
			return
		}
		names := make([]string, len(paths))
		for i, p := range paths {
			names[i] = fileindex.Escape(p)
		}
		line := fmt.Sprintf("left out %d %s: %s", n, what, strings.Join(names, ", "))
		if more := n - int64(len(paths)); more > 0 {
			line += fmt.Sprintf(" and %d more", more)
		}
		out = append(out, line)
	}
	note(st.Sockets, st.SocketPaths, "sockets (the live endpoint of a running process holds no data to back up)")
	note(st.Nodump, st.NodumpPaths, "entries with the nodump flag (chattr +d), as --skip-nodump asks, a directory with all it holds")
	return out
}

// Source produces the data stream of a file-level backup: for each entry
// to send, a FileHeader record (the fileindex entry without location and
// hash), for a regular file its content in Data records, and a FileEnd.
// The storage node builds the backup's index from the FileHeaders.
type Source struct {
	opts SourceOptions
	log  *slog.Logger

	entries, files, dirs, unchanged, deleted, bytes, incomplete, reused atomic.Int64
	mu                                                                  sync.Mutex
	warnings                                                            []Warning
	warnCount                                                           int64
	sockets, nodump                                                     int64
	socketPaths, nodumpPaths                                            []string

	// Used by Run's goroutine only.
	ran    bool
	ctx    context.Context
	ahead  aheadControl
	ra     *readAhead    // nil: every file is read when the stream reaches it
	ioWait time.Duration // of the current file: open, fstat, reads
	batch  []byte
	send   *sender // nil: Emit runs on Run's goroutine (emitInline)
	hdr    []byte
	sum    hash.Hash
	sumBuf [sha256.Size]byte
	// Of the file being sent: its hash kind is the sparse one, its size,
	// and the end of its last Data record.
	sparse    bool
	sparseSum *fileindex.SparseHash
	blockSum  hash.Hash // of a block read again to be sent (resend)
	// held is the whole-file digest's state before the pieces of the
	// block being held (sendRun); resend takes it back into altSum or
	// altSparse when what it sends is not what was digested.
	held       []byte
	altSum     hash.Hash
	altSparse  *fileindex.SparseHash
	changed    bool // a block read again was not as first read (resend)
	size, sent int64
	// Of a large file sent by blocks: its block list, for its FileEnd.
	split     chunk.Stream
	blockList *fileindex.BlockList
	// The block lists of the spooled paths' versions in the base, which
	// the walk passes by: those paths lie outside it.
	spooledBase map[string]*fileindex.BlockList
}

// NewSource checks opts and prepares a Source.
func NewSource(opts SourceOptions) (*Source, error) {
	if opts.Emit == nil {
		return nil, errors.New("agent source: Emit is nil")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{opts: opts, log: log}, nil
}

// bytesRead is Stats().Bytes alone, for the scout, which asks often.
func (s *Source) bytesRead() int64 { return s.bytes.Load() }

// Stats may be called at any time, also while Run runs, for progress.
func (s *Source) Stats() SourceStats {
	st := SourceStats{
		Entries: s.entries.Load(), Files: s.files.Load(), Dirs: s.dirs.Load(),
		Unchanged: s.unchanged.Load(), Deleted: s.deleted.Load(), Bytes: s.bytes.Load(),
		Incomplete: s.incomplete.Load(), Reused: s.reused.Load(),
	}
	s.mu.Lock()
	st.Warnings = append([]Warning(nil), s.warnings...)
	st.WarningCount = s.warnCount
	st.Sockets, st.Nodump = s.sockets, s.nodump
	st.SocketPaths, st.NodumpPaths = slices.Clone(s.socketPaths), slices.Clone(s.nodumpPaths)
	s.mu.Unlock()
	return st
}

func (s *Source) skip(p string, why Skip) {
	s.mu.Lock()
	switch why {
	case SkipSocket:
		s.sockets++
		if len(s.socketPaths) < MaxSkippedNamed {
			s.socketPaths = append(s.socketPaths, p)
		}
	case SkipNodump:
		s.nodump++
		if len(s.nodumpPaths) < MaxSkippedNamed {
			s.nodumpPaths = append(s.nodumpPaths, p)
		}
	}
	s.mu.Unlock()
	s.log.Info("backup left out", "path", p, "why", why)
	if s.opts.Walk.Skipped != nil {
		s.opts.Walk.Skipped(p, why)
	}
}

func (s *Source) warn(p string, err error) {
	s.mu.Lock()
	s.warnCount++
	if len(s.warnings) < MaxWarnings {
		s.warnings = append(s.warnings, Warning{Path: p, Err: err.Error()})
	}
	s.mu.Unlock()
	s.log.Warn("backup warning", "path", p, "err", err)
	if s.opts.Walk.Warn != nil {
		s.opts.Walk.Warn(p, err)
	}
}

// Run walks, compares with the base and emits the whole stream. It runs
// once. Warnings do not make it fail; a missing path, a base that cannot be
// read, an error from Emit or ctx ending do.
func (s *Source) Run(ctx context.Context) error {
	if s.ran {
		return errors.New("agent source: Run called twice")
	}
	s.ran = true
	s.ctx = ctx
	wopts := s.opts.Walk
	wopts.Warn = s.warn
	wopts.Skipped = s.skip
	w, err := newWalker(ctx, wopts)
	if err != nil {
		return err
	}
	s.batch = make([]byte, 0, BatchSize+1) // +1: the probe byte of readRange
	if !emitInline {
		s.send = startSender(ctx, s.opts.Emit)
		defer s.send.stop()
	}
	s.hdr = make([]byte, 0, 4096)
	s.sum = sha256.New()
	s.sparseSum = fileindex.NewSparseHash()
	if fileReaders > 0 {
		s.ra = startReadAhead(ctx, fileReaders)
		defer s.ra.stop()
		w.closeDir = s.closeDir
	}
	if prefetchPolicy != prefetchNever {
		roots := openPrefetchRoots(s.opts.Walk.Paths)
		defer roots.close()
		pf := startPrefetch(roots)
		defer pf.stop()
		w.ahead = func(dir, name string) {
			if s.ahead.on || prefetchPolicy == prefetchAlways {
				pf.ahead(joinPath(dir, name))
			}
		}
	}
	spooled := slices.Clone(s.opts.Spooled)
	slices.SortFunc(spooled, func(a, b SpooledFile) int { return fileindex.Compare(a.Path, b.Path) })
	for i, f := range spooled {
		for _, r := range w.roots {
			if fileindex.Within(f.Path, r) || fileindex.Within(r, f.Path) {
				return fmt.Errorf("command source %s and %s, a path of the backup, lie one inside the other: give a command source a path outside them", f.Path, r)
			}
		}
		if i > 0 && spooled[i-1].Path == f.Path {
			return fmt.Errorf("two command sources are stored as %s: give each its own path", f.Path)
		}
	}
	// What is spooled goes in before the first walked (or deleted) entry
	// that sorts after it: the stream stays in index order.
	entry := func(n *node, c Change) error {
		for len(spooled) > 0 && fileindex.Compare(spooled[0].Path, n.e.Path) < 0 {
			if err := s.sendSpooled(&spooled[0]); err != nil {
				return err
			}
			spooled = spooled[1:]
		}
		return s.sendEntry(n, c)
	}
	s.spooledBase = map[string]*fileindex.BlockList{}
	outside := func(e *fileindex.Entry) {
		if e.Type == fileindex.TypeFile && e.Blocks != nil && slices.ContainsFunc(spooled, func(f SpooledFile) bool { return f.Path == e.Path }) {
			s.spooledBase[e.Path] = e.Blocks
		}
	}
	if err := runChanges(w, s.opts.Base, entry, outside); err != nil {
		return err
	}
	for i := range spooled {
		if err := s.sendSpooled(&spooled[i]); err != nil {
			return err
		}
	}
	for _, pat := range w.unmatchedExcludes() {
		s.warn("", fmt.Errorf("exclude pattern %q left nothing out: check it for a typo (a pattern with a slash is anchored at the backup root, or at / when it starts with one; see 'cairn backup --help')", pat))
	}
	if err := s.drain(); err != nil {
		return err
	}
	if err := s.flush(); err != nil {
		return err
	}
	if s.send != nil {
		if err := s.send.stop(); err != nil {
			return fmt.Errorf("send backup stream: %w", err)
		}
	}
	return nil
}

func (s *Source) flush() error {
	if len(s.batch) == 0 {
		return nil
	}
	if s.send != nil {
		next, err := s.send.handOff(s.batch)
		if err != nil {
			return fmt.Errorf("send backup stream: %w", err)
		}
		s.batch = next
		return nil
	}
	if err := s.opts.Emit(s.batch); err != nil {
		return fmt.Errorf("send backup stream: %w", err)
	}
	s.batch = s.batch[:0]
	return nil
}

// reserve makes room for a record of up to n bytes, so that records never
// straddle two batches.
func (s *Source) reserve(n int) error {
	if len(s.batch) > 0 && len(s.batch)+n > BatchSize {
		return s.flush()
	}
	return nil
}

func (s *Source) sendEntry(n *node, c Change) error {
	if c == ChangeUnchanged {
		s.unchanged.Add(1)
		return nil
	}
	if s.ra != nil {
		switch {
		case readable(n):
			return s.enqueue(n, queuedRead)
		case n.e.Type != fileindex.TypeFile && len(s.ra.queue) > 0:
			return s.enqueue(n, queuedEntry)
		}
		if err := s.drain(); err != nil {
			return err
		}
	}
	return s.sendNow(n)
}

// sendNow sends an entry on Run's goroutine, after everything queued.
func (s *Source) sendNow(n *node) error {
	e := n.e
	if e.Type == fileindex.TypeFile {
		return s.sendFile(n)
	}
	if err := s.appendHeader(e); err != nil {
		return err
	}
	s.entries.Add(1)
	switch e.Type {
	case fileindex.TypeDeleted:
		s.deleted.Add(1)
	case fileindex.TypeDir:
		s.dirs.Add(1)
	}
	return s.appendEnd(volume.EndOK, false)
}

func (s *Source) appendHeader(e *fileindex.Entry) error {
	s.hdr = fileindex.AppendEntry(s.hdr[:0], e)
	if len(s.hdr) > volume.MaxHeaderBody {
		// The index entry must fit one header record; the content
		// matters more than oversized attributes.
		s.warn(e.Path, fmt.Errorf("extended attributes not backed up: with them the entry takes %d bytes, more than the %d a stream header holds", len(s.hdr), volume.MaxHeaderBody))
		xs := e.Xattrs
		e.Xattrs = nil
		s.hdr = fileindex.AppendEntry(s.hdr[:0], e)
		e.Xattrs = xs
		if len(s.hdr) > volume.MaxHeaderBody {
			return fmt.Errorf("entry %q takes %d bytes without its extended attributes, more than a stream header holds", e.Path, len(s.hdr))
		}
	}
	if err := s.reserve(1 + binary.MaxVarintLen64 + len(s.hdr)); err != nil {
		return err
	}
	s.batch = volume.AppendRecord(s.batch, volume.RecFileHeader, s.hdr)
	return nil
}

// appendEnd closes the entry; withHash adds the digest of what was sent,
// of the entry's hash kind: for a file read whole, its size is the
// entry's; for one that could not be, the end of its last Data record.
func (s *Source) appendEnd(status uint8, withHash bool) error {
	var h []byte
	switch {
	case !withHash:
	case s.sparse:
		size := s.size
		if status != volume.EndOK {
			size = s.sent
		}
		h = s.sparseSum.Sum(s.sumBuf[:0], size)
	default:
		h = s.sum.Sum(s.sumBuf[:0])
	}
	return s.appendEndSum(status, h)
}

// appendEndSum closes the entry with the digest h (none if nil).
func (s *Source) appendEndSum(status uint8, h []byte) error {
	bl := s.blockList
	s.blockList = nil
	list := 0
	if bl != nil { // at most what AppendBlockList takes
		list = 3*binary.MaxVarintLen64 + 16*len(bl.Sessions) + len(bl.Blocks)*(sha256.Size+6*binary.MaxVarintLen64)
	}
	if err := s.reserve(2*binary.MaxVarintLen32 + 1 + sha256.Size + list); err != nil {
		return err
	}
	if bl != nil {
		s.batch = volume.AppendFileEndBlocks(s.batch, status, h, bl)
		return nil
	}
	s.batch = volume.AppendFileEnd(s.batch, status, h)
	return nil
}

// openFile opens a walked file without following a symlink that replaced
// it, and without touching its atime where the kernel lets us (the owner or
// root), so that a backup does not change what the next one sees. It does
// not wait either: a fifo that replaced the file (any user can make one in
// a directory of theirs) would hold an open for reading until a writer
// came, and the backup with it. sameFile then tells the walked file from
// what replaced it. For a regular file O_NONBLOCK changes one thing: where
// another process holds a lease on it (Samba's oplocks, an NFS server's
// delegations), the open fails with EWOULDBLOCK instead of waiting for the
// lease to be given up; openLeased then waits, as an open without it would.
func openFile(n *node) (int, error) {
	flags := unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NOCTTY | unix.O_NONBLOCK
	fd, err := openNoATime(n.dirfd, n.name, flags)
	if errors.Is(err, unix.EWOULDBLOCK) {
		// The magic link of /proc/self/fd is followed on purpose.
		return openLeased(n, flags&^(unix.O_NONBLOCK|unix.O_NOFOLLOW))
	}
	return fd, err
}

// openNoATime opens name in dirfd with O_NOATIME where it may (it needs
// the file's owner or CAP_FOWNER: EPERM otherwise), and again after a
// signal.
func openNoATime(dirfd int, name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags|unix.O_NOATIME, 0)
		if errors.Is(err, unix.EPERM) {
			fd, err = unix.Openat(dirfd, name, flags, 0)
		}
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

// openLeased opens a file whose open would wait for a lease, without
// letting a fifo in: it holds the name's inode by an O_PATH descriptor,
// which opens nothing, checks that it is the walked regular file, and then
// opens that very inode through /proc/self/fd, waiting for the lease's
// holder (at most the kernel's lease-break-time).
func openLeased(n *node, flags int) (int, error) {
	pfd, err := unix.Openat(n.dirfd, n.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	if err := sameFile(pfd, n.e); err != nil {
		return -1, err
	}
	return openNoATime(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(pfd), flags)
}

// sameFile reports whether fd is the regular file the walk found for e: a
// file replaced since (renamed over, or swapped for a fifo) is not read.
// The type counts as much as the inode: a file removed and a fifo made in
// its place may well get the inode number it freed.
func sameFile(fd int, e *fileindex.Entry) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("content not backed up: fstat: %w", err)
	}
	if st.Ino != e.Inode || st.Dev != e.Dev || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return ErrFileReplaced
	}
	return nil
}

// sparseHashing is the hash kind of files with holes: the old kind only in
// the benchmark that measures what it cost.
var sparseHashing = fileindex.HashSparseSHA256

// sendFile sends a regular file: its FileHeader, with the inode flags read
// from the open file, its Data records and its FileEnd. A file that cannot
// be read whole is sent with what was read, a warning, and a FileEnd with
// EndReadError whose hash covers the content up to the end of its last
// Data record, which is what a restore rebuilds.
func (s *Source) sendFile(n *node) error {
	e := n.e
	small := e.Size <= prefetchMax
	var t0 time.Time
	if small {
		t0 = time.Now()
		s.ioWait = 0
	}
	if beforeRead != nil {
		beforeRead(e.Path)
	}
	fd, openErr := openFile(n)
	if small {
		s.ioWait = time.Since(t0)
		defer func() { s.ahead.observe(s.ioWait, e.Size) }()
	}
	var identErr error
	if openErr == nil {
		defer unix.Close(fd)
		// The flags of whatever replaced the file are not its own.
		if identErr = sameFile(fd, e); identErr == nil {
			flags, err := inodeFlags(fd)
			if err != nil {
				s.warn(e.Path, fmt.Errorf("inode flags not backed up: %w", err))
			}
			e.Flags = flags
		}
	}
	// A file with holes is read by its data regions and hashed by them:
	// hashing its holes as zeros would cost as much as reading them.
	e.HashKind = fileindex.HashSHA256
	if e.Size > 0 && n.blocks*512 < e.Size {
		e.HashKind = sparseHashing
	}
	if err := s.appendHeader(e); err != nil {
		return err
	}
	s.entries.Add(1)
	s.files.Add(1)
	s.sum.Reset()
	s.sparseSum.Reset()
	s.sparse, s.size, s.sent = e.HashKind == fileindex.HashSparseSHA256, e.Size, 0
	s.blockList = nil
	if e.Size == 0 {
		// Nothing to read: one that could not be opened (another
		// user's, to an agent that is not root) is no less complete.
		return s.appendEnd(volume.EndOK, true)
	}
	readErr := func(err error) error {
		s.warn(e.Path, err)
		s.incomplete.Add(1)
		return s.appendEnd(volume.EndReadError, true)
	}
	if openErr != nil {
		return readErr(fmt.Errorf("content not backed up: open: %w", openErr))
	}
	if identErr != nil {
		return readErr(identErr)
	}
	var err error
	switch {
	case n.blocks*512 < e.Size:
		err = s.sendSparse(fd, e, n.blocks*512, n.base)
	case e.Size >= chunk.Threshold:
		err = s.sendBlocks(fd, e, n.base, nil)
	default:
		_, err = s.readRange(fd, 0, e.Size, true)
	}
	if re := (*readError)(nil); errors.As(err, &re) {
		return readErr(re.err)
	}
	if err != nil {
		return err
	}
	return s.appendEnd(volume.EndOK, true)
}

// sendSpooled sends a spooled file as a regular file of the backup. Its
// content is all there (its command ended), so a read that comes short is
// the spool's fault, and fails the backup rather than store a dump cut
// short as a warning.
func (s *Source) sendSpooled(f *SpooledFile) error {
	if err := s.drain(); err != nil {
		return err
	}
	t := f.MTime.UnixNano()
	e := &fileindex.Entry{Path: f.Path, Type: fileindex.TypeFile, Mode: 0o600, User: "root", Group: "root",
		Size: f.Size, MTime: t, ATime: t, CTime: t, NLink: 1}
	if err := s.appendHeader(e); err != nil {
		return err
	}
	s.entries.Add(1)
	s.files.Add(1)
	s.sum.Reset()
	s.sparse, s.size, s.sent = false, f.Size, 0
	s.blockList = nil
	var err error
	if f.Size >= chunk.Threshold {
		// A dump changes a little from one day to the next: its blocks
		// that the previous version of the path held are not sent again.
		err = s.sendBlocks(int(f.File.Fd()), e, s.spooledBase[f.Path], nil)
	} else {
		_, err = s.readRange(int(f.File.Fd()), 0, f.Size, true)
	}
	if err != nil {
		s.blockList = nil
		return fmt.Errorf("command source %s: read its spooled output: %w", f.Path, err)
	}
	return s.appendEnd(volume.EndOK, true)
}

// inodeFlags reads the chattr(1) flags of the file open on fd, those a
// restore can set again. A filesystem without them (tmpfs before Linux
// 6.0, NFS, FUSE) has none.
func inodeFlags(fd int) (uint32, error) {
	f, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		if noInodeFlags(err) {
			return 0, nil
		}
		return 0, err
	}
	return f & fileindex.FlagsKept, nil
}

// noInodeFlags tells the errors of a filesystem or file type that has no
// inode flags.
func noInodeFlags(err error) bool {
	return errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL)
}

// readError is a problem with a file's content, which makes the file
// incomplete, as opposed to an error of Emit, which stops the backup.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// sendSparse sends only the data regions of a file with holes (fewer
// blocks than its size, allocated bytes), found with SEEK_DATA and
// SEEK_HOLE: the holes are never read. One with enough data is sent by
// blocks (dataRuns), so that an incremental sends the blocks that changed.
func (s *Source) sendSparse(fd int, e *fileindex.Entry, allocated int64, base *fileindex.BlockList) error {
	if allocated >= chunk.Threshold && s.sparse {
		runs, err := dataRuns(fd, e.Size)
		if err != nil {
			return err
		}
		if runs != nil {
			return s.sendBlocks(fd, e, base, runs)
		}
	}
	off := int64(0)
	for off < e.Size {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // a hole up to the end
		}
		if err != nil {
			return &readError{fmt.Errorf("seek data at offset %d: %w", off, err)}
		}
		if data >= e.Size {
			break
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return &readError{fmt.Errorf("seek hole at offset %d: %w", data, err)}
		}
		hole = min(hole, e.Size)
		if !s.sparse {
			hashZeros(s.sum, data-off)
		}
		if _, err := s.readRange(fd, data, hole, false); err != nil {
			return err
		}
		off = hole
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &readError{fmt.Errorf("fstat: %w", err)}
	}
	switch {
	case st.Size < e.Size:
		return &readError{ErrFileShrank}
	case st.Size > e.Size:
		return &readError{ErrFileGrew}
	}
	// Only a complete file's hash covers a trailing hole: an incomplete
	// one's ends with its last Data record, as its restored copy does.
	if !s.sparse {
		hashZeros(s.sum, e.Size-off)
	}
	return nil
}

var zeros [64 << 10]byte

func hashZeros(h io.Writer, n int64) {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		h.Write(zeros[:k])
		n -= k
	}
}

// readRange reads [off, end) of the file straight into the batch as Data
// records, hashing it as it goes, in records of volume.MaxDataBody: one
// pread per record, no copy. With probe, the last read asks for one byte
// more than the file should hold, which tells a file that grew without a
// further syscall. It returns how many bytes were read.
func (s *Source) readRange(fd int, off, end int64, probe bool) (int64, error) {
	start := off
	for off < end {
		// A file of terabytes must not hold up a cancelled job.
		if err := s.ctx.Err(); err != nil {
			return off - start, err
		}
		n := int(min(end-off, volume.MaxDataBody))
		if err := s.reserve(volume.MaxDataHeader + n); err != nil {
			return off - start, err
		}
		ask := n
		last := off+int64(n) == end
		if probe && last {
			ask++
		}
		data, got, err := s.readRecord(fd, off, n, ask)
		grew := got > n
		if grew {
			got = n
		}
		if got > 0 {
			if s.sparse {
				s.sparseSum.Add(off, data)
			} else {
				s.sum.Write(data)
			}
			s.sent = off + int64(got)
			s.bytes.Add(int64(got))
		}
		off += int64(got)
		switch {
		case err != nil:
			return off - start, &readError{fmt.Errorf("read at offset %d: %w", off, err)}
		case got < n:
			return off - start, &readError{ErrFileShrank}
		case grew:
			return off - start, &readError{ErrFileGrew}
		}
	}
	return off - start, nil
}

// readRecord reads up to n bytes of the file at off straight into a Data
// record at the end of the batch, which the caller reserved room for, and
// returns the content the record holds (at most n bytes) and what the
// read gave: ask may be n+1, to learn whether the file goes on past n.
func (s *Source) readRecord(fd int, off int64, n, ask int) (data []byte, got int, err error) {
	rec := len(s.batch)
	var head [volume.MaxDataHeader]byte
	h := volume.PutDataHeader(head[:], off, n)
	if need := rec + h + ask; need > cap(s.batch) {
		s.batch = append(s.batch[:cap(s.batch)], make([]byte, need-cap(s.batch))...)[:rec]
	}
	buf := s.batch[rec+h : rec+h+ask]
	t0 := time.Now()
	got, err = preadFull(fd, buf, off, n)
	s.ioWait += time.Since(t0)
	k := min(got, n)
	if k != n {
		// Short: the record is smaller than planned, and so may be its
		// length varint.
		h2 := volume.PutDataHeader(head[:], off, k)
		copy(s.batch[rec+h2:rec+h2+k], buf[:k])
		h = h2
	}
	copy(s.batch[rec:rec+h], head[:h])
	if k > 0 {
		s.batch = s.batch[:rec+h+k]
		data = s.batch[rec+h:]
	}
	return data, got, err
}

// preadFull reads into buf at off until buf is full, the end of the file,
// or an error; a read that ends at or past want bytes is taken as the end,
// which saves the extra read that would only return 0.
func preadFull(fd int, buf []byte, off int64, want int) (int, error) {
	got := 0
	for got < len(buf) {
		k, err := unix.Pread(fd, buf[got:], off+int64(got))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return got, err
		}
		if k == 0 {
			return got, nil
		}
		got += k
		if got >= want && got < len(buf) {
			return got, nil
		}
	}
	return got, nil
}
