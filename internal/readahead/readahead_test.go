package readahead

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/cairnbackup/cairn/internal/poll"
)

// medium is a volume in memory that counts its fetches and the buffers
// they fill, and can be made to fail or to hold fetches until released.
type medium struct {
	data []byte

	mu      sync.Mutex
	fetches int
	buffers map[uintptr]bool
	fail    map[int64]int
	hold    chan struct{}
}

func newMedium(size int) *medium {
	d := make([]byte, size)
	rng := rand.New(rand.NewPCG(uint64(size), 9))
	for i := range d {
		d[i] = byte(rng.Uint32())
	}
	return &medium{data: d, buffers: map[uintptr]bool{}, fail: map[int64]int{}}
}

func (m *medium) read(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *medium) fetch(ctx context.Context, p []byte, off int64) (int, error) {
	m.mu.Lock()
	m.fetches++
	m.buffers[uintptr(unsafe.Pointer(&p[0]))] = true
	fail := m.fail[off] > 0
	if fail {
		m.fail[off]--
	}
	hold := m.hold
	m.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if fail {
		return 0, errors.New("medium error")
	}
	return m.read(p, off)
}

func (m *medium) direct(_ context.Context, p []byte, off int64) (int, error) { return m.read(p, off) }

func (m *medium) reader(chunk int64, depth int) *Reader {
	return New(context.Background(), int64(len(m.data)), m.fetch, m.direct, Options{Chunk: chunk, Depth: depth})
}

func checkRead(t *testing.T, m *medium, r *Reader, n int, off int64) int {
	t.Helper()
	b := make([]byte, n)
	got, err := r.ReadAt(b, off)
	end := min(off+int64(n), int64(len(m.data)))
	if int64(got) != end-off || (end < off+int64(n)) != (err == io.EOF) || (err != nil && err != io.EOF) {
		t.Fatalf("read %d at %d of %d: %d, %v", n, off, len(m.data), got, err)
	}
	if !bytes.Equal(b[:got], m.data[off:end]) {
		t.Fatalf("read %d at %d differs from the medium", n, off)
	}
	return got
}

// Read in order the way a restore reads blocks, at random, and past the
// end, a Reader reads what the medium holds; in order, it fetches ahead
// in chunks, through the same few buffers from start to end.
func TestReadsWhatTheMediumHolds(t *testing.T) {
	const chunk, depth = 64 << 10, 3
	m := newMedium(5<<20 + 777)
	r := m.reader(chunk, depth)
	defer r.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	for off := int64(0); off < int64(len(m.data)); {
		off += int64(checkRead(t, m, r, 16<<10+64+rng.IntN(8<<10), off))
		if off > 8*chunk && off < 9*chunk {
			if held, _ := r.Window(); held < depth {
				t.Fatalf("at %d, reading in order, %d chunks are held; want the one read and %d after it", off, held, depth)
			}
		}
	}
	m.mu.Lock()
	fetches, buffers := m.fetches, len(m.buffers)
	m.mu.Unlock()
	if want := len(m.data)/chunk - 2; fetches < want {
		t.Fatalf("%d fetches for %d bytes in chunks of %d: the reads in order were not read ahead", fetches, len(m.data), chunk)
	}
	if buffers > depth+3 {
		t.Fatalf("%d chunk buffers for a read in order with a window of %d: they are not kept", buffers, depth+1)
	}
	for range 200 {
		checkRead(t, m, r, 1+rng.IntN(3*chunk), rng.Int64N(int64(len(m.data))))
	}
}

// Several goroutines reading at once, each its own run in order, read
// right (and, under the race detector, share no buffer being filled or
// given to another chunk).
func TestReadsAtOnce(t *testing.T) {
	const chunk = 32 << 10
	m := newMedium(4 << 20)
	r := m.reader(chunk, 2)
	defer r.Close()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 5))
			for off := int64(g) * (1 << 20); off < int64(len(m.data)); {
				b := make([]byte, 1+rng.IntN(20<<10))
				n, err := r.ReadAt(b, off)
				if err != nil && err != io.EOF {
					t.Errorf("read %d at %d: %v", len(b), off, err)
					return
				}
				if !bytes.Equal(b[:n], m.data[off:off+int64(n)]) {
					t.Errorf("read %d at %d differs from the medium", len(b), off)
					return
				}
				off += int64(n)
			}
		})
	}
	wg.Wait()
}

// The window follows the reader: runs in order that jump back leave
// nothing of the runs before them held.
func TestHoldsItsWindowOnly(t *testing.T) {
	const chunk, depth = 16 << 10, 2
	m := newMedium(2 << 20)
	r := m.reader(chunk, depth)
	defer r.Close()
	for start := int64(len(m.data)) - 8*chunk; start > 0; start -= 4 * chunk {
		for k := range int64(MinRun + 2) {
			checkRead(t, m, r, 4<<10, start+k*(4<<10))
		}
		if held, _ := r.Window(); held > depth+2 {
			t.Fatalf("reading at %d, %d chunks held; want at most %d", start, held, depth+2)
		}
	}
}

// A failed fetch fails the read that needed it, and the next read asks
// the medium again instead of keeping the failure.
func TestFailedFetchIsAskedAgain(t *testing.T) {
	const chunk = 16 << 10
	m := newMedium(1 << 20)
	m.fail[4*chunk] = 1
	r := m.reader(chunk, 2)
	defer r.Close()
	off := int64(0)
	for off < 4*chunk {
		off += int64(checkRead(t, m, r, 4<<10, off))
	}
	if _, err := r.ReadAt(make([]byte, 4<<10), off); err == nil || err == io.EOF {
		t.Fatalf("a read of a chunk whose fetch failed: %v; want the medium's error", err)
	}
	for off < int64(len(m.data)) {
		off += int64(checkRead(t, m, r, 4<<10, off))
	}
}

// Close ends fetches under way, and a read waiting on one returns.
func TestCloseEndsFetches(t *testing.T) {
	const chunk = 16 << 10
	m := newMedium(1 << 20)
	r := m.reader(chunk, 4)
	for k := range int64(MinRun) {
		checkRead(t, m, r, 4<<10, k*(4<<10))
	}
	m.mu.Lock()
	m.hold = make(chan struct{})
	m.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		_, err := r.ReadAt(make([]byte, 4<<10), MinRun*(4<<10)) // in order: fetched
		done <- err
	}()
	poll.Until(t, 10*time.Second, func() error {
		if _, fetching := r.Window(); fetching == 0 {
			return errors.New("the read has started no fetch")
		}
		return nil
	})
	r.Close()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("a read waiting on a fetch when the reader closed: %v; want it canceled", err)
	}
	if held, fetching := r.Window(); held != 0 || fetching != 0 {
		t.Fatalf("after Close: %d chunks held, %d fetching", held, fetching)
	}
	if _, err := r.ReadAt(make([]byte, 4<<10), MinRun*(4<<10)); !errors.Is(err, ErrClosed) {
		t.Fatalf("a read after Close: %v; want ErrClosed", err)
	}
	if held, _ := r.Window(); held != 0 {
		t.Fatalf("a read after Close started %d fetches", held)
	}
}
