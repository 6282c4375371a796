package library

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
)

// Drive states, as DriveInfo.State reports them.
const (
	stateIdle    = "idle"
	stateBusy    = "busy"
	stateOffline = "offline"
)

// drive is one drive and its owner goroutine. Everything that touches the
// device goes through the owner (do), except a Mount's own commands,
// which run while the drive is marked busy so nothing else is let near
// it.
type drive struct {
	n      int
	device string
	dev    tape.Drive
	emu    *tape.Emulator // the same drive when emulated
	work   chan func()

	// Guarded by Manager.mu.
	state    string
	job      uint64
	doing    string
	reason   string // why offline
	barcode  string // what the library last reported in the drive
	lastUsed time.Time
	status   tape.Status // the last status read, for a busy drive's report
	loads    int64

	// verified is the label read from the cartridge in the drive since it
	// was loaded: a mount of the same tape that never left the drive
	// trusts it instead of locating back to the label, so a restore of
	// one file costs one locate. Any move in or out of the drive, a
	// labeling and an offline drive forget it.
	verified atomic.Pointer[verifiedLabel]
}

// verifiedLabel is a label and the barcode of the cartridge it was read
// from.
type verifiedLabel struct {
	barcode string
	label   volume.Label
}

func newDrive(n int, device string, dev tape.Drive) *drive {
	return &drive{n: n, device: device, dev: dev, work: make(chan func()), state: stateIdle}
}

// own runs the work handed to the drive, one item at a time, until done.
func (d *drive) own(done <-chan struct{}) {
	for {
		select {
		case w := <-d.work:
			w()
		case <-done:
			return
		}
	}
}

// do runs fn on the drive's owner goroutine and returns its error. fn
// honours ctx, so do returns soon after ctx ends.
func (m *Manager) do(ctx context.Context, d *drive, fn func() error) error {
	res := make(chan error, 1)
	select {
	case d.work <- func() { res <- fn() }:
	case <-ctx.Done():
		return ctx.Err()
	case <-m.done:
		return m.closedErr()
	}
	return <-res
}

func (m *Manager) closedErr() error {
	return m.fail(ErrClosed, "the storage node is shutting down; retry when it is back", "library %s is closed", m.cfg.Name)
}

// cmd is the context of one drive command: bounded by CommandTimeout, so
// a drive that stops answering gives a *tape.HungError.
func (m *Manager) cmd(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, m.cfg.CommandTimeout)
}

// robot is the context of one robot move or inventory.
func (m *Manager) robot(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, m.cfg.MoveTimeout)
}

// hung says whether err means the drive cannot be trusted any more: a
// command that did not answer, or one still running in the kernel.
func hung(err error) bool {
	return errors.Is(err, tape.ErrHung) || errors.Is(err, tape.ErrBusy)
}

// setOffline takes d out of use; the caller holds m.mu.
func (m *Manager) setOffline(d *drive, err error) {
	d.verified.Store(nil)
	d.state, d.job, d.doing = stateOffline, 0, ""
	d.reason = err.Error()
}

// free gives d back (or takes it offline when err says it hung) and wakes
// the waiting mounts.
func (m *Manager) free(d *drive, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if hung(err) {
		m.setOffline(d, err)
	} else if d.state == stateBusy {
		d.state, d.job, d.doing = stateIdle, 0, ""
	}
	d.lastUsed = time.Now()
	close(m.wake)
	m.wake = make(chan struct{})
}

// offlineError is the operator-facing error of a drive that hung.
func (m *Manager) offlineError(d *drive, err error) error {
	return m.fail(ErrDriveOffline, fmt.Sprintf("check drive %d (%s) of library %s, then bring it back with 'cairn library online --drive %d'", d.n, d.device, m.cfg.Name, d.n),
		"drive %d of library %s stopped answering and is offline: %w", d.n, m.cfg.Name, err)
}

// driveFigures are a drive's counters since it was opened.
type driveFigures struct {
	bytesWritten, bytesRead int64
	writing                 time.Duration
	locates, stops          int64
}

func (d *drive) figures() driveFigures {
	if d.emu != nil {
		st := d.emu.Stats()
		return driveFigures{bytesWritten: st.BytesWritten, bytesRead: st.BytesRead, writing: st.Writing, locates: st.Locates, stops: st.Stops}
	}
	if c, ok := d.dev.(*countingDrive); ok {
		return c.figures()
	}
	return driveFigures{}
}

// countingDrive counts what a real drive did: st reports no figures, so
// bytes, write time and tape movements are counted at the calls. Stops
// stay unknown (the drive's log pages have them; st does not read them).
type countingDrive struct {
	tape.Drive
	mu sync.Mutex
	f  driveFigures
}

func (c *countingDrive) figures() driveFigures {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.f
}

func (c *countingDrive) add(fn func(f *driveFigures)) {
	c.mu.Lock()
	fn(&c.f)
	c.mu.Unlock()
}

func (c *countingDrive) WriteRecord(ctx context.Context, p []byte) error {
	start := time.Now()
	err := c.Drive.WriteRecord(ctx, p)
	c.add(func(f *driveFigures) {
		f.writing += time.Since(start)
		if err == nil {
			f.bytesWritten += int64(len(p))
		}
	})
	return err
}

func (c *countingDrive) WriteFileMark(ctx context.Context) error {
	start := time.Now()
	err := c.Drive.WriteFileMark(ctx)
	c.add(func(f *driveFigures) { f.writing += time.Since(start) })
	return err
}

func (c *countingDrive) ReadRecord(ctx context.Context, p []byte) (int, error) {
	n, err := c.Drive.ReadRecord(ctx, p)
	c.add(func(f *driveFigures) { f.bytesRead += int64(n) })
	return n, err
}

func (c *countingDrive) Locate(ctx context.Context, block int64) error {
	c.add(func(f *driveFigures) { f.locates++ })
	return c.Drive.Locate(ctx, block)
}

func (c *countingDrive) SpaceFileMarks(ctx context.Context, n int) error {
	c.add(func(f *driveFigures) { f.locates++ })
	return c.Drive.SpaceFileMarks(ctx, n)
}

func (c *countingDrive) SeekEndOfData(ctx context.Context) error {
	c.add(func(f *driveFigures) { f.locates++ })
	return c.Drive.SeekEndOfData(ctx)
}

func (c *countingDrive) Rewind(ctx context.Context) error {
	c.add(func(f *driveFigures) { f.locates++ })
	return c.Drive.Rewind(ctx)
}
