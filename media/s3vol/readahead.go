package s3vol

import (
	"context"
	"io"
	"sync"
)

// Read-ahead: a restore reads a session's blocks in order, each ReadAt a
// block (its body and the next block's header), and a range read is a
// round trip to the store; one at a time, the store's latency is paid per
// block. A Reader reading ahead fetches, once reads come in order, the
// next depth chunks of the volume at once while the caller works on the
// one it reads. Reads out of order (one file of a large session, an index
// lookup) are ranges of their own, as before: reading ahead starts only
// after minRun reads in a row each began where the last ended.

// Defaults of ReadAhead: 4 chunks of 2 MiB in flight, 10 MiB held at most
// per open volume.
const (
	DefaultReadAheadChunk = 2 << 20
	DefaultReadAheadDepth = 4
	minRun                = 2
)

type ahead struct {
	r      *Reader
	chunk  int64
	depth  int64
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	next   int64            // where a read in order would begin
	run    int              // reads in order in a row
	chunks map[int64]*chunk // by index: chunk i holds [i*chunk, (i+1)*chunk)
}

type chunk struct {
	done chan struct{}
	buf  []byte
	n    int
	err  error
}

// ReadAhead makes r read ahead of reads in order: up to depth chunks of
// chunkSize bytes fetched at once (0s: the defaults). Close stops them.
func (r *Reader) ReadAhead(depth int, chunkSize int64) {
	if depth <= 0 {
		depth = DefaultReadAheadDepth
	}
	if chunkSize <= 0 {
		chunkSize = DefaultReadAheadChunk
	}
	ctx, cancel := context.WithCancel(r.ctx)
	r.ahead = &ahead{r: r, chunk: chunkSize, depth: int64(depth), ctx: ctx, cancel: cancel, next: -1, chunks: map[int64]*chunk{}}
}

func (a *ahead) readAt(b []byte, off int64) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	first, last := off/a.chunk, (off+int64(len(b))-1)/a.chunk
	a.mu.Lock()
	if off == a.next {
		a.run++
	} else {
		a.run = 0
	}
	a.next = off + int64(len(b))
	if _, have := a.chunks[first]; !have && a.run < minRun {
		a.mu.Unlock()
		return a.r.readAt(a.ctx, b, off)
	}
	for i := range a.chunks {
		if i < first || i > last+a.depth {
			// Behind the reader, or ahead of where it reads now (it
			// went back): a fetch in flight keeps its own buffer.
			delete(a.chunks, i)
		}
	}
	for i := first; i <= last+a.depth && i*a.chunk < a.r.size; i++ {
		if a.chunks[i] == nil {
			a.chunks[i] = a.fetch(i)
		}
	}
	want := make([]*chunk, 0, last-first+1)
	for i := first; i <= last; i++ {
		want = append(want, a.chunks[i]) // nil past the volume's end
	}
	a.mu.Unlock()

	n := 0
	for k, c := range want {
		if c == nil {
			break
		}
		select {
		case <-c.done:
		case <-a.ctx.Done():
			return n, a.ctx.Err()
		}
		start := (first + int64(k)) * a.chunk
		pos := off + int64(n) - start
		if pos < int64(c.n) {
			n += copy(b[n:], c.buf[pos:c.n])
		}
		if c.err != nil && c.err != io.EOF {
			a.forget(first+int64(k), c) // a later read asks the store again
			return n, c.err
		}
		if n == len(b) || int64(c.n) < a.chunk {
			break
		}
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// fetch starts reading chunk i. The caller holds a.mu.
func (a *ahead) fetch(i int64) *chunk {
	c := &chunk{done: make(chan struct{}), buf: make([]byte, min(a.chunk, a.r.size-i*a.chunk))}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(c.done)
		c.n, c.err = a.r.readAt(a.ctx, c.buf, i*a.chunk)
	}()
	return c
}

func (a *ahead) forget(i int64, c *chunk) {
	a.mu.Lock()
	if a.chunks[i] == c {
		delete(a.chunks, i)
	}
	a.mu.Unlock()
}

func (a *ahead) close() {
	a.cancel()
	a.wg.Wait()
	a.mu.Lock()
	a.chunks = map[int64]*chunk{}
	a.mu.Unlock()
}
