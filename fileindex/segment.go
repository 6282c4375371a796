package fileindex

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/klauspost/compress/zstd"

	"github.com/cairnbackup/cairn/internal/varint"
)

// Segment is an immutable run of entries in index order, encoded and
// compressed. A backup's index is a sequence of segments whose path ranges do
// not overlap.
type Segment struct {
	First string // path of the first entry
	Last  string // path of the last entry
	Count int
	Data  []byte // the encoding read by DecodeSegment
}

// segmentMagic opens every encoded segment; see media/volume/FORMAT.md.
var segmentMagic = [4]byte{'C', 'R', 'N', 'X'}

// SegmentVersion is the version of the segment encoding this program
// writes and the only one it reads (media/volume/FORMAT.md, section 8).
const SegmentVersion = 1

const (
	segmentFlagZstd  = 1
	segmentHeaderLen = 6 // magic, version, flags
)

// DefaultSegmentBytes is the uncompressed size at which a builder's segment
// is Full: large enough to compress well, small enough that one Raft command
// or one NATS message carries it comfortably.
const DefaultSegmentBytes = 1 << 20

// segmentWindow is the zstd window of segment compression.
const segmentWindow = 2 << 20

// MaxSegmentRawBytes bounds what a decoder accepts, so a corrupt length
// cannot make it allocate without limit.
const MaxSegmentRawBytes = 64 << 20

// Bounds on what a segment's bytes can hold. The count and the raw length
// in its header come from outside (a node, an agent, a bit flip in the
// catalog's file), so no allocation is sized by them before they are
// checked against the bytes that follow.
const (
	// minEncodedEntry is the smallest entry a segment can hold: a one-byte
	// length, then a path and a type field of at least three bytes each
	// (tag, length, one byte of value); DecodeEntry refuses an entry
	// without either.
	minEncodedEntry = 7
	// maxZstdExpansion is the most a zstd frame can grow by: each block
	// yields at most 128 KiB and takes at least 4 bytes (an RLE block).
	maxZstdExpansion = (128 << 10) / 4
)

var (
	// A window of 2 MiB holds every segment a builder makes (its budget,
	// at most DefaultSegmentBytes, plus one entry), so each is one zstd
	// segment and compresses to the same bytes as with the default 8 MiB
	// window; the default's history buffer took 16 MiB, live in every
	// process that writes an index (the storage node, the servers), the
	// largest thing in a storage node's heap during a restore. Lower
	// memory then sizes it to the window and a zstd block (2.1 MiB, not
	// 4), which changes no output byte either.
	zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(segmentWindow), zstd.WithLowerEncoderMem(true))
	// zdec stops at the capacity of DecodeAll's destination, which is the
	// segment's stated raw length: a frame that holds more is corrupt, and
	// must not be decompressed to find out.
	zdec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxSegmentRawBytes),
		zstd.WithDecodeAllCapLimit(true))
)

// SegmentBuilder collects entries, which must arrive in strictly increasing
// index order, into segments of about maxBytes each.
type SegmentBuilder struct {
	maxBytes int
	raw      []byte
	count    int
	first    string
	last     string
	any      bool // an entry was added, ever: order holds across flushes
}

// NewSegmentBuilder returns a builder whose segments hold about maxBytes of
// uncompressed entries (DefaultSegmentBytes when maxBytes <= 0).
func NewSegmentBuilder(maxBytes int) *SegmentBuilder {
	if maxBytes <= 0 {
		maxBytes = DefaultSegmentBytes
	}
	return &SegmentBuilder{maxBytes: maxBytes}
}

// OrderError reports an entry that does not follow its predecessor in index order.
type OrderError struct{ Prev, Path string }

func (e *OrderError) Error() string {
	return fmt.Sprintf("file index out of order: %q after %q", e.Path, e.Prev)
}

// Add appends e to the current segment.
func (b *SegmentBuilder) Add(e *Entry) error {
	if b.any && Compare(b.last, e.Path) >= 0 {
		return &OrderError{Prev: b.last, Path: e.Path}
	}
	start := len(b.raw)
	b.raw = binary.AppendUvarint(b.raw, 0) // placeholder, fixed below
	b.raw = AppendEntry(b.raw, e)
	b.raw = fixLengthPrefix(b.raw, start)
	if b.count == 0 {
		b.first = e.Path
	}
	b.last = e.Path
	b.any = true
	b.count++
	return nil
}

// fixLengthPrefix replaces the one-byte placeholder at start with the real
// uvarint length of what follows it.
func fixLengthPrefix(buf []byte, start int) []byte {
	body := len(buf) - start - 1
	if body < 0x80 {
		buf[start] = byte(body)
		return buf
	}
	var tmp [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(tmp[:], uint64(body))
	buf = append(buf, make([]byte, n-1)...)
	copy(buf[start+n:], buf[start+1:start+1+body])
	copy(buf[start:], tmp[:n])
	return buf
}

// Len is the number of entries in the current, unflushed segment.
func (b *SegmentBuilder) Len() int { return b.count }

// Full reports whether the current segment reached its size.
func (b *SegmentBuilder) Full() bool { return len(b.raw) >= b.maxBytes }

// Flush encodes the current segment and starts the next one. It returns a
// Segment with Count 0 when nothing was added since the last flush.
func (b *SegmentBuilder) Flush() Segment {
	if b.count == 0 {
		return Segment{}
	}
	s := Segment{First: b.first, Last: b.last, Count: b.count, Data: EncodeSegment(b.raw, b.count)}
	b.raw = b.raw[:0]
	b.count = 0
	return s
}

// EncodeSegment frames raw (count length-prefixed entries) as a segment.
func EncodeSegment(raw []byte, count int) []byte {
	out := append([]byte{}, segmentMagic[:]...)
	out = append(out, SegmentVersion, segmentFlagZstd)
	out = binary.AppendUvarint(out, uint64(count))
	out = binary.AppendUvarint(out, uint64(len(raw)))
	return zenc.EncodeAll(raw, out)
}

// DecodeSegment decodes a whole segment.
func DecodeSegment(data []byte) ([]Entry, error) {
	raw, count, err := segmentPayload(data)
	if err != nil {
		return nil, err
	}
	return decodeEntries(raw, count)
}

// decodeEntries decodes count length-prefixed entries, all that raw holds.
func decodeEntries(raw []byte, count int) ([]Entry, error) {
	entries := make([]Entry, 0, count)
	for len(raw) > 0 {
		l, n := varint.Uvarint(raw)
		if n <= 0 || l > uint64(len(raw)-n) {
			return nil, fmt.Errorf("%w: segment entry length out of range", ErrCorrupt)
		}
		e, err := DecodeEntry(raw[n : n+int(l)])
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
		raw = raw[n+int(l):]
	}
	if len(entries) != count {
		return nil, fmt.Errorf("%w: segment says %d entries, holds %d", ErrCorrupt, count, len(entries))
	}
	return entries, nil
}

func segmentPayload(data []byte) (raw []byte, count int, err error) {
	if len(data) < segmentHeaderLen || !bytes.Equal(data[:4], segmentMagic[:]) {
		return nil, 0, fmt.Errorf("%w: not a file index segment", ErrCorrupt)
	}
	if data[4] != SegmentVersion {
		return nil, 0, fmt.Errorf("%w: segment version %d is newer than this program reads (%d); upgrade cairn", ErrCorrupt, data[4], SegmentVersion)
	}
	flags := data[5]
	rest := data[segmentHeaderLen:]
	c, n := varint.Uvarint(rest)
	if n <= 0 {
		return nil, 0, fmt.Errorf("%w: bad segment count", ErrCorrupt)
	}
	rest = rest[n:]
	rawLen, n := varint.Uvarint(rest)
	if n <= 0 || rawLen > MaxSegmentRawBytes {
		return nil, 0, fmt.Errorf("%w: bad segment length", ErrCorrupt)
	}
	rest = rest[n:]
	if flags&segmentFlagZstd == 0 {
		raw = rest
	} else {
		if rawLen > uint64(len(rest))*maxZstdExpansion {
			return nil, 0, fmt.Errorf("%w: segment says %d bytes, its %d compressed bytes cannot hold them", ErrCorrupt, rawLen, len(rest))
		}
		raw, err = zdec.DecodeAll(rest, make([]byte, 0, rawLen))
		if err != nil {
			return nil, 0, fmt.Errorf("%w: decompress segment: %w", ErrCorrupt, err)
		}
	}
	if uint64(len(raw)) != rawLen {
		return nil, 0, fmt.Errorf("%w: segment length %d, want %d", ErrCorrupt, len(raw), rawLen)
	}
	if c > uint64(len(raw))/minEncodedEntry {
		return nil, 0, fmt.Errorf("%w: segment says %d entries, its %d bytes cannot hold them", ErrCorrupt, c, len(raw))
	}
	return raw, int(c), nil
}
