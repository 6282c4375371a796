package tape

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
)

// ReaderOptions tune a Reader.
type ReaderOptions struct {
	// Timeout bounds each drive command; 0 means DefaultCommandTimeout.
	Timeout time.Duration
	// ReadThrough: a record up to this many bytes ahead of the tape is
	// reached by reading on rather than by a locate, which costs a second
	// or more on any drive. 0 means 128 MiB (a third of a second at LTO-9
	// speed); negative means always locate.
	ReadThrough int64
	// OnMediumError, when set, is told of every record the drive cannot
	// read, and the record reads as zeros: the volume format's checks then
	// report the blocks in it as damaged, with the files they hurt, and
	// reading goes on after it. Nil: ReadAt fails with the *MediumError.
	OnMediumError func(*MediumError)
	// Size is the volume's size (Layout.End) when known; ReadAt past it
	// returns io.EOF without moving the tape. 0 means unknown: the end of
	// data on the tape says it.
	Size int64
}

// Reader reads a volume on tape as the volume byte stream: an io.ReaderAt,
// so volume.OpenVolume, ReadIndex and SessionReader read tape as they read
// disk. An offset becomes a (file, record) position by the part starts:
// the logical block of volume byte o is o/BlockSize plus the number of
// file marks before it, one after the label and one after each part that
// ends at or before o. A read that continues where the last one ended
// streams on; any other is one Locate (or a short read-through), so a
// session is read with one locate and sequential reads.
//
// The Reader has the tape to itself while it is used: it remembers where
// the tape is between calls. ReadAt calls are serialised.
type Reader struct {
	ctx    context.Context
	d      Drive
	bs     int64
	starts []int64 // volume offsets of the part files, ascending
	opts   ReaderOptions

	mu      sync.Mutex
	rec     []byte
	recIdx  int64          // volume record held in rec, -1 for none
	next    int64          // logical block the tape is before, -1 when unknown
	nextRec int64          // volume record the map puts at or after next
	bad     map[int64]bool // records the drive could not read, served as zeros
	size    int64          // -1 when unknown
}

// NewReader reads the volume of block size blockSize on the tape in d.
// partStarts are the VolumeStart of the volume's session parts in order,
// as the catalog records them (or Layout.PartStarts); every part that
// starts before an offset read must be listed, or the offset maps to the
// wrong block. The drive must be set to blockSize (ReadLabel does it).
func NewReader(ctx context.Context, d Drive, blockSize int, partStarts []int64, opts ReaderOptions) *Reader {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultCommandTimeout
	}
	if opts.ReadThrough == 0 {
		opts.ReadThrough = 128 << 20
	}
	r := &Reader{ctx: ctx, d: d, bs: int64(blockSize), starts: slices.Sorted(slices.Values(partStarts)), opts: opts,
		rec: make([]byte, blockSize), recIdx: -1, next: -1, size: -1}
	if opts.Size > 0 {
		r.size = opts.Size
	}
	return r
}

// Size is the volume's size, -1 until known (given, or end of data found).
func (r *Reader) Size() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.size
}

// block is the logical block of volume record ri.
func (r *Reader) block(ri int64) int64 {
	off := ri * r.bs
	if off < r.bs {
		return ri // the label, before any file mark
	}
	n, found := slices.BinarySearch(r.starts, off)
	if found {
		n++
	}
	return ri + max(int64(n), 1)
}

func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if off < 0 {
		return 0, fmt.Errorf("tape volume reader: negative offset %d", off)
	}
	n := 0
	for n < len(p) {
		if r.size >= 0 && off >= r.size {
			return n, io.EOF
		}
		ri := off / r.bs
		if ri != r.recIdx {
			if err := r.load(ri); err != nil {
				return n, err
			}
		}
		in := r.rec[off-ri*r.bs:]
		if r.size >= 0 {
			in = in[:min(int64(len(in)), r.size-off)]
		}
		k := copy(p[n:], in)
		n += k
		off += int64(k)
	}
	return n, nil
}

func (r *Reader) do(op string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.Timeout)
	defer cancel()
	return fn(ctx)
}

// load reads volume record ri into r.rec.
func (r *Reader) load(ri int64) error {
	r.recIdx = -1
	if r.bad[ri] {
		// Known unreadable: reported once, not tried again. The tape is
		// not past it: the next record is located.
		clear(r.rec)
		r.recIdx = ri
		r.next = -1
		return nil
	}
	if r.next < 0 || r.nextRec > ri || (r.block(ri)-r.next)*r.bs > r.opts.ReadThrough {
		want := r.block(ri)
		err := r.do("locate", func(ctx context.Context) error { return r.d.Locate(ctx, want) })
		if errors.Is(err, ErrEndOfData) {
			r.next = -1
			r.endAt(ri)
			return io.EOF
		}
		if err != nil {
			r.next = -1
			return err
		}
		r.next, r.nextRec = want, ri
	}
	for {
		var n int
		err := r.do("read", func(ctx context.Context) (err error) { n, err = r.d.ReadRecord(ctx, r.rec); return err })
		switch {
		case err == nil && n == len(r.rec):
			if r.block(r.nextRec) != r.next {
				r.next = -1
				return fmt.Errorf("tape volume: a record at block %d where the part list puts a file mark: %w", r.next, ErrLayout)
			}
			r.next++
			r.nextRec++
			if r.nextRec > ri {
				r.recIdx = ri
				return nil
			}
			continue // reading through to the record wanted
		case err == nil:
			r.next = -1
			return fmt.Errorf("tape volume: record of %d bytes, the block size is %d", n, r.bs)
		case errors.Is(err, ErrFileMark):
			if r.block(r.nextRec) != r.next+1 {
				// A file mark the part list does not have: a file starts
				// at the next record. Learn it, so offsets map right.
				off := r.nextRec * r.bs
				i, _ := slices.BinarySearch(r.starts, off)
				r.starts = slices.Insert(r.starts, i, off)
			}
			r.next++
			continue
		case errors.Is(err, ErrEndOfData):
			r.next = -1
			r.endAt(r.nextRec)
			return io.EOF
		}
		r.next = -1
		var me *MediumError
		if !errors.As(err, &me) || r.opts.OnMediumError == nil {
			return err
		}
		if r.bad == nil {
			r.bad = map[int64]bool{}
		}
		if !r.bad[r.nextRec] {
			r.bad[r.nextRec] = true
			r.opts.OnMediumError(me)
		}
		if r.nextRec != ri {
			return r.load(ri) // a bad record on the way: locate past it
		}
		clear(r.rec)
		r.recIdx = ri
		return nil
	}
}

// endAt records that the data ends before record ri, if not known already.
func (r *Reader) endAt(ri int64) {
	if end := ri * r.bs; r.size < 0 || end < r.size {
		r.size = end
	}
}
