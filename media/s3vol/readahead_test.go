package s3vol

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/cairnbackup/cairn/internal/readahead"
	"github.com/cairnbackup/cairn/internal/s3test"
)

// A Reader reading ahead reads what a plain one does, in order (each read
// starting where the last ended, as a restore reads blocks), at random
// (a single file's blocks), across objects and past the end; in order, it
// has the next chunks fetched before they are asked for.
func TestReadAheadReadsAsRangeReads(t *testing.T) {
	s := s3test.Start(t)
	s.Bucket(t, "ahead", false)
	p := testPool(t, testConfig(s, "ahead"))
	a := newVolume(t, p, "Ahead-0001", Lock{})
	for _, n := range []int{3<<20 + 77, 64 << 10, 5<<20 + 4096, 1 << 20} {
		writeSession(t, a, n)
	}
	ctx := context.Background()
	plain, err := p.OpenRead(ctx, "Ahead-0001")
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, plain.Size())
	if _, err := plain.ReadAt(want, 0); err != nil {
		t.Fatal(err)
	}
	r, err := p.OpenRead(ctx, "Ahead-0001")
	if err != nil {
		t.Fatal(err)
	}
	const chunk = 1 << 20
	r.ReadAhead(3, chunk)
	defer r.Close()
	rng := rand.New(rand.NewPCG(15, 3))
	// In order, in reads of a block and a header's worth, to the end.
	for off := int64(0); off < r.Size(); {
		b := make([]byte, 200<<10+rng.IntN(100<<10))
		n, err := r.ReadAt(b, off)
		if err != nil && !(err == io.EOF && off+int64(n) == r.Size()) {
			t.Fatalf("read %d at %d: %d, %v", len(b), off, n, err)
		}
		if !bytes.Equal(b[:n], want[off:off+int64(n)]) {
			t.Fatalf("read %d at %d differs from the volume", len(b), off)
		}
		off += int64(n)
		if off > 4*chunk && off < 6*chunk {
			// Reading in order: the chunks after this one are under way.
			if held, _ := r.ahead.Window(); held-1 < 2 {
				t.Fatalf("at %d, reading in order, %d chunks are held; want the one read and the depth's after it", off, held)
			}
		}
	}
	// At random, and past the end.
	for range 50 {
		off := rng.Int64N(r.Size())
		b := make([]byte, 1+rng.IntN(300<<10))
		n, err := r.ReadAt(b, off)
		if end := min(off+int64(len(b)), r.Size()); int64(n) != end-off || (end < off+int64(len(b))) != (err == io.EOF) {
			t.Fatalf("read %d at %d of %d: %d, %v", len(b), off, r.Size(), n, err)
		}
		if !bytes.Equal(b[:n], want[off:off+int64(n)]) {
			t.Fatalf("read %d at %d differs from the volume", len(b), off)
		}
	}
}

// A Reader reading ahead holds about the chunks of the window it reads in,
// however its runs of reads in order jump about the volume: a reader that
// read a session's blocks and then, back at an earlier offset, another's,
// must not keep what it fetched ahead of the first run.
func TestReadAheadHoldsItsWindowOnly(t *testing.T) {
	s := s3test.Start(t)
	s.Bucket(t, "window", false)
	p := testPool(t, testConfig(s, "window"))
	a := newVolume(t, p, "Window-0001", Lock{})
	writeSession(t, a, 4<<20)
	r, err := p.OpenRead(context.Background(), "Window-0001")
	if err != nil {
		t.Fatal(err)
	}
	const chunk, depth = 64 << 10, 2
	r.ReadAhead(depth, chunk)
	defer r.Close()
	b := make([]byte, 16<<10)
	// Runs of reads in order, each further back in the volume.
	for start := r.Size() - 8*chunk; start > 0; start -= 4 * chunk {
		for k := range int64(readahead.MinRun + 2) {
			if _, err := r.ReadAt(b, start+k*int64(len(b))); err != nil {
				t.Fatal(err)
			}
		}
		if held, _ := r.ahead.Window(); held > depth+2 {
			t.Fatalf("reading at %d, %d chunks of %d bytes are held; want the window's, at most %d", start, held, chunk, depth+2)
		}
	}
}

// A Reader closed with reads ahead in flight cancels them, and that is no
// failure of the store: its figures still say it answers and count no
// error (a restore that ended would otherwise show the pool unreachable).
func TestReadAheadClosedIsNoStoreError(t *testing.T) {
	s := s3test.Start(t)
	s.Bucket(t, "closed", false)
	p := testPool(t, testConfig(s, "closed"))
	a := newVolume(t, p, "Closed-0001", Lock{})
	writeSession(t, a, 24<<20)
	before := p.Stats()
	if !before.Reachable || before.Errors != 0 {
		t.Fatalf("before the reads: %+v", before)
	}
	r, err := p.OpenRead(context.Background(), "Closed-0001")
	if err != nil {
		t.Fatal(err)
	}
	const chunk = 4 << 20
	r.ReadAhead(4, chunk)
	b := make([]byte, 64<<10)
	for k := range int64(readahead.MinRun + 1) {
		if _, err := r.ReadAt(b, k*int64(len(b))); err != nil {
			t.Fatal(err)
		}
	}
	_, inFlight := r.ahead.Window()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); !st.Reachable || st.Errors != 0 {
		t.Fatalf("after a close with %d reads ahead in flight: reachable %v, %d errors (%s)", inFlight, st.Reachable, st.Errors, st.LastError)
	}
	if inFlight == 0 {
		t.Skip("every read ahead ended before the close: nothing was canceled")
	}
}
