package tape

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/media/volume"
	"github.com/google/uuid"
)

// DriveProfile is how fast an emulated drive is. The figures make
// timings realistic (a restore plan that locates a hundred times costs
// what it would on the real drive); a VirtualClock makes them free in
// tests.
type DriveProfile struct {
	Name string
	// Density is the SCSI density code the drive reports.
	Density int
	// Speed is the streaming rate in bytes per second, reading or writing.
	Speed int64
	// LocateAverage is the mean time to locate between two random
	// positions on a full cartridge, LocateMin the time of the shortest
	// reposition. A locate over a distance d of a cartridge of capacity C
	// takes LocateMin + 3*(LocateAverage-LocateMin)*d/C (the mean distance
	// between two random points is C/3); rewinding is a locate to 0.
	LocateAverage, LocateMin time.Duration
	// Load is the time from an inserted cartridge to ready, Unload the time
	// to eject (after rewinding), FileMark the time to write a file mark
	// once the drive's buffer is on tape.
	Load, Unload, FileMark time.Duration
	// BufferBytes is the drive's data buffer, MinSpeed the slowest the
	// tape streams (speed matching), and Restart what a stop costs: the
	// reposition (backhitch) before writing goes on. See "The stop model"
	// in the package doc. BufferBytes 0 means no buffer model: every
	// record is paced at Speed and the drive never stops.
	BufferBytes int64
	MinSpeed    int64
	Restart     time.Duration
}

// LTO9 is an LTO-9-like full-height drive: 400 MB/s native and a 10 s
// average locate. The load, unload, file mark and restart times and the
// slowest matched speed (a third of native) are of the order drive data
// sheets give, not measurements. The buffer is 256 MiB, a quarter of the
// 1 GiB such drives have, so that the stops a slow host causes show in
// the few GiB a test or benchmark writes; how often a drive stops scales
// with the buffer, what it costs does not.
var LTO9 = DriveProfile{
	Name: "LTO-9", Density: 0x60, Speed: 400_000_000,
	LocateAverage: 10 * time.Second, LocateMin: time.Second,
	Load: 15 * time.Second, Unload: 20 * time.Second, FileMark: time.Second,
	BufferBytes: 256 << 20, MinSpeed: 133_000_000, Restart: 2 * time.Second,
}

// Fast is LTO9 with its mechanical times (load, unload, locate, file
// mark, restart) divided by 100 and the same streaming speed and buffer:
// `cairn dev` and the demo feel like a library without waiting minutes
// for a robot and a locate.
var Fast = func() DriveProfile {
	p := LTO9
	p.Name = "LTO-9 (fast)"
	p.LocateAverage /= 100
	p.LocateMin /= 100
	p.Load /= 100
	p.Unload /= 100
	p.FileMark /= 100
	p.Restart /= 100
	return p
}()

// ProfileNamed returns the profile a configuration names: "lto9" (or "")
// and "fast".
func ProfileNamed(name string) (DriveProfile, error) {
	switch name {
	case "", "lto9":
		return LTO9, nil
	case "fast":
		return Fast, nil
	}
	return DriveProfile{}, fmt.Errorf("tape drive profile %q: use \"lto9\" or \"fast\"", name)
}

// Faults are failures an emulated drive is told to show; the zero value is
// a healthy drive. They are not stored with the cartridge.
type Faults struct {
	// MediumErrorAt lists logical blocks that can be neither read nor
	// written: *MediumError naming the block.
	MediumErrorAt []int64
	// EndOfMediumAt, when positive, ends the tape after that many bytes,
	// with no early warning before it: a cartridge that is shorter than
	// it claims.
	EndOfMediumAt int64
	// Hang: commands never complete; each waits until its context is done
	// (then *HungError) or until Hang is cleared.
	Hang bool
	// CleaningRequested shows in Status.
	CleaningRequested bool
	// SoftErrors shows in Status.
	SoftErrors int
}

// EmulatorConfig configures an emulated drive.
type EmulatorConfig struct {
	// Name identifies the drive in errors; "" means "emulated".
	Name string
	// Profile: zero means LTO9.
	Profile DriveProfile
	// Clock: nil means RealClock.
	Clock Clock
	// BlockSize is the fixed block size set at every Load; 0 means
	// volume.DefaultBlockSize.
	BlockSize int
}

// EmulatorStats counts what an emulated drive did.
type EmulatorStats struct {
	RecordsRead, RecordsWritten int64
	BytesRead, BytesWritten     int64
	FileMarks                   int64
	// Locates counts tape movements other than streaming: Locate, Rewind,
	// SpaceFileMarks, SeekEndOfData that actually moved the tape.
	Locates int64
	// Busy is the drive time spent (virtual time with a VirtualClock).
	Busy time.Duration
	// Writing is the part of Busy spent writing: streaming records, file
	// marks and restarts.
	Writing time.Duration
	// Stops counts the times the buffer ran dry while writing, so the
	// tape stopped and had to reposition (Restart) before writing again.
	Stops int64
}

// Emulator is a Drive backed by cartridge files (see cartridge.go for
// their layout). A cartridge is put in with Insert, made ready with Load,
// and taken out with Remove after Unload: what a library robot or an
// operator does.
type Emulator struct {
	name    string
	profile DriveProfile
	clock   Clock
	defBS   int

	cmd sync.Mutex // held for the duration of a command; TryLock gives ErrBusy

	mu       sync.Mutex // guards the fields below, which change outside commands
	inserted string     // path of the cartridge in the drive, "" when empty
	faults   Faults
	unhang   chan struct{} // closed when Hang is cleared or the drive closes
	stats    EmulatorStats
	closed   bool
	loaded   bool

	// Command state, guarded by cmd.
	cart      *cartridge
	pos       int64
	bs        int
	lastWrite bool // the last command was a WriteRecord: a file mark is due
	lastMark  bool // the last read crossed a file mark
	atEOD     bool // the last read found end of data
	ewArmed   bool // a write ended past the early warning point: the next one gets ErrEarlyWarning
	ewPassed  bool // ErrEarlyWarning was returned since the last reposition
	due       time.Time
	slack     time.Duration
	buf       writeBuffer
}

// paceSlack is how far ahead of its deadline a drive on the real clock
// runs before it sleeps.
const paceSlack = 5 * time.Millisecond

var _ Drive = (*Emulator)(nil)
var _ CartridgeMemoryWriter = (*Emulator)(nil)

// NewEmulator returns an empty emulated drive.
func NewEmulator(cfg EmulatorConfig) *Emulator {
	e := &Emulator{name: cfg.Name, profile: cfg.Profile, clock: cfg.Clock, defBS: cfg.BlockSize, unhang: make(chan struct{})}
	if e.name == "" {
		e.name = "emulated"
	}
	if e.profile.Speed == 0 {
		e.profile = LTO9
	}
	if e.clock == nil {
		e.clock = RealClock()
	}
	if _, ok := e.clock.(realClock); ok {
		e.slack = paceSlack
	}
	if e.defBS == 0 {
		e.defBS = volume.DefaultBlockSize
	}
	close(e.unhang)
	return e
}

func (e *Emulator) Name() string { return e.name }

// Insert puts the cartridge file at path into the drive (not yet loaded).
func (e *Emulator) Insert(path string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("tape drive %s: %w", e.name, ErrClosed)
	}
	if e.inserted != "" {
		return fmt.Errorf("tape drive %s: cannot insert %s: cartridge %s is in the drive: %w", e.name, path, e.inserted, ErrBusy)
	}
	if _, err := ReadCartridgeInfo(path); err != nil {
		return fmt.Errorf("tape drive %s: insert: %w", e.name, err)
	}
	e.inserted = path
	return nil
}

// Remove takes the unloaded cartridge out of the drive and returns its path.
func (e *Emulator) Remove() (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.inserted == "" {
		return "", fmt.Errorf("tape drive %s: remove: %w", e.name, ErrNoMedium)
	}
	if e.loaded {
		return "", fmt.Errorf("tape drive %s: remove: cartridge %s is loaded; unload it first: %w", e.name, e.inserted, ErrBusy)
	}
	p := e.inserted
	e.inserted = ""
	return p, nil
}

// Cartridge is the path of the cartridge in the drive, "" when empty.
func (e *Emulator) Cartridge() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.inserted
}

// SetFaults replaces the drive's faults. Clearing Hang releases the
// commands that hang.
func (e *Emulator) SetFaults(f Faults) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f.MediumErrorAt = slices.Clone(f.MediumErrorAt)
	wasHung := e.faults.Hang
	e.faults = f
	switch {
	case f.Hang && !wasHung:
		e.unhang = make(chan struct{})
	case !f.Hang && wasHung:
		close(e.unhang)
	}
}

// Stats reports what the drive did since it was made.
func (e *Emulator) Stats() EmulatorStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

// begin starts a command: it refuses a second concurrent one, waits out a
// hang, and checks the medium when needed. The caller defers e.end().
func (e *Emulator) begin(ctx context.Context, op string, needMedium bool) error {
	if !e.cmd.TryLock() {
		return fmt.Errorf("tape drive %s: %s: %w", e.name, op, ErrBusy)
	}
	e.mu.Lock()
	closed, hang, unhang := e.closed, e.faults.Hang, e.unhang
	e.mu.Unlock()
	if closed {
		e.cmd.Unlock()
		return fmt.Errorf("tape drive %s: %s: %w", e.name, op, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		e.cmd.Unlock()
		return ctxError(e.name, op, time.Now(), err)
	}
	if hang {
		start := time.Now()
		select {
		case <-ctx.Done():
			e.cmd.Unlock()
			return ctxError(e.name, op, start, ctx.Err())
		case <-unhang:
		}
		e.mu.Lock()
		closed = e.closed
		e.mu.Unlock()
		if closed {
			e.cmd.Unlock()
			return fmt.Errorf("tape drive %s: %s: %w", e.name, op, ErrClosed)
		}
	}
	if needMedium && e.cart == nil {
		e.cmd.Unlock()
		return fmt.Errorf("tape drive %s: %s: %w", e.name, op, ErrNoMedium)
	}
	return nil
}

func (e *Emulator) end() { e.cmd.Unlock() }

// spend paces the drive: it takes d of drive time. Commands that follow
// each other closely are paced against a running deadline, and on the real
// clock the drive only sleeps once it is paceSlack ahead: timers fire a
// millisecond late on a busy VM, more than a 256 KiB record takes at
// 400 MB/s, so sleeping per record would halve the rate.
func (e *Emulator) spend(ctx context.Context, op string, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	now := e.clock.Now()
	if e.due.Before(now.Add(-10 * time.Millisecond)) {
		e.due = now // the drive was idle: no credit for the time it waited
	}
	e.due = e.due.Add(d)
	e.mu.Lock()
	e.stats.Busy += d
	e.mu.Unlock()
	if wait := e.due.Sub(now); wait > 0 && wait >= e.slack {
		start := time.Now()
		if err := e.clock.Sleep(ctx, wait); err != nil {
			return ctxError(e.name, op, start, err)
		}
	}
	return nil
}

func (e *Emulator) streamTime(n int) time.Duration {
	return time.Duration(float64(n) / float64(e.profile.Speed) * float64(time.Second))
}

// moveTo repositions the tape to lba, spending the locate time.
func (e *Emulator) moveTo(ctx context.Context, op string, lba int64) error {
	if err := e.drain(ctx, op); err != nil {
		return err
	}
	if lba != e.pos {
		from, err := e.cart.bytesBefore(e.pos)
		if err != nil {
			return e.ioErr(op, err)
		}
		to, err := e.cart.bytesBefore(lba)
		if err != nil {
			return e.ioErr(op, err)
		}
		d := max(from-to, to-from)
		span := e.profile.LocateAverage - e.profile.LocateMin
		t := e.profile.LocateMin + time.Duration(3*float64(span)*float64(d)/float64(e.cart.info.Capacity))
		e.mu.Lock()
		e.stats.Locates++
		e.mu.Unlock()
		if err := e.spend(ctx, op, t); err != nil {
			return err
		}
	}
	e.pos = lba
	e.lastMark, e.atEOD, e.ewArmed, e.ewPassed = false, false, false, false
	return nil
}

func (e *Emulator) ioErr(op string, err error) error {
	return fmt.Errorf("tape drive %s: %s: %w", e.name, op, err)
}

func (e *Emulator) barcode() string {
	if e.cart == nil {
		return ""
	}
	return e.cart.info.Barcode
}

// flushMark writes the file mark st writes before moving the tape after a
// write.
func (e *Emulator) flushMark(ctx context.Context, op string) error {
	if !e.lastWrite {
		return nil
	}
	return e.writeMark(ctx, op)
}

func (e *Emulator) faultAt(lba int64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Contains(e.faults.MediumErrorAt, lba)
}

// physicalEnd is where the tape ends, and whether early warning comes
// before it.
func (e *Emulator) physicalEnd() (end, warn int64) {
	e.mu.Lock()
	early := e.faults.EndOfMediumAt
	e.mu.Unlock()
	end = e.cart.info.Capacity
	warn = end - e.cart.info.EarlyWarningZone
	if early > 0 && early < end {
		end = early
		warn = max(warn, end+1) // a short tape gives no warning
	}
	return end, warn
}

func (e *Emulator) Load(ctx context.Context) error {
	if err := e.begin(ctx, "load", false); err != nil {
		return err
	}
	defer e.end()
	if e.cart == nil {
		e.mu.Lock()
		path := e.inserted
		e.mu.Unlock()
		if path == "" {
			return fmt.Errorf("tape drive %s: load: %w", e.name, ErrNoMedium)
		}
		c, err := openCartridge(path)
		if err != nil {
			return e.ioErr("load", err)
		}
		c.info.LoadCount++
		if err := c.writeMeta(); err != nil {
			c.close()
			return e.ioErr("load", err)
		}
		e.cart = c
		e.mu.Lock()
		e.loaded = true
		e.mu.Unlock()
		e.pos = 0
		e.buf = writeBuffer{}
		if err := e.spend(ctx, "load", e.profile.Load); err != nil {
			return err
		}
	}
	// Fixed block mode at every load, as the Linux driver does.
	e.bs = e.defBS
	e.lastWrite, e.lastMark, e.atEOD, e.ewArmed, e.ewPassed = false, false, false, false, false
	return nil
}

func (e *Emulator) Unload(ctx context.Context) error {
	if err := e.begin(ctx, "unload", true); err != nil {
		return err
	}
	defer e.end()
	if err := e.flushMark(ctx, "unload"); err != nil {
		return err
	}
	if err := e.moveTo(ctx, "unload", 0); err != nil {
		return err
	}
	if err := e.spend(ctx, "unload", e.profile.Unload); err != nil {
		return err
	}
	return e.release()
}

// release closes the cartridge, recording its memory.
func (e *Emulator) release() error {
	c := e.cart
	e.cart = nil
	e.mu.Lock()
	e.loaded = false
	e.mu.Unlock()
	err := c.writeMeta()
	if cerr := c.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return e.ioErr("unload", err)
	}
	return nil
}

func (e *Emulator) Status(ctx context.Context) (Status, error) {
	if err := e.begin(ctx, "status", false); err != nil {
		return Status{}, err
	}
	defer e.end()
	e.mu.Lock()
	f := e.faults
	e.mu.Unlock()
	st := Status{CleaningRequested: f.CleaningRequested, SoftErrors: f.SoftErrors}
	if e.cart == nil {
		return st, nil
	}
	c := e.cart
	st.Medium = true
	st.WriteProtected = c.info.WriteProtected
	st.BlockSize = e.bs
	st.Density = e.profile.Density
	st.Position = c.position(e.pos)
	st.BeginningOfMedium = e.pos == 0
	st.EndOfData = e.atEOD || e.pos == c.eod
	st.FileMark = e.lastMark
	_, warn := e.physicalEnd()
	b, err := c.bytesBefore(e.pos)
	if err != nil {
		return Status{}, e.ioErr("status", err)
	}
	st.EarlyWarning = b >= warn || e.ewPassed
	st.Cartridge = &CartridgeMemory{Barcode: c.info.Barcode, VolumeID: c.info.VolumeID, LoadCount: c.info.LoadCount, BytesWritten: c.info.BytesWritten, BytesRead: c.info.BytesRead}
	return st, nil
}

// SetVolumeID records the Cairn volume id in the cartridge memory.
func (e *Emulator) SetVolumeID(ctx context.Context, id uuid.UUID) error {
	if err := e.begin(ctx, "write cartridge memory", true); err != nil {
		return err
	}
	defer e.end()
	e.cart.info.VolumeID = id
	if err := e.cart.writeMeta(); err != nil {
		return e.ioErr("write cartridge memory", err)
	}
	return nil
}

func (e *Emulator) SetBlockSize(ctx context.Context, size int) error {
	if err := e.begin(ctx, "set block size", true); err != nil {
		return err
	}
	defer e.end()
	if size <= 0 || size > maxRecordLen {
		return fmt.Errorf("tape drive %s: block size %d: %w: fixed block mode takes 1 to %d bytes", e.name, size, ErrBlockSize, maxRecordLen)
	}
	e.bs = size
	return nil
}

func (e *Emulator) ReadRecord(ctx context.Context, p []byte) (int, error) {
	if err := e.begin(ctx, "read", true); err != nil {
		return 0, err
	}
	defer e.end()
	if len(p) < e.bs {
		return 0, fmt.Errorf("tape drive %s: read into %d bytes: %w: the block size is %d", e.name, len(p), ErrBlockSize, e.bs)
	}
	e.lastWrite = false
	if err := e.drain(ctx, "read"); err != nil {
		return 0, err
	}
	c := e.cart
	if e.atEOD || e.pos >= c.eod {
		e.atEOD = true
		return 0, ErrEndOfData
	}
	kind, n, off, crc, err := c.object(e.pos)
	if err != nil {
		return 0, e.ioErr("read", err)
	}
	if kind == objDamaged {
		bad := e.pos
		e.pos++
		e.lastMark = false
		return 0, &MediumError{Drive: e.name, Barcode: c.info.Barcode, Op: "read", Block: bad, Err: fmt.Errorf("the header of the block at offset %d of the cartridge file is damaged", off)}
	}
	if kind == objMark {
		e.pos++
		if e.lastMark {
			// Two file marks in a row: end of data, as st reports it.
			e.atEOD = true
			return 0, ErrEndOfData
		}
		e.lastMark = true
		return 0, ErrFileMark
	}
	if e.faultAt(e.pos) {
		bad := e.pos
		e.pos++
		e.lastMark = false
		return 0, &MediumError{Drive: e.name, Barcode: c.info.Barcode, Op: "read", Block: bad}
	}
	if n != e.bs {
		// st reads nothing and backs up over the record.
		return 0, fmt.Errorf("tape drive %s: record at block %d is %d bytes: %w: the drive is set to %d", e.name, e.pos, n, ErrBlockSize, e.bs)
	}
	ok, err := c.readData(p[:n], off, crc)
	if err != nil {
		return 0, e.ioErr("read", err)
	}
	if !ok {
		bad := e.pos
		e.pos++
		return 0, &MediumError{Drive: e.name, Barcode: c.info.Barcode, Op: "read", Block: bad, Err: errors.New("data does not match its checksum in the cartridge file")}
	}
	if err := e.spend(ctx, "read", e.streamTime(n)); err != nil {
		return 0, err
	}
	e.pos++
	e.lastMark = false
	c.info.BytesRead += int64(n)
	e.mu.Lock()
	e.stats.RecordsRead++
	e.stats.BytesRead += int64(n)
	e.mu.Unlock()
	return n, nil
}

func (e *Emulator) WriteRecord(ctx context.Context, p []byte) error {
	if err := e.begin(ctx, "write", true); err != nil {
		return err
	}
	defer e.end()
	c := e.cart
	if c.info.WriteProtected {
		return fmt.Errorf("tape drive %s: write to cartridge %s: %w", e.name, c.info.Barcode, ErrWriteProtected)
	}
	if len(p) != e.bs {
		return fmt.Errorf("tape drive %s: write of %d bytes: %w: the block size is %d", e.name, len(p), ErrBlockSize, e.bs)
	}
	if e.faultAt(e.pos) {
		return &MediumError{Drive: e.name, Barcode: c.info.Barcode, Op: "write", Block: e.pos}
	}
	at, err := c.bytesBefore(min(e.pos, c.eod))
	if err != nil {
		return e.ioErr("write", err)
	}
	end, warn := e.physicalEnd()
	if e.ewArmed {
		e.ewArmed, e.ewPassed = false, true
		return ErrEarlyWarning
	}
	if at+int64(len(p)) > end {
		return &EndOfMediumError{Drive: e.name, Barcode: c.info.Barcode, Block: e.pos}
	}
	if err := e.feed(ctx, "write", len(p)); err != nil {
		return err
	}
	if err := c.truncate(e.pos); err != nil {
		return e.ioErr("write", err)
	}
	if err := c.add(objRecord, p); err != nil {
		return e.ioErr("write", err)
	}
	e.pos++
	e.lastWrite, e.lastMark, e.atEOD = true, false, false
	if at+int64(len(p)) >= warn && !e.ewPassed {
		// As st: the write that meets early warning succeeds; the next
		// one is refused once.
		e.ewArmed = true
	}
	c.info.BytesWritten += int64(len(p))
	e.mu.Lock()
	e.stats.RecordsWritten++
	e.stats.BytesWritten += int64(len(p))
	e.mu.Unlock()
	return nil
}

func (e *Emulator) WriteFileMark(ctx context.Context) error {
	if err := e.begin(ctx, "write file mark", true); err != nil {
		return err
	}
	defer e.end()
	return e.writeMark(ctx, "write file mark")
}

func (e *Emulator) writeMark(ctx context.Context, op string) error {
	c := e.cart
	if c.info.WriteProtected {
		return fmt.Errorf("tape drive %s: %s on cartridge %s: %w", e.name, op, c.info.Barcode, ErrWriteProtected)
	}
	at, err := c.bytesBefore(min(e.pos, c.eod))
	if err != nil {
		return e.ioErr(op, err)
	}
	if end, _ := e.physicalEnd(); at > end {
		return &EndOfMediumError{Drive: e.name, Barcode: c.info.Barcode, Block: e.pos}
	}
	if err := e.drain(ctx, op); err != nil {
		return err
	}
	if err := e.spend(ctx, op, e.profile.FileMark); err != nil {
		return err
	}
	e.mu.Lock()
	e.stats.Writing += e.profile.FileMark
	e.mu.Unlock()
	if err := c.truncate(e.pos); err != nil {
		return e.ioErr(op, err)
	}
	if err := c.add(objMark, nil); err != nil {
		return e.ioErr(op, err)
	}
	// A file mark flushes the drive's buffer: durable from here, and the
	// cartridge memory with it.
	if err := c.sync(); err != nil {
		return e.ioErr(op, err)
	}
	if err := c.writeMeta(); err != nil {
		return e.ioErr(op, err)
	}
	e.pos++
	e.lastWrite, e.lastMark, e.atEOD = false, false, false
	e.mu.Lock()
	e.stats.FileMarks++
	e.mu.Unlock()
	return nil
}

func (e *Emulator) Rewind(ctx context.Context) error {
	if err := e.begin(ctx, "rewind", true); err != nil {
		return err
	}
	defer e.end()
	if err := e.flushMark(ctx, "rewind"); err != nil {
		return err
	}
	return e.moveTo(ctx, "rewind", 0)
}

func (e *Emulator) Locate(ctx context.Context, block int64) error {
	if err := e.begin(ctx, "locate", true); err != nil {
		return err
	}
	defer e.end()
	if block < 0 {
		return fmt.Errorf("tape drive %s: locate block %d: blocks count from 0", e.name, block)
	}
	if err := e.flushMark(ctx, "locate"); err != nil {
		return err
	}
	if block > e.cart.eod {
		if err := e.moveTo(ctx, "locate", e.cart.eod); err != nil {
			return err
		}
		e.atEOD = true
		return fmt.Errorf("tape drive %s: locate block %d: %w at block %d", e.name, block, ErrEndOfData, e.cart.eod)
	}
	return e.moveTo(ctx, "locate", block)
}

func (e *Emulator) SpaceFileMarks(ctx context.Context, n int) error {
	if err := e.begin(ctx, "space file marks", true); err != nil {
		return err
	}
	defer e.end()
	c := e.cart
	switch {
	case n > 0:
		i, _ := slices.BinarySearch(c.marks, e.pos)
		if j := i + n - 1; j < len(c.marks) {
			return e.moveTo(ctx, "space file marks", c.marks[j]+1)
		}
		if err := e.moveTo(ctx, "space file marks", c.eod); err != nil {
			return err
		}
		e.atEOD = true
		return fmt.Errorf("tape drive %s: space forward %d file marks: %w at block %d", e.name, n, ErrEndOfData, c.eod)
	case n < 0:
		if e.lastWrite {
			// st writes the due file mark and spaces over it too.
			if err := e.writeMark(ctx, "space file marks"); err != nil {
				return err
			}
			n--
		}
		i, _ := slices.BinarySearch(c.marks, e.pos) // marks[:i] lie before pos
		if j := i + n; j >= 0 {
			return e.moveTo(ctx, "space file marks", c.marks[j])
		}
		if err := e.moveTo(ctx, "space file marks", 0); err != nil {
			return err
		}
		return fmt.Errorf("tape drive %s: space back %d file marks: %w", e.name, -n, ErrBeginningOfMedium)
	}
	return nil
}

func (e *Emulator) SeekEndOfData(ctx context.Context) error {
	if err := e.begin(ctx, "seek end of data", true); err != nil {
		return err
	}
	defer e.end()
	if e.pos == e.cart.eod {
		e.lastMark, e.ewArmed, e.ewPassed = false, false, false
		return nil
	}
	return e.moveTo(ctx, "seek end of data", e.cart.eod)
}

func (e *Emulator) Position(ctx context.Context) (Position, error) {
	if err := e.begin(ctx, "position", true); err != nil {
		return Position{}, err
	}
	defer e.end()
	return e.cart.position(e.pos), nil
}

// Close writes a due file mark, records the cartridge memory and closes
// the cartridge file. The cartridge stays inserted; a new Emulator can load
// it again. A command hanging on the Hang fault is released.
func (e *Emulator) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	if e.faults.Hang {
		e.faults.Hang = false
		close(e.unhang)
	}
	e.mu.Unlock()
	e.cmd.Lock()
	defer e.cmd.Unlock()
	if e.cart == nil {
		return nil
	}
	var err error
	if e.lastWrite {
		err = e.writeMark(context.Background(), "close")
	}
	if rerr := e.release(); err == nil {
		err = rerr
	}
	return err
}
