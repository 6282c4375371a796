package volume

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// CorruptBlockError reports one block that cannot be used: it fails its
// CRC, is cut short, or is out of place (another volume's, another
// session's, or the wrong seq). The entries whose Location range
// [Seq, EndSeq] covers Seq are damaged; the others read normally.
type CorruptBlockError struct {
	VolumeID  uuid.UUID
	SessionID uuid.UUID
	Seq       uint64 // the seq expected at Offset
	Offset    int64  // volume byte offset of the block
	Reason    string
}

func (e *CorruptBlockError) Error() string {
	return fmt.Sprintf("volume %s, session %s: block seq %d at offset %d is damaged: %s", e.VolumeID, e.SessionID, e.Seq, e.Offset, e.Reason)
}

// KeyError means the key given cannot read a session: none was given, or it
// is not the key the session was written with.
type KeyError struct {
	KeyID     string // the key the session was written with, when known
	SessionID uuid.UUID
	Reason    string
}

func (e *KeyError) Error() string {
	need := "its data key"
	if e.KeyID != "" {
		need = fmt.Sprintf("key %q", e.KeyID)
	}
	return fmt.Sprintf("session %s needs %s (%s); pass the key exported with \"cairn key export\"", e.SessionID, need, e.Reason)
}

var (
	// ErrTornPart: a part has no PartEnd, because the write that made it
	// did not finish (a crash or a lost medium). Its data blocks up to the
	// tear are readable; its session has no trailer to read the index from.
	ErrTornPart = errors.New("torn session part: the write did not finish")
	// ErrMediumLost: the medium failed a write (a tape's medium error):
	// what was written after its last durable byte is not on it, and
	// nothing more is to be written there. A SessionWriter whose Appender
	// is a RecoverableAppender ends the part at the last block wholly on
	// the medium and goes on with the rest on the next volume; the
	// medium's own error wraps it.
	ErrMediumLost = errors.New("the medium failed a write")
	// ErrVolumeFull: a block does not fit the volume and there is no next
	// volume to continue on, or the next one is too small for even one block.
	ErrVolumeFull = errors.New("volume full")
	// ErrWriterClosed: the SessionWriter was closed or aborted.
	ErrWriterClosed = errors.New("session writer is closed")
	// ErrBadStream: the records given to a SessionWriter break the stream's
	// rules (a partial record, a Data record outside an entry, ...).
	ErrBadStream = errors.New("bad session stream")
)
