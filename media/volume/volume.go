package volume

import (
	"bytes"
	"fmt"
	"io"

	"github.com/google/uuid"
)

// Volume is a volume opened for reading. It never writes.
type Volume struct {
	r     io.ReaderAt
	size  int64
	label Label
}

// OpenVolume reads the label of the volume held by r, size bytes long.
func OpenVolume(r io.ReaderAt, size int64) (*Volume, error) {
	l, err := ReadLabel(io.NewSectionReader(r, 0, size))
	if err != nil {
		return nil, err
	}
	return &Volume{r: r, size: size, label: l}, nil
}

func (v *Volume) Label() Label { return v.label }
func (v *Volume) Size() int64  { return v.size }

// PartInfo is one session part found on a volume.
type PartInfo struct {
	VolumeID uuid.UUID
	Header   PartHeader
	PartEnd  *PartEnd // nil when the part is torn
	// VolumeStart is the offset of the PartHeader, DataStart that of the
	// first data block. End is where the next part may start (after the
	// padding) or, for a torn part, the end of its last whole block.
	VolumeStart, DataStart, End int64
	// Torn: the part has no PartEnd; TornReason says where it stops.
	Torn       bool
	TornReason string
	// Blocks is the number of data and index blocks found by hopping their
	// headers, LastSeq the seq of the last one. Payloads are not checked.
	Blocks  int64
	LastSeq uint64
	// Damaged lists the places where hopping found no valid header and had
	// to search for the next block.
	Damaged []*CorruptBlockError
}

// StreamEnd is the end of the stream range the part holds.
func (p *PartInfo) StreamEnd() uint64 {
	if p.PartEnd != nil {
		return p.PartEnd.StreamEnd
	}
	return p.Header.StreamStart + uint64(p.End-p.DataStart)
}

// Ref is what a SessionReader needs to know about the part.
func (p *PartInfo) Ref() PartRef {
	return PartRef{VolumeID: p.VolumeID, VolumeStart: p.VolumeStart, DataStart: p.DataStart, StreamStart: p.Header.StreamStart, StreamEnd: p.StreamEnd()}
}

// Parts lists the session parts on the volume, in order, by hopping from
// block header to block header (data payloads are not read). A torn part,
// which a crash leaves at the end of a volume, comes back with Torn set.
// Something other than a part header where a part must start is an error
// naming the offset.
func (v *Volume) Parts() ([]PartInfo, error) {
	var parts []PartInfo
	bs := int64(v.label.BlockSize)
	for off := bs; off < v.size; {
		p, next, err := v.scanPart(off)
		if err != nil {
			return parts, err
		}
		if p == nil {
			break
		}
		parts = append(parts, *p)
		if p.Torn && next < 0 {
			break
		}
		off = next
	}
	return parts, nil
}

// scanPart reads the part starting at off. It returns nil at the end of
// the written data, and next < 0 when nothing can follow the part.
func (v *Volume) scanPart(off int64) (*PartInfo, int64, error) {
	hb := make([]byte, min(HeaderSize, v.size-off))
	if err := readAt(v.r, hb, off); err != nil {
		return nil, -1, fmt.Errorf("volume %s: read offset %d: %w", v.label.VolumeID, off, err)
	}
	if allZero(hb) {
		return nil, -1, nil // unwritten space: the end of the data
	}
	p := &PartInfo{VolumeID: v.label.VolumeID, VolumeStart: off, DataStart: off, End: off}
	if len(hb) < HeaderSize {
		p.Torn, p.TornReason = true, fmt.Sprintf("the volume ends inside the part header at offset %d", off)
		return p, -1, nil
	}
	h, err := ParseBlockHeader(hb)
	if err != nil {
		return nil, -1, fmt.Errorf("volume %s: offset %d should start a session part: %w", v.label.VolumeID, off, err)
	}
	if h.Kind != KindPartHeader {
		return nil, -1, fmt.Errorf("volume %s: offset %d should start a session part, it holds a %s block: %w", v.label.VolumeID, off, h.Kind, ErrBadHeader)
	}
	p.Header.SessionID = h.SessionID
	if off+h.Size() > v.size {
		p.Torn, p.TornReason = true, fmt.Sprintf("the volume ends inside the part header at offset %d", off)
		return p, -1, nil
	}
	_, payload, err := readControlBlock(v.r, off)
	if err != nil {
		return nil, -1, fmt.Errorf("volume %s: part header: %w", v.label.VolumeID, err)
	}
	if p.Header, err = decodeJSON[PartHeader](KindPartHeader, off, payload); err != nil {
		return nil, -1, fmt.Errorf("volume %s: %w", v.label.VolumeID, err)
	}
	if p.Header.SessionID != h.SessionID {
		return nil, -1, fmt.Errorf("volume %s: part header at offset %d: %w: JSON names session %s, header %s", v.label.VolumeID, off, ErrBadHeader, p.Header.SessionID, h.SessionID)
	}
	p.DataStart = off + h.Size()
	pos, seq := p.DataStart, p.Header.FirstSeq
	torn := func(format string, args ...any) (*PartInfo, int64, error) {
		p.Torn, p.TornReason, p.End = true, fmt.Sprintf(format, args...), pos
		return p, -1, nil
	}
	for {
		if pos+HeaderSize > v.size {
			return torn("no PartEnd: the volume ends at offset %d, after %d blocks", v.size, p.Blocks)
		}
		if err := readAt(v.r, hb, pos); err != nil {
			return nil, -1, fmt.Errorf("volume %s: read offset %d: %w", v.label.VolumeID, pos, err)
		}
		h, err := ParseBlockHeader(hb)
		ok := err == nil && h.SessionID == p.Header.SessionID && h.VolumeID == v.label.VolumeID && h.Seq == seq
		switch {
		case ok && (h.Kind == KindData || h.Kind == KindIndex):
			if pos+h.Size() > v.size {
				return torn("no PartEnd: block seq %d at offset %d is cut short by the end of the volume", seq, pos)
			}
			pos += h.Size()
			p.LastSeq = seq
			p.Blocks++
			seq++
			continue
		case ok && h.Kind == KindPartEnd:
			if _, payload, err := readControlBlock(v.r, pos); err == nil {
				pe, err := decodeJSON[PartEnd](KindPartEnd, pos, payload)
				if err != nil {
					return nil, -1, fmt.Errorf("volume %s: %w", v.label.VolumeID, err)
				}
				p.PartEnd = &pe
				p.End = alignUp(pos+h.Size(), v.label.BlockSize)
				return p, p.End, nil
			} else if pos+h.Size() > v.size {
				return torn("no PartEnd: the PartEnd at offset %d is cut short by the end of the volume", pos)
			}
		}
		// Not the block expected here: search for the next one of this
		// session, or for the next part.
		reason := "no valid block header"
		if err != nil {
			reason = err.Error()
		} else if !ok {
			reason = fmt.Sprintf("out of place: %s block of session %s, volume %s, seq %d", h.Kind, h.SessionID, h.VolumeID, h.Seq)
		} else {
			reason = "PartEnd fails its CRC"
		}
		f, err := findBlock(v.r, pos+1, v.size, func(c BlockHeader, at int64) bool {
			if c.Kind == KindPartHeader {
				return at%int64(v.label.BlockSize) == 0
			}
			return c.SessionID == p.Header.SessionID && c.VolumeID == v.label.VolumeID && c.Seq >= seq && c.Kind != KindLabel
		})
		if err != nil {
			return nil, -1, fmt.Errorf("volume %s: %w", v.label.VolumeID, err)
		}
		if !f.found {
			return torn("no PartEnd: nothing of the session follows offset %d (%s)", pos, reason)
		}
		p.Damaged = append(p.Damaged, &CorruptBlockError{VolumeID: v.label.VolumeID, SessionID: p.Header.SessionID, Seq: seq, Offset: pos, Reason: reason})
		if f.h.Kind == KindPartHeader {
			p.Torn, p.TornReason, p.End = true, fmt.Sprintf("no PartEnd: the next part starts at offset %d", f.off), pos
			return p, f.off, nil
		}
		pos, seq = f.off, f.h.Seq
	}
}

type found struct {
	found bool
	off   int64
	h     BlockHeader
}

// findBlock searches [from, end) of r for the first block whose header
// parses, satisfies match and whose CRC holds over its payload. This is
// how reading resumes after damage: data payloads are ciphertext, so a
// stray match is as unlikely as a CRC collision on top of it.
func findBlock(r io.ReaderAt, from, end int64, match func(BlockHeader, int64) bool) (found, error) {
	const chunk = 1 << 20
	buf := make([]byte, min(chunk+HeaderSize, max(end-from, 0)))
	for base := from; base < end; base += chunk {
		n := int(min(int64(len(buf)), end-base))
		m, err := r.ReadAt(buf[:n], base)
		if m < n && err != nil && err != io.EOF {
			return found{}, fmt.Errorf("search for the next block after offset %d: %w", from, err)
		}
		b := buf[:m]
		for i := 0; ; {
			j := bytes.Index(b[i:], blockMagic[:])
			if j < 0 || i+j >= chunk {
				break
			}
			k := i + j
			i = k + 1
			at := base + int64(k)
			if k+HeaderSize > len(b) {
				return found{}, nil // the data ends inside this header
			}
			if ok, h := checkBlockAt(r, b[k:k+HeaderSize], at, end, match); ok {
				return found{true, at, h}, nil
			}
		}
		if m < n {
			break // the medium ends before end
		}
	}
	return found{}, nil
}

// checkBlockAt tells whether the header hb read at off opens a whole,
// matching block with a good CRC.
func checkBlockAt(r io.ReaderAt, hb []byte, off, end int64, match func(BlockHeader, int64) bool) (bool, BlockHeader) {
	h, err := ParseBlockHeader(hb)
	if err != nil || !match(h, off) || off+h.Size() > end {
		return false, h
	}
	payload := make([]byte, h.StoredLen)
	if readAt(r, payload, off+HeaderSize) != nil || blockCRC(hb, payload) != h.CRC {
		return false, h
	}
	return true, h
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
