package volume

import "sync"

// blockBufs holds the buffers blocks pass through (a writer's plaintext
// and sealed blocks, a reader's raw and decoded ones), shared by every
// SessionWriter and SessionReader of the process. A storage node serves a
// restore with one SessionReader per read request and may open a cursor
// per seek: with a pool of their own, each started with fresh megabyte
// buffers and left the last one's to the garbage collector, which on a
// restore of many small files kept two to three times the buffers in
// flight live or waiting for collection (about 40 MB of a 190 MB node).
var blockBufs sync.Pool

// blockBufCap is the capacity of a new block buffer: a sealed block of the
// default raw size with room for the header of the block after it (what
// the reader reads ahead), rounded up, so one buffer serves every role.
var blockBufCap = int(alignUp(int64(sealedCap(DefaultBlockRawSize)+HeaderSize), 64<<10))

// getBlockBuf returns an empty buffer with room for n bytes.
func getBlockBuf(n int) []byte {
	if b, ok := blockBufs.Get().([]byte); ok {
		if cap(b) >= n {
			return b[:0]
		}
		// Too small for a block of a larger raw size: left to the
		// collector, so the pool holds the sizes in use.
	}
	return make([]byte, 0, max(n, blockBufCap))
}

// putBlockBuf gives b back for another block.
func putBlockBuf(b []byte) {
	if cap(b) == 0 {
		return
	}
	blockBufs.Put(b[:0]) //nolint:staticcheck // a slice header per Put, against a megabyte per block
}
