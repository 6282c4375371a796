package fileindex

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
)

// chunkTestSegment is a segment of n entries of the sample's shape.
func chunkTestSegment(t testing.TB, n int) ([]Entry, []byte) {
	b := NewSegmentBuilder(64 << 20)
	var entries []Entry
	for i := 0; i < n; i++ {
		e := sampleEntry()
		e.Path = fmt.Sprintf("/srv/d%03d/f%05d", i/50, i)
		if err := b.Add(&e); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	return entries, b.Flush().Data
}

// decodeChunks decodes every chunk of a chunked segment, in order.
func decodeChunks(index, data []byte) ([]Entry, error) {
	chunks, err := DecodeChunkIndex(index)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, c := range chunks {
		if c.Len > len(data) {
			return nil, fmt.Errorf("%w: chunk past the data", ErrCorrupt)
		}
		es, err := DecodeChunk(data[:c.Len], c)
		if err != nil {
			return nil, err
		}
		out = append(out, es...)
		data = data[c.Len:]
	}
	if len(data) != 0 {
		return nil, fmt.Errorf("%w: data after the chunks", ErrCorrupt)
	}
	return out, nil
}

func TestChunkSegment(t *testing.T) {
	entries, seg := chunkTestSegment(t, 3000)
	index, data, err := ChunkSegment(seg, 0)
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := DecodeChunkIndex(index)
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) < 5 {
		t.Fatalf("%d chunks of 3000 entries, want several", len(chunks))
	}
	got, err := decodeChunks(index, data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, entries) {
		t.Fatal("the chunks do not hold the segment's entries")
	}
	for _, c := range chunks {
		if c.Raw > ChunkBytes+1024 {
			t.Fatalf("a chunk of %d bytes, want about %d", c.Raw, ChunkBytes)
		}
	}
	// The same segment gives the same bytes: servers store alike.
	index2, data2, _ := ChunkSegment(seg, 0)
	if string(index2) != string(index) || string(data2) != string(data) {
		t.Fatal("chunking the same segment twice gave different bytes")
	}
	// A chunk's bytes that are not it, or a segment that is not one.
	if _, err := DecodeChunk(data[:chunks[0].Len], chunks[1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("chunk 0 read as chunk 1: %v", err)
	}
	if _, _, err := ChunkSegment(seg[:len(seg)-3], 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a truncated segment: %v", err)
	}
}

// FuzzDecodeChunkIndex decodes arbitrary bytes as a chunk index, as the
// catalog does with what its file holds: anything malformed is an
// ErrCorrupt, and what decodes encodes back to the same bytes.
func FuzzDecodeChunkIndex(f *testing.F) {
	_, seg := chunkTestSegment(f, 400)
	index, _, err := ChunkSegment(seg, 1024)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(index)
	f.Fuzz(func(t *testing.T, b []byte) {
		chunks, err := DecodeChunkIndex(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("not ErrCorrupt: %v", err)
			}
			return
		}
		if again := EncodeChunkIndex(chunks); string(again) != string(b) {
			t.Fatalf("%x decoded and encoded to %x", b, again)
		}
	})
}

// FuzzDecodeChunk decodes arbitrary bytes as the chunks of a chunked
// segment with its index: every malformed one is an ErrCorrupt, and the
// entries of one that decodes are in index order within each chunk.
func FuzzDecodeChunk(f *testing.F) {
	_, seg := chunkTestSegment(f, 100)
	index, data, err := ChunkSegment(seg, 2048)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(index, data)
	f.Fuzz(func(t *testing.T, index, data []byte) {
		if _, err := decodeChunks(index, data); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("not ErrCorrupt: %v", err)
		}
	})
}

// FuzzChunkSegment chunks arbitrary bytes as a segment, as the catalog does
// with what a storage node sent: anything malformed is an ErrCorrupt, and
// the chunks of a segment that decodes hold its entries. A segment that
// decodes to no entries is refused (there is no chunk to index) and kept
// whole by the catalog.
func FuzzChunkSegment(f *testing.F) {
	_, seg := chunkTestSegment(f, 60)
	f.Add(seg, 512)
	f.Fuzz(func(t *testing.T, seg []byte, size int) {
		index, data, err := ChunkSegment(seg, size%(64<<10))
		want, werr := DecodeSegment(seg)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("not ErrCorrupt: %v", err)
			}
			if werr == nil && len(want) > 0 {
				t.Fatalf("a segment that decodes does not chunk: %v", err)
			}
			return
		}
		got, err := decodeChunks(index, data)
		if werr != nil {
			if err == nil {
				t.Fatalf("a segment that does not decode (%v) chunked into chunks that do", werr)
			}
			return
		}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("chunks hold %d entries (%v), the segment %d", len(got), err, len(want))
		}
	})
}
