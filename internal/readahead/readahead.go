// Package readahead reads a volume ahead of a reader that reads it in
// order. A restore reads a session's blocks one after another, each read a
// block and the next block's header; a medium that pays for each read (a
// round trip to an object store) pays it per block when read one at a
// time. A Reader, once
// reads come in order, fetches the next chunks at once while the caller
// works on the one it reads. Reads out of order (one file of a large
// session, an index lookup) go to the medium as they are: reading ahead
// starts only after MinRun reads in a row each began where the last ended.
//
// Chunk buffers are kept and filled again: a restore of a terabyte goes
// through the same few instead of leaving one to the collector per chunk.
package readahead

import (
	"context"
	"errors"
	"io"
	"sync"
)

// Fetch reads len(p) bytes at off into p, as io.ReaderAt does. ctx ends
// when the Reader is closed.
type Fetch func(ctx context.Context, p []byte, off int64) (int, error)

// Options size a Reader.
type Options struct {
	// Chunk is the bytes of one fetch.
	Chunk int64
	// Depth is how many chunks past the one read are fetched.
	Depth int
}

// MinRun is how many reads in a row must each begin where the last ended
// before reading ahead starts.
const MinRun = 2

// ErrClosed is what a read of a closed Reader returns.
var ErrClosed = errors.New("read of a closed volume reader")

// Reader is an io.ReaderAt over a medium of a known size. Its methods may
// be called at once from several goroutines.
type Reader struct {
	fetch  Fetch // a chunk: p is a chunk buffer, off a multiple of Chunk
	direct Fetch // a read out of order, into the caller's buffer
	size   int64
	chunk  int64
	depth  int64
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	next   int64            // where a read in order would begin
	run    int              // reads in order in a row
	chunks map[int64]*chunk // by index: chunk i holds [i*chunk, (i+1)*chunk)
	free   [][]byte         // chunk buffers no chunk uses
}

type chunk struct {
	done chan struct{}
	buf  []byte
	n    int
	err  error
	// Under Reader.mu: readers copying out of buf, whether the fetch
	// ended, and whether the chunk left the window. Its buffer is free
	// again once all three allow it.
	refs    int
	fetched bool
	dropped bool
}

// New reads a medium of size bytes with fetch, ahead of reads in order;
// reads out of order, and reads past size (a file that grew since it was
// opened), go to direct. Close ends the fetches under way.
func New(ctx context.Context, size int64, fetch, direct Fetch, o Options) *Reader {
	ctx, cancel := context.WithCancel(ctx)
	return &Reader{
		fetch: fetch, direct: direct, size: size,
		chunk: o.Chunk, depth: int64(o.Depth),
		ctx: ctx, cancel: cancel, next: -1, chunks: map[int64]*chunk{},
	}
}

// ReadAt reads len(b) bytes at off.
func (r *Reader) ReadAt(b []byte, off int64) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if off < 0 || off+int64(len(b)) > r.size {
		return r.direct(r.ctx, b, off)
	}
	first, last := off/r.chunk, (off+int64(len(b))-1)/r.chunk
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return 0, ErrClosed
	}
	if off == r.next {
		r.run++
	} else {
		r.run = 0
	}
	r.next = off + int64(len(b))
	if _, have := r.chunks[first]; !have && r.run < MinRun {
		r.mu.Unlock()
		return r.direct(r.ctx, b, off)
	}
	for i, c := range r.chunks {
		if i < first || i > last+r.depth {
			// Behind the reader, or ahead of where it reads now (it
			// went back).
			r.drop(i, c)
		}
	}
	for i := first; i <= last+r.depth && i*r.chunk < r.size; i++ {
		if r.chunks[i] == nil {
			r.chunks[i] = r.start(i)
		}
	}
	want := make([]*chunk, 0, last-first+1)
	for i := first; i <= last; i++ {
		c := r.chunks[i]
		c.refs++
		want = append(want, c)
	}
	r.mu.Unlock()
	defer r.release(want)

	n := 0
	for k, c := range want {
		select {
		case <-c.done:
		case <-r.ctx.Done():
			return n, r.ctx.Err()
		}
		start := (first + int64(k)) * r.chunk
		pos := off + int64(n) - start
		if pos < int64(c.n) {
			n += copy(b[n:], c.buf[pos:c.n])
		}
		if c.err != nil && c.err != io.EOF {
			r.forget(first+int64(k), c) // a later read asks the medium again
			return n, c.err
		}
		if n == len(b) || int64(c.n) < r.chunk {
			break
		}
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// start begins fetching chunk i. The caller holds r.mu.
func (r *Reader) start(i int64) *chunk {
	c := &chunk{done: make(chan struct{}), buf: r.buffer()}
	off := i * r.chunk
	want := min(r.chunk, r.size-off)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		n, err := r.fetch(r.ctx, c.buf[:want], off)
		r.mu.Lock()
		c.n, c.err = n, err
		c.fetched = true
		r.recycle(c)
		r.mu.Unlock()
		close(c.done)
	}()
	return c
}

// buffer is a free chunk buffer, or a new one. The caller holds r.mu.
func (r *Reader) buffer() []byte {
	if k := len(r.free); k > 0 {
		b := r.free[k-1]
		r.free = r.free[:k-1]
		return b
	}
	return make([]byte, r.chunk)
}

// recycle frees c's buffer once no one needs it. The caller holds r.mu.
func (r *Reader) recycle(c *chunk) {
	if !c.fetched || !c.dropped || c.refs > 0 || c.buf == nil {
		return
	}
	// The buffers of a full window and the one a reader may still hold
	// are worth keeping; more were the window before it moved.
	if int64(len(r.free)) < r.depth+2 {
		r.free = append(r.free, c.buf)
	}
	c.buf = nil
}

// drop takes chunk i out of the window. The caller holds r.mu.
func (r *Reader) drop(i int64, c *chunk) {
	delete(r.chunks, i)
	c.dropped = true
	r.recycle(c)
}

func (r *Reader) release(cs []*chunk) {
	r.mu.Lock()
	for _, c := range cs {
		c.refs--
		r.recycle(c)
	}
	r.mu.Unlock()
}

func (r *Reader) forget(i int64, c *chunk) {
	r.mu.Lock()
	if r.chunks[i] == c {
		r.drop(i, c)
	}
	r.mu.Unlock()
}

// Window says how many chunks the Reader holds, and how many of them are
// still being fetched.
func (r *Reader) Window() (held, fetching int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.chunks {
		if !c.fetched {
			fetching++
		}
	}
	return len(r.chunks), fetching
}

// Close stops the fetches under way and waits for them.
func (r *Reader) Close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	for i, c := range r.chunks {
		r.drop(i, c)
	}
	r.free = nil
	r.mu.Unlock()
}
