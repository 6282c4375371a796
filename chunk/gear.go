package chunk

import (
	"errors"
	"io"
)

// gear is the table of the gear hash: 256 pseudo-random 64-bit values,
// fixed (splitmix64 from a fixed seed) for the reason Pol is.
var gear = func() (t [256]uint64) {
	x := uint64(0xCA1A_B10C_5EED_0017)
	for i := range t {
		x += 0x9E3779B97F4A7C15
		z := x
		z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
		z = (z ^ z>>27) * 0x94D049BB133111EB
		t[i] = z ^ z>>31
	}
	return t
}()

// readSize is the least a refill of the cutter's buffer reads.
const readSize = 512 << 10

// PieceSize is the most of a block the gear cutter gives at a time: a
// block of a larger class (files from 1 GiB, whose largest blocks are 8
// MiB to 8 GiB) comes in pieces of it, so that neither the cutter's ring
// nor anything after it holds a whole block. A 12 GiB file cut whole held
// its 64 MiB largest blocks several times over: about 440 MB of memory.
// A variable only so that the tests of what sends blocks can make small
// blocks come in pieces; nothing else sets it.
var PieceSize = 4 << 20

// largestPiece is the most of a block one cut of size class class gives:
// a gear class's largest block up to PieceSize, a Rabin class's whole.
func largestPiece(class int) int {
	_, hi := Sizes(class)
	if class&Gear != 0 {
		return min(hi, PieceSize)
	}
	return hi
}

// gearCutter cuts by a gear hash (FastCDC's rolling hash: a shift and an
// add per byte, each byte's influence gone after 64): a block ends after
// its smallest size where the hash's top bits bits are zero. It does per
// byte what Rabin's does in several table lookups: 1.6 times as fast here
// (BenchmarkSplit).
//
// Its buffer is a ring of a piece and a read's worth: a flat buffer had to
// move its unread tail, up to a piece, to the front before every read,
// which moved each byte about twice at 1 MiB blocks.
//
// Because a byte's influence is gone after 64 more, the hash rolled over
// a whole piece carries into the next one as if the block were cut whole:
// the cuts do not depend on the pieces.
type gearCutter struct {
	rd       io.Reader
	buf      []byte
	pos, n   int // the unread bytes: n of them from buf[pos], wrapping
	eof      bool
	min, max int
	piece    int // the most one call gives
	bits     uint
	at       int    // of the block being cut, the bytes given so far
	h        uint64 // the hash rolled to at, once at passes min-64
}

func (g *gearCutter) reset(rd io.Reader, bits int) {
	lo, hi := Sizes(bits)
	piece := largestPiece(bits)
	// Room for a piece and a read's worth after it.
	if cap(g.buf) < piece+readSize {
		g.buf = make([]byte, piece+readSize)
	}
	g.buf = g.buf[:cap(g.buf)]
	*g = gearCutter{rd: rd, buf: g.buf, min: lo, max: hi, piece: piece, bits: uint(bits & (Gear - 1))}
}

// fill reads until the ring is full or the reader ends. It is called when
// at most a piece is buffered, so each read is of at least readSize bytes.
func (g *gearCutter) fill() error {
	size := len(g.buf)
	for g.n < size && !g.eof {
		w := g.pos + g.n
		if w >= size {
			w -= size
		}
		lim := size // the free bytes from w: to the end, or to pos
		if w < g.pos {
			lim = g.pos
		}
		k, err := g.rd.Read(g.buf[w:lim])
		g.n += k
		if errors.Is(err, io.EOF) {
			g.eof = true
			break
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// span returns the unread bytes from i to j (0 <= i <= j <= n) as one or
// two slices of the ring.
func (g *gearCutter) span(i, j int) (a, b []byte) {
	size := len(g.buf)
	from := g.pos + i
	if from >= size {
		from -= size
	}
	if from+j-i <= size {
		return g.buf[from : from+j-i], nil
	}
	return g.buf[from:], g.buf[:from+j-i-size]
}

// next appends the next piece of a block to dst and reports whether it
// ends the block; io.EOF after the last. A block that ends at the end of
// a piece is given whole, so a piece that does not end its block always
// has bytes after it. An error of the reader abandons the block being cut
// and is returned as it came.
func (g *gearCutter) next(dst []byte) ([]byte, bool, error) {
	// Refill also at exactly a piece: unless the reader is known to have
	// ended, that piece may be the stream's last bytes, and a piece that
	// does not end its block must have bytes after it.
	if g.n <= g.piece && !g.eof {
		if err := g.fill(); err != nil {
			return nil, false, err
		}
	}
	if g.n == 0 {
		return nil, false, io.EOF
	}
	lim := min(g.n, g.max-g.at, g.piece)
	cut, last := lim, g.at+lim == g.max || (g.eof && lim == g.n)
	// The 64 bytes before the smallest size fill the hash, so a boundary
	// depends on the bytes around it only; those before are not rolled.
	if from := max(g.at, g.min-64) - g.at; from < lim {
		h := g.h
		check := max(g.at, g.min) - g.at
		a, b := g.span(from, min(check, lim))
		h = gearRoll(gearRoll(h, a), b)
		if check < lim {
			mask := ^uint64(0) << (64 - g.bits)
			a, b := g.span(check, lim)
			var k int
			k, h = gearScan(a, h, mask)
			if k == 0 && len(b) > 0 {
				if k, h = gearScan(b, h, mask); k > 0 {
					k += len(a)
				}
			}
			if k > 0 {
				cut, last = check+k, true
			}
		}
		g.h = h
	}
	a, b := g.span(0, cut)
	dst = append(append(dst, a...), b...)
	if g.pos += cut; g.pos >= len(g.buf) {
		g.pos -= len(g.buf)
	}
	g.n -= cut
	if last {
		g.at, g.h = 0, 0
	} else {
		g.at += cut
	}
	return dst, last, nil
}

// gearRoll rolls h over p without looking for a boundary.
func gearRoll(h uint64, p []byte) uint64 {
	for _, c := range p {
		h = h<<1 + gear[c]
	}
	return h
}

// gearScan rolls h over p and returns how many bytes of p end at the first
// boundary (the hash's bits under mask all zero), or 0 if none does, with
// the hash rolled over all of p then. It is
// the cutter's loop over every byte: a mask rather than a shift by a
// variable (which Go checks against 64 on every byte), four bytes a turn,
// twice as fast as the plain loop (TestGearCutsPinned keeps the cuts).
func gearScan(p []byte, h, mask uint64) (int, uint64) {
	i := 0
	for ; i+4 <= len(p); i += 4 {
		q := p[i : i+4 : i+4]
		if h = h<<1 + gear[q[0]]; h&mask == 0 {
			return i + 1, h
		}
		if h = h<<1 + gear[q[1]]; h&mask == 0 {
			return i + 2, h
		}
		if h = h<<1 + gear[q[2]]; h&mask == 0 {
			return i + 3, h
		}
		if h = h<<1 + gear[q[3]]; h&mask == 0 {
			return i + 4, h
		}
	}
	for ; i < len(p); i++ {
		if h = h<<1 + gear[p[i]]; h&mask == 0 {
			return i + 1, h
		}
	}
	return 0, h
}
