package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/google/uuid"
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

// PartIndex is the file index of one part as a volume alone tells it,
// with no catalog: what `cairn volume ls` lists and `volume extract`
// reads from.
type PartIndex struct {
	// Entries are the part's entries in index order, Loc and Hash set:
	// from the trailer, or rebuilt from the data blocks.
	Entries []fileindex.Entry
	// Rebuilt: the part has no trailer to read (it is torn, or not the
	// session's final part) or its trailer is damaged; Why says which.
	Rebuilt bool
	Why     string
	// Lost are entries the rebuild found but that damage, or the end of
	// a torn part, cut: they cannot be read whole, Reason says why.
	Lost []LostEntry
	// Continues is the entry, if any, whose records go on in the
	// session's next part, on another volume: not damage, but not
	// readable from this volume alone.
	Continues []LostEntry
	// Unnamed counts entries the session's PartEnd counts that the
	// rebuild did not find at all: their FileHeader was in a damaged
	// block. 0 when the trailer was read; -1 when unknown (no PartEnd, or
	// the session has other parts).
	Unnamed int64
	// Damaged are the damaged blocks the rebuild met, the trailer's
	// included.
	Damaged []*CorruptBlockError
}

// ReadPartIndex reads the file index of part p of the volume r: the
// trailer of a final part, or, when the part has none or it is damaged,
// the index rebuilt from the part's data blocks (FORMAT.md, section 9,
// "No trailer"). A key that cannot read the session is a *KeyError;
// damage is never an error.
func ReadPartIndex(ctx context.Context, r io.ReaderAt, key *Key, p PartInfo) (*PartIndex, error) {
	out := &PartIndex{Unnamed: -1}
	if p.Torn && p.End <= p.DataStart {
		// Torn before its first block: there is nothing to read.
		out.Rebuilt, out.Why = true, "the part is torn: "+p.TornReason
		return out, nil
	}
	if p.PartEnd != nil && p.PartEnd.Final {
		it, err := ReadIndex(r, key, p)
		if err == nil {
			if out.Entries, err = fileindex.Collect(it); err == nil {
				out.Unnamed = 0
				return out, nil
			}
		}
		var ke *KeyError
		if errors.As(err, &ke) {
			return nil, err
		}
		out.Entries = nil
		out.Why = fmt.Sprintf("its trailer cannot be read (%v)", err)
		var d *CorruptBlockError
		if errors.As(err, &d) {
			out.Damaged = append(out.Damaged, d)
		}
	} else if p.Torn {
		out.Why = "the part is torn: " + p.TornReason
	} else {
		out.Why = "the trailer is in the session's final part, on another volume"
	}
	out.Rebuilt = true
	sr := NewSessionReader(p.Header.SessionID, key, []PartRef{p.Ref()}, func(uuid.UUID) (io.ReaderAt, error) {
		return struct{ io.ReaderAt }{r}, nil // hide a Close: r is the caller's
	}, ReaderOptions{})
	defer sr.Close()
	err := sr.RecoverIndex(ctx, func(e fileindex.Entry) error {
		out.Entries = append(out.Entries, e)
		return nil
	}, func(d *CorruptBlockError) error {
		// The trailer's own damage was met already by ReadIndex.
		if !slices.ContainsFunc(out.Damaged, func(o *CorruptBlockError) bool { return o.Offset == d.Offset && o.Seq == d.Seq }) {
			out.Damaged = append(out.Damaged, d)
		}
		return nil
	})
	var le *LostEntriesError
	if errors.As(err, &le) {
		err = nil
		goesOn := p.PartEnd != nil && !p.PartEnd.Final
		for _, l := range le.Lost {
			if goesOn && l.Damage == nil {
				l.Reason = "it goes on in the session's next part, on another volume"
				out.Continues = append(out.Continues, l)
			} else {
				out.Lost = append(out.Lost, l)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	if pe := p.PartEnd; pe != nil && pe.Final && p.Header.Part == 0 {
		out.Unnamed = max(0, pe.Entries-int64(len(out.Entries)+len(out.Lost)))
	}
	return out, nil
}
