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
type gearCutter struct {
	rd       io.Reader
	buf      []byte
	pos, end int
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

// next appends the next block to dst[:0]; io.EOF after the last. An error
// of the reader abandons the block being cut and is returned as it came.
func (g *gearCutter) next(dst []byte) ([]byte, error) {
	if g.end-g.pos < g.max && !g.eof {
		n := copy(g.buf, g.buf[g.pos:g.end])
		g.pos, g.end = 0, n
		for g.end < len(g.buf) {
			k, err := g.rd.Read(g.buf[g.end:])
			g.end += k
			if errors.Is(err, io.EOF) {
				g.eof = true
				break
			}
			if err != nil {
				return nil, err
			}
		}
	}
	data := g.buf[g.pos:g.end]
	if len(data) == 0 {
		return nil, io.EOF
	}
	cut := min(len(data), g.max)
	if cut > g.min {
		var h uint64
		// The 64 bytes before the smallest size fill the hash, so a
		// boundary depends on the bytes around it only.
		for _, b := range data[max(0, g.min-64):g.min] {
			h = h<<1 + gear[b]
		}
		if k := gearScan(data[g.min:cut], h, ^uint64(0)<<(64-g.bits)); k > 0 {
			cut = g.min + k
		}
	}
	g.pos += cut
	return append(dst[:0], data[:cut]...), nil
}

// gearScan rolls h over p and returns how many bytes of p end at the first
// boundary (the hash's bits under mask all zero), or 0 if none does. It is
// the cutter's loop over every byte: a mask rather than a shift by a
// variable (which Go checks against 64 on every byte), four bytes a turn,
// twice as fast as the plain loop (TestGearCutsPinned keeps the cuts).
func gearScan(p []byte, h, mask uint64) int {
	i := 0
	for ; i+4 <= len(p); i += 4 {
		q := p[i : i+4 : i+4]
		if h = h<<1 + gear[q[0]]; h&mask == 0 {
			return i + 1
		}
		if h = h<<1 + gear[q[1]]; h&mask == 0 {
			return i + 2
		}
		if h = h<<1 + gear[q[2]]; h&mask == 0 {
			return i + 3
		}
		if h = h<<1 + gear[q[3]]; h&mask == 0 {
			return i + 4
		}
	}
	for ; i < len(p); i++ {
		if h = h<<1 + gear[p[i]]; h&mask == 0 {
			return i + 1
		}
	}
	return 0
}
