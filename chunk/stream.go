package chunk

import (
	"crypto/sha256"
	"hash"
	"io"
	"sync"
)

// Block is one block cut by a Stream with the SHA-256 of its bytes, by
// which a block list names it, or a piece of one: a block larger than
// PieceSize comes in pieces, each but the last with More set, and the
// last with the Hash of the whole block.
type Block struct {
	Data []byte
	Hash [sha256.Size]byte // on a block's last piece only
	More bool              // the block goes on in the next piece
}

// batchBytes is how much a batch of blocks holds before it goes on: the
// goroutines of a Stream hand each other batches, not blocks. A handoff to
// a goroutine that waits wakes a thread, and on a busy machine the
// scheduler makes it wait for that: per 192 KiB block, three handoffs
// each way held a backup up more than the cut and the hash cost
// (bench/README.md). About a megabyte keeps them rare and the buffers few.
const batchBytes = 1 << 20

// batchRoom caps the room a batch buffer is made with past batchBytes for
// the last block: a block larger than that (only size classes of files of
// gigabytes have them) grows the buffer, which is kept for the next batch.
const batchRoom = 8 << 20

// streamBatches is how many batches a Stream has: one each for the cut,
// the hash and the caller, and one that waits between two of them, so that
// no stage waits for another's next batch.
const streamBatches = 4

// batch is consecutive blocks or pieces, back to back in buf, ends[i]
// the end of piece i and more[i] whether its block goes on after it, then
// err (io.EOF after the last block) when the cut stopped after them, with
// partial, the hash of the pieces given of a block the error cut short.
type batch struct {
	buf     []byte
	ends    []int
	more    []bool
	hashes  [][sha256.Size]byte
	err     error
	partial [sha256.Size]byte
}

func (b *batch) reset() {
	b.buf, b.ends, b.more, b.hashes, b.err = b.buf[:0], b.ends[:0], b.more[:0], b.hashes[:0], nil
	b.partial = [sha256.Size]byte{}
}

// Stream cuts a stream into blocks on one goroutine of its own and hashes
// them on another, so that the cut (a rolling hash over every byte) and
// the blocks' SHA-256 run beside whatever the caller does with the blocks
// (hash the whole file, frame, compress) instead of before it. The reader
// r is read from the cutting goroutine only. Its buffers are kept for the
// next Start.
type Stream struct {
	s    Splitter
	max  int         // the largest piece of the class
	sum  hash.Hash   // of the block given in pieces so far
	cut  chan *batch // cut, not hashed yet
	out  chan *batch // hashed
	free chan *batch
	stop chan struct{}
	wg   sync.WaitGroup
	cur  *batch // the caller's: Next returns its blocks in turn
	next int    // of cur
	done bool   // the last batch was taken: Next ends the stream
}

// Start makes st cut r with size class class. A Stream already started
// is stopped first.
func (st *Stream) Start(r io.Reader, class int) error {
	st.Stop()
	if err := st.s.Reset(r, class); err != nil {
		return err
	}
	st.max = largestPiece(class)
	if st.sum == nil {
		st.sum = sha256.New()
	}
	st.sum.Reset()
	if st.free == nil {
		st.free = make(chan *batch, streamBatches)
		for range streamBatches {
			st.free <- &batch{}
		}
	}
	st.cut = make(chan *batch, 1)
	st.out = make(chan *batch, 1)
	st.stop = make(chan struct{})
	st.wg.Add(2)
	go st.cutting(st.cut, st.stop)
	go st.hashing(st.cut, st.out, st.stop)
	return nil
}

// give passes b on, or gives it back when the Stream stops.
func (st *Stream) give(out chan<- *batch, b *batch, stop <-chan struct{}) bool {
	select {
	case out <- b:
		return true
	case <-stop:
		st.free <- b
		return false
	}
}

func (st *Stream) cutting(out chan<- *batch, stop <-chan struct{}) {
	defer st.wg.Done()
	defer close(out)
	for {
		var b *batch
		select {
		case b = <-st.free:
		case <-stop:
			return
		}
		b.reset()
		if want := batchBytes + min(st.max, batchRoom); cap(b.buf) < want {
			b.buf = make([]byte, 0, want)
		}
		for b.err == nil && len(b.buf) < batchBytes {
			// The block is cut into the room after the blocks before
			// it, so it is copied once, straight where it goes; one
			// larger than the room comes back elsewhere and is appended.
			at := len(b.buf)
			room := b.buf[at:cap(b.buf)]
			data, last, err := st.s.next(room[:0])
			switch {
			case err != nil:
				b.err = err
			case len(data) > 0 && len(room) > 0 && &data[0] == &room[0]:
				b.buf = b.buf[:at+len(data)]
			default:
				b.buf = append(b.buf, data...)
			}
			if err == nil {
				b.ends = append(b.ends, len(b.buf))
				b.more = append(b.more, !last)
			}
		}
		last := b.err != nil // b is the caller's once given
		if !st.give(out, b, stop) || last {
			return
		}
	}
}

func (st *Stream) hashing(in <-chan *batch, out chan<- *batch, stop <-chan struct{}) {
	defer st.wg.Done()
	defer close(out)
	pieces := false // st.sum holds the pieces of a block so far
	for b := range in {
		start := 0
		for i, end := range b.ends {
			var h [sha256.Size]byte
			switch {
			case b.more[i] || pieces:
				st.sum.Write(b.buf[start:end])
				pieces = b.more[i]
				if !pieces {
					st.sum.Sum(h[:0])
					st.sum.Reset()
				}
			default:
				h = sha256.Sum256(b.buf[start:end])
			}
			b.hashes = append(b.hashes, h)
			start = end
		}
		if b.err != nil && pieces {
			st.sum.Sum(b.partial[:0])
		}
		if !st.give(out, b, stop) {
			break
		}
	}
	for b := range in { // what the cut made before it saw stop
		st.free <- b
	}
}

// Next returns the next block or piece, its Data valid until the next
// call, or io.EOF after the last block. An error of the reader is returned
// as it came, and ends the stream; if it cut a block short after pieces of
// it were given, the Block returned with it has the Hash of those pieces.
func (st *Stream) Next() (Block, error) {
	for !st.done {
		b := st.cur
		if b == nil {
			var ok bool
			if st.out == nil {
				break
			}
			if b, ok = <-st.out; !ok {
				break
			}
			st.cur, st.next = b, 0
		}
		if i := st.next; i < len(b.ends) {
			st.next++
			start := 0
			if i > 0 {
				start = b.ends[i-1]
			}
			return Block{Data: b.buf[start:b.ends[i]:b.ends[i]], Hash: b.hashes[i], More: b.more[i]}, nil
		}
		if b.err != nil {
			st.done = true // b stays the caller's until Stop
			return Block{Hash: b.partial}, b.err
		}
		st.free <- b
		st.cur = nil
	}
	return Block{}, io.EOF
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
	for b := range st.out {
		st.free <- b
	}
	if st.cur != nil {
		st.free <- st.cur
		st.cur = nil
	}
	st.stop, st.cut, st.out, st.done = nil, nil, nil, false
}
