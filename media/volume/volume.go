package volume

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/google/uuid"
)

// Volume is a volume opened for reading. It never writes.
type Volume struct {
	r     io.ReaderAt
	size  int64
	label Label
	// labelDamage is set when the label could not be read and the volume
	// was opened from its first part instead.
	labelDamage *CorruptBlockError
	// damaged is what Parts found outside the parts' own blocks.
	damaged []*CorruptBlockError
	// align is what part starts are multiples of: the label's
	// PartAlignment, or, when the label is lost, DiskPartAlign, the
	// smallest any format uses (a format 1 part's padding is zeros up to
	// the block size, which scanPart steps over).
	align int64
}

// OpenVolume reads the label of the volume held by r, size bytes long.
//
// A damaged label does not make the sessions after it unreadable: when the
// label cannot be read but an intact PartHeader stands where the first
// part starts, the volume is opened from it (volume id and block size;
// Label's other fields are empty) and Damaged names the label. A label
// that says the volume is of a newer format, and whose CRC holds, is
// ErrNewerFormat; no label and no part is ErrNotVolume.
func OpenVolume(r io.ReaderAt, size int64) (*Volume, error) {
	sr := io.NewSectionReader(r, 0, size)
	l, err := ReadLabel(sr)
	if err == nil {
		return &Volume{r: r, size: size, label: l, align: int64(l.PartAlignment())}, nil
	}
	if errors.Is(err, ErrNewerFormat) {
		return nil, err
	}
	l, ok := labelFromFirstPart(sr, size)
	if !ok {
		return nil, err
	}
	d := &CorruptBlockError{VolumeID: l.VolumeID, Offset: 0, Reason: fmt.Sprintf("the label cannot be read (%v); the volume id and block size %d are those of the part at offset %d", err, l.BlockSize, l.BlockSize)}
	return &Volume{r: r, size: size, label: l, labelDamage: d, align: DiskPartAlign}, nil
}

// labelFromFirstPart finds the first part of a volume whose label is
// damaged. It starts at BlockSize, so an intact PartHeader at a valid
// block size, with only the label's padding (zeros) before it, gives both
// the block size and the volume id. A volume whose first PartHeader is
// damaged too is not recovered this way.
func labelFromFirstPart(r io.ReaderAt, size int64) (Label, bool) {
	for bs := int64(MinBlockSize); bs <= MaxBlockSize && bs+HeaderSize <= size; bs += 4096 {
		h, _, err := readControlBlock(r, bs)
		if err != nil || h.Kind != KindPartHeader {
			continue
		}
		// The label's payload is at most maxControlPayload bytes; the
		// rest of its block is zeros. Data there means this is not the
		// first part.
		pad := make([]byte, bs-(HeaderSize+maxControlPayload))
		if readAt(r, pad, HeaderSize+maxControlPayload) != nil || !allZero(pad) {
			return Label{}, false
		}
		return Label{FormatVersion: int(h.Version), VolumeID: h.VolumeID, BlockSize: int(bs)}, true
	}
	return Label{}, false
}

func (v *Volume) Label() Label { return v.label }
func (v *Volume) Size() int64  { return v.size }

// Damaged lists the damage found outside the sessions' blocks: a label
// that could not be read (from OpenVolume), and what the last call of
// Parts found where a part should start or after the last part (bytes
// that hold no part, a volume cut short). Damage inside a part is in its
// PartInfo.Damaged.
func (v *Volume) Damaged() []*CorruptBlockError {
	var out []*CorruptBlockError
	if v.labelDamage != nil {
		out = append(out, v.labelDamage)
	}
	return append(out, v.damaged...)
}

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
	// HeaderLost: the PartHeader is damaged, and the part was found by its
	// first intact block, at DataStart. Header holds only what the blocks
	// say: SessionID and FirstSeq (of the block at DataStart) and, from the
	// PartEnd when there is one, Part and StreamStart (0 when unknown).
	// KeyID and KeyCheck are unknown: the key is checked by decrypting.
	HeaderLost bool
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

// Ref is what a SessionReader needs to know about the part. A part whose
// header is lost has no VolumeStart: there is no key check to read.
func (p *PartInfo) Ref() PartRef {
	r := PartRef{VolumeID: p.VolumeID, VolumeStart: p.VolumeStart, DataStart: p.DataStart, StreamStart: p.Header.StreamStart, StreamEnd: p.StreamEnd()}
	if p.HeaderLost {
		r.VolumeStart = 0
	}
	return r
}

// Parts lists the session parts on the volume, in order, by hopping from
// block header to block header (data payloads are not read). A torn part,
// which a crash leaves at the end of a volume, comes back with Torn set.
//
// Damage loses no more than the blocks it is in: where a part should
// start and no intact PartHeader is, Parts searches on for the next
// intact block (FORMAT.md, section 9) and goes on from there, with the
// part whose header was lost (HeaderLost) or the next part; bytes after
// the last part that hold no part end the listing. Damaged says what was
// skipped. Parts fails only to read the medium, or on a part of a newer
// format.
func (v *Volume) Parts() ([]PartInfo, error) {
	v.damaged = nil
	var parts []PartInfo
	bs := int64(v.label.BlockSize)
	for off := bs; off < v.size; {
		p, next, err := v.scanPart(off)
		if err != nil {
			return parts, err
		}
		if p != nil {
			parts = append(parts, *p)
		}
		if next < 0 {
			break
		}
		off = next
	}
	if n := len(parts); n > 0 && !parts[n-1].Torn && parts[n-1].End > v.size {
		p := &parts[n-1]
		v.damage(v.size, fmt.Sprintf("the volume ends inside the padding after the part at offset %d, which ends at %d: it was cut short, and anything written after that part is lost", p.VolumeStart, p.End))
	}
	return parts, nil
}

func (v *Volume) damage(off int64, reason string) {
	v.damaged = append(v.damaged, &CorruptBlockError{VolumeID: v.label.VolumeID, Offset: off, Reason: reason})
}

// scanPart reads the part that should start at off. It returns no part
// when there is none at off; next is where to look for the next part, < 0
// when nothing can follow.
func (v *Volume) scanPart(off int64) (*PartInfo, int64, error) {
	hb := make([]byte, min(HeaderSize, v.size-off))
	if err := readAt(v.r, hb, off); err != nil {
		return nil, -1, fmt.Errorf("volume %s: read offset %d: %w", v.label.VolumeID, off, err)
	}
	if allZero(hb) {
		if bs := int64(v.label.BlockSize); off%bs != 0 && v.align < bs {
			// The padding of a format 1 part, read with the smaller
			// alignment of a volume whose label is lost: the next part
			// starts at the block boundary, if anywhere.
			return nil, alignUp(off, int(bs)), nil
		}
		return nil, -1, nil // unwritten space: the end of the data
	}
	p := &PartInfo{VolumeID: v.label.VolumeID, VolumeStart: off, DataStart: off, End: off}
	if len(hb) < HeaderSize {
		if !bytes.HasPrefix(hb, blockMagic[:min(len(hb), len(blockMagic))]) {
			v.damage(off, fmt.Sprintf("the %d bytes from here to the end of the volume hold no part: garbage written after the last part", len(hb)))
			return nil, -1, nil
		}
		p.Torn, p.TornReason = true, fmt.Sprintf("the volume ends inside the part header at offset %d", off)
		return p, -1, nil
	}
	h, err := ParseBlockHeader(hb)
	if err == nil && h.Kind == KindPartHeader && off+h.Size() > v.size {
		p.Header.SessionID = h.SessionID
		p.Torn, p.TornReason = true, fmt.Sprintf("the volume ends inside the part header at offset %d", off)
		return p, -1, nil
	}
	reason := ""
	h, payload, err := readControlBlock(v.r, off)
	switch {
	case errors.Is(err, ErrNewerFormat):
		return nil, -1, fmt.Errorf("volume %s: part at offset %d: %w", v.label.VolumeID, off, err)
	case err != nil:
		reason = err.Error()
	case h.Kind != KindPartHeader:
		reason = fmt.Sprintf("it holds a %s block", h.Kind)
	case h.VolumeID != v.label.VolumeID:
		reason = fmt.Sprintf("it holds the part header of volume %s", h.VolumeID)
	default:
		if p.Header, err = decodeJSON[PartHeader](KindPartHeader, off, payload); err != nil {
			reason = err.Error()
		} else if p.Header.SessionID != h.SessionID {
			reason = fmt.Sprintf("%v: its JSON names session %s, its header %s", ErrBadHeader, p.Header.SessionID, h.SessionID)
		}
	}
	if reason == "" {
		p.DataStart = off + h.Size()
		return v.scanBlocks(p, p.DataStart, p.Header.FirstSeq)
	}

	// No intact PartHeader where a part must start: go on at the next
	// intact block of this volume, which is either the next part or the
	// rest of the part whose header was lost.
	pa := v.align
	f, err := findBlock(v.r, off+1, v.size, func(c BlockHeader, at int64) bool {
		if c.VolumeID != v.label.VolumeID {
			return false
		}
		return c.Kind == KindData || c.Kind == KindIndex || c.Kind == KindPartEnd || (c.Kind == KindPartHeader && at%pa == 0)
	})
	if err != nil {
		return nil, -1, fmt.Errorf("volume %s: %w", v.label.VolumeID, err)
	}
	switch {
	case !f.found:
		v.damage(off, fmt.Sprintf("no part header where a part must start (%s), and no intact block in the %d bytes from here to the end of the volume: damage, or garbage written after the last part", reason, v.size-off))
		return nil, -1, nil
	case f.h.Kind == KindPartHeader:
		v.damage(off, fmt.Sprintf("no part header where a part must start (%s); the next part starts at offset %d", reason, f.off))
		return nil, f.off, nil
	}
	p.HeaderLost = true
	p.DataStart = f.off
	p.Header = PartHeader{SessionID: f.h.SessionID, FirstSeq: f.h.Seq}
	p.Damaged = append(p.Damaged, &CorruptBlockError{VolumeID: v.label.VolumeID, SessionID: f.h.SessionID, Seq: f.h.Seq, Offset: off,
		Reason: fmt.Sprintf("the part header is damaged (%s); the part is read from its first intact block, at offset %d", reason, f.off)})
	return v.scanBlocks(p, f.off, f.h.Seq)
}

// scanBlocks hops the blocks of part p from pos, where block seq is due,
// to its PartEnd.
func (v *Volume) scanBlocks(p *PartInfo, pos int64, seq uint64) (*PartInfo, int64, error) {
	hb := make([]byte, HeaderSize)
	pa := v.align
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
				if pe, err := decodeJSON[PartEnd](KindPartEnd, pos, payload); err == nil && pe.SessionID == p.Header.SessionID {
					v.endPart(p, &pe, pos)
					p.End = alignUp(pos+h.Size(), int(pa))
					return p, p.End, nil
				}
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
			reason = "the PartEnd is damaged"
		}
		next := alignUp(pos, int(pa))
		f, err := findBlock(v.r, pos+1, v.size, func(c BlockHeader, at int64) bool {
			if c.VolumeID != v.label.VolumeID {
				return false
			}
			if c.Kind == KindPartHeader {
				return at%pa == 0
			}
			if c.SessionID != p.Header.SessionID {
				// Another session's block: the next part, whose header is
				// lost. It cannot start before this part's data ends.
				return c.Kind != KindLabel && at >= next
			}
			return c.Seq >= seq && c.Kind != KindLabel
		})
		if err != nil {
			return nil, -1, fmt.Errorf("volume %s: %w", v.label.VolumeID, err)
		}
		if !f.found {
			return torn("no PartEnd: nothing of the session follows offset %d (%s)", pos, reason)
		}
		p.Damaged = append(p.Damaged, &CorruptBlockError{VolumeID: v.label.VolumeID, SessionID: p.Header.SessionID, Seq: seq, Offset: pos, Reason: reason})
		switch {
		case f.h.Kind == KindPartHeader:
			p.Torn, p.TornReason, p.End = true, fmt.Sprintf("no PartEnd: the next part starts at offset %d", f.off), pos
			return p, f.off, nil
		case f.h.SessionID != p.Header.SessionID:
			// The next part's header is lost too: it starts at the
			// block boundary before its first intact block.
			p.Torn, p.TornReason, p.End = true, fmt.Sprintf("no PartEnd: blocks of session %s follow at offset %d", f.h.SessionID, f.off), pos
			return p, max(f.off/pa*pa, next), nil
		}
		pos, seq = f.off, f.h.Seq
	}
}

// endPart completes p with its PartEnd, found at off. A part whose header
// was lost learns its number and where its stream starts from it.
func (v *Volume) endPart(p *PartInfo, pe *PartEnd, off int64) {
	p.PartEnd = pe
	if !p.HeaderLost {
		return
	}
	p.Header.Part = pe.Part
	if span := uint64(off - p.DataStart); pe.StreamEnd >= span {
		p.Header.StreamStart = pe.StreamEnd - span
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
