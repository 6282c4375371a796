package volume

import (
	"errors"
	"fmt"
	"io"

	"github.com/cairnbackup/cairn/fileindex"
)

// ReadIndex reads the trailer of a session from its final part on the
// volume r: the session's file index, entries in index order with Loc and
// Hash set. Damage in the trailer ends the iteration with a
// *CorruptBlockError; RecoverIndex rebuilds the index from the data blocks
// instead. A torn part has no trailer: ErrTornPart.
func ReadIndex(r io.ReaderAt, key *Key, final PartInfo) (fileindex.Iterator, error) {
	h := final.Header
	if final.PartEnd == nil {
		return nil, fmt.Errorf("session %s, part %d on volume %s: %w (%s); rebuild its index from the data with RecoverIndex", h.SessionID, h.Part, final.VolumeID, ErrTornPart, final.TornReason)
	}
	pe := final.PartEnd
	if !pe.Final {
		return nil, fmt.Errorf("session %s: part %d on volume %s is not the session's final part; the index is in the final part", h.SessionID, h.Part, final.VolumeID)
	}
	if err := h.CheckKey(key); err != nil {
		return nil, err
	}
	op, err := newOpener(key, h.SessionID)
	if err != nil {
		return nil, err
	}
	if pe.IndexStreamStart < h.StreamStart && pe.IndexBlocks > 0 {
		return nil, fmt.Errorf("session %s: %w: index starts at stream offset %d, before the part (%d)", h.SessionID, ErrBadHeader, pe.IndexStreamStart, h.StreamStart)
	}
	pos := final.DataStart + int64(pe.IndexStreamStart-h.StreamStart)
	var k uint64
	var plain []byte
	src := func() ([]byte, bool, error) {
		if k == pe.IndexBlocks {
			return nil, false, nil
		}
		seq := pe.IndexFirstSeq + k
		bad := func(reason string) ([]byte, bool, error) {
			return nil, false, &CorruptBlockError{VolumeID: final.VolumeID, SessionID: h.SessionID, Seq: seq, Offset: pos, Reason: "index block: " + reason}
		}
		var hb [HeaderSize]byte
		if err := readAt(r, hb[:], pos); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return bad("the volume ends here: it was truncated")
			}
			return nil, false, fmt.Errorf("session %s: read index at offset %d: %w", h.SessionID, pos, err)
		}
		bh, err := ParseBlockHeader(hb[:])
		if err != nil {
			return bad(err.Error())
		}
		if bh.Kind != KindIndex || bh.SessionID != h.SessionID || bh.VolumeID != final.VolumeID || bh.Seq != seq {
			return bad(fmt.Sprintf("out of place: %s block of volume %s, session %s, seq %d", bh.Kind, bh.VolumeID, bh.SessionID, bh.Seq))
		}
		blk := make([]byte, bh.Size())
		copy(blk, hb[:])
		if err := readAt(r, blk[HeaderSize:], pos+HeaderSize); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return bad("the volume ends inside the block: it was truncated")
			}
			return nil, false, fmt.Errorf("session %s: read index at offset %d: %w", h.SessionID, pos, err)
		}
		if blockCRC(hb[:], blk[HeaderSize:]) != bh.CRC {
			return bad(errCRC.Error())
		}
		plain, err = op.open(plain, &bh, blk)
		if errors.Is(err, errAuth) && k == 0 {
			return nil, false, &KeyError{KeyID: h.KeyID, SessionID: h.SessionID, Reason: fmt.Sprintf("key %q does not decrypt the index: it is not the key the session was written with, or the data was altered", key.ID)}
		}
		if err != nil {
			return bad(err.Error())
		}
		pos += bh.Size()
		k++
		return plain, true, nil
	}
	return fileindex.SegmentIterator(src), nil
}
