package chunk

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

func cut(t *testing.T, data []byte, bits int) [][32]byte {
	t.Helper()
	var s Splitter
	if err := s.Reset(bytes.NewReader(data), bits); err != nil {
		t.Fatal(err)
	}
	return drain(t, len(data), func() ([]byte, [32]byte, error) {
		b, err := s.Next()
		return b, sha256.Sum256(b), err
	})
}

// drain takes blocks from next until io.EOF and returns their hashes,
// checking that they cover size bytes.
func drain(t *testing.T, size int, next func() ([]byte, [32]byte, error)) [][32]byte {
	t.Helper()
	var out [][32]byte
	total := 0
	for {
		b, h, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		total += len(b)
		out = append(out, h)
	}
	if total != size {
		t.Fatalf("blocks cover %d bytes of %d", total, size)
	}
	return out
}

// random is size bytes that depend on nothing but the seeds.
func random(s1, s2 uint64, size int) []byte {
	rng := rand.New(rand.NewPCG(s1, s2))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	return data
}

func shared(a, b [][32]byte) int {
	in := map[[32]byte]bool{}
	for _, h := range a {
		in[h] = true
	}
	n := 0
	for _, h := range b {
		if in[h] {
			n++
		}
	}
	return n
}

// TestInPlaceAndInsert: an overwrite in place changes the one or two
// blocks around it, and so does an insertion, which fixed blocks would not
// survive; an append changes only the last block. Both cuts, gear and
// Rabin, and with the block sizes their class says.
func TestInPlaceAndInsert(t *testing.T) {
	data := random(1, 2, 16<<20)
	over := bytes.Clone(data)
	copy(over[5<<20:], bytes.Repeat([]byte{7}, 4096))
	ins := append(append(bytes.Clone(data[:10<<20]), bytes.Repeat([]byte{9}, 1000)...), data[10<<20:]...)
	app := append(bytes.Clone(data), bytes.Repeat([]byte{5}, 3<<20)...)
	for _, class := range []int{Gear + MinBits, MinBits, Gear + 20, 20} {
		base := cut(t, data, class)
		avg := 3 << (class&^Gear - 1)
		if n := len(base); n < len(data)/avg/2 || n > len(data)/avg*2 {
			t.Fatalf("class %d: %d blocks of 16 MiB, want about %d", class, n, len(data)/avg)
		}
		for name, c := range map[string][]byte{"overwrite": over, "insert": ins, "append": app} {
			got := cut(t, c, class)
			if changed := len(got) - shared(base, got); changed > 3+len(got)-len(base) {
				t.Errorf("class %d, %s: %d of %d blocks new", class, name, changed, len(got))
			}
		}
		if class&Gear != 0 && shared(base, cut(t, data, class&^Gear)) > 0 {
			t.Errorf("class %d shares blocks with the Rabin cut", class)
		}
	}
}

func TestBits(t *testing.T) {
	for _, c := range []struct {
		size int64
		bits int
	}{{0, 17}, {255 << 20, 17}, {256 << 20, 18}, {1 << 30, 20}, {2 << 30, 21}, {100 << 30, 26}, {1 << 62, MaxBits}} {
		if got := Bits(c.size); got != Gear+c.bits {
			t.Errorf("Bits(%d) = %d, want %d", c.size, got, Gear+c.bits)
		}
		if c.bits < MaxBits && !Keep(c.size, Gear+c.bits) {
			t.Errorf("Keep(%d, %d) false for its own class", c.size, Gear+c.bits)
		}
	}
	if Keep(64<<20, 20) {
		t.Error("a file last cut in Rabin class 20 kept it: it must be cut anew by the gear hash")
	}
	if Keep(4<<30, Gear+20) {
		t.Error("4 GiB in 1 MiB blocks may exceed MaxBlocks, yet kept")
	}
	var s Splitter
	for _, class := range []int{12, Gear + 12, Gear + 31, 64 + 20} {
		if err := s.Reset(bytes.NewReader(nil), class); !errors.Is(err, ErrBits) {
			t.Fatalf("class %d: %v", class, err)
		}
	}
}

// BenchmarkSplit measures the cost of cutting, side by side with the
// SHA-256 the agent computes over the same bytes anyway.
func BenchmarkSplit(b *testing.B) {
	data := random(3, 4, 32<<20)
	for name, class := range map[string]int{"gear": Bits(0), "rabin": MinBits} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			var s Splitter
			for b.Loop() {
				if err := s.Reset(bytes.NewReader(data), class); err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := s.Next(); err != nil {
						break
					}
				}
			}
		})
	}
	// The class of a 12 GiB file: 64 MiB largest blocks.
	big := random(5, 7, 256<<20)
	b.Run("gear-class-23", func(b *testing.B) {
		b.SetBytes(int64(len(big)))
		var s Splitter
		for b.Loop() {
			if err := s.Reset(bytes.NewReader(big), Gear+23); err != nil {
				b.Fatal(err)
			}
			for {
				if _, err := s.Next(); err != nil {
					break
				}
			}
		}
	})
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			sha256.Sum256(data)
		}
	})
}

// TestStream: the blocks a Stream cuts on its goroutine are the Splitter's
// with their hashes, and a reader's error comes through (Stop at any point:
// TestStreamStopLeavesNothing).
func TestStream(t *testing.T) {
	data := random(5, 6, 8<<20)
	want := cut(t, data, Bits(0))
	var st Stream
	for range 2 { // the second reuses the buffers
		if err := st.Start(bytes.NewReader(data), Bits(0)); err != nil {
			t.Fatal(err)
		}
		got := drain(t, len(data), func() ([]byte, [32]byte, error) {
			b, err := st.Next()
			if err == nil && b.Hash != sha256.Sum256(b.Data) {
				t.Fatal("a block's hash is not of its data")
			}
			return b.Data, b.Hash, err
		})
		if len(got) != len(want) || shared(want, got) != len(want) {
			t.Fatalf("stream: %d blocks, splitter: %d, not all the same", len(got), len(want))
		}
	}
	st.Stop()

	bad := errors.New("disk on fire")
	if err := st.Start(io.MultiReader(bytes.NewReader(data[:3<<20]), iotestErr{bad}), Bits(0)); err != nil {
		t.Fatal(err)
	}
	var err error
	for err == nil {
		_, err = st.Next()
	}
	if !errors.Is(err, bad) {
		t.Fatalf("reader's error: got %v", err)
	}

	if err := st.Start(bytes.NewReader(nil), 12); !errors.Is(err, ErrBits) {
		t.Fatalf("class 12: %v", err)
	}
}

type iotestErr struct{ err error }

func (r iotestErr) Read([]byte) (int, error) { return 0, r.err }

type countReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	c.n.Add(1)
	return c.r.Read(p)
}
