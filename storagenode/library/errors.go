package library

import (
	"errors"
	"fmt"

	"github.com/cairnbackup/cairn/media/tape"
)

// What went wrong, for errors.Is. Every error the Manager returns for a
// reason an operator can act on is an *Error of one of these kinds; the
// storage node maps each kind to a wire code where its answer leaves it.
// Any other error is a fault of a device or of the caller's context.
var (
	// ErrClosed: the library is closed (the storage node stops).
	ErrClosed = errors.New("library is closed")
	// ErrInvalid: the request names no barcode, a slot or drive the
	// library does not have, or an unknown move.
	ErrInvalid = errors.New("invalid library request")
	// ErrNotFound: the slot, drive or tape named holds nothing, or is not
	// in the library.
	ErrNotFound = errors.New("not in the library")
	// ErrWrongState: the drive is busy with a job or another operation, or
	// the tape is in a drive where the move needs it out.
	ErrWrongState = errors.New("drive or tape in use")
	// ErrBarcodeMismatch: the barcode read is not the one expected, or
	// the tape holds another volume than the catalog says.
	ErrBarcodeMismatch = errors.New("barcode does not match")
	// ErrForeignLabel: labeling a tape that is not blank, without
	// overwrite.
	ErrForeignLabel = errors.New("tape is not blank")
	// ErrWriteProtected: the cartridge's write-protect tab is set. It is
	// tape.ErrWriteProtected, so either name matches.
	ErrWriteProtected = tape.ErrWriteProtected
	// ErrDriveOffline: a drive stopped answering and is offline until
	// an operator brings it back.
	ErrDriveOffline = errors.New("drive is offline")
	// ErrChanger: the robot failed a move or an inventory.
	ErrChanger = errors.New("library changer failed")
	// ErrNoFreeDrive: no drive became free before the caller gave up.
	ErrNoFreeDrive = errors.New("no drive became free")
	// ErrReadBack: what the drive read back is not what it wrote.
	ErrReadBack = errors.New("the drive does not keep what it writes")
)

// Error is a library operation that failed for a reason an operator can
// act on: its kind (one of the Err values), a message that names the
// library and the drive, slot or tape, what the operator can do, and the
// device's error under it, if any. errors.Is finds both the kind and the
// cause.
type Error struct {
	Library string
	Kind    error
	Msg     string
	// Hint says what to do, naming the drive or the command; "" when the
	// kind says enough.
	Hint string
	Err  error
}

func (e *Error) Error() string { return e.Msg }

func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// fail makes an *Error of kind; format may wrap the cause with %w.
func (m *Manager) fail(kind error, hint, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Library: m.cfg.Name, Kind: kind, Msg: err.Error(), Hint: hint, Err: errors.Unwrap(err)}
}
