package tape

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/cairnbackup/cairn/media/volume"
)

// Conditions a caller acts on; compare with errors.Is.
var (
	// ErrNoMedium: no cartridge in the drive, or it is not ready. Load one
	// (the changer's job) and call Load.
	ErrNoMedium = errors.New("no cartridge in the drive")
	// ErrWriteProtected: the cartridge's write-protect tab is set. It can
	// be read; mark the volume read-only or move the tab.
	ErrWriteProtected = errors.New("cartridge is write-protected")
	// ErrBusy: the drive is running another command, or another process
	// holds it. Nothing was done.
	ErrBusy = errors.New("tape drive is busy")
	// ErrHung: the drive did not answer before the caller's deadline. See
	// HungError.
	ErrHung = errors.New("tape drive did not answer in time")
	// ErrFileMark: a read met a file mark and moved past it. Not a
	// failure: the end of a tape file.
	ErrFileMark = errors.New("file mark")
	// ErrEndOfData: there is nothing recorded at or after the position.
	ErrEndOfData = errors.New("end of data")
	// ErrBeginningOfMedium: a backward space ran into the beginning of the
	// tape.
	ErrBeginningOfMedium = errors.New("beginning of medium")
	// ErrEarlyWarning: the tape is past its early warning point; nothing
	// was written. Write the same record again (it will be accepted),
	// finish what is open and change cartridges.
	ErrEarlyWarning = errors.New("early warning: the cartridge is nearly full")
	// ErrEndOfMedium: the physical end of the tape; nothing more fits.
	ErrEndOfMedium = errors.New("end of medium")
	// ErrBlockSize: a record, a buffer or a block size does not match the
	// drive's fixed block size, or the drive did not take the block size.
	ErrBlockSize = errors.New("block size mismatch")
	// ErrMedium: the drive could not read or write the tape at a position.
	// See MediumError.
	ErrMedium = errors.New("medium error")
	// ErrClosed: the Drive was closed.
	ErrClosed = errors.New("tape drive is closed")
)

// MediumError is an unrecoverable read or write error at a known place on
// the tape: the block is damaged (or the drive is failing). Reading can go
// on after a Locate past it.
type MediumError struct {
	Drive   string
	Barcode string // "" when the drive does not know it
	Op      string // "read" or "write"
	// Block is the logical block that failed, -1 when unknown.
	Block int64
	// Err is what the device said (an errno for Linux), may be nil.
	Err error
}

func (e *MediumError) Error() string {
	cart := ""
	if e.Barcode != "" {
		cart = fmt.Sprintf(" (cartridge %s)", e.Barcode)
	}
	at := "at an unknown block"
	if e.Block >= 0 {
		at = fmt.Sprintf("at block %d", e.Block)
	}
	s := fmt.Sprintf("tape drive %s%s: medium error on %s %s", e.Drive, cart, e.Op, at)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is finds ErrMedium, and for a write volume.ErrMediumLost: the session
// writer then moves the rest of its session to another tape.
func (e *MediumError) Is(target error) bool {
	return target == ErrMedium || (target == volume.ErrMediumLost && e.Op == "write")
}
func (e *MediumError) Unwrap() error { return e.Err }

// EndOfMediumError is a write refused at the physical end of the tape.
// errors.Is finds both ErrEndOfMedium and syscall.ENOSPC in it, so code
// that treats every full medium alike (disk, SFTP, tape) sees it.
type EndOfMediumError struct {
	Drive   string
	Barcode string
	Block   int64 // where the write was refused, -1 when unknown
	Err     error // what the device said, may be nil
}

func (e *EndOfMediumError) Error() string {
	cart := ""
	if e.Barcode != "" {
		cart = fmt.Sprintf(" (cartridge %s)", e.Barcode)
	}
	s := fmt.Sprintf("tape drive %s%s: end of medium at block %d: the cartridge is full", e.Drive, cart, e.Block)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *EndOfMediumError) Is(target error) bool {
	return target == ErrEndOfMedium || target == syscall.ENOSPC
}
func (e *EndOfMediumError) Unwrap() error { return e.Err }

// HungError is a command the drive did not answer before the caller's
// deadline. What it did is unknown; the drive may answer ErrBusy until the
// command returns inside the kernel. Take the drive out of service and
// have someone look at it (or reset it) before using it again.
type HungError struct {
	Drive  string
	Op     string
	Waited time.Duration
	Err    error // the context's error
}

func (e *HungError) Error() string {
	return fmt.Sprintf("tape drive %s did not answer %s within %s: %v; take the drive out of service and check it", e.Drive, e.Op, e.Waited.Round(time.Millisecond), e.Err)
}

func (e *HungError) Is(target error) bool { return target == ErrHung }
func (e *HungError) Unwrap() error        { return e.Err }

// ctxError is what a command returns when its context is done before the
// drive answered: a HungError for a deadline, the plain cancellation
// otherwise (the caller asked to stop; nothing hung).
func ctxError(drive, op string, start time.Time, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return &HungError{Drive: drive, Op: op, Waited: time.Since(start), Err: err}
	}
	return fmt.Errorf("tape drive %s: %s: %w", drive, op, err)
}
