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

// streamDepth is how many blocks a Stream cuts ahead of its reader: enough
// that neither side waits for the other's next block, few enough that its
// buffers stay a few blocks (each grows to the largest block it held).
const streamDepth = 3

// Stream cuts a stream into blocks and hashes them on a goroutine of its
// own, so that the cut (a rolling hash over every byte, slower than
// SHA-256) runs beside whatever its caller does with the blocks (hash the
// whole file, frame, compress) instead of before it. The reader r is read
// from that goroutine only. Its buffers are kept for the next Start.
type Stream struct {
	s    Splitter
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

// Start makes st cut r with size class bits. A Stream already started is
// stopped first.
func (st *Stream) Start(r io.Reader, bits int) error {
	st.Stop()
	if err := st.s.Reset(r, bits); err != nil {
		return err
	}
	if st.free == nil {
		st.free = make(chan []byte, streamDepth+1)
		for range streamDepth + 1 {
			st.free <- nil // allocated by the cut, as large as it needs
		}
	}
	st.out = make(chan streamed, streamDepth)
	st.stop = make(chan struct{})
	st.wg.Add(1)
	go st.cut(st.out, st.stop)
	return nil
}

func (st *Stream) cut(out chan<- streamed, stop <-chan struct{}) {
	defer st.wg.Done()
	defer close(out)
	for {
		var buf []byte
		select {
		case buf = <-st.free:
		case <-stop:
			return
		}
		c, err := st.s.c.Next(buf)
		var r streamed
		if err != nil {
			st.free <- buf
			r.err = err
		} else {
			r.b = Block{Data: c.Data, Hash: sha256.Sum256(c.Data)}
		}
		select {
		case out <- r:
		case <-stop:
			if err == nil {
				st.free <- c.Data
			}
			return
		}
		if err != nil {
			return
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

// Stop ends the cut early and waits until its goroutine no longer reads
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
	st.stop, st.out = nil, nil
}
