package volume

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/google/uuid"
)

// FormatVersion is the newest volume format this package reads, and the
// one it labels new volumes with. Version 5 lets a data block's payload be
// S2-compressed (FlagS2), for pools that trade stored bytes for backup
// speed; a session whose pool asks for S2 writes zstd on the older
// volumes it is appended to, which older readers must still read. Version 4 lets a block list carry the data runs
// of a file with holes sent by blocks, so its holes stay holes. Version 3 lets a large file's FileEnd carry its
// block list (the blocks of an incremental that did not change lie in an
// earlier session), with version 2's layout; version 2 starts each part at
// the next multiple of the label's part_align (4 KiB on disk) instead of
// the next multiple of the block size, so a small session costs what it
// holds. Version 1 (parts on block size multiples) is still written on
// tape, where a block is a tape record, and still appended to on the
// volumes that have it.
const FormatVersion = 5

// FormatS2 is the first volume format whose blocks may be compressed with
// S2 (FlagS2).
const FormatS2 = 5

// BlockVersion is the encoding of a block (header, payload transforms),
// which every block header carries. It did not change with volume format
// 2, which changed only where parts start: a block reads, and copies to a
// volume of either format, unchanged.
const BlockVersion = 1

// DiskPartAlign is the part alignment of the disk volumes this package
// creates (format 2): the page size of the file systems and the sector
// size of the disks under them, so an append starts on a page of its own
// and a torn tail is cut at a page boundary.
const DiskPartAlign = 4096

// Sizes of the format; FORMAT.md gives the reasons.
const (
	// HeaderSize is the fixed size of every block header.
	HeaderSize = 64

	DefaultBlockSize = 256 << 10
	MinBlockSize     = 64 << 10
	MaxBlockSize     = 4 << 20

	DefaultBlockRawSize = 1 << 20
	MinBlockRawSize     = 512 << 10
	MaxBlockRawSize     = 4 << 20

	// maxPayload bounds a stored payload a reader will allocate for: a
	// full data block plus zstd's worst-case framing and the GCM tag, or an
	// index segment, which the writer keeps below MaxBlockRawSize.
	maxPayload = MaxBlockRawSize + 64<<10
	// maxControlPayload bounds the JSON of a label, PartHeader or PartEnd.
	// It is below MinBlockSize-HeaderSize so a label always fits its block
	// and ReadLabel can read it before it knows the block size.
	maxControlPayload = 16 << 10
)

// Kind is a block's role.
type Kind uint8

const (
	KindLabel      Kind = 1
	KindPartHeader Kind = 2
	KindData       Kind = 3
	KindIndex      Kind = 4
	KindPartEnd    Kind = 5
)

func (k Kind) String() string {
	switch k {
	case KindLabel:
		return "Label"
	case KindPartHeader:
		return "PartHeader"
	case KindData:
		return "Data"
	case KindIndex:
		return "Index"
	case KindPartEnd:
		return "PartEnd"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Flags tell how a block's payload was transformed.
type Flags uint16

const (
	FlagZstd   Flags = 1 << 0
	FlagAESGCM Flags = 1 << 1
	// FlagS2 (format 5): the payload is one S2 block, a codec that
	// compresses two to three times as fast as zstd and stores more.
	FlagS2 Flags = 1 << 2

	knownFlags = FlagZstd | FlagAESGCM | FlagS2
)

var blockMagic = [4]byte{'C', 'R', 'N', 'B'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// BlockHeader is the decoded 64-byte header that opens every block.
type BlockHeader struct {
	Version   uint8
	Kind      Kind
	Flags     Flags
	VolumeID  uuid.UUID
	SessionID uuid.UUID
	Seq       uint64
	RawLen    uint32 // plaintext payload length
	StoredLen uint32 // payload bytes that follow the header
	CRC       uint32
}

// Size is the encoded size of the block: header plus stored payload.
func (h *BlockHeader) Size() int64 { return HeaderSize + int64(h.StoredLen) }

// put writes h into b[:HeaderSize], CRC field included as it stands.
func (h *BlockHeader) put(b []byte) {
	_ = b[HeaderSize-1]
	copy(b[0:4], blockMagic[:])
	b[4] = h.Version
	b[5] = byte(h.Kind)
	binary.BigEndian.PutUint16(b[6:8], uint16(h.Flags))
	copy(b[8:24], h.VolumeID[:])
	copy(b[24:40], h.SessionID[:])
	binary.BigEndian.PutUint64(b[40:48], h.Seq)
	binary.BigEndian.PutUint32(b[48:52], h.RawLen)
	binary.BigEndian.PutUint32(b[52:56], h.StoredLen)
	binary.BigEndian.PutUint32(b[56:60], 0)
	binary.BigEndian.PutUint32(b[60:64], h.CRC)
}

// blockCRC is the CRC32C of header bytes 0..59 followed by the payload.
func blockCRC(hdr, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, hdr[:60])
	return crc32.Update(c, castagnoli, payload)
}

// setCRC computes the CRC of block (header and payload, contiguous) and
// stores it in the header.
func setCRC(block []byte) {
	binary.BigEndian.PutUint32(block[60:64], blockCRC(block[:HeaderSize], block[HeaderSize:]))
}

// Header parsing errors. ErrNotBlock at offset 0 means "not a Cairn volume".
var (
	ErrNotBlock    = errors.New("no Cairn block header (bad magic)")
	ErrNewerFormat = errors.New("volume format is newer than this program")
	ErrBadHeader   = errors.New("malformed block header")
)

// ParseBlockHeader decodes and sanity-checks a block header. It does not
// check the CRC, which covers the payload too.
func ParseBlockHeader(b []byte) (BlockHeader, error) {
	var h BlockHeader
	if len(b) < HeaderSize {
		return h, fmt.Errorf("%w: %d bytes, want %d", ErrBadHeader, len(b), HeaderSize)
	}
	if [4]byte(b[0:4]) != blockMagic {
		return h, ErrNotBlock
	}
	h.Version = b[4]
	if h.Version == 0 {
		return h, fmt.Errorf("%w: version 0", ErrBadHeader)
	}
	if h.Version > BlockVersion {
		return h, fmt.Errorf("%w: block format version %d, this program reads up to %d; upgrade cairn", ErrNewerFormat, h.Version, BlockVersion)
	}
	h.Kind = Kind(b[5])
	if h.Kind < KindLabel || h.Kind > KindPartEnd {
		return h, fmt.Errorf("%w: unknown block kind %d", ErrBadHeader, b[5])
	}
	h.Flags = Flags(binary.BigEndian.Uint16(b[6:8]))
	if h.Flags&^knownFlags != 0 {
		return h, fmt.Errorf("%w: unknown flags %#04x", ErrBadHeader, uint16(h.Flags))
	}
	if h.Flags&FlagZstd != 0 && h.Flags&FlagS2 != 0 {
		return h, fmt.Errorf("%w: flags %#04x name two codecs", ErrBadHeader, uint16(h.Flags))
	}
	copy(h.VolumeID[:], b[8:24])
	copy(h.SessionID[:], b[24:40])
	h.Seq = binary.BigEndian.Uint64(b[40:48])
	h.RawLen = binary.BigEndian.Uint32(b[48:52])
	h.StoredLen = binary.BigEndian.Uint32(b[52:56])
	// b[56:60] is reserved: written as zero, ignored on reading, so a
	// minor revision may use it without making old readers refuse blocks.
	h.CRC = binary.BigEndian.Uint32(b[60:64])
	limit := uint32(maxPayload)
	switch h.Kind {
	case KindLabel, KindPartHeader, KindPartEnd:
		limit = maxControlPayload
		if h.Flags != 0 {
			return h, fmt.Errorf("%w: %s block with flags %#04x", ErrBadHeader, h.Kind, uint16(h.Flags))
		}
		if h.RawLen != h.StoredLen {
			return h, fmt.Errorf("%w: %s block raw length %d != stored length %d", ErrBadHeader, h.Kind, h.RawLen, h.StoredLen)
		}
	}
	if h.RawLen > limit || h.StoredLen > limit {
		return h, fmt.Errorf("%w: %s block length out of range (raw %d, stored %d)", ErrBadHeader, h.Kind, h.RawLen, h.StoredLen)
	}
	return h, nil
}

// encodeControlBlock returns a whole unencrypted block (Label, PartHeader or PartEnd).
func encodeControlBlock(kind Kind, volumeID, sessionID uuid.UUID, seq uint64, payload []byte) ([]byte, error) {
	if len(payload) > maxControlPayload {
		return nil, fmt.Errorf("%s payload of %d bytes exceeds %d", kind, len(payload), maxControlPayload)
	}
	b := make([]byte, HeaderSize+len(payload))
	h := BlockHeader{
		Version: BlockVersion, Kind: kind, VolumeID: volumeID, SessionID: sessionID, Seq: seq,
		RawLen: uint32(len(payload)), StoredLen: uint32(len(payload)),
	}
	h.put(b)
	copy(b[HeaderSize:], payload)
	setCRC(b)
	return b, nil
}

func alignUp(off int64, to int) int64 {
	t := int64(to)
	return (off + t - 1) / t * t
}
