package s3vol

import "github.com/cairnbackup/cairn/internal/readahead"

// Defaults of ReadAhead: 4 chunks of 2 MiB in flight, 10 MiB held at most
// per open volume. Each read ahead is one range read of the store, whose
// latency is paid once per chunk instead of once per block.
const (
	DefaultReadAheadChunk = 2 << 20
	DefaultReadAheadDepth = 4
)

// ReadAhead makes r read ahead of reads in order: up to depth chunks of
// chunkSize bytes fetched at once (0s: the defaults). Close stops them.
func (r *Reader) ReadAhead(depth int, chunkSize int64) {
	if depth <= 0 {
		depth = DefaultReadAheadDepth
	}
	if chunkSize <= 0 {
		chunkSize = DefaultReadAheadChunk
	}
	r.ahead = readahead.New(r.ctx, r.size, r.readAt, r.readAt, readahead.Options{Chunk: chunkSize, Depth: depth})
}
