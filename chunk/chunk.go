// Package chunk cuts the content of a large file into content-defined
// blocks, so that a backup of a file changed in place or appended to sends
// only the blocks that changed: a block boundary depends on the bytes
// around it (a Rabin fingerprint over a 64-byte window, restic's chunker),
// not on its offset, so an insertion moves the boundaries after it along
// with the data instead of changing every block after it.
//
// The agent cuts what it sends; anything that must cut a file's content
// the same way later (a storage node building a synthetic full) uses the
// same Splitter, with the same size class, and gets the same blocks.
package chunk

import (
	"errors"
	"fmt"
	"io"

	"github.com/restic/chunker"
)

// Threshold is the size from which a file is cut into blocks. Below it a
// changed file is sent whole: at most a block or two of it would be saved,
// and its index entry stays as small as it was.
const Threshold = 1 << 20

// MaxBlocks bounds the blocks of one file version, so that its block list
// (about 45 bytes a block in the index) fits one FileEnd record and one
// index segment: a larger file gets larger blocks (Bits).
const MaxBlocks = 4096

// Pol is the irreducible polynomial of the fingerprint of the Rabin
// classes. It is fixed, not drawn per client as restic draws one per
// repository: blocks are never shared between clients (a file's blocks
// come from its own earlier versions only), so there is no store in which
// one client could learn from block boundaries what another holds, and a
// fixed one lets every component cut a file the same way without being
// told how.
const Pol = chunker.Pol(0x3DA3358B4DC173)

// A size class names how a file was cut, and is recorded in its block
// list: Gear+bits for the gear hash (gear.go), what Bits gives; bits alone,
// MinBits to MaxBits, for restic's Rabin chunker, what writers used
// before, still cut by Splitter so that anything holding such a list (a
// golden volume, a re-cut of an old version) gets the same blocks. Either
// way a block is at least half of 2^bits and then ends with a chance of
// 2^-bits at each byte, so it is 1.5 × 2^bits on average (192 KiB in
// class 17).
//
// MinBits is below restic's 20 because a change in place costs the block
// it falls in, about 2.2 × 2^bits whatever the change's size: with 1.5 MiB
// blocks a day's scattered small changes stored 7.7 times their bytes, with
// 192 KiB ones about an eighth of that overhead (bench/README.md). It costs
// the catalog 45 bytes per 192 KiB of a large file's version (0.02%), and
// no more per file than before: Bits still keeps every file within
// MaxBlocks, so files from 256 MiB get larger classes as they did from 2
// GiB. The gear hash because the Rabin fingerprint cost the agent more CPU
// per byte than all the rest of a full backup (catalog/DESIGN.md).
const (
	MinBits = 17
	MaxBits = 30
	Gear    = 32
)

// Bits is the size class for a file of size bytes: the gear class of the
// smallest bits, from MinBits, whose smallest block (half the average)
// keeps the file within MaxBlocks blocks. A file keeps the class of its
// previous version while that still holds (Keep), so that growth does not
// move every boundary.
func Bits(size int64) int {
	b := MinBits
	for b < MaxBits && size/(int64(1)<<(b-1)) >= MaxBlocks {
		b++
	}
	return Gear + b
}

// Keep reports whether a file of size bytes may still be cut with size
// class class: a gear class that keeps it within MaxBlocks blocks. A file
// last cut in a Rabin class is cut anew (its blocks are sent once more).
func Keep(size int64, class int) bool {
	return class >= Gear+MinBits && class <= Gear+MaxBits && size/(int64(1)<<(class-Gear-1)) < MaxBlocks
}

// Sizes are the smallest and largest block of a size class: half and eight
// times the average, restic's proportions.
func Sizes(class int) (minSize, maxSize int) {
	bits := class &^ Gear
	return 1 << (bits - 1), 1 << (bits + 3)
}

// Splitter cuts one stream into blocks. It keeps a buffer of the largest
// block between calls; Reset reuses it for the next file.
type Splitter struct {
	c    *chunker.Chunker // a Rabin class
	g    gearCutter       // a gear class
	buf  []byte
	bits int
}

// ErrBits is returned for a size class outside MinBits..MaxBits.
var ErrBits = errors.New("block size class out of range")

// Reset makes s cut r with size class class.
func (s *Splitter) Reset(r io.Reader, class int) error {
	bits := class &^ Gear
	if bits < MinBits || bits > MaxBits || class&^(Gear|63) != 0 {
		return fmt.Errorf("%w: %d, want %d..%d or %d..%d", ErrBits, class, Gear+MinBits, Gear+MaxBits, MinBits, MaxBits)
	}
	lo, hi := Sizes(class)
	s.bits = class
	if class&Gear != 0 {
		s.g.reset(r, class)
		return nil
	}
	if s.c == nil {
		s.c = chunker.NewWithBoundaries(r, Pol, uint(lo), uint(hi))
	} else {
		s.c.ResetWithBoundaries(r, Pol, uint(lo), uint(hi))
	}
	s.c.SetAverageBits(bits)
	return nil
}

// Next returns the next block's bytes, whole, valid until the next call,
// or io.EOF after the last block. An error of the reader is returned as it
// came.
func (s *Splitter) Next() ([]byte, error) {
	s.buf = s.buf[:0]
	for {
		var last bool
		var err error
		s.buf, last, err = s.next(s.buf)
		if err != nil || last {
			return s.buf, err
		}
	}
}

// next appends the next piece of a block to dst and reports whether it
// ends the block: a gear class gives a block larger than PieceSize in
// pieces, a Rabin class every block whole.
func (s *Splitter) next(dst []byte) ([]byte, bool, error) {
	switch {
	case s.bits&Gear != 0:
		return s.g.next(dst)
	case s.c != nil:
		c, err := s.c.Next(dst[:0])
		return c.Data, true, err
	}
	return nil, false, io.EOF
}
