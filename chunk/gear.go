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

// gearCutter cuts by a gear hash (FastCDC's rolling hash: a shift and an
// add per byte, each byte's influence gone after 64): a block ends after
// its smallest size where the hash's top bits bits are zero. It does per
// byte what Rabin's does in several table lookups: 1.6 times as fast here
// (BenchmarkSplit).
//
// Its buffer is a ring of the largest block and a read's worth: a flat
// buffer had to move its unread tail, up to a largest block, to the front
// before every read, which moved each byte about twice at 1 MiB blocks and
// four times at the 64 MiB blocks of a file of 12 GiB.
type gearCutter struct {
	rd       io.Reader
	buf      []byte
	pos, n   int // the unread bytes: n of them from buf[pos], wrapping
	eof      bool
	min, max int
	bits     uint
}

func (g *gearCutter) reset(rd io.Reader, bits int) {
	lo, hi := Sizes(bits)
	// Room for the largest block and a read's worth after it.
	if cap(g.buf) < hi+readSize {
		g.buf = make([]byte, hi+readSize)
	}
	g.buf = g.buf[:cap(g.buf)]
	*g = gearCutter{rd: rd, buf: g.buf, min: lo, max: hi, bits: uint(bits & (Gear - 1))}
}

// fill reads until the ring is full or the reader ends. It is called when
// fewer than a largest block are buffered, so each read is of at least
// readSize bytes.
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

// next appends the next block to dst[:0]; io.EOF after the last. An error
// of the reader abandons the block being cut and is returned as it came.
func (g *gearCutter) next(dst []byte) ([]byte, error) {
	if g.n < g.max && !g.eof {
		if err := g.fill(); err != nil {
			return nil, err
		}
	}
	if g.n == 0 {
		return nil, io.EOF
	}
	cut := min(g.n, g.max)
	if cut > g.min {
		var h uint64
		// The 64 bytes before the smallest size fill the hash, so a
		// boundary depends on the bytes around it only.
		a, b := g.span(max(0, g.min-64), g.min)
		for _, p := range [][]byte{a, b} {
			for _, c := range p {
				h = h<<1 + gear[c]
			}
		}
		mask := ^uint64(0) << (64 - g.bits)
		a, b = g.span(g.min, cut)
		k, h := gearScan(a, h, mask)
		if k == 0 && len(b) > 0 {
			if k, _ = gearScan(b, h, mask); k > 0 {
				k += len(a)
			}
		}
		if k > 0 {
			cut = g.min + k
		}
	}
	a, b := g.span(0, cut)
	dst = append(append(dst[:0], a...), b...)
	if g.pos += cut; g.pos >= len(g.buf) {
		g.pos -= len(g.buf)
	}
	g.n -= cut
	return dst, nil
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
