package chunk

import (
	"crypto/sha256"
	"io"
	"sync"
)

// Block is one block cut by a Stream with the SHA-256 of its bytes, by
// which a block list names it.
type Block struct {
	Data []byte
	Hash [sha256.Size]byte
}

// streamDepth is how many blocks each stage of a Stream holds ahead of the
// next: enough that no stage waits for another's next block, few enough
// that its buffers stay a few blocks (each grows to the largest block it
// held).
const streamDepth = 2

// Stream cuts a stream into blocks on one goroutine of its own and hashes
// them on another, so that the cut (a rolling hash over every byte) and
// the blocks' SHA-256 run beside whatever the caller does with the blocks
// (hash the whole file, frame, compress) instead of before it. The reader
// r is read from the cutting goroutine only. Its buffers are kept for the
// next Start.
type Stream struct {
	s    Splitter
	cut  chan streamed // cut, not hashed yet
	out  chan streamed
	free chan []byte
	stop chan struct{}
	wg   sync.WaitGroup
	held []byte // the buffer of the block last returned
}

type streamed struct {
	b   Block
	err error
}

// streamBuffers is every buffer a Stream has: one per place a block can
// be (each stage's channel, each goroutine, the caller).
const streamBuffers = 2*streamDepth + 3

// Start makes st cut r with size class class. A Stream already started
// is stopped first.
func (st *Stream) Start(r io.Reader, class int) error {
	st.Stop()
	if err := st.s.Reset(r, class); err != nil {
		return err
	}
	if st.free == nil {
		st.free = make(chan []byte, streamBuffers)
		for range streamBuffers {
			st.free <- nil // allocated by the cut, as large as it needs
		}
	}
	st.cut = make(chan streamed, streamDepth)
	st.out = make(chan streamed, streamDepth)
	st.stop = make(chan struct{})
	st.wg.Add(2)
	go st.cutting(st.cut, st.stop)
	go st.hashing(st.cut, st.out, st.stop)
	return nil
}

// give passes r on, or gives its buffer back when the Stream stops.
func (st *Stream) give(out chan<- streamed, r streamed, stop <-chan struct{}) bool {
	select {
	case out <- r:
		return true
	case <-stop:
		if r.err == nil {
			st.free <- r.b.Data
		}
		return false
	}
}

func (st *Stream) cutting(out chan<- streamed, stop <-chan struct{}) {
	defer st.wg.Done()
	defer close(out)
	for {
		var buf []byte
		select {
		case buf = <-st.free:
		case <-stop:
			return
		}
		data, err := st.s.next(buf)
		if err != nil {
			st.free <- buf
		}
		if !st.give(out, streamed{Block{Data: data}, err}, stop) || err != nil {
			return
		}
	}
}

func (st *Stream) hashing(in <-chan streamed, out chan<- streamed, stop <-chan struct{}) {
	defer st.wg.Done()
	defer close(out)
	for r := range in {
		if r.err == nil {
			r.b.Hash = sha256.Sum256(r.b.Data)
		}
		if !st.give(out, r, stop) {
			break
		}
	}
	for r := range in { // what the cut made before it saw stop
		if r.err == nil {
			st.free <- r.b.Data
		}
	}
}

// Next returns the next block, its Data valid until the next call, or
// io.EOF after the last block. An error of the reader is returned as it
// came, and ends the stream.
func (st *Stream) Next() (Block, error) {
	if st.held != nil {
		st.free <- st.held
		st.held = nil
	}
	if st.out == nil {
		return Block{}, io.EOF
	}
	r, ok := <-st.out
	if !ok {
		return Block{}, io.EOF
	}
	if r.err != nil {
		return Block{}, r.err
	}
	st.held = r.b.Data
	return r.b, nil
}

// Stop ends the cut early and waits until its goroutines no longer read
// the reader of Start, so that the caller may close what it reads. It
// may be called at any time, also more than once.
func (st *Stream) Stop() {
	if st.stop == nil {
		return
	}
	close(st.stop)
	st.wg.Wait()
	for r := range st.out {
		if r.err == nil {
			st.free <- r.b.Data
		}
	}
	if st.held != nil {
		st.free <- st.held
		st.held = nil
	}
	st.stop, st.cut, st.out = nil, nil, nil
}
