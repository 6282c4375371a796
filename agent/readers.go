package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/chunk"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
)

// fileReaders is how many goroutines read small files ahead of the
// stream; 0 reads each on Run's goroutine when the stream reaches it (for
// the benchmark that compares the two).
var fileReaders = 4

// beforeRead, in tests, runs in a reader before it opens the file at
// path: what the file becomes between the walk and its read.
var beforeRead func(path string)

// Variables, not constants, for the benchmark that tries others.
var (
	// aheadFiles bounds the entries queued ahead of the stream: enough
	// that the readers always have files to open while the disk serves
	// another, few enough that the directories they hold open stay few.
	aheadFiles = 64
	// aheadBytes bounds the content read ahead and not yet sent.
	aheadBytes int64 = 4 << 20
)

// A small file waits for the disk on its open, its inode and its one
// read, and there are many: read one after another they leave a core
// idle while each waits (bench/README.md). So readers open, read and
// hash the small files (below chunk.Threshold, without holes) a bounded
// distance ahead of the stream, several at a time, and Run's goroutine
// sends them, and every other entry, in walk order as before: the stream
// is the same as when it read them itself.
//
// A reader opens a file by the descriptor of its directory the walk
// opened, as Run's goroutine would: the walk hands a directory's
// descriptor to closeDir when it leaves it, which closes it once no queued
// read needs it, so no reader ever opens by a descriptor that was closed
// (and perhaps reused by another open), and the descriptors held open are
// those of the queued reads' directories, at most aheadFiles.
type readAhead struct {
	ctx     context.Context
	stopped atomic.Bool // the stream ended early: what is left is not read
	jobs    chan *queued
	wg      sync.WaitGroup
	queue   []*queued // in stream order
	bytes   int64     // content of the queued reads
	// uses counts the queued reads of each directory descriptor; closing
	// are those the walk has left, closed when their last read is sent.
	uses    map[int]int
	closing map[int]bool
}

type queuedKind uint8

const (
	queuedRead  queuedKind = iota // a small file, read by a reader
	queuedEntry                   // an entry sent as sendEntry sends it
)

// queued is an entry waiting for its turn in the stream.
type queued struct {
	kind  queuedKind
	e     fileindex.Entry // a copy: the walk reuses its entry
	dirfd int
	name  string
	done  chan struct{} // closed by the reader
	// What the reader found.
	buf      []byte // the content read, from bufPools
	got      int
	flags    uint32
	flagsErr error
	err      error // readError, or the context's error
	sum      [sha256.Size]byte
	// ioWait is how long the open, fstat and read took: what tells
	// aheadControl whether the files come from the disk.
	ioWait time.Duration
}

func startReadAhead(ctx context.Context, readers int) *readAhead {
	ra := &readAhead{ctx: ctx, jobs: make(chan *queued, aheadFiles), uses: map[int]int{}, closing: map[int]bool{}}
	for range readers {
		ra.wg.Add(1)
		go func() {
			defer ra.wg.Done()
			h := sha256.New()
			for q := range ra.jobs {
				ra.read(q, h)
				close(q.done)
			}
		}()
	}
	return ra
}

// readable reports whether n is a file the readers take: a regular file
// below the size that is sent by blocks, without holes.
func readable(n *node) bool {
	e := n.e
	return e.Type == fileindex.TypeFile && e.Size < chunk.Threshold && n.blocks*512 >= e.Size && n.dirfd != -1
}

// read does what sendFile does for a small file, up to the records: open,
// inode flags, fstat, one read with a probe byte, the SHA-256.
func (ra *readAhead) read(q *queued, h hash.Hash) {
	if err := ra.ctx.Err(); err != nil {
		q.err = err
		return
	}
	if ra.stopped.Load() {
		return
	}
	if beforeRead != nil {
		beforeRead(q.e.Path)
	}
	q.sum = emptySum // of what is sent when nothing can be read
	t0 := time.Now()
	fd, err := openFile(&node{e: &q.e, dirfd: q.dirfd, name: q.name})
	if err != nil {
		if q.e.Size > 0 {
			q.err = fmt.Errorf("content not backed up: open: %w", err)
		}
		q.ioWait = time.Since(t0)
		return
	}
	defer unix.Close(fd)
	identErr := sameFile(fd, &q.e)
	if identErr == nil {
		q.flags, q.flagsErr = inodeFlags(fd)
	}
	q.ioWait = time.Since(t0)
	if q.e.Size == 0 {
		return
	}
	if identErr != nil {
		q.err = identErr
		return
	}
	size := int(q.e.Size)
	q.buf = getBuf(size + 1) // +1: the probe byte that tells a file that grew
	got, err := preadFull(fd, q.buf[:size+1], 0, size)
	grew := got > size
	q.got = min(got, size)
	switch {
	case err != nil:
		q.err = fmt.Errorf("read at offset %d: %w", got, err)
	case got < size:
		q.err = ErrFileShrank
	case grew:
		q.err = ErrFileGrew
	}
	q.ioWait = time.Since(t0)
	h.Reset()
	h.Write(q.buf[:q.got])
	h.Sum(q.sum[:0])
}

var emptySum = sha256.Sum256(nil)

// full reports whether the queue holds as much as it may: the next entry
// waits until the head is sent.
func (ra *readAhead) full() bool {
	return len(ra.queue) >= aheadFiles || ra.bytes >= aheadBytes
}

// push queues an entry; a read goes to the readers at once.
func (ra *readAhead) push(q *queued) {
	ra.queue = append(ra.queue, q)
	if q.kind == queuedRead {
		ra.bytes += q.e.Size
		ra.uses[q.dirfd]++
		q.done = make(chan struct{})
		ra.jobs <- q // never blocks: no more than aheadFiles are queued
	}
}

// pop takes the head, once its read is done, and closes its directory's
// descriptor if the walk has left it and no other read needs it.
func (ra *readAhead) pop() *queued {
	q := ra.queue[0]
	ra.queue[0] = nil
	ra.queue = ra.queue[1:]
	if q.kind == queuedRead {
		<-q.done
		ra.bytes -= q.e.Size
		if ra.uses[q.dirfd]--; ra.uses[q.dirfd] == 0 {
			delete(ra.uses, q.dirfd)
			if ra.closing[q.dirfd] {
				delete(ra.closing, q.dirfd)
				unix.Close(q.dirfd)
			}
		}
	}
	return q
}

// stop ends the readers and closes what the queue still holds: on an
// error, the entries not sent and the directories not yet closed.
func (ra *readAhead) stop() {
	ra.stopped.Store(true)
	close(ra.jobs)
	ra.wg.Wait()
	for len(ra.queue) > 0 {
		putBuf(ra.pop().buf)
	}
}

// enqueue puts an entry in the stream after what is queued, sending the
// head first while the queue is full.
func (s *Source) enqueue(n *node, kind queuedKind) error {
	for s.ra.full() {
		if err := s.sendHead(); err != nil {
			return err
		}
	}
	s.ra.push(&queued{kind: kind, e: *n.e, dirfd: n.dirfd, name: n.name})
	return nil
}

// drain sends everything queued: before an entry Run's goroutine sends
// itself.
func (s *Source) drain() error {
	for s.ra != nil && len(s.ra.queue) > 0 {
		if err := s.sendHead(); err != nil {
			return err
		}
	}
	return nil
}

// closeDir is the walk's: a directory's descriptor is closed once the
// queued reads of its files, which open them through it, are sent.
func (s *Source) closeDir(fd int) {
	if s.ra == nil || s.ra.uses[fd] == 0 {
		unix.Close(fd)
		return
	}
	s.ra.closing[fd] = true
}

func (s *Source) sendHead() error {
	q := s.ra.pop()
	if q.kind == queuedEntry {
		return s.sendNow(&node{e: &q.e, dirfd: -1})
	}
	defer putBuf(q.buf)
	if errors.Is(q.err, context.Canceled) || errors.Is(q.err, context.DeadlineExceeded) {
		return q.err
	}
	return s.sendRead(q)
}

// sendRead sends a file a reader read: the records sendFile sends.
func (s *Source) sendRead(q *queued) error {
	e := &q.e
	s.ahead.observe(q.ioWait, e.Size)
	if q.flagsErr != nil {
		s.warn(e.Path, fmt.Errorf("inode flags not backed up: %w", q.flagsErr))
	}
	e.Flags = q.flags
	e.HashKind = fileindex.HashSHA256
	if err := s.appendHeader(e); err != nil {
		return err
	}
	s.entries.Add(1)
	s.files.Add(1)
	s.blockList = nil
	data := q.buf[:q.got]
	for off := 0; off < len(data); {
		n := min(len(data)-off, volume.MaxDataBody)
		if err := s.reserve(volume.MaxDataHeader + n); err != nil {
			return err
		}
		s.batch = volume.AppendDataRecord(s.batch, int64(off), data[off:off+n])
		off += n
	}
	s.bytes.Add(int64(len(data)))
	status := volume.EndOK
	if q.err != nil {
		s.warn(e.Path, q.err)
		s.incomplete.Add(1)
		status = volume.EndReadError
	}
	return s.appendEndSum(status, q.sum[:])
}

// bufPools hold the readers' buffers by power-of-two size, up to
// chunk.Threshold plus the probe byte: a backup of many small files would
// otherwise allocate all it reads.
var bufPools [bufClasses]sync.Pool

// bufClasses are 2^0 to 2^20: the largest read, a file just below
// chunk.Threshold and its probe byte, fits the last (the constant below
// does not compile if it stops to).
const bufClasses = 21

const _ = uint(1<<(bufClasses-1) - chunk.Threshold)

func bufClass(n int) int { return bits.Len(uint(n - 1)) }

func getBuf(n int) []byte {
	c := bufClass(n)
	if b, ok := bufPools[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<c)
}

func putBuf(b []byte) {
	if b == nil {
		return
	}
	c := bufClass(cap(b))
	if 1<<c != cap(b) {
		return
	}
	bufPools[c].Put(&b)
}
