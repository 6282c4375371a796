package tape

import (
	"sync"
	"syscall"

	"github.com/benmcclelland/mtio"
	"golang.org/x/sys/unix"
)

// FakeST models the Linux st driver and a tape drive behind it, over an
// emulated cartridge file, at the level of read(2), write(2) and the mtio
// ioctls: what the Linux driver sees of a real drive. It answers the way
// drivers/scsi/st.c does where the driver depends on it:
//
//   - read at a file mark returns 0 and moves past it; blank tape right
//     after a file mark returns 0 twice (GMT_EOD), then EIO; blank tape
//     not announced by a file mark is EIO with no end-of-data state;
//   - a record of another size than the block size is EIO, and st backs
//     up over it;
//   - the write that meets early warning returns its count (GMT_EOT); the
//     next returns ENOSPC and writes nothing; then writes and ENOSPC
//     alternate until the physical end, which is EIO (GMT_EOT);
//   - a file mark is written at close, and before MTREW, MTOFFL, MTSEEK
//     and MTBSF (which then counts it), when the last operation was a
//     write;
//   - O_NONBLOCK opens succeed with no medium, and for writing on a
//     write-protected cartridge, whose writes fail with EACCES; a
//     read-write open of a write-protected cartridge without it is EROFS;
//   - MTSEEK loses the file and block counters (-1); a new load resets
//     the block size to the drive's default (variable, 0);
//   - one open at a time (EBUSY).
type FakeST struct {
	mu      sync.Mutex
	path    string     // cartridge in the drive, "" when empty
	cart    *cartridge // non-nil when loaded (online)
	opened  bool
	pos     int64
	bs      int
	writing bool // st's ST_WRITING: a file mark is due
	eof     int
	fileNo  int32
	blkNo   int32
	faults  Faults
	unhang  chan struct{}

	// KeepBlockSize makes MTSETBLK succeed without changing anything: a
	// drive that ignores the mode select.
	KeepBlockSize bool
}

// st's eof states, as far as the model needs them.
const (
	eofNone    = iota
	eofFM      // just crossed a file mark (ST_FM)
	eofEOMOK   // a write met early warning (ST_EOM_OK)
	eofEWAllow // ENOSPC was returned; the next write may proceed (ST_EOD_1 on write)
	eofEOMErr  // the physical end (ST_EOM_ERROR)
	eofEOD2    // blank tape after a file mark (ST_EOD_2)
	eofEOD     // ST_EOD
)

// GMT_* bits of mt_gstat (linux/mtio.h); mtio only has tests for them.
const (
	gmtEOF    = 0x80000000
	gmtBOT    = 0x40000000
	gmtEOT    = 0x20000000
	gmtEOD    = 0x08000000
	gmtWrProt = 0x04000000
	gmtOnline = 0x01000000
	gmtDrOpen = 0x00040000
	gmtCln    = 0x00008000
)

// NewFakeST returns an empty drive.
func NewFakeST() *FakeST {
	k := &FakeST{unhang: make(chan struct{})}
	close(k.unhang)
	return k
}

// Insert puts a cartridge in the drive, not loaded (MTLOAD loads it).
func (k *FakeST) Insert(path string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.path = path
}

// SetFaults replaces the faults; clearing Hang releases hung calls.
func (k *FakeST) SetFaults(f Faults) {
	k.mu.Lock()
	defer k.mu.Unlock()
	was := k.faults.Hang
	k.faults = f
	switch {
	case f.Hang && !was:
		k.unhang = make(chan struct{})
	case !f.Hang && was:
		close(k.unhang)
	}
}

// wait blocks while the drive hangs, then locks the model.
func (k *FakeST) wait() {
	k.mu.Lock()
	ch := k.unhang
	k.mu.Unlock()
	<-ch
	k.mu.Lock()
}

// Open is open(2) of the device node.
func (k *FakeST) Open(path string, flags int) (STDevice, error) {
	k.wait()
	defer k.mu.Unlock()
	if k.opened {
		return nil, syscall.EBUSY
	}
	if flags&unix.O_NONBLOCK == 0 {
		switch {
		case k.path == "":
			return nil, syscall.ENOMEDIUM
		case k.cart == nil:
			return nil, syscall.EIO // did not become ready
		case k.cart.info.WriteProtected && flags&unix.O_ACCMODE != unix.O_RDONLY:
			return nil, syscall.EROFS
		}
	}
	k.opened = true
	return &fakeFD{k: k, flags: flags}, nil
}

type fakeFD struct {
	k      *FakeST
	flags  int
	closed bool
}

func (k *FakeST) physical() (end, warn int64) {
	end = k.cart.info.Capacity
	warn = end - k.cart.info.EarlyWarningZone
	if e := k.faults.EndOfMediumAt; e > 0 && e < end {
		end = e
		warn = max(warn, end+1)
	}
	return end, warn
}

func (k *FakeST) bad(lba int64) bool {
	for _, b := range k.faults.MediumErrorAt {
		if b == lba {
			return true
		}
	}
	return false
}

// flushMark writes the file mark due after writing.
func (k *FakeST) flushMark() error {
	if !k.writing {
		return nil
	}
	k.writing = false
	return k.addMark()
}

func (k *FakeST) addMark() error {
	if err := k.cart.truncate(k.pos); err != nil {
		return syscall.EIO
	}
	if err := k.cart.add(objMark, nil); err != nil {
		return syscall.EIO
	}
	k.pos++
	if k.fileNo >= 0 {
		k.fileNo++
	}
	k.blkNo = 0
	return k.cart.sync()
}

func (f *fakeFD) Read(p []byte) (int, error) {
	k := f.k
	k.wait()
	defer k.mu.Unlock()
	switch {
	case f.closed:
		return 0, syscall.EBADF
	case k.cart == nil:
		return 0, syscall.ENOMEDIUM
	case k.bs == 0 || len(p)%k.bs != 0 || len(p) != k.bs:
		return 0, syscall.EINVAL
	}
	k.writing = false
	switch k.eof {
	case eofEOD2:
		k.eof = eofEOD
		return 0, nil
	case eofEOD:
		return 0, syscall.EIO
	}
	if k.pos >= k.cart.eod {
		if k.eof == eofFM {
			k.eof = eofEOD2 // "Zero returned for first BLANK CHECK after EOF"
			return 0, nil
		}
		return 0, syscall.EIO
	}
	kind, n, off, crc, err := k.cart.object(k.pos)
	if err != nil {
		return 0, syscall.EIO
	}
	if kind == objMark {
		k.pos++
		if k.fileNo >= 0 {
			k.fileNo++
		}
		k.blkNo = 0
		k.eof = eofFM
		return 0, nil
	}
	if k.bad(k.pos) {
		k.pos++
		k.blkNo = -1
		k.eof = eofNone
		return 0, syscall.EIO
	}
	if n != len(p) {
		return 0, syscall.EIO // "Incorrect block size", backed up
	}
	if ok, err := k.cart.readData(p[:n], off, crc); err != nil || !ok {
		k.pos++
		return 0, syscall.EIO
	}
	k.pos++
	if k.blkNo >= 0 {
		k.blkNo++
	}
	k.eof = eofNone
	return n, nil
}

func (f *fakeFD) Write(p []byte) (int, error) {
	k := f.k
	k.wait()
	defer k.mu.Unlock()
	switch {
	case f.closed:
		return 0, syscall.EBADF
	case k.cart == nil:
		return 0, syscall.ENOMEDIUM
	case f.flags&unix.O_ACCMODE == unix.O_RDONLY:
		return 0, syscall.EBADF
	case k.cart.info.WriteProtected:
		return 0, syscall.EACCES
	case k.bs == 0 || len(p) != k.bs:
		return 0, syscall.EINVAL
	}
	switch k.eof {
	case eofEOMOK:
		k.eof = eofEWAllow
		return 0, syscall.ENOSPC
	case eofEOMErr:
		return 0, syscall.EIO
	}
	if k.bad(k.pos) {
		return 0, syscall.EIO
	}
	at, err := k.cart.bytesBefore(k.pos)
	if err != nil {
		return 0, syscall.EIO
	}
	end, warn := k.physical()
	if at+int64(len(p)) > end {
		k.eof = eofEOMErr
		return 0, syscall.EIO
	}
	if k.cart.truncate(k.pos) != nil || k.cart.add(objRecord, p) != nil {
		return 0, syscall.EIO
	}
	k.cart.info.BytesWritten += int64(len(p))
	k.pos++
	if k.blkNo >= 0 {
		k.blkNo++
	}
	k.writing = true
	k.eof = eofNone
	if at+int64(len(p)) >= warn {
		k.eof = eofEOMOK
	}
	return len(p), nil
}

func (f *fakeFD) Op(op int16, count int32) error {
	k := f.k
	k.wait()
	defer k.mu.Unlock()
	if f.closed {
		return syscall.EBADF
	}
	if op == mtio.MTLOAD {
		if k.cart != nil {
			return nil
		}
		if k.path == "" {
			return syscall.ENOMEDIUM
		}
		c, err := openCartridge(k.path)
		if err != nil {
			return syscall.EIO
		}
		c.info.LoadCount++
		c.writeMeta()
		k.cart, k.pos, k.fileNo, k.blkNo, k.eof, k.writing = c, 0, 0, 0, eofNone, false
		k.bs = 0 // the drive forgets the block size with the cartridge
		return nil
	}
	if k.cart == nil {
		return syscall.ENOMEDIUM
	}
	switch op {
	case mtio.MTSETBLK:
		if !k.KeepBlockSize {
			k.bs = int(count)
		}
	case mtio.MTNOP:
	case mtio.MTWEOF:
		switch {
		case f.flags&unix.O_ACCMODE == unix.O_RDONLY:
			return syscall.EBADF
		case k.cart.info.WriteProtected:
			return syscall.EACCES
		}
		at, err := k.cart.bytesBefore(k.pos)
		if end, _ := k.physical(); err != nil || at > end {
			return syscall.EIO
		}
		k.writing = false
		for range count {
			if err := k.addMark(); err != nil {
				return err
			}
		}
		if k.eof == eofFM || k.eof >= eofEOD2 {
			k.eof = eofNone
		}
	case mtio.MTREW:
		if err := k.flushMark(); err != nil {
			return err
		}
		k.pos, k.fileNo, k.blkNo, k.eof = 0, 0, 0, eofNone
	case mtio.MTOFFL:
		if err := k.flushMark(); err != nil {
			return err
		}
		k.cart.writeMeta()
		k.cart.close()
		k.cart = nil // still in the drive, unloaded
	case mtio.MTSEEK:
		if err := k.flushMark(); err != nil {
			return err
		}
		k.fileNo, k.blkNo, k.eof = -1, -1, eofNone
		if int64(count) > k.cart.eod {
			k.pos = k.cart.eod
			return syscall.EIO // BLANK CHECK
		}
		k.pos = int64(count)
	case mtio.MTFSF:
		k.eof = eofNone
		for range count {
			file, _ := k.cart.marksBefore(k.pos)
			if int(file) >= len(k.cart.marks) {
				k.pos, k.blkNo, k.eof = k.cart.eod, -1, eofEOD
				return syscall.EIO
			}
			k.pos = k.cart.marks[file] + 1
			if k.fileNo >= 0 {
				k.fileNo++
			}
			k.blkNo = 0
		}
	case mtio.MTBSF:
		if k.writing {
			if err := k.flushMark(); err != nil {
				return err
			}
			count++
		}
		k.eof = eofNone
		for range count {
			file, last := k.cart.marksBefore(k.pos)
			if file == 0 {
				k.pos, k.fileNo, k.blkNo = 0, 0, 0
				return syscall.EIO
			}
			k.pos = last
			if k.fileNo >= 0 {
				k.fileNo--
			}
			k.blkNo = -1
		}
	case mtio.MTEOM:
		file, last := k.cart.marksBefore(k.cart.eod)
		k.pos, k.fileNo, k.blkNo, k.eof = k.cart.eod, int32(file), int32(k.cart.eod-last-1), eofEOD
	default:
		return syscall.EINVAL
	}
	return nil
}

func (f *fakeFD) Get() (mtio.MtGet, error) {
	k := f.k
	k.wait()
	defer k.mu.Unlock()
	if f.closed {
		return mtio.MtGet{}, syscall.EBADF
	}
	g := mtio.MtGet{Type: mtio.MTISSCSI2, FileNo: -1, BlkNo: -1}
	switch {
	case k.cart != nil:
		g.GStat |= gmtOnline
		if k.cart.info.WriteProtected {
			g.GStat |= gmtWrProt
		}
		if k.pos == 0 {
			g.GStat |= gmtBOT
		}
		switch k.eof {
		case eofFM:
			g.GStat |= gmtEOF
		case eofEOMOK, eofEOMErr:
			g.GStat |= gmtEOT
		case eofEOD2, eofEOD:
			g.GStat |= gmtEOD
		}
		g.DsReg = int64(k.bs) | 0x60<<mtio.MTSTDENSITYSHIFT
		g.FileNo, g.BlkNo = k.fileNo, k.blkNo
	case k.path == "":
		g.GStat |= gmtDrOpen
	}
	if k.faults.CleaningRequested {
		g.GStat |= gmtCln
	}
	g.ErReg = int64(k.faults.SoftErrors)
	return g, nil
}

func (f *fakeFD) Pos() (int64, error) {
	k := f.k
	k.wait()
	defer k.mu.Unlock()
	switch {
	case f.closed:
		return 0, syscall.EBADF
	case k.cart == nil:
		return 0, syscall.ENOMEDIUM
	}
	return k.pos, nil
}

func (f *fakeFD) Close() error {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if f.closed {
		return syscall.EBADF
	}
	f.closed = true
	k.opened = false
	if k.cart != nil {
		// st writes the due file mark at close; the drive keeps its
		// position (non-rewinding node).
		if err := k.flushMark(); err != nil {
			return err
		}
		k.cart.writeMeta()
	}
	return nil
}

// Cartridge is the path of the cartridge in the drive.
func (k *FakeST) Cartridge() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.path
}
