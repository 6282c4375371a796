package chunk

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
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
	var s Splitter
	if err := s.Reset(r, class); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for {
		b, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		joined = append(joined, b...)
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(b))))
	}
	return joined, hex.EncodeToString(h.Sum(nil))[:16]
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
		{"random", random(15, 16, 40<<20), Gear + 21, "1c351bf7ff19a9c2"},
		{"random", random(17, 18, 48<<20), Gear + 23, "c1c62277a5738f5e"},
		{"runs", append(bytes.Repeat([]byte{0}, 70<<20), random(19, 20, 9<<20)...), Gear + 22, "2ecd6baa06cdae74"},
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
