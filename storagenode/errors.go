package storagenode

import (
	"errors"

	"github.com/cairnbackup/cairn/storagenode/library"
	"github.com/cairnbackup/cairn/wire"
)

// libraryCodes are the wire codes of the library's kinds of failure.
var libraryCodes = []struct {
	kind error
	code string
}{
	{library.ErrClosed, wire.CodeUnavailable},
	{library.ErrInvalid, wire.CodeInvalidArgument},
	{library.ErrNotFound, wire.CodeNotFound},
	{library.ErrWrongState, wire.CodeWrongState},
	{library.ErrBarcodeMismatch, wire.CodeBarcodeMismatch},
	{library.ErrForeignLabel, wire.CodeForeignLabel},
	{library.ErrWriteProtected, wire.CodeWriteProtected},
	{library.ErrDriveOffline, wire.CodeDriveOffline},
	{library.ErrChanger, wire.CodeLibrary},
	{library.ErrNoFreeDrive, wire.CodeTimeout},
	{library.ErrReadBack, wire.CodeIO},
}

// edgeError is err as it leaves the node, in an answer to the servers or
// on an agent's stream: the packages under the node return domain errors,
// and here they get their code and hint. A code this node chose already
// (a *wire.Error in the chain that is not internal) stays. err stays the
// cause: on this side errors.Is and As still find the domain error.
func edgeError(err error) *wire.Error {
	if err == nil {
		return nil
	}
	var we *wire.Error
	if errors.As(err, &we) && we.Code != wire.CodeInternal {
		return wire.AsError(err)
	}
	if we := sftpError(err); we != nil {
		return we
	}
	var le *library.Error
	if errors.As(err, &le) {
		for _, c := range libraryCodes {
			if errors.Is(le.Kind, c.kind) {
				return wire.Errorf(c.code, le.Hint, "%w", err)
			}
		}
	}
	return wire.AsError(err)
}

// orderError is edgeError for a handler's answer: nil stays nil.
func orderError(err error) error {
	if err == nil {
		return nil
	}
	return edgeError(err)
}
