package fileindex

import (
	"bytes"
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

// padNumber re-encodes the one-byte number at b[at] as two bytes, a zero group
// after it: the same value, which binary.Uvarint takes, in a form no
// encoder writes.
func padNumber(b []byte, at int) []byte {
	if b[at] >= 0x80 {
		panic("padNumber: not a one-byte number")
	}
	out := append([]byte{}, b[:at]...)
	out = append(out, b[at]|0x80, 0)
	return append(out, b[at+1:]...)
}

// Every decoder of the index takes each number in its shortest form only:
// one encoding per value, so what decodes encodes back to the same bytes.
func TestDecodersRefusePaddedNumbers(t *testing.T) {
	e := Entry{Path: "/srv/a", Type: TypeFile, Mode: 0o644, Size: 12}
	entry := AppendEntry(nil, &e)
	if _, err := DecodeEntry(entry); err != nil {
		t.Fatal(err)
	}
	// The raw entries of an uncompressed segment: a length, then the entry.
	raw := append([]byte{byte(len(entry))}, entry...)
	plain := append(append([]byte{}, segmentMagic[:]...), SegmentVersion, 0, 1, byte(len(raw)))
	plain = append(plain, raw...)
	if _, err := DecodeSegment(plain); err != nil {
		t.Fatal(err)
	}
	bl := AppendBlockList(nil, &BlockList{Bits: 20, Blocks: []Block{{Loc: Location{Len: 100, Seq: 3}}}})
	if _, err := DecodeBlockList(bl); err != nil {
		t.Fatal(err)
	}
	ci := EncodeChunkIndex([]Chunk{{First: "/srv/a", Count: 1, Raw: 100, Len: 60}})
	if _, err := DecodeChunkIndex(ci); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		decode func() error
	}{
		{"entry tag", func() error { _, err := DecodeEntry(padNumber(entry, 0)); return err }},
		{"entry length", func() error { _, err := DecodeEntry(padNumber(entry, 1)); return err }},
		{"entry value", func() error {
			// The type field: tag, length 1, value.
			i := bytes.Index(entry, []byte{tagType, 1, byte(TypeFile)})
			if i < 0 {
				t.Fatal("no type field in the entry")
			}
			b := padNumber(entry, i+2)
			b[i+1] = 2 // the field's length, now two bytes
			_, err := DecodeEntry(b)
			return err
		}},
		{"segment count", func() error { _, err := DecodeSegment(padNumber(plain, segmentHeaderLen)); return err }},
		{"segment length", func() error { _, err := DecodeSegment(padNumber(plain, segmentHeaderLen+1)); return err }},
		{"segment entry length", func() error {
			b := padNumber(plain, segmentHeaderLen+2)
			b[segmentHeaderLen+1]++ // the raw length, a byte longer now
			_, err := DecodeSegment(b)
			return err
		}},
		{"block list size class", func() error { _, err := DecodeBlockList(padNumber(bl, 0)); return err }},
		{"chunk index count", func() error { _, err := DecodeChunkIndex(padNumber(ci, 5)); return err }},
	} {
		if err := c.decode(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s padded: %v, want ErrCorrupt", c.name, err)
		}
	}
}
