package volume

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
)

// Label is the first block of every volume: what the volume is, readable
// with no key and no catalog.
type Label struct {
	FormatVersion int       `json:"format_version"`
	VolumeID      uuid.UUID `json:"volume_id"`
	Name          string    `json:"name"`
	Barcode       string    `json:"barcode"`
	Pool          string    `json:"pool"`
	BlockSize     int       `json:"block_size"`
	Created       time.Time `json:"created"`
	MediaType     string    `json:"media_type"`
	// PartAlign (format 2) is what part starts are multiples of; 0 in
	// format 1, where they are multiples of BlockSize. PartAlignment says
	// which applies.
	PartAlign int `json:"part_align,omitempty"`
}

// PartAlignment is the multiple every part of the volume starts on:
// PartAlign in format 2, BlockSize in format 1.
func (l Label) PartAlignment() int {
	if l.FormatVersion >= 2 && l.PartAlign > 0 {
		return l.PartAlign
	}
	return l.BlockSize
}

// validPartAlign reports why a format 2 label's part_align cannot be, or
// nil: a multiple of 4096 that divides the block size, so a part start is
// still a whole number of pages, and the first part (at BlockSize, after
// the label) is aligned too.
func validPartAlign(l Label) error {
	if l.PartAlign < 4096 || l.PartAlign%4096 != 0 || l.BlockSize%l.PartAlign != 0 {
		return fmt.Errorf("part alignment %d is invalid: it must be a multiple of 4096 that divides the block size %d", l.PartAlign, l.BlockSize)
	}
	return nil
}

// ErrNotVolume means the medium does not start with a Cairn label.
var ErrNotVolume = errors.New("not a Cairn volume")

// ValidBlockSize reports why n cannot be a volume's block size, or nil.
func ValidBlockSize(n int) error {
	if n < MinBlockSize || n > MaxBlockSize || n%4096 != 0 {
		return fmt.Errorf("block size %d is invalid: it must be a multiple of 4096 between %d and %d", n, MinBlockSize, MaxBlockSize)
	}
	return nil
}

// PagedLabel is l as the label of a new volume on a random-access medium
// (a disk file, a file on an SFTP target, a prefix of S3 objects): pool
// and name filled in where l leaves them empty, and format 2, whose parts
// take what they hold rounded up to a DiskPartAlign page where format 1
// rounds up to a whole block (FORMAT.md), unless l names a format.
func PagedLabel(l Label, pool, name string) Label {
	if l.Pool == "" {
		l.Pool = pool
	}
	if l.Name == "" {
		l.Name = name
	}
	if l.FormatVersion == 0 {
		l.FormatVersion = FormatVersion
		if l.PartAlign == 0 {
			l.PartAlign = DiskPartAlign
		}
	}
	return l
}

// EncodeLabel returns the label block padded with zeros to l.BlockSize.
// A zero FormatVersion means format 2 when PartAlign is set, format 1
// (parts on block size multiples: tape) when it is not. Both are written:
// format 1 where a part must fill whole records.
func EncodeLabel(l Label) ([]byte, error) {
	if l.FormatVersion == 0 {
		l.FormatVersion = 1
		if l.PartAlign != 0 {
			l.FormatVersion = 2
		}
	}
	if l.VolumeID == uuid.Nil {
		return nil, errors.New("label has no volume id")
	}
	if err := ValidBlockSize(l.BlockSize); err != nil {
		return nil, err
	}
	switch l.FormatVersion {
	case 1:
		if l.PartAlign != 0 {
			return nil, fmt.Errorf("volume format 1 has no part alignment (parts start on block size multiples); part_align %d needs format 2", l.PartAlign)
		}
	case 2, 3, 4, 5:
		if err := validPartAlign(l); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("this program writes volume formats 1 to %d, not %d", FormatVersion, l.FormatVersion)
	}
	js, err := json.Marshal(l)
	if err != nil {
		return nil, fmt.Errorf("encode label: %w", err)
	}
	blk, err := encodeControlBlock(KindLabel, l.VolumeID, uuid.Nil, 0, js)
	if err != nil {
		return nil, fmt.Errorf("encode label of volume %s: %w", l.VolumeID, err)
	}
	out := make([]byte, l.BlockSize)
	copy(out, blk)
	return out, nil
}

// ReadLabel reads the label at offset 0 of r.
func ReadLabel(r io.ReaderAt) (Label, error) {
	var l Label
	h, payload, err := readControlBlock(r, 0)
	if err != nil {
		if errors.Is(err, ErrNotBlock) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return l, fmt.Errorf("%w: no label at offset 0 (%v)", ErrNotVolume, err)
		}
		return l, fmt.Errorf("read volume label: %w", err)
	}
	if h.Kind != KindLabel {
		return l, fmt.Errorf("%w: offset 0 holds a %s block, not a label", ErrNotVolume, h.Kind)
	}
	if err := json.Unmarshal(payload, &l); err != nil {
		return l, fmt.Errorf("read volume label: %w: label JSON: %w", ErrBadHeader, err)
	}
	if l.FormatVersion > FormatVersion {
		return l, fmt.Errorf("volume %s: %w: format version %d, this program reads up to %d; upgrade cairn", l.VolumeID, ErrNewerFormat, l.FormatVersion, FormatVersion)
	}
	if l.FormatVersion < 1 || l.VolumeID != h.VolumeID {
		return l, fmt.Errorf("read volume label: %w: label says format %d, volume %s; header says volume %s", ErrBadHeader, l.FormatVersion, l.VolumeID, h.VolumeID)
	}
	if err := ValidBlockSize(l.BlockSize); err != nil {
		return l, fmt.Errorf("volume %s label: %w", l.VolumeID, err)
	}
	if l.FormatVersion >= 2 {
		if err := validPartAlign(l); err != nil {
			return l, fmt.Errorf("volume %s label: %w: %w", l.VolumeID, ErrBadHeader, err)
		}
	} else {
		l.PartAlign = 0 // format 1 has none; a stray field changes nothing
	}
	return l, nil
}

// readControlBlock reads and verifies the unencrypted block at off.
func readControlBlock(r io.ReaderAt, off int64) (BlockHeader, []byte, error) {
	var hb [HeaderSize]byte
	if err := readAt(r, hb[:], off); err != nil {
		return BlockHeader{}, nil, fmt.Errorf("read block header at offset %d: %w", off, err)
	}
	h, err := ParseBlockHeader(hb[:])
	if errors.Is(err, ErrNewerFormat) && !crcHolds(r, off, hb[:]) {
		return h, nil, fmt.Errorf("block at offset %d: %w: it claims format version %d, but its CRC does not hold: the header is damaged", off, ErrBadHeader, hb[4])
	}
	if err != nil {
		return h, nil, fmt.Errorf("block at offset %d: %w", off, err)
	}
	if h.Kind != KindLabel && h.Kind != KindPartHeader && h.Kind != KindPartEnd {
		return h, nil, fmt.Errorf("block at offset %d: %w: want a control block, found %s", off, ErrBadHeader, h.Kind)
	}
	payload := make([]byte, h.StoredLen)
	if err := readAt(r, payload, off+HeaderSize); err != nil {
		return h, nil, fmt.Errorf("read %s block at offset %d: %w", h.Kind, off, err)
	}
	if blockCRC(hb[:], payload) != h.CRC {
		return h, nil, fmt.Errorf("%s block at offset %d: %w", h.Kind, off, errCRC)
	}
	return h, payload, nil
}

// crcHolds tells whether the block whose header hb was read at off has a
// CRC that holds, framed as version 1 frames it (FORMAT.md, section 10:
// later versions keep that framing). A block that claims a newer version
// is believed only then: bytes that start with the magic and fail their
// CRC are damage, not a reason to tell the user to upgrade.
func crcHolds(r io.ReaderAt, off int64, hb []byte) bool {
	n := binary.BigEndian.Uint32(hb[52:56])
	if n > maxPayload {
		return false
	}
	payload := make([]byte, n)
	if readAt(r, payload, off+HeaderSize) != nil {
		return false
	}
	return blockCRC(hb, payload) == binary.BigEndian.Uint32(hb[60:64])
}

// readAt fills p from off. A read that finds the end before p is full
// returns io.ErrUnexpectedEOF, never io.EOF: the medium is cut short.
func readAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
