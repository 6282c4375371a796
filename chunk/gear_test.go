package chunk

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
)

// cutLengths is the block lengths of data cut in class, hashed: what a
// block list records of the cut, in 32 bytes.
func cutLengths(t *testing.T, data []byte, class int) string {
	t.Helper()
	_, lengths := splitAll(t, bytes.NewReader(data), class)
	return lengths
}

// splitAll cuts what r reads in class and returns the blocks joined, and
// their lengths hashed as cutLengths does.
func splitAll(t *testing.T, r io.Reader, class int) (joined []byte, lengths string) {
	t.Helper()
	joined, lens := splitLengths(t, r, class)
	h := sha256.New()
	for _, n := range lens {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(n)))
	}
	return joined, hex.EncodeToString(h.Sum(nil))[:16]
}

// splitLengths cuts what r reads in class with a Splitter and returns the
// blocks joined and their lengths.
func splitLengths(t *testing.T, r io.Reader, class int) (joined []byte, lens []int) {
	t.Helper()
	var s Splitter
	if err := s.Reset(r, class); err != nil {
		t.Fatal(err)
	}
	for {
		b, err := s.Next()
		if errors.Is(err, io.EOF) {
			return joined, lens
		}
		if err != nil {
			t.Fatal(err)
		}
		joined = append(joined, b...)
		lens = append(lens, len(b))
	}
}

// TestGearCutsPinned pins where the gear hash cuts: a block list names a
// file's blocks by these cuts, so a cutter that moved one boundary would
// make the next incremental of every large file send it whole again.
// Runs of one byte value (a hash that stops changing) and text are there
// as well as random bytes.
func TestGearCutsPinned(t *testing.T) {
	runs := bytes.Repeat(append(bytes.Repeat([]byte{0}, 300<<10), bytes.Repeat([]byte{0xff}, 200<<10)...), 6)
	text := bytes.Repeat([]byte("2026-12-02T14:35:00Z INFO backup session started pool=Default client=web01\n"), 30000)
	for _, c := range []struct {
		name  string
		data  []byte
		class int
		want  string
	}{
		{"random", random(7, 8, 6<<20), Gear + MinBits, "cc8637376398d61f"},
		{"random", random(7, 8, 6<<20), Gear + 18, "bd3e1b4ef33401ae"},
		{"random", random(9, 10, 12<<20), Gear + 20, "d5180eeb1a515def"},
		{"runs", runs, Gear + MinBits, "94872d0715653db9"},
		{"text", text, Gear + MinBits, "62d5e905de0ed16c"},
		{"short", random(1, 1, 70<<10), Gear + MinBits, "68f8c2887600f145"},
		// Classes whose blocks the cutter gives in pieces: the cuts are
		// those of a cutter that held each block whole.
		{"random", random(15, 16, 24<<20), Gear + 21, "6ade12b8dac91cb7"},
		{"random", random(17, 18, 40<<20), Gear + 23, "f6d06de2c0898478"},
		{"runs", append(bytes.Repeat([]byte{0}, 36<<20), random(19, 20, 5<<20)...), Gear + 22, "b4d5bece64688c94"},
	} {
		if got := cutLengths(t, c.data, c.class); got != c.want {
			t.Errorf("%s, class %d: cuts hash to %s, want %s", c.name, c.class, got, c.want)
		}
	}
}

// The gear cutter's blocks are the input, byte for byte, in order, however
// its reader splits the reads and however often the blocks wrap around its
// ring; and the cuts are those of the input read whole.
func TestGearBlocksAreTheInput(t *testing.T) {
	text := bytes.Repeat([]byte("2026-12-02T14:35:00Z INFO backup session started pool=Default client=web01\n"), 60000)
	for _, c := range []struct {
		name  string
		data  []byte
		class int
	}{
		{"random", random(11, 12, 9<<20+12345), Gear + MinBits},
		{"random", random(13, 14, 20<<20+7), Gear + 18},
		{"text", text, Gear + MinBits},
	} {
		whole := cutLengths(t, c.data, c.class)
		// In pieces too: of an odd size, shorter than the smallest
		// block, and shorter than the hash's 64-byte window.
		for _, piece := range []int{PieceSize, 100_000, 37} {
			setPieceSize(t, piece)
			got, short := splitAll(t, &shortReads{r: bytes.NewReader(c.data), n: 1}, c.class)
			if !bytes.Equal(got, c.data) {
				t.Fatalf("%s, class %d, pieces of %d: the blocks are not the input (%d bytes of %d)", c.name, c.class, piece, len(got), len(c.data))
			}
			if short != whole {
				t.Fatalf("%s, class %d, pieces of %d: cut by short reads %s, read whole %s", c.name, c.class, piece, short, whole)
			}
		}
	}
}

// setPieceSize makes PieceSize n for the rest of the test.
func setPieceSize(t *testing.T, n int) {
	old := PieceSize
	PieceSize = n
	t.Cleanup(func() { PieceSize = old })
}

// shortReads returns reads of irregular lengths, some far shorter than
// asked.
type shortReads struct {
	r io.Reader
	n uint32
}

func (s *shortReads) Read(p []byte) (int, error) {
	s.n = s.n*1103515245 + 12345
	if k := 1 + int(s.n>>8)%(256<<10); k < len(p) {
		p = p[:k]
	}
	return s.r.Read(p)
}

// plainCuts cuts data as the gear classes are defined, the whole input in
// hand, one byte at a time: the lengths of its blocks.
func plainCuts(data []byte, class int) []int {
	lo, hi := Sizes(class)
	mask := ^uint64(0) << (64 - uint(class&^Gear))
	var out []int
	for len(data) > 0 {
		n := min(len(data), hi)
		cut := n
		if n > lo {
			var h uint64
			for _, c := range data[lo-64 : lo] {
				h = h<<1 + gear[c]
			}
			for i := lo; i < n; i++ {
				if h = h<<1 + gear[data[i]]; h&mask == 0 {
					cut = i + 1
					break
				}
			}
		}
		out = append(out, cut)
		data = data[cut:]
	}
	return out
}

// endingReader reads r in reads of random lengths (when short) and gives
// io.EOF with the last bytes (when withEOF), as some readers do, rather
// than on a read of its own.
type endingReader struct {
	r              *bytes.Reader
	rng            *rand.Rand
	short, withEOF bool
}

func (e *endingReader) Read(p []byte) (int, error) {
	if e.short && len(p) > 1 {
		p = p[:1+e.rng.IntN(len(p))]
	}
	n, err := e.r.Read(p)
	if err == nil && e.withEOF && e.r.Len() == 0 {
		err = io.EOF
	}
	return n, err
}

// The cutter, in pieces of any size, over any reader, gives the blocks of
// plainCuts: inputs of random sizes and of sizes around the smallest and
// largest block and the read size, with runs of zeros (cut at the largest
// size); pieces from one byte to the largest block; readers that end with
// their last bytes or after them, in long or short reads. A stream ending
// exactly at a piece's end once lost its last block.
func TestGearCutsAsThePlainCutter(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	class := Gear + MinBits
	lo, hi := Sizes(class)
	var st Stream
	defer st.Stop()
	for iter := range 61 {
		size := rng.IntN(3 << 19)
		if iter%3 == 0 {
			size = max(0, []int{lo, hi, readSize, readSize + hi, 2 * hi, 3 * hi / 2}[rng.IntN(6)]+rng.IntN(3)-1)
		}
		data := random(uint64(iter), 23, size)
		for k := rng.IntN(4); k > 0 && size > 0; k-- {
			a := rng.IntN(size)
			clear(data[a:min(size, a+rng.IntN(1<<20))])
		}
		piece := []int{1, 37, 63, 64, 65, 1000, lo - 1, lo, lo + 1, 100_000, readSize, hi / 3, hi / 2, hi - 1, hi}[rng.IntN(15)]
		short, withEOF := rng.IntN(2) == 0, rng.IntN(2) == 0
		if iter == 60 {
			// The stream ends where a refill filled the ring, a piece
			// before its end, with no boundary in the last piece: a ring
			// of a piece and a read, three pieces of zeros.
			piece, data, short, withEOF = readSize/2, make([]byte, readSize*3/2), false, false
		}
		want := plainCuts(data, class)
		setPieceSize(t, piece)
		r := &endingReader{r: bytes.NewReader(data), rng: rng, short: short, withEOF: withEOF}
		joined, got := splitLengths(t, r, class)
		if !bytes.Equal(joined, data) {
			t.Fatalf("case %d: the blocks are not the input", iter)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("case %d: %d bytes in pieces of %d (short reads %v, EOF with the data %v): %d blocks, want %d", iter, len(data), piece, r.short, r.withEOF, len(got), len(want))
		}
		r = &endingReader{r: bytes.NewReader(data), rng: rng, short: rng.IntN(2) == 0, withEOF: rng.IntN(2) == 0}
		if hashes, err := streamAll(t, &st, r, class); err != nil || len(hashes) != len(want) {
			t.Fatalf("case %d: the stream gave %d blocks (%v), want %d", iter, len(hashes), err, len(want))
		}
	}
}
