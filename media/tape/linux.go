package tape

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"

	"github.com/benmcclelland/mtio"
	"github.com/cairnbackup/cairn/media/volume"
	"golang.org/x/sys/unix"
)

// STDevice is an open st character device as the Linux driver uses it:
// read(2), write(2) and the three mtio ioctls, each returning the kernel's
// errno (a syscall.Errno) unchanged. OpenST implements it over a file
// descriptor; tests put a model of st behind it, so the driver's handling
// of every kernel answer runs without a tape drive.
type STDevice interface {
	// Read is read(2) of one block: st returns 0 bytes at a file mark.
	Read(p []byte) (int, error)
	// Write is write(2) of one block.
	Write(p []byte) (int, error)
	// Op is ioctl MTIOCTOP: one of mtio's operation codes and a count.
	Op(op int16, count int32) error
	// Get is ioctl MTIOCGET.
	Get() (mtio.MtGet, error)
	// Pos is ioctl MTIOCPOS: the logical block address.
	Pos() (int64, error)
	Close() error
}

// OpenST opens a tape device node with open(2) flags (O_RDWR or O_RDONLY,
// optionally O_NONBLOCK, which lets the open succeed with no medium).
func OpenST(path string, flags int) (STDevice, error) {
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if flags&unix.O_NONBLOCK != 0 {
			// O_NONBLOCK only matters to st at open (do not wait for the
			// drive to become ready); later commands block as usual.
			if err := unix.SetNonblock(fd, false); err != nil {
				unix.Close(fd)
				return nil, err
			}
		}
		return &stFile{f: os.NewFile(uintptr(fd), path), fd: fd}, nil
	}
}

// stFile is a real st device. Reads and writes go straight to read(2) and
// write(2): os.File turns a 0-byte read into io.EOF, and a file mark is
// not the end of anything.
type stFile struct {
	f  *os.File // for mtio's helpers, which take an *os.File
	fd int
}

func (s *stFile) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(s.fd, p)
		if err == unix.EINTR {
			continue
		}
		return max(n, 0), err
	}
}

func (s *stFile) Write(p []byte) (int, error) {
	for {
		n, err := unix.Write(s.fd, p)
		if err == unix.EINTR {
			continue
		}
		return max(n, 0), err
	}
}

func (s *stFile) Op(op int16, count int32) error {
	return mtio.DoOp(s.f, mtio.NewMtOp(mtio.WithOperation(op), mtio.WithCount(count)))
}

func (s *stFile) Get() (mtio.MtGet, error) {
	g, err := mtio.GetStatus(s.f)
	if err != nil {
		return mtio.MtGet{}, err
	}
	return *g, nil
}

func (s *stFile) Pos() (int64, error) {
	p, err := mtio.GetPos(s.f)
	if err != nil {
		return 0, err
	}
	return p.BlkNo, nil
}

func (s *stFile) Close() error { return s.f.Close() }

// LinuxConfig configures a drive driven through the Linux st driver.
type LinuxConfig struct {
	// Name identifies the drive in errors; "" means Path.
	Name string
	// Path is the non-rewinding device node, /dev/nstN or a
	// /dev/tape/by-id/...-nst link. A rewinding node (/dev/stN) is refused:
	// it rewinds on every close, and the next session would overwrite the
	// tape from its beginning.
	Path string
	// BlockSize is the fixed block size set after every load; 0 means
	// volume.DefaultBlockSize.
	BlockSize int
	// Open opens the device; nil means OpenST. Tests fake the device here.
	Open func(path string, flags int) (STDevice, error)
}

var nonRewinding = regexp.MustCompile(`^nst[0-9]+[lma]?$|-nst$`)

// Validate names what is wrong with the configuration.
func (c LinuxConfig) Validate() error {
	if c.Path == "" {
		return errors.New("tape drive: no device path; use the non-rewinding node, e.g. /dev/nst0")
	}
	if !nonRewinding.MatchString(filepath.Base(c.Path)) {
		return fmt.Errorf("tape drive: %s is not a non-rewinding tape device; use /dev/nstN (or a /dev/tape/by-id/...-nst link): a rewinding node rewinds at every close and the next write would overwrite the tape", c.Path)
	}
	if c.BlockSize != 0 {
		if err := volume.ValidBlockSize(c.BlockSize); err != nil {
			return fmt.Errorf("tape drive %s: %w", c.Path, err)
		}
	}
	return nil
}

// Linux is a Drive over the Linux st driver, in fixed block mode, through
// github.com/benmcclelland/mtio's ioctls.
//
// st's conventions are honoured exactly and turned into the Drive
// contract: a read at a file mark returns 0 bytes (ErrFileMark); st
// reports end of data by a second 0-byte read, or GMT_EOD, or EIO once the
// end is known (ErrEndOfData); at early warning a write returns ENOSPC
// once (ErrEarlyWarning), and then st alternates ENOSPC with accepted
// writes until the physical end, which the driver hides by writing again
// after each ENOSPC in the zone: a second ENOSPC in a row, or EIO, is the
// physical end. The kernel itself writes the file mark due at close and
// before rewind, offline, backward space and seek after a write.
//
// The kernel cannot abandon a command, so a call whose context ends first
// leaves the syscall running in a goroutine; the driver answers ErrBusy
// until it returns. Buffers handed to the kernel are the driver's own, so
// a late syscall never touches the caller's memory.
type Linux struct {
	name string
	cfg  LinuxConfig
	open func(string, int) (STDevice, error)

	cmd sync.Mutex // held for a command; TryLock gives ErrBusy

	mu       sync.Mutex
	inflight chan struct{} // closed when a syscall abandoned by its caller returns
	closed   bool

	// Guarded by cmd.
	dev      STDevice // nil: no medium loaded
	bs       int
	wp       bool
	ew       bool  // st reported early warning since the last reposition
	zeroRead bool  // the last read returned 0 bytes
	pos      int64 // tracked logical block, -1 when unknown (names medium errors)
	rbuf     []byte
	wbuf     []byte
}

var _ Drive = (*Linux)(nil)

// NewLinux returns a driver for the drive at cfg.Path. It opens nothing
// until Load.
func NewLinux(cfg LinuxConfig) (*Linux, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = volume.DefaultBlockSize
	}
	l := &Linux{name: cfg.Name, cfg: cfg, open: cfg.Open, pos: -1}
	if l.name == "" {
		l.name = cfg.Path
	}
	if l.open == nil {
		l.open = OpenST
	}
	return l, nil
}

func (l *Linux) Name() string { return l.name }

// begin starts a command. The caller defers l.cmd.Unlock().
func (l *Linux) begin(ctx context.Context, op string, needMedium bool) error {
	if !l.cmd.TryLock() {
		return fmt.Errorf("tape drive %s: %s: %w", l.name, op, ErrBusy)
	}
	l.mu.Lock()
	closed := l.closed
	if l.inflight != nil {
		select {
		case <-l.inflight:
			l.inflight = nil
		default:
			l.mu.Unlock()
			l.cmd.Unlock()
			return fmt.Errorf("tape drive %s: %s: %w: a command that timed out earlier is still running in the kernel", l.name, op, ErrBusy)
		}
	}
	l.mu.Unlock()
	if closed {
		l.cmd.Unlock()
		return fmt.Errorf("tape drive %s: %s: %w", l.name, op, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		l.cmd.Unlock()
		return ctxError(l.name, op, time.Now(), err)
	}
	if needMedium && l.dev == nil {
		l.cmd.Unlock()
		return fmt.Errorf("tape drive %s: %s: %w: load the cartridge first", l.name, op, ErrNoMedium)
	}
	return nil
}

// sys runs one device call, bounded by ctx. fn touches only the device
// and the driver's own buffers, and passes results out through variables
// it captures, which the caller reads only when sys returned fn's own
// result. When ctx ends first, fn keeps running in its goroutine, the
// driver answers ErrBusy until it returns, and late (if not nil) runs
// after it: to close a device that was opened too late.
func (l *Linux) sys(ctx context.Context, op string, fn func() error, late func()) error {
	if ctx.Done() == nil {
		return fn()
	}
	done := make(chan error, 1)
	go func() { done <- fn() }()
	start := time.Now()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		ch := make(chan struct{})
		l.mu.Lock()
		l.inflight = ch
		l.mu.Unlock()
		go func() {
			<-done
			if late != nil {
				late()
			}
			close(ch)
		}()
		l.pos, l.zeroRead = -1, false
		return ctxError(l.name, op, start, ctx.Err())
	}
}

func isHungOrCtx(err error) bool {
	return errors.Is(err, ErrHung) || errors.Is(err, context.Canceled)
}

func (l *Linux) op(ctx context.Context, name string, code int16, count int32) error {
	return l.sys(ctx, name, func() error { return l.dev.Op(code, count) }, nil)
}

func (l *Linux) get(ctx context.Context) (mtio.MtGet, error) {
	var g mtio.MtGet
	err := l.sys(ctx, "status", func() error {
		var err error
		g, err = l.dev.Get()
		return err
	}, nil)
	return g, err
}

func (l *Linux) tell(ctx context.Context) (int64, error) {
	var p int64
	err := l.sys(ctx, "position", func() error {
		var err error
		p, err = l.dev.Pos()
		return err
	}, nil)
	return p, err
}

// fail wraps an errno from the device, turning the ones a caller acts on
// into the package's conditions.
func (l *Linux) fail(op string, err error) error {
	if isHungOrCtx(err) {
		return err
	}
	switch {
	case errors.Is(err, syscall.ENOMEDIUM):
		return fmt.Errorf("tape drive %s: %s: %w (%w)", l.name, op, ErrNoMedium, err)
	case errors.Is(err, syscall.EBUSY):
		return fmt.Errorf("tape drive %s: %s: %w (%w): another process has the device open", l.name, op, ErrBusy, err)
	case errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EACCES):
		l.wp = true
		return fmt.Errorf("tape drive %s: %s: %w (%w)", l.name, op, ErrWriteProtected, err)
	}
	l.pos = -1
	return fmt.Errorf("tape drive %s: %s: %w", l.name, op, err)
}

// Load opens the device and makes the cartridge ready: st's open with
// O_NONBLOCK never waits, so the wait for a drive that is still threading
// the tape is ours, bounded by ctx, polling once a second. A cartridge
// left unloaded in the drive (after MTOFFL) is loaded with MTLOAD. Then
// fixed block mode is set and checked. A drive that was open is closed
// first (st writes a due file mark then).
func (l *Linux) Load(ctx context.Context) error {
	if err := l.begin(ctx, "load", false); err != nil {
		return err
	}
	defer l.cmd.Unlock()
	if l.dev != nil {
		if err := l.closeDev(ctx); err != nil {
			return err
		}
	}
	for {
		ready, err := l.tryLoad(ctx)
		if err != nil || ready {
			return err
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("tape drive %s: load: %w: the drive did not become ready (%w)", l.name, ErrNoMedium, ctx.Err())
		case <-t.C:
		}
	}
}

// tryLoad opens the device once; ready is false when the drive holds a
// cartridge that is not ready yet.
func (l *Linux) tryLoad(ctx context.Context) (ready bool, err error) {
	var dev STDevice
	err = l.sys(ctx, "load", func() error {
		var err error
		// O_NONBLOCK: st opens even with no medium, or a write-protected
		// one for writing (writes then fail with EACCES).
		dev, err = l.open(l.cfg.Path, unix.O_RDWR|unix.O_NONBLOCK)
		return err
	}, func() {
		if dev != nil {
			dev.Close()
		}
	})
	if err != nil {
		return false, l.fail("load", err)
	}
	l.dev, l.wp, l.ew, l.zeroRead, l.pos = dev, false, false, false, -1
	g, err := l.get(ctx)
	if err != nil {
		return false, l.failLoad("load: status", err)
	}
	if mtio.IsDrOpen(g.GStat) {
		// st's "no tape" state.
		l.closeDev(ctx)
		return false, fmt.Errorf("tape drive %s: load: %w", l.name, ErrNoMedium)
	}
	loaded := false
	if !mtio.IsOnline(g.GStat) {
		loaded = true
		// A cartridge is in the drive but not loaded: load it. A drive
		// still threading it answers when it is done, or not ready yet.
		if err := l.op(ctx, "load", mtio.MTLOAD, 1); err != nil && isHungOrCtx(err) {
			return false, l.failLoad("load", err)
		}
		if g, err = l.get(ctx); err != nil {
			return false, l.failLoad("load: status", err)
		}
		if !mtio.IsOnline(g.GStat) {
			// st decides readiness at open: close, wait, open again.
			if err := l.closeDev(ctx); err != nil {
				return false, err
			}
			return false, nil
		}
	}
	l.wp = mtio.IsWrProt(g.GStat)
	if err := l.setBlockSize(ctx, l.cfg.BlockSize); err != nil {
		l.closeDev(ctx)
		return false, err
	}
	if loaded {
		l.pos = 0
	}
	return true, nil
}

// failLoad gives up a half-done load. A device still inside a hung
// syscall cannot be closed here; it is dropped.
func (l *Linux) failLoad(op string, err error) error {
	dev := l.dev
	l.dev = nil
	if !isHungOrCtx(err) {
		dev.Close()
	}
	return l.fail(op, err)
}

// setBlockSize is MTSETBLK followed by a check of what st reports: a
// drive that kept another size would read every record wrong.
func (l *Linux) setBlockSize(ctx context.Context, size int) error {
	if size <= 0 || size > mtio.MTSTBLKSIZEMASK {
		return fmt.Errorf("tape drive %s: block size %d: %w: fixed block mode takes 1 to %d bytes", l.name, size, ErrBlockSize, mtio.MTSTBLKSIZEMASK)
	}
	if err := l.op(ctx, "set block size", mtio.MTSETBLK, int32(size)); err != nil {
		return l.fail("set block size", err)
	}
	g, err := l.get(ctx)
	if err != nil {
		return l.fail("set block size: status", err)
	}
	if got := int(g.DsReg & mtio.MTSTBLKSIZEMASK >> mtio.MTSTBLKSIZESHIFT); got != size {
		return fmt.Errorf("tape drive %s: set block size %d: %w: st reports %d after MTSETBLK", l.name, size, ErrBlockSize, got)
	}
	l.bs = size
	if cap(l.rbuf) < size {
		l.rbuf, l.wbuf = make([]byte, size), make([]byte, size)
	}
	return nil
}

func (l *Linux) closeDev(ctx context.Context) error {
	dev := l.dev
	l.dev = nil
	err := l.sys(ctx, "close", dev.Close, nil)
	if err != nil {
		return l.fail("close device", err)
	}
	return nil
}

func (l *Linux) Unload(ctx context.Context) error {
	if err := l.begin(ctx, "unload", true); err != nil {
		return err
	}
	defer l.cmd.Unlock()
	// MTOFFL rewinds and ejects; st writes a due file mark first.
	if err := l.op(ctx, "unload", mtio.MTOFFL, 1); err != nil {
		return l.fail("unload", err)
	}
	return l.closeDev(ctx)
}

func (l *Linux) Status(ctx context.Context) (Status, error) {
	if err := l.begin(ctx, "status", false); err != nil {
		return Status{}, err
	}
	defer l.cmd.Unlock()
	if l.dev == nil {
		// Nothing loaded by us: ask st without waiting for a medium.
		var g mtio.MtGet
		err := l.sys(ctx, "status", func() error {
			dev, err := l.open(l.cfg.Path, unix.O_RDONLY|unix.O_NONBLOCK)
			if err != nil {
				return err
			}
			defer dev.Close()
			g, err = dev.Get()
			return err
		}, nil)
		if err != nil {
			return Status{}, l.fail("status", err)
		}
		st := decodeStatus(g)
		st.Medium = false // not loaded through this driver
		return st, nil
	}
	g, err := l.get(ctx)
	if err != nil {
		return Status{}, l.fail("status", err)
	}
	st := decodeStatus(g)
	// Right after the ENOSPC, st's state says end of data rather than
	// end of medium; the driver knows it is in the zone.
	st.EarlyWarning = st.EarlyWarning || l.ew
	if st.Medium {
		if st.Position.Block, err = l.tell(ctx); err != nil {
			return Status{}, l.fail("status: position", err)
		}
	}
	return st, nil
}

// decodeStatus reads st's MTIOCGET answer: the block size and density
// code packed in mt_dsreg (MT_ST_BLKSIZE_MASK, MT_ST_DENSITY_MASK), the
// soft error count in mt_erreg (MT_ST_SOFTERR_MASK), the GMT_* bits of
// mt_gstat, and st's own file and block counters (-1 when st lost them).
func decodeStatus(g mtio.MtGet) Status {
	return Status{
		Medium:            mtio.IsOnline(g.GStat) && !mtio.IsDrOpen(g.GStat),
		WriteProtected:    mtio.IsWrProt(g.GStat),
		BlockSize:         int(g.DsReg & mtio.MTSTBLKSIZEMASK >> mtio.MTSTBLKSIZESHIFT),
		Density:           int(g.DsReg & mtio.MTSTDENSITYMASK >> mtio.MTSTDENSITYSHIFT),
		SoftErrors:        int(g.ErReg & mtio.MTSTSOFTERRMASK >> mtio.MTSTSOFTERRSHIFT),
		CleaningRequested: mtio.IsCln(g.GStat),
		BeginningOfMedium: mtio.IsBOT(g.GStat),
		EarlyWarning:      mtio.IsEOT(g.GStat),
		EndOfData:         mtio.IsEOD(g.GStat),
		FileMark:          mtio.IsEOF(g.GStat),
		Position:          Position{Block: -1, File: int64(g.FileNo), Record: int64(g.BlkNo)},
	}
}

func (l *Linux) SetBlockSize(ctx context.Context, size int) error {
	if err := l.begin(ctx, "set block size", true); err != nil {
		return err
	}
	defer l.cmd.Unlock()
	return l.setBlockSize(ctx, size)
}

func (l *Linux) ReadRecord(ctx context.Context, p []byte) (int, error) {
	if err := l.begin(ctx, "read", true); err != nil {
		return 0, err
	}
	defer l.cmd.Unlock()
	if len(p) < l.bs {
		return 0, fmt.Errorf("tape drive %s: read into %d bytes: %w: the block size is %d", l.name, len(p), ErrBlockSize, l.bs)
	}
	if l.pos < 0 {
		// Know where we read, to name the block if it is bad.
		if pos, err := l.tell(ctx); err == nil {
			l.pos = pos
		} else if isHungOrCtx(err) {
			return 0, err
		}
	}
	var n int
	err := l.sys(ctx, "read", func() error {
		var err error
		n, err = l.dev.Read(l.rbuf[:l.bs])
		return err
	}, nil)
	switch {
	case err == nil && n == l.bs:
		copy(p, l.rbuf[:n])
		l.zeroRead = false
		if l.pos >= 0 {
			l.pos++
		}
		return n, nil
	case err == nil && n == 0:
		// A file mark, or end of data: st marks the latter GMT_EOD (two
		// file marks in a row, or blank tape after a file mark) and says
		// it by a second 0-byte read.
		eod := l.zeroRead
		if g, gerr := l.get(ctx); gerr == nil && mtio.IsEOD(g.GStat) {
			eod = true
		} else if isHungOrCtx(gerr) {
			return 0, gerr
		}
		l.zeroRead = true
		if eod {
			l.pos = -1
			return 0, ErrEndOfData
		}
		if l.pos >= 0 {
			l.pos++
		}
		return 0, ErrFileMark
	case err == nil:
		l.pos = -1
		return 0, fmt.Errorf("tape drive %s: read returned %d bytes in fixed block mode with blocks of %d: %w", l.name, n, l.bs, ErrBlockSize)
	case errors.Is(err, syscall.EIO):
		// st returns EIO for blank tape that no file mark announced, for
		// reads past the end it has already reported, for a record of
		// another size (after backing up over it), and for medium errors.
		if g, gerr := l.get(ctx); gerr == nil && mtio.IsEOD(g.GStat) {
			l.zeroRead = true
			return 0, ErrEndOfData
		}
		bad := l.pos
		l.pos = -1
		return 0, &MediumError{Drive: l.name, Op: "read", Block: bad, Err: fmt.Errorf("%w (or a record of another block size than %d)", err, l.bs)}
	case errors.Is(err, syscall.ENOMEM), errors.Is(err, syscall.EINVAL):
		return 0, fmt.Errorf("tape drive %s: read: %w: %w", l.name, ErrBlockSize, err)
	}
	return 0, l.fail("read", err)
}

func (l *Linux) WriteRecord(ctx context.Context, p []byte) error {
	if err := l.begin(ctx, "write", true); err != nil {
		return err
	}
	defer l.cmd.Unlock()
	if l.wp {
		return fmt.Errorf("tape drive %s: write: %w", l.name, ErrWriteProtected)
	}
	if len(p) != l.bs {
		return fmt.Errorf("tape drive %s: write of %d bytes: %w: the block size is %d", l.name, len(p), ErrBlockSize, l.bs)
	}
	if l.pos < 0 {
		if pos, err := l.tell(ctx); err == nil {
			l.pos = pos
		} else if isHungOrCtx(err) {
			return err
		}
	}
	copy(l.wbuf, p)
	write := func() (int, error) {
		var n int
		err := l.sys(ctx, "write", func() error {
			var err error
			n, err = l.dev.Write(l.wbuf[:l.bs])
			return err
		}, nil)
		return n, err
	}
	n, err := write()
	if errors.Is(err, syscall.ENOSPC) && n <= 0 {
		if !l.ew {
			// The first ENOSPC: early warning. Nothing was written.
			l.ew = true
			return ErrEarlyWarning
		}
		// In the zone st lets every other write through.
		n, err = write()
	}
	switch {
	case err == nil && n == l.bs:
		l.zeroRead = false
		if l.pos >= 0 {
			l.pos++
		}
		return nil
	case err == nil:
		l.pos = -1
		return fmt.Errorf("tape drive %s: write took %d of %d bytes: %w", l.name, n, l.bs, ErrBlockSize)
	case errors.Is(err, syscall.ENOSPC), l.ew && errors.Is(err, syscall.EIO):
		return &EndOfMediumError{Drive: l.name, Block: l.pos, Err: err}
	case errors.Is(err, syscall.EIO):
		// st reports the physical end (VOLUME OVERFLOW) as EIO, with its
		// end-of-medium state (GMT_EOT) set; anything else is the tape.
		if g, gerr := l.get(ctx); gerr == nil && mtio.IsEOT(g.GStat) {
			return &EndOfMediumError{Drive: l.name, Block: l.pos, Err: err}
		}
		bad := l.pos
		l.pos = -1
		return &MediumError{Drive: l.name, Op: "write", Block: bad, Err: err}
	}
	return l.fail("write", err)
}

func (l *Linux) WriteFileMark(ctx context.Context) error {
	if err := l.begin(ctx, "write file mark", true); err != nil {
		return err
	}
	defer l.cmd.Unlock()
	if l.wp {
		return fmt.Errorf("tape drive %s: write file mark: %w", l.name, ErrWriteProtected)
	}
	// MTWEOF without the immediate bit: st returns once the drive buffer
	// is on tape. In the early warning zone st reports it written.
	err := l.op(ctx, "write file mark", mtio.MTWEOF, 1)
	switch {
	case err == nil:
		l.zeroRead = false
		if l.pos >= 0 {
			l.pos++
		}
		return nil
	case errors.Is(err, syscall.ENOSPC), l.ew && errors.Is(err, syscall.EIO):
		return &EndOfMediumError{Drive: l.name, Block: l.pos, Err: err}
	}
	return l.fail("write file mark", err)
}

// moved resets what a reposition resets in st.
func (l *Linux) moved(pos int64) {
	l.ew, l.zeroRead, l.pos = false, false, pos
}

func (l *Linux) Rewind(ctx context.Context) error {
	if err := l.begin(ctx, "rewind", true); err != nil {
		return err
	}
	defer l.cmd.Unlock()
	if err := l.op(ctx, "rewind", mtio.MTREW, 1); err != nil {
		return l.fail("rewind", err)
	}
	l.moved(0)
	return nil
}

func (l *Linux) Locate(ctx context.Context, block int64) error {
	if err := l.begin(ctx, "locate", true); err != nil {
		return err
	}
	defer l.cmd.Unlock()
	// MTSEEK takes the block in mt_count, an int: 2^31 blocks, 512 TiB of
	// 256 KiB records.
	if block < 0 || block > math.MaxInt32 {
		return fmt.Errorf("tape drive %s: locate block %d: out of the range st can seek to", l.name, block)
	}
	err := l.op(ctx, "locate", mtio.MTSEEK, int32(block))
	if errors.Is(err, syscall.EIO) {
		// LOCATE past end of data fails with BLANK CHECK, and the drive
		// stops at end of data.
		if p, perr := l.tell(ctx); perr == nil && p < block {
			l.moved(p)
			l.zeroRead = true
			return fmt.Errorf("tape drive %s: locate block %d: %w at block %d", l.name, block, ErrEndOfData, p)
		}
	}
	if err != nil {
		return l.fail("locate", err)
	}
	l.moved(block)
	return nil
}

func (l *Linux) SpaceFileMarks(ctx context.Context, n int) error {
	if err := l.begin(ctx, "space file marks", true); err != nil {
		return err
	}
	defer l.cmd.Unlock()
	if n == 0 {
		return nil
	}
	code, count := int16(mtio.MTFSF), n
	if n < 0 {
		code, count = mtio.MTBSF, -n
	}
	if count > math.MaxInt32 {
		return fmt.Errorf("tape drive %s: space %d file marks: too many", l.name, n)
	}
	err := l.op(ctx, "space file marks", code, int32(count))
	l.moved(-1)
	if errors.Is(err, syscall.EIO) {
		if g, gerr := l.get(ctx); gerr == nil {
			switch {
			case n > 0 && mtio.IsEOD(g.GStat):
				l.zeroRead = true
				return fmt.Errorf("tape drive %s: space forward %d file marks: %w", l.name, n, ErrEndOfData)
			case n < 0 && mtio.IsBOT(g.GStat):
				return fmt.Errorf("tape drive %s: space back %d file marks: %w", l.name, -n, ErrBeginningOfMedium)
			}
		}
	}
	if err != nil {
		return l.fail("space file marks", err)
	}
	return nil
}

func (l *Linux) SeekEndOfData(ctx context.Context) error {
	if err := l.begin(ctx, "seek end of data", true); err != nil {
		return err
	}
	defer l.cmd.Unlock()
	// MTEOM; without MT_ST_FAST_MTEOM st spaces file marks to get there,
	// so it still knows the file number afterwards.
	if err := l.op(ctx, "seek end of data", mtio.MTEOM, 1); err != nil {
		return l.fail("seek end of data", err)
	}
	l.moved(-1)
	return nil
}

func (l *Linux) Position(ctx context.Context) (Position, error) {
	if err := l.begin(ctx, "position", true); err != nil {
		return Position{}, err
	}
	defer l.cmd.Unlock()
	p, err := l.tell(ctx)
	if err != nil {
		return Position{}, l.fail("position", err)
	}
	g, err := l.get(ctx)
	if err != nil {
		return Position{}, l.fail("position", err)
	}
	l.pos = p
	return Position{Block: p, File: int64(g.FileNo), Record: int64(g.BlkNo)}, nil
}

// Close closes the device; st writes a due file mark. A syscall still
// running from a timed-out command keeps the kernel's file open until it
// returns.
func (l *Linux) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.cmd.Lock()
	defer l.cmd.Unlock()
	if l.dev == nil {
		return nil
	}
	dev := l.dev
	l.dev = nil
	if err := dev.Close(); err != nil {
		return fmt.Errorf("tape drive %s: close: %w", l.name, err)
	}
	return nil
}
