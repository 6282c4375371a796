package volume

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/google/uuid"
)

// CorruptBlockError reports one block that cannot be used: it fails its
// CRC, is cut short, or is out of place (another volume's, another
// session's, or the wrong seq). The entries whose Location range
// [Seq, EndSeq] covers Seq are damaged; the others read normally.
//
// Damage outside any session (a label, a part header, bytes where a part
// should start) has a nil SessionID: Offset says where it is.
type CorruptBlockError struct {
	VolumeID  uuid.UUID
	SessionID uuid.UUID
	Seq       uint64 // the seq expected at Offset
	Offset    int64  // volume byte offset of the block
	Reason    string
}

func (e *CorruptBlockError) Error() string {
	if e.SessionID == uuid.Nil {
		return fmt.Sprintf("volume %s: offset %d is damaged: %s", e.VolumeID, e.Offset, e.Reason)
	}
	return fmt.Sprintf("volume %s, session %s: block seq %d at offset %d is damaged: %s", e.VolumeID, e.SessionID, e.Seq, e.Offset, e.Reason)
}

// LostEntry is an entry a read was asked for, or found, and could not
// pass on whole: its FileHeader, a block between it and its FileEnd, or
// its FileEnd was lost.
type LostEntry struct {
	// Loc is the location as it was asked for (ReadEntries) or found
	// (RecoverIndex, which knows no EndSeq for a lost entry).
	Loc fileindex.Location
	// Path is set when the reader read the entry's FileHeader and the
	// caller may not know it: by RecoverIndex. ReadEntries leaves it
	// empty; the caller's index names the entry at Loc.
	Path string
	// Damage is the damaged block that lost the entry; nil when no block
	// is damaged but the data given ends before the entry does (a torn
	// part, or a session that goes on on a volume not given).
	Damage *CorruptBlockError
	Reason string // Damage.Error(), or why the entry ends early
}

// LostEntriesError is what a read that went on past damage returns when
// it could not pass on every entry whole: Lost names each, in stream
// order, and every entry asked for that Lost does not name was passed on
// whole (FileHeader, every Data record, FileEnd). The damaged blocks were
// reported one by one as reading went on.
type LostEntriesError struct {
	SessionID uuid.UUID
	Lost      []LostEntry
}

func (e *LostEntriesError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "session %s: %d entries were lost to damage", e.SessionID, len(e.Lost))
	for i, l := range e.Lost {
		if i == 3 {
			fmt.Fprintf(&b, "; ... and %d more", len(e.Lost)-i)
			break
		}
		name := l.Path
		if name == "" {
			name = fmt.Sprintf("entry at seq %d in_block %d", l.Loc.Seq, l.Loc.InBlock)
		}
		fmt.Fprintf(&b, "; %s: %s", name, l.Reason)
	}
	return b.String()
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
