package volume

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/tmpfile"
)

// A session's index is built while the session is written: an entry waits
// in memory (pendingEntries) until the block holding its FileEnd is on the
// volume, when the stream offsets of every block it points into are known;
// then it goes into the segment being built (indexBuilder), and each
// segment, once full, is handed to WriterOptions.Segment and kept on disk
// (segmentSpill). So the index reaches the servers while the data is still
// being written, and what a session holds in memory while it is written
// does not grow with its number of files. Close writes the trailer from
// the spill file a segment at a time, and SessionResult.Index reads it
// from there when asked: the compressed index is about 58 bytes a file,
// 580 MB for ten million, which Close once read back whole.

// pendingEntries are index entries whose last block is not written yet, in
// order. The goroutine calling Write adds them, and gives them up; the
// write loop takes those whose last block (Loc.EndSeq, the one their
// FileEnd record is in, still being packed when they are added) it has
// written. So it holds at most the entries of the blocks in flight.
type pendingEntries struct {
	mu sync.Mutex
	q  []*fileindex.Entry
}

func (p *pendingEntries) add(e *fileindex.Entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.q = append(p.q, e)
}

// take appends to into, and removes, the entries whose last block is at
// or before seq.
func (p *pendingEntries) take(seq uint64, into []*fileindex.Entry) []*fileindex.Entry {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for n < len(p.q) && p.q[n].Loc.EndSeq <= seq {
		n++
	}
	into = append(into, p.q[:n]...)
	left := copy(p.q, p.q[n:])
	clear(p.q[left:])
	p.q = p.q[:left]
	return into
}

func (p *pendingEntries) empty() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.q) == 0
}

// indexBuilder turns the entries whose blocks are written into segments.
// It belongs to the write loop, and to Close once the loop has ended.
type indexBuilder struct {
	w     *SessionWriter
	b     *fileindex.SegmentBuilder
	taken []*fileindex.Entry
	spill *segmentSpill
	count int // segments built
}

// written takes the pending entries whose blocks are all written now that
// block seq is, sets their stream offsets and builds segments of them.
func (x *indexBuilder) written(seq uint64) error {
	x.taken = x.w.pending.take(seq, x.taken[:0])
	defer clear(x.taken) // the entries go with the segment's bytes
	offsets := x.w.vw.offsets
	for _, e := range x.taken {
		e.Loc.Off = offsets[e.Loc.Seq]
		if e.Blocks != nil {
			for i := range e.Blocks.Blocks {
				if b := &e.Blocks.Blocks[i]; b.Session == 0 {
					b.Loc.Off = offsets[b.Loc.Seq]
				}
			}
		}
		if err := x.b.Add(e); err != nil {
			return fmt.Errorf("session %s: build index: %w", x.w.info.SessionID, err)
		}
		if x.b.Full() {
			if err := x.cut(); err != nil {
				return err
			}
		}
	}
	return nil
}

// cut ends the segment being built: kept for the trailer and handed on.
func (x *indexBuilder) cut() error {
	seg := x.b.Flush()
	if err := x.spill.add(&seg); err != nil {
		return fmt.Errorf("session %s: %w", x.w.info.SessionID, err)
	}
	x.count++
	if x.w.opts.Segment != nil {
		if err := x.w.opts.Segment(seg); err != nil {
			// The callback's error names the segment it failed at, which
			// may be an earlier one than this.
			return fmt.Errorf("session %s: file index: %w", x.w.info.SessionID, err)
		}
	}
	return nil
}

// finish cuts the last segment.
func (x *indexBuilder) finish() error {
	if !x.w.pending.empty() {
		return fmt.Errorf("session %s: internal error: index entries whose blocks were never written", x.w.info.SessionID)
	}
	if x.b.Len() > 0 {
		return x.cut()
	}
	return nil
}

// segmentSpill keeps a session's built index segments on disk, for the
// trailer and for SessionResult.Index: a session of millions of files must
// not hold its index in memory for hours.
type segmentSpill struct {
	mu  sync.Mutex // Abort may close it from another goroutine
	f   *os.File
	w   *bufio.Writer
	buf []byte
	// n, bytes and largest are the segments added, their Data all
	// together, and the longest.
	n       int
	bytes   int64
	largest int
	// handed: a SessionResult holds the file now; Abort leaves it, and
	// does not wait for the lock its reader may hold.
	handed atomic.Bool
}

func newSegmentSpill(dir string) (*segmentSpill, error) {
	// Without a name: the open file is all we need, and a crash leaves
	// nothing behind to clean up. Its errors, as its writes', are
	// *os.PathError on DIR/(index spill file): a caller tells by the path
	// a full disk there from the medium's.
	f, err := tmpfile.Open(dir, "cairn-index-*.spill", "index spill file")
	if err != nil {
		return nil, err
	}
	return &segmentSpill{f: f, w: bufio.NewWriterSize(f, 64<<10)}, nil
}

var errSpillClosed = errors.New("index spill file is closed")

func (s *segmentSpill) add(seg *fileindex.Segment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return errSpillClosed
	}
	b := s.buf[:0]
	for _, field := range []string{seg.First, seg.Last} {
		b = binary.AppendUvarint(b, uint64(len(field)))
		b = append(b, field...)
	}
	b = binary.AppendUvarint(b, uint64(seg.Count))
	b = binary.AppendUvarint(b, uint64(len(seg.Data)))
	s.buf = b
	if _, err := s.w.Write(b); err != nil {
		return fmt.Errorf("spill index segment: %w", err)
	}
	if _, err := s.w.Write(seg.Data); err != nil {
		return fmt.Errorf("spill index segment: %w", err)
	}
	s.n++
	s.bytes += int64(len(seg.Data))
	s.largest = max(s.largest, len(seg.Data))
	return nil
}

// sizes are the segments added: how many, their Data all together, and
// the longest.
func (s *segmentSpill) sizes() (n int, bytes int64, largest int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, s.bytes, s.largest
}

// each reads back the segments added, in order, and calls fn with each
// from the from-th on; fn may keep them. The file stays locked meanwhile.
func (s *segmentSpill) each(from int, fn func(i int, seg fileindex.Segment) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return errSpillClosed
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("spill index segments: %w", err)
	}
	size, err := s.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	r := bufio.NewReaderSize(io.NewSectionReader(s.f, 0, size), 64<<10)
	field := func(limit uint64, keep bool) ([]byte, error) {
		l, err := binary.ReadUvarint(r)
		if err != nil || l > limit {
			return nil, fmt.Errorf("read index spill file: bad length (%v)", err)
		}
		if !keep {
			if _, err := r.Discard(int(l)); err != nil {
				return nil, fmt.Errorf("read index spill file: %w", err)
			}
			return nil, nil
		}
		b := make([]byte, l)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("read index spill file: %w", err)
		}
		return b, nil
	}
	for i := range s.n {
		keep := i >= from
		first, err := field(2*MaxHeaderBody, keep)
		if err != nil {
			return err
		}
		last, err := field(2*MaxHeaderBody, keep)
		if err != nil {
			return err
		}
		count, err := binary.ReadUvarint(r)
		if err != nil {
			return fmt.Errorf("read index spill file: %w", err)
		}
		data, err := field(fileindex.MaxSegmentRawBytes, keep)
		if err != nil {
			return err
		}
		if !keep {
			continue
		}
		if err := fn(i, fileindex.Segment{First: string(first), Last: string(last), Count: int(count), Data: data}); err != nil {
			return err
		}
	}
	return nil
}

// handOver gives the file to a SessionResult: close no longer closes it.
// An Abort that closed it first fails the Close that hands it over.
func (s *segmentSpill) handOver() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return errSpillClosed
	}
	s.handed.Store(true)
	return nil
}

// close closes the file unless a SessionResult holds it.
func (s *segmentSpill) close() {
	if s.handed.Load() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.handed.Load() {
		s.closeLocked()
	}
}

// release closes the file, held or not.
func (s *segmentSpill) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked()
}

func (s *segmentSpill) closeLocked() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// IndexSegments is a closed session's file index as its trailer holds it,
// every entry's Loc and Hash set: what the catalog stores. It is read from
// the writer's spill file when asked, a segment at a time, so that a
// session of millions of files does not hold its index in memory to hand
// it on. Close gives the file up.
type IndexSegments struct {
	spill *segmentSpill
}

// Len is the number of segments.
func (x *IndexSegments) Len() int {
	n, _, _ := x.spill.sizes()
	return n
}

// Each calls fn with each segment from the from-th on, in order; fn may
// keep them. It stops at fn's first error and returns it.
func (x *IndexSegments) Each(from int, fn func(i int, seg fileindex.Segment) error) error {
	return x.spill.each(from, fn)
}

// All reads every segment into memory: for sessions known to be small.
func (x *IndexSegments) All() ([]fileindex.Segment, error) {
	segs := make([]fileindex.Segment, 0, x.Len())
	err := x.Each(0, func(_ int, seg fileindex.Segment) error {
		segs = append(segs, seg)
		return nil
	})
	return segs, err
}

// Close gives up the spill file; Each fails after it.
func (x *IndexSegments) Close() error {
	x.spill.release()
	return nil
}
