package fileindex

import (
	"encoding/binary"
	"fmt"

	"github.com/cairnbackup/cairn/internal/varint"
)

// A segment re-cut for seeking. A segment is one zstd frame of about a MiB
// of entries: finding one entry in it means decompressing all of it, a
// couple of milliseconds, and a listing or a restore plan touches a segment
// of every backup of a chain. The catalog therefore keeps each segment as
// chunks of about ChunkBytes of entries, each compressed on its own, with a
// small index of where each starts (ChunkIndex); a read decompresses only
// the chunk that holds what it wants. Chunks are the catalog's own layout:
// volumes, sessions and Raft commands carry the segment as it was built.

// ChunkBytes is the uncompressed size at which ChunkSegment starts a new
// chunk: decompressing one takes about a tenth of a millisecond, and a
// chunk of a few hundred entries compresses nearly as well as a segment.
const ChunkBytes = 16 << 10

// Chunk describes one chunk of a chunked segment.
type Chunk struct {
	First string // path of its first entry
	Count int    // entries
	Raw   int    // uncompressed bytes
	Len   int    // compressed bytes, following the chunks before it
}

// chunkIndexMagic opens an encoded chunk index.
var chunkIndexMagic = [4]byte{'C', 'R', 'N', 'K'}

const chunkIndexVersion = 1

// ChunkSegment cuts an encoded segment into chunks of about chunkBytes of
// entries (ChunkBytes when chunkBytes <= 0). It returns the encoded chunk
// index and the compressed chunks, one after another. The same segment
// always gives the same bytes, so every server of a group stores the same.
// A segment of no entries has no chunk to index: it is refused as
// ErrCorrupt, and the catalog keeps it whole, as it keeps any segment
// that does not chunk.
func ChunkSegment(seg []byte, chunkBytes int) (index, data []byte, err error) {
	if chunkBytes <= 0 {
		chunkBytes = ChunkBytes
	}
	raw, count, err := segmentPayload(seg)
	if err != nil {
		return nil, nil, err
	}
	var chunks []Chunk
	var frame []byte // each chunk's frame, then appended: EncodeAll onto data copies all of data when it grows it
	data = make([]byte, 0, len(seg)+len(seg)/8)
	start, n, entries := 0, 0, 0
	flush := func(end int) error {
		first, err := firstPath(raw[start:end])
		if err != nil {
			return err
		}
		frame = zenc.EncodeAll(raw[start:end], frame[:0])
		data = append(data, frame...)
		chunks = append(chunks, Chunk{First: first, Count: n, Raw: end - start, Len: len(frame)})
		start, n = end, 0
		return nil
	}
	for off := 0; off < len(raw); {
		l, k := varint.Uvarint(raw[off:])
		if k <= 0 || l > uint64(len(raw)-off-k) {
			return nil, nil, fmt.Errorf("%w: segment entry length out of range", ErrCorrupt)
		}
		off += k + int(l)
		n++
		entries++
		if off-start >= chunkBytes {
			if err := flush(off); err != nil {
				return nil, nil, err
			}
		}
	}
	if n > 0 {
		if err := flush(len(raw)); err != nil {
			return nil, nil, err
		}
	}
	if entries != count || entries == 0 {
		return nil, nil, fmt.Errorf("%w: segment says %d entries, holds %d", ErrCorrupt, count, entries)
	}
	return EncodeChunkIndex(chunks), data, nil
}

// firstPath is the path of the first entry of raw entries.
func firstPath(raw []byte) (string, error) {
	l, k := varint.Uvarint(raw)
	if k <= 0 || l > uint64(len(raw)-k) {
		return "", fmt.Errorf("%w: segment entry length out of range", ErrCorrupt)
	}
	e, err := DecodeEntry(raw[k : k+int(l)])
	return e.Path, err
}

// EncodeChunkIndex encodes the index of a chunked segment.
func EncodeChunkIndex(chunks []Chunk) []byte {
	out := append([]byte{}, chunkIndexMagic[:]...)
	out = append(out, chunkIndexVersion)
	out = binary.AppendUvarint(out, uint64(len(chunks)))
	for _, c := range chunks {
		out = binary.AppendUvarint(out, uint64(c.Count))
		out = binary.AppendUvarint(out, uint64(c.Raw))
		out = binary.AppendUvarint(out, uint64(c.Len))
		out = binary.AppendUvarint(out, uint64(len(c.First)))
		out = append(out, c.First...)
	}
	return out
}

// DecodeChunkIndex decodes what EncodeChunkIndex produced. It checks that
// every field is in range, not that the chunks are what it says.
func DecodeChunkIndex(b []byte) ([]Chunk, error) {
	if len(b) < 5 || [4]byte(b[:4]) != chunkIndexMagic {
		return nil, fmt.Errorf("%w: not a chunk index", ErrCorrupt)
	}
	if b[4] != chunkIndexVersion {
		return nil, fmt.Errorf("%w: chunk index version %d is newer than this program reads (%d); upgrade cairn", ErrCorrupt, b[4], chunkIndexVersion)
	}
	rest := b[5:]
	uvarint := func() (uint64, error) {
		v, n := varint.Uvarint(rest)
		if n <= 0 {
			return 0, fmt.Errorf("%w: chunk index truncated, or a number in it not minimally encoded", ErrCorrupt)
		}
		rest = rest[n:]
		return v, nil
	}
	n, err := uvarint()
	if err != nil {
		return nil, err
	}
	// A chunk takes at least five bytes here.
	if n == 0 || n > uint64(len(rest))/5 {
		return nil, fmt.Errorf("%w: chunk index says %d chunks in %d bytes", ErrCorrupt, n, len(rest))
	}
	chunks := make([]Chunk, 0, n)
	for range n {
		var f [4]uint64
		for i := range f {
			if f[i], err = uvarint(); err != nil {
				return nil, err
			}
		}
		count, raw, clen, plen := f[0], f[1], f[2], f[3]
		switch {
		case raw > MaxSegmentRawBytes || clen > MaxSegmentRawBytes || count == 0 || count > raw/minEncodedEntry:
			return nil, fmt.Errorf("%w: chunk of %d entries in %d bytes, %d compressed", ErrCorrupt, count, raw, clen)
		case plen == 0 || plen > uint64(len(rest)):
			return nil, fmt.Errorf("%w: chunk index path length out of range", ErrCorrupt)
		}
		chunks = append(chunks, Chunk{First: string(rest[:plen]), Count: int(count), Raw: int(raw), Len: int(clen)})
		rest = rest[plen:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the chunk index", ErrCorrupt, len(rest))
	}
	return chunks, nil
}

// DecodeChunk decodes one chunk's entries from its compressed bytes.
func DecodeChunk(data []byte, c Chunk) ([]Entry, error) {
	if c.Raw < 0 || c.Raw > MaxSegmentRawBytes || uint64(c.Raw) > uint64(len(data))*maxZstdExpansion {
		return nil, fmt.Errorf("%w: chunk says %d bytes, its %d compressed bytes cannot hold them", ErrCorrupt, c.Raw, len(data))
	}
	raw, err := zdec.DecodeAll(data, make([]byte, 0, c.Raw))
	if err != nil {
		return nil, fmt.Errorf("%w: decompress chunk: %w", ErrCorrupt, err)
	}
	if len(raw) != c.Raw {
		return nil, fmt.Errorf("%w: chunk length %d, want %d", ErrCorrupt, len(raw), c.Raw)
	}
	if c.Count > len(raw)/minEncodedEntry {
		return nil, fmt.Errorf("%w: chunk says %d entries, its %d bytes cannot hold them", ErrCorrupt, c.Count, len(raw))
	}
	entries, err := decodeEntries(raw, c.Count)
	if err == nil && (len(entries) == 0 || entries[0].Path != c.First) {
		err = fmt.Errorf("%w: chunk does not start at %q", ErrCorrupt, c.First)
	}
	return entries, err
}
