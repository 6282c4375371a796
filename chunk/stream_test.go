package chunk

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
)

// streamAll takes every block of a Stream of r, checking each one's hash,
// and that no piece is larger than PieceSize in a gear class.
func streamAll(t *testing.T, st *Stream, r io.Reader, class int) ([][32]byte, error) {
	t.Helper()
	if err := st.Start(r, class); err != nil {
		t.Fatal(err)
	}
	var out [][32]byte
	sum := sha256.New()
	pieces := false // sum holds pieces of a block
	for {
		b, err := st.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			var partial [32]byte
			if pieces {
				partial = [32]byte(sum.Sum(nil))
			}
			if err != nil && b.Hash != partial {
				t.Fatalf("the stream failed after block %d: the hash it gave is not of the pieces given of the next (%v)", len(out), pieces)
			}
			return out, err
		}
		if class&Gear != 0 && len(b.Data) > PieceSize {
			t.Fatalf("block %d: a piece of %d bytes, more than PieceSize", len(out), len(b.Data))
		}
		sum.Write(b.Data)
		if pieces = b.More; pieces {
			continue
		}
		if h := [32]byte(sum.Sum(nil)); b.Hash != h {
			t.Fatalf("block %d: its hash is not of its data", len(out))
		}
		sum.Reset()
		out = append(out, b.Hash)
	}
}

// TestStreamOrder: a Stream gives the Splitter's blocks in the Splitter's
// order, whether a batch holds many blocks (class 17), a block fills more
// than a batch (class 20: blocks of 0.5-8 MiB), or a block is larger than
// the room a batch is made with (class 23: blocks of 10 MiB here), in the
// gear and the Rabin classes alike, and with the buffers of an earlier
// file.
func TestStreamOrder(t *testing.T) {
	var st Stream
	defer st.Stop()
	small := random(11, 12, 5<<20+12345)
	large := random(13, 14, 24<<20)
	for _, c := range []struct {
		data  []byte
		class int
	}{
		{small, Gear + MinBits}, {small, MinBits}, {small, Gear + 20},
		{large, Gear + 23}, {small, Gear + MinBits}, {nil, Gear + MinBits}, {small[:1000], Gear + MinBits},
	} {
		want := cut(t, c.data, c.class)
		got, err := streamAll(t, &st, bytes.NewReader(c.data), c.class)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("class %d, %d bytes: the stream gave %d blocks, the splitter %d, not the same in the same order", c.class, len(c.data), len(got), len(want))
		}
	}
}

// failAfter reads r and fails with err once n bytes were read.
type failAfter struct {
	r   io.Reader
	n   int
	err error
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	k, err := f.r.Read(p[:min(len(p), f.n)])
	f.n -= k
	return k, err
}

// TestStreamReadError: a reader's error comes after every block cut before
// it, in order, as it came, and every Next after it says the stream ended;
// nothing is cut after it.
//
// In a class whose blocks come in pieces, an error inside a block comes
// with the hash of the pieces of it given before (streamAll checks it).
func TestStreamReadError(t *testing.T) {
	bad := errors.New("disk on fire")
	var st Stream
	defer st.Stop()
	for _, c := range []struct {
		class int
		data  []byte
		at    []int
	}{
		{Gear + MinBits, random(15, 16, 7<<20), []int{0, 100 << 10, 3 << 20, 5<<20 + 7}},
		{Gear + 23, random(21, 22, 40<<20), []int{0, 3 << 20, 9<<20 + 5, 30 << 20}},
	} {
		whole := cut(t, c.data, c.class)
		for _, at := range c.at {
			testStreamReadError(t, &st, c.class, c.data, whole, at, bad)
		}
	}
}

func testStreamReadError(t *testing.T, st *Stream, class int, data []byte, whole [][32]byte, at int, bad error) {
	t.Helper()
	{
		got, err := streamAll(t, st, &failAfter{r: bytes.NewReader(data), n: at, err: bad}, class)
		if !errors.Is(err, bad) {
			t.Fatalf("error after %d bytes: got %v", at, err)
		}
		// The blocks before the error are the first blocks of the file,
		// all of them but the one the error cut short.
		if len(got) > len(whole) || !slices.Equal(got, whole[:len(got)]) {
			t.Fatalf("error after %d bytes: the blocks before it are not the file's first", at)
		}
		if _, largest := Sizes(class); at >= largest && len(got) == 0 {
			t.Fatalf("error after %d bytes: no block before it", at)
		}
		for range 2 {
			if _, err := st.Next(); !errors.Is(err, io.EOF) {
				t.Fatalf("Next after the error: %v, want io.EOF", err)
			}
		}
	}
}

// TestStreamStopLeavesNothing: Stop at any point, before the first Next,
// in the middle of a batch, after the end or after an error, ends both of
// the Stream's goroutines, reads the reader no more, and keeps every batch
// for the next Start (which gives the same blocks).
func TestStreamStopLeavesNothing(t *testing.T) {
	data := random(17, 18, 5<<20)
	want := cut(t, data, Gear+MinBits)
	before := runtime.NumGoroutine()
	var st Stream
	for _, after := range []int{0, 1, 7, len(want), len(want) + 1} {
		r := &countReader{r: bytes.NewReader(data)}
		if err := st.Start(r, Gear+MinBits); err != nil {
			t.Fatal(err)
		}
		for range after {
			st.Next()
		}
		st.Stop()
		n := r.n.Load()
		if _, err := st.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("Next after Stop: %v", err)
		}
		if r.n.Load() != n {
			t.Fatalf("stopped after %d blocks, yet read on", after)
		}
		if len(st.free) != streamBatches {
			t.Fatalf("stopped after %d blocks: %d batches of %d kept", after, len(st.free), streamBatches)
		}
		poll.Until(t, 10*time.Second, func() error {
			if n := runtime.NumGoroutine(); n > before {
				return fmt.Errorf("%d goroutines, %d before the Stream", n, before)
			}
			return nil
		})
	}
	got, err := streamAll(t, &st, bytes.NewReader(data), Gear+MinBits)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("after the stops: %d blocks (%v), want %d", len(got), err, len(want))
	}
	st.Stop()
}
