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

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
)

const (
	// readAheadMax is the largest file read ahead; the kernel's own
	// readahead serves larger files, which Source reads in order in
	// large chunks.
	readAheadMax = 1 << 20
	// readAheadBytes bounds the memory of file content read ahead and
	// not yet sent (buffers are rounded up to a power of two).
	readAheadBytes = 16 << 20
	// walkAhead is how many entries to send the walk may run ahead of
	// Source: with a few small files per directory, the reads of many
	// directories are in flight at once. Each queued entry may hold its
	// directory open.
	walkAhead = 256
)

// readAheadWorkers is how many small files are read at once: the queue
// depth that a disk (or a virtual one) turns into throughput, since each
// read of a cold small file waits for the disk. A variable for benchmarks;
// 0 leaves every read to Source.
var readAheadWorkers = 8

// item is one entry to send, handed from the walk to Source in index
// order. A small regular file's content may come with it, read ahead.
type item struct {
	e      fileindex.Entry
	nd     node // nd.e is &e; nd.dir is held until the item is freed
	change Change

	// ready is nil unless the content is read ahead; closed when buf, n,
	// sum and err are set.
	ready chan struct{}
	buf   []byte
	n     int               // content bytes in buf
	sum   [sha256.Size]byte // of buf[:n]
	err   error             // why the content is incomplete, for the warning
	cost  int64             // read-ahead budget held
}

// pipeline runs the walk (and the join with the base) on a goroutine of
// its own, ahead of Source, and reads small files on readAheadWorkers
// goroutines ahead of Source. Source gets the entries in index order from
// items. A cold backup of many small files waits for the disk on every
// file when one goroutine walks, stats, opens and reads them one after
// another; with the reads (and the walk's metadata reads) of many files in
// flight at once, it goes several times as fast.
type pipeline struct {
	ctx       context.Context
	items     chan *item
	work      chan *item
	budget    budget
	wg        sync.WaitGroup
	err       error // of the walk; read after items is closed
	unchanged *atomic.Int64
}

func startPipeline(ctx context.Context, w *walker, base fileindex.Iterator, unchanged *atomic.Int64) *pipeline {
	p := &pipeline{
		ctx:       ctx,
		items:     make(chan *item, walkAhead),
		work:      make(chan *item, walkAhead),
		budget:    budget{avail: readAheadBytes, wake: make(chan struct{}, 1)},
		unchanged: unchanged,
	}
	for range readAheadWorkers {
		p.wg.Add(1)
		go p.reader()
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		err := runChanges(w, base, p.push)
		p.err = err
		close(p.work)
		close(p.items)
	}()
	return p
}

// readsAhead says whether the item's content is read ahead: a regular
// file with content, small, and without holes (a sparse file is sent
// region by region, its holes never read).
func readsAhead(it *item) bool {
	e := &it.e
	return readAheadWorkers > 0 && e.Type == fileindex.TypeFile && e.Size > 0 && e.Size <= readAheadMax && it.nd.blocks*512 >= e.Size
}

// push takes an entry from the walk, on the walk's goroutine.
func (p *pipeline) push(n *node, c Change) error {
	if c == ChangeUnchanged {
		p.unchanged.Add(1)
		return nil
	}
	it := &item{e: *n.e, change: c}
	it.nd = *n
	it.nd.e = &it.e
	n.dir.hold()
	if readsAhead(it) {
		// The budget is taken here, in index order, so what holds it is
		// always ahead of the walk in items: Source frees it in turn.
		it.cost = bufClass(it.e.Size + 1)
		if err := p.budget.acquire(p.ctx, it.cost); err != nil {
			it.cost = 0
			p.free(it)
			return err
		}
		it.ready = make(chan struct{})
	}
	select {
	case p.items <- it:
	case <-p.ctx.Done():
		p.free(it)
		return p.ctx.Err()
	}
	if it.ready != nil {
		select {
		case p.work <- it:
		case <-p.ctx.Done():
			it.err = p.ctx.Err()
			close(it.ready)
			return p.ctx.Err()
		}
	}
	return nil
}

func (p *pipeline) reader() {
	defer p.wg.Done()
	h := sha256.New()
	for it := range p.work {
		if err := p.ctx.Err(); err != nil {
			it.err = err
		} else {
			readWhole(it, h)
		}
		close(it.ready)
	}
}

// free gives back what an item holds once Source is done with it.
func (p *pipeline) free(it *item) {
	it.nd.dir.release()
	it.nd.dir = nil
	if it.buf != nil {
		putBuf(it.buf)
		it.buf = nil
	}
	if it.cost > 0 {
		p.budget.release(it.cost)
		it.cost = 0
	}
}

// stop ends the pipeline early: it cancels ctx (the caller's cancel),
// drains what was queued and waits for the goroutines.
func (p *pipeline) stop(cancel context.CancelFunc) {
	cancel()
	for it := range p.items {
		if it.ready != nil {
			<-it.ready
		}
		p.free(it)
	}
	p.wg.Wait()
}

var emptySum = sha256.Sum256(nil)

// readWhole reads a small file whole into a pooled buffer and hashes it,
// with the checks and the outcomes of Source.sendContent: what a short
// read, a longer file, a replaced file or an error leave is what is sent.
func readWhole(it *item, h hash.Hash) {
	it.sum = emptySum
	e := &it.e
	fd, err := openFile(&it.nd)
	if err != nil {
		it.err = fmt.Errorf("content not backed up: open: %w", err)
		return
	}
	defer unix.Close(fd)
	// One byte more than the file should hold tells a file that grew.
	it.buf = getBuf(e.Size + 1)
	buf := it.buf[:e.Size+1]
	got, rerr := preadFull(fd, buf, 0, int(e.Size))
	grew := int64(got) > e.Size
	if grew {
		got = int(e.Size)
	}
	// Checked after the read, which then cannot have mixed an old and
	// a new version unnoticed, and which saves a syscall when it did not.
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		it.err = fmt.Errorf("content not backed up: fstat: %w", err)
		return
	}
	if st.Ino != e.Inode || st.Dev != e.Dev {
		it.err = ErrFileReplaced
		return
	}
	it.n = got
	h.Reset()
	h.Write(buf[:got])
	h.Sum(it.sum[:0])
	switch {
	case rerr != nil:
		it.err = fmt.Errorf("read at offset %d: %w", got, rerr)
	case int64(got) < e.Size:
		it.err = ErrFileShrank
	case grew:
		it.err = ErrFileGrew
	case st.Ctim.Nano() != e.CTime:
		it.err = ErrFileChanged
	}
}

// Buffers for content read ahead, by power-of-two size class from 4 KiB.
const minBufShift = 12

var bufPools [bits.UintSize]sync.Pool

func bufClass(n int64) int64 {
	if n <= 1<<minBufShift {
		return 1 << minBufShift
	}
	return 1 << bits.Len64(uint64(n-1))
}

func getBuf(n int64) []byte {
	c := bufClass(n)
	if b, ok := bufPools[bits.TrailingZeros64(uint64(c))].Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, c)
}

func putBuf(b []byte) {
	bufPools[bits.TrailingZeros64(uint64(cap(b)))].Put(&b)
}

// budget is a count of bytes with one goroutine that waits for it (the
// walk) and any that give back.
type budget struct {
	mu    sync.Mutex
	avail int64
	wake  chan struct{}
}

func (b *budget) acquire(ctx context.Context, n int64) error {
	for {
		b.mu.Lock()
		if b.avail >= n {
			b.avail -= n
			b.mu.Unlock()
			return nil
		}
		b.mu.Unlock()
		select {
		case <-b.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.avail += n
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// ErrFileChanged is the warning for a file whose status changed (its ctime
// moved) between the walk and the end of the read, its size not: it was
// written in place, or its attributes changed. Its content may not be
// what its attributes describe, or may mix an old and a new version.
var ErrFileChanged = errors.New("the file changed between the walk and the read: its content may not match its attributes")
