package catalog

import (
	"errors"
	"fmt"
)

// ErrNotFound is wrapped by every error of a read that found nothing, and
// matched by a refusal whose Code is CodeNotFound.
var ErrNotFound = errors.New("not found")

// ErrClosed is returned by reads and Apply on a closed Store.
var ErrClosed = errors.New("catalog is closed")

// Codes of the refusals Apply returns. The first ones are the wire's error
// codes of the same meaning, so a server passes them on unchanged.
const (
	CodeNotFound        = "not_found"
	CodeUnknownClient   = "unknown_client"
	CodeAlreadyExists   = "already_exists"
	CodeInvalidArgument = "invalid_argument"
	// CodeWrongState refuses a change that the thing's current state does
	// not allow: a segment for a backup that is not writing, an update of a
	// job that ended.
	CodeWrongState = "wrong_state"
)

// Error is a command the catalog refused. Refusals are results of Apply,
// the same on every server, and change nothing.
type Error struct {
	Code string
	Msg  string
	Hint string
}

func (e *Error) Error() string { return e.Msg }

// Is makes a not_found refusal match ErrNotFound, and a refusal match an
// *Error with the same Code.
func (e *Error) Is(target error) bool {
	if target == ErrNotFound {
		return e.Code == CodeNotFound
	}
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code
	}
	return false
}

func refuse(code, hint, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Hint: hint}
}

func notFound(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrNotFound)
}

// IndexDamagedError is a backup's file index in the catalog that does not
// decode: a node sent a bad segment, or the catalog's file was damaged.
// Reads of that backup's tree fail with it; nothing else is affected, and
// the backup's volumes hold their own copy of the index.
type IndexDamagedError struct {
	Backup  uint64
	Segment int
	Err     error
}

func (e *IndexDamagedError) Error() string {
	return fmt.Sprintf("index of backup %d is damaged (segment %d): %v", e.Backup, e.Segment, e.Err)
}

func (e *IndexDamagedError) Unwrap() error { return e.Err }
