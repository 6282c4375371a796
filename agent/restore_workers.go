package agent

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
)

// How a restore spreads its work over the cores
//
// One goroutine applies the stream in order (Record): it checks every
// record, resolves every entry's directory and creates each regular file,
// unnamed or O_EXCL, as "How a restore touches the filesystem" says,
// and makes directories, symlinks, fifos and devices itself. What a regular
// file costs after its create (the SHA-256 of its content, the writes, its
// metadata calls and its link or rename) goes to one of a few file workers, and so
// does the check of a file assembled from blocks of several sessions (its
// content read back and hashed) when its last block or its entry comes. A
// worker holds the file by the descriptor Record opened and its directory by
// a counted reference to the one Record opened: no worker resolves a name,
// so the descriptor-only rules hold whichever goroutine makes a call.
//
// Order. A file's records go to one worker, in stream order, and a worker
// takes one file at a time, so its content is hashed and written as it
// came. Entries of different paths do not depend on one another, except
// where the stream names a path twice (the same file in two sessions of a
// chain) or a path below a file still with a worker: Record then waits
// until the workers are idle (settle) and goes on as if it were alone, so
// the target ends as a serial restore leaves it. Finish settles before
// hard links, late inode flags and directories.
//
// Memory. A worker's records are slices of the frame they came in
// (frameBuf): a copy, or the frame itself when the connection lends it
// (RecordsLent), saving a copy of every restored byte. They are counted:
// at most heldFrames of them are held, so a fast node and a slow disk
// cost a few MiB, not the stream.
//
// Failure. A worker that cannot write (a full disk) records the error; the
// next Record returns it, and Finish does. Once Admit refused, or a worker
// failed, the workers write nothing more: what they still hold is removed.

// heldFrames is how many frames (copies or lent) workers may hold at once.
const heldFrames = 6

// restoreWorkers is how many file workers a restore runs: one per core,
// beside the goroutine that reads the stream, at most four.
func restoreWorkers() int { return min(max(runtime.GOMAXPROCS(0), 1), 4) }

// maxInflight bounds how many paths a restore remembers as handed to the
// workers since they were last idle; past it, it settles and forgets them.
const maxInflight = 1 << 16

// dirRef is an open directory shared by Record and the workers finishing
// files in it; the last to let go closes it.
type dirRef struct {
	fd   int
	refs atomic.Int32
}

func newDirRef(fd int) *dirRef {
	d := &dirRef{fd: fd}
	d.refs.Store(1)
	return d
}

func (d *dirRef) hold() *dirRef { d.refs.Add(1); return d }

func (d *dirRef) release() {
	if d.refs.Add(-1) == 0 {
		unix.Close(d.fd)
	}
}

// frameBuf is a batch of records that workers hold slices of: a copy in
// a buffer of its own, or a batch lent by the caller (RecordsLent).
type frameBuf struct {
	b        []byte
	own      []byte // the buffer of copies
	giveBack func([]byte)
	refs     atomic.Int32
	free     chan *frameBuf
}

func (f *frameBuf) hold() { f.refs.Add(1) }

func (f *frameBuf) release() {
	if f.refs.Add(-1) == 0 {
		if f.giveBack != nil {
			f.giveBack(f.b)
			f.giveBack = nil
		}
		f.b = nil
		f.free <- f
	}
}

// contentHash is the digest of a file's content as it is written.
type contentHash struct {
	sum    hash.Hash
	sparse *fileindex.SparseHash
	buf    [sha256.Size]byte
	// gap: a record of a file hashed whole (fileindex.HashSHA256) came
	// after a hole, which a backup of this program leaves only in a large
	// file that keeps blocks of earlier sessions, assembled and read back
	// at the end anyway. From there the file is not hashed as it is
	// written: place reads it back, holes as zeros, rather than have the
	// zeros hashed here and the file hashed again.
	gap bool
}

func newContentHash() *contentHash {
	return &contentHash{sum: sha256.New(), sparse: fileindex.NewSparseHash()}
}

func (h *contentHash) reset() {
	h.sum.Reset()
	h.sparse.Reset()
	h.gap = false
}

type fileOpKind uint8

const (
	opData     fileOpKind = iota // write data at off
	opEnd                        // check, name and finish the file (c)
	opDiscard                    // remove the file's temporary file (c)
	opHandBack                   // give the file back to Record, written so far
	opSync                       // tell done once the steps before are done
)

// fileOp is one step of a file for its worker.
type fileOp struct {
	kind fileOpKind
	// c is the file. Record changes none of what a worker reads of it
	// (its descriptor, directory, entry) once it is handed over, nor
	// anything of it after its opEnd or opDiscard.
	c      *current
	off    int64
	hole   bool // opData: a hole lies between the record before and off
	data   []byte
	frame  *frameBuf // what data and sum lie in, held until the op is done
	status uint8
	sum    []byte
	done   chan struct{} // opHandBack, opSync
}

type fileWorker struct {
	ops chan []fileOp
	h   *contentHash
	// pending are the steps Record has for the worker and has not sent:
	// they go in one batch per frame, since waking a worker that waits
	// costs more than a small file's step.
	pending []fileOp
}

// workers are a restore's file workers, started with its first file.
type workers struct {
	r      *Restorer
	ws     []*fileWorker
	frames chan *frameBuf
	// spare are batches of steps the workers are done with, for Record
	// to fill again: a batch is sent per worker and frame, most of them
	// with a step or two, and a new one each time was a sixth of the
	// bytes a restore of many small files allocated.
	spare chan []fileOp
	wg    sync.WaitGroup
	// inflight are the paths handed to a worker since they were last all
	// idle; Record's goroutine alone touches it.
	inflight map[string]bool
	next     int         // the worker the next file goes to
	halt     atomic.Bool // write nothing more: Admit refused, or a worker failed
	mu       sync.Mutex
	err      error // the first worker's failure
}

func (r *Restorer) startWorkers() *workers {
	if r.wk != nil {
		return r.wk
	}
	n := restoreWorkers()
	wk := &workers{r: r, frames: make(chan *frameBuf, heldFrames), spare: make(chan []fileOp, 4*n), inflight: map[string]bool{}}
	for range heldFrames {
		wk.frames <- &frameBuf{free: wk.frames}
	}
	for range n {
		w := &fileWorker{ops: make(chan []fileOp, 16), h: newContentHash()}
		wk.ws = append(wk.ws, w)
		wk.wg.Add(1)
		go func() {
			defer wk.wg.Done()
			wk.run(w)
		}()
	}
	r.wk = wk
	return wk
}

// frameOf makes a batch of records a frame the workers can hold, waiting
// for one when they hold them all: a copy of it, or, lent (giveBack), the
// batch itself, handed back once no one holds it. The caller releases it.
func (wk *workers) frameOf(batch []byte, giveBack func([]byte)) *frameBuf {
	f := <-wk.frames
	if giveBack != nil {
		f.b, f.giveBack = batch, giveBack
	} else {
		f.b = append(f.own[:0], batch...)
		f.own = f.b
	}
	f.refs.Store(1)
	return f
}

// failed is the first error a worker met, or nil.
func (wk *workers) failed() error {
	wk.mu.Lock()
	defer wk.mu.Unlock()
	return wk.err
}

func (wk *workers) fail(err error) {
	wk.mu.Lock()
	if wk.err == nil {
		wk.err = err
	}
	wk.mu.Unlock()
	wk.halt.Store(true)
}

// pick chooses the worker of the next file, in turn.
func (wk *workers) pick() *fileWorker {
	w := wk.ws[wk.next]
	wk.next = (wk.next + 1) % len(wk.ws)
	return w
}

// maxBatch is how many steps a worker gets at most in one batch.
const maxBatch = 128

// send gives a worker a step, holding the frame the step's bytes lie in.
// It goes with the next batch (flush).
func (wk *workers) send(w *fileWorker, op fileOp) {
	if op.frame != nil {
		op.frame.hold()
	}
	w.pending = append(w.pending, op)
	if len(w.pending) >= maxBatch {
		wk.flushTo(w)
	}
}

func (wk *workers) flushTo(w *fileWorker) {
	if len(w.pending) > 0 {
		w.ops <- w.pending
		select {
		case w.pending = <-wk.spare:
		default:
			w.pending = make([]fileOp, 0, maxBatch)
		}
	}
}

// flush sends every worker the steps it has waiting.
func (wk *workers) flush() {
	if wk == nil {
		return
	}
	for _, w := range wk.ws {
		wk.flushTo(w)
	}
}

// wait sends w its steps and waits until it has done them.
func (wk *workers) wait(w *fileWorker, kind fileOpKind) {
	done := make(chan struct{})
	w.pending = append(w.pending, fileOp{kind: kind, done: done})
	wk.flushTo(w)
	<-done
}

// settle waits until every worker has done every step it was given. The
// file under way, if a worker has it, stays with it.
func (wk *workers) settle() {
	if wk == nil {
		return
	}
	dones := make([]chan struct{}, len(wk.ws))
	for i, w := range wk.ws {
		dones[i] = make(chan struct{})
		w.pending = append(w.pending, fileOp{kind: opSync, done: dones[i]})
		wk.flushTo(w)
	}
	for _, d := range dones {
		<-d
	}
	clear(wk.inflight)
	if c := wk.r.cur; c != nil && c.w != nil {
		wk.inflight[c.e.Path] = true
	}
}

// stop ends the workers once they have done what they were given.
func (wk *workers) stop() {
	for _, w := range wk.ws {
		wk.flushTo(w)
		close(w.ops)
	}
	wk.wg.Wait()
}

// conflicts says whether p, or a directory above it, is a file a worker
// may still hold: Record then settles before it touches p.
func (wk *workers) conflicts(p string) bool {
	if wk == nil || len(wk.inflight) == 0 {
		return false
	}
	for {
		if wk.inflight[p] {
			return true
		}
		i := strings.LastIndexByte(p, '/')
		if i <= 0 {
			return false
		}
		p = p[:i]
	}
}

func (wk *workers) run(w *fileWorker) {
	for batch := range w.ops {
		for i := range batch {
			op := &batch[i]
			wk.do(w, op)
			if op.frame != nil {
				op.frame.release()
			}
			if op.done != nil {
				close(op.done)
			}
		}
		clear(batch) // what it points to is not kept alive by a spare
		select {
		case wk.spare <- batch[:0]:
		default:
		}
	}
}

func (wk *workers) do(w *fileWorker, op *fileOp) {
	r := wk.r
	switch op.kind {
	case opData:
		if wk.halt.Load() {
			return
		}
		if err := r.admit(); err != nil {
			wk.halt.Store(true)
			return
		}
		if err := writeHashed(w.h, op.c, op.off, op.hole, op.data); err != nil {
			wk.fail(err)
			return
		}
		r.bytes.Add(int64(len(op.data)))
	case opEnd:
		c := op.c
		if !wk.halt.Load() && r.admit() != nil {
			wk.halt.Store(true)
		}
		if wk.halt.Load() {
			removeTemp(c)
		} else if err := r.place(c, op.status, op.sum, w.h); err != nil {
			wk.fail(err)
		}
		c.dir.release()
		w.h.reset()
	case opDiscard:
		removeTemp(op.c)
		op.c.dir.release()
		w.h.reset()
	case opHandBack:
		w.h.reset()
	}
}

// hashing, in tests, is told the bytes of a file's content hashed as they
// are written.
var hashing func(path string, n int64)

// writeHashed hashes a Data record of c and writes it at off; hole says
// a hole lies before it. A file known to be assembled, or hashed whole
// and with a hole (contentHash.gap), is not hashed: place reads it back.
func writeHashed(h *contentHash, c *current, off int64, hole bool, data []byte) error {
	whole := c.e.HashKind == fileindex.HashSHA256
	h.gap = h.gap || hole && whole
	if !c.assembled && !h.gap && (whole || c.e.HashKind == fileindex.HashSparseSHA256) {
		if hashing != nil {
			hashing(c.e.Path, int64(len(data)))
		}
		if whole {
			h.sum.Write(data)
		} else {
			h.sparse.Add(off, data)
		}
	}
	for done := 0; done < len(data); {
		n, err := unix.Pwrite(c.fd, data[done:], off+int64(done))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("restore %s: write: %w", c.e.Path, err)
		}
		done += n
	}
	return nil
}

// removeTemp closes and removes the temporary file of c.
func removeTemp(c *current) {
	if c.fd >= 0 {
		unix.Close(c.fd)
		if c.tmp != "" {
			unix.Unlinkat(c.dirfd, c.tmp, 0)
		}
		c.fd = -1
	}
}
