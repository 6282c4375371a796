// Package assemble puts a large file backed up by blocks (package chunk)
// back together: its version's entry holds some blocks and names others
// that lie in earlier sessions, and a reader of the chain gets those in
// the reads of their own sessions, each announced by where it goes in the
// file (volume.BlockStart), before or after the entry. Both readers of a
// chain assemble the same way: the agent restoring a file, and the
// storage node writing a synthetic full, which stores the file whole
// again. Each writes the blocks into a file of its own at the offsets
// they go to, counts what came against what the block list says lies
// elsewhere, and checks the result against the digest of the whole
// content.
package assemble

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/cairnbackup/cairn/fileindex"
)

// ErrOverrun is a block whose Data records run past its length, or go
// back before its first: the block (and its file) cannot be trusted.
var ErrOverrun = errors.New("a block's data runs past its length or out of order")

// Block is a block read by its location whose Data records are coming.
// Their offsets are the block's place in the version that stored it; the
// bytes go to each offset of the file being assembled that holds them.
type Block struct {
	at   []int64
	base int64 // offset of the block in the version that stored it; -1 until its first record
	left uint64
}

// NewBlock is a block of n bytes that goes to the offsets at.
func NewBlock(at []int64, n uint64) *Block {
	return &Block{at: at, base: -1, left: n}
}

// Write takes the Data record of the block at offset off and writes it
// to w at every offset the block goes to (w nil: the file is already
// given up, the record is only counted). written is the bytes written in
// all. A record that overruns the block is counted and not written:
// ErrOverrun.
func (b *Block) Write(w io.WriterAt, off int64, data []byte) (written uint64, err error) {
	if b.base < 0 {
		b.base = off
	}
	n := uint64(len(data))
	if n > b.left || off < b.base {
		b.left -= min(b.left, n)
		return 0, fmt.Errorf("%w at offset %d", ErrOverrun, off)
	}
	b.left -= n
	if w == nil {
		return 0, nil
	}
	for _, at := range b.at {
		if _, err := w.WriteAt(data, at+off-b.base); err != nil {
			return written, err
		}
		written += n
	}
	return written, nil
}

// Done reports whether every byte of the block came.
func (b *Block) Done() bool { return b.left == 0 }

// Left is the bytes of the block still to come.
func (b *Block) Left() uint64 { return b.left }

// Kept is the bytes that a file with block list bl takes from other
// sessions' reads: what an assembly waits for once its own entry came.
// A block kept at several offsets counts once per offset, as Write
// counts it.
func Kept(bl *fileindex.BlockList) uint64 {
	var n uint64
	for i := range bl.Blocks {
		if bl.Blocks[i].Session != 0 {
			n += bl.Blocks[i].Loc.Len
		}
	}
	return n
}

// HashFile is the SHA-256 of the first size bytes of r, zeros past its
// end: the digest an assembled file is checked against.
func HashFile(r io.ReaderAt, size int64) ([]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, io.NewSectionReader(r, 0, size))
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(h, zeroReader{}, size-n); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// HashRuns is the fileindex.HashSparseSHA256 digest of a file of size
// bytes whose data lies in runs (a block list's Runs) of r: the digest an
// assembled file with holes is checked against. Only the runs are read.
func HashRuns(r io.ReaderAt, runs []fileindex.Run, size int64) ([]byte, error) {
	h := fileindex.NewSparseHash()
	buf := make([]byte, 256<<10)
	for _, run := range runs {
		for off, end := int64(run.Off), int64(run.Off+run.Len); off < end; {
			p := buf[:min(int64(len(buf)), end-off)]
			n, err := r.ReadAt(p, off)
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			clear(p[n:]) // past the end of what was written: zeros
			h.Add(off, p)
			off += int64(len(p))
		}
	}
	return h.Sum(nil, size), nil
}
