package fileindex

import (
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
)

// lyingSegment is a segment header whose count and raw length claim far
// more than the bytes after them hold.
func lyingSegment(flags byte, count, rawLen uint64, body []byte) []byte {
	b := append([]byte{}, segmentMagic[:]...)
	b = append(b, SegmentVersion, flags)
	b = binary.AppendUvarint(b, count)
	b = binary.AppendUvarint(b, rawLen)
	return append(b, body...)
}

// TestDecodeSegmentBoundsHeaderClaims: a segment's count and length come
// from untrusted bytes (a node, a bit flip in catalog.db), so a decoder that
// sized an allocation by them could be made to die of out-of-memory by a
// 13-byte input, on every ls or restore of the backup.
func TestDecodeSegmentBoundsHeaderClaims(t *testing.T) {
	tiny := zenc.EncodeAll([]byte{}, nil)
	zeros := zenc.EncodeAll(make([]byte, 4<<20), nil)
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"13 bytes claiming 2^40 entries", lyingSegment(0, 1<<40, 0, nil)},
		{"a million entries in no bytes", lyingSegment(0, 1<<20, 0, nil)},
		{"count overflowing int", lyingSegment(0, 1<<63+5, 0, nil)},
		{"zstd claiming 60 MiB from a few bytes", lyingSegment(segmentFlagZstd, 1, 60<<20, tiny)},
		{"zstd holding 4 MiB saying 100 bytes", lyingSegment(segmentFlagZstd, 1, 100, zeros)},
		{"raw claiming more than it has", lyingSegment(0, 1, 60<<20, []byte{1, 2, 3})},
	} {
		t.Run(c.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := DecodeSegment(c.data)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("DecodeSegment(%q) = %v, want ErrCorrupt", c.data, err)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
				t.Fatalf("decoding %d bytes allocated %d bytes", len(c.data), grew)
			}
		})
	}
}
