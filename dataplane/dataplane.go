// Package dataplane is the direct stream between an agent and a storage
// node: bulk data never crosses NATS. The node listens with TLS on its data
// port; its certificate is self-signed and pinned: the servers learn its
// SHA-256 when the node registers and hand it to the agent with the job.
//
// A connection carries frames: a type byte, a 4-byte big-endian length and
// the payload. The agent opens with Hello (the job ticket); the node answers
// Accept or Error. A backup then sends Records frames (whole stream records,
// media/volume encoding) and End; the node answers Result once the session is
// durable and in the catalog. A restore sends nothing more: the node takes
// the restore's plan from the servers itself (the ticket names the job), and
// streams, for each read of it, a ReadStart naming the entries (packed,
// to an agent that reads it: readstart.go), Records, StoredBlock (to an
// agent that reads them: stored.go) and Damaged frames, and a ReadDone; then End, with the count of every entry it
// was asked for. The agent never sees where the data lies on the volumes. An
// Error frame from either side ends the connection.
//
// A restore accounts for every entry of its plan: its records come in
// Records frames, or a Damaged frame names it with the reason it is lost
// (a damaged block, a truncated or missing volume, a key that does not
// open the session). ReadDone counts both, so the agent can tell whether
// the node left an entry out, and End counts the reads and entries of the
// whole plan.
//
// Hello and Accept carry the protocol Version; a side that gets another
// refuses the connection with an Error that says which side to upgrade.
//
// Neither side waits for the other forever (SetTimeout): a write that the
// peer does not take and a read that gets nothing fail after the timeout.
// A side that may be silent for long while it works (a storage node
// mounting a tape, locating, waiting for an operator to insert a
// cartridge) sends Keepalive frames, which ReadFrame never returns; they
// tell the peer it lives, not that the job progresses, which the servers
// judge.
package dataplane

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/wire"
)

// Frame types.
const (
	FrameHello   byte = 1
	FrameAccept  byte = 2
	FrameRecords byte = 3
	FrameEnd     byte = 4
	FrameResult  byte = 5
	FrameError   byte = 6
	// 7 was Read, the agent relaying a read of the restore plan (version
	// 1); it is not reused, so a peer of version 1 gets no frame it could
	// mistake.
	FrameDamaged  byte = 8
	FrameReadDone byte = 9
	// FrameKeepalive has no payload: the sender lives and has nothing to
	// send yet. ReadFrame swallows it.
	FrameKeepalive byte = 10
	FrameReadStart byte = 11
	// FrameReadStartPacked is a ReadStart in the packed form
	// (PackReadStart), sent only to an agent whose Hello says it reads it.
	FrameReadStartPacked byte = 12
	// FrameStoredBlock is a data block of the session a read reads, as
	// its volume stores it, decrypted and still compressed
	// (AppendStoredHead): every record in it belongs to the read's
	// entries. Sent only to an agent whose Hello says it reads it.
	FrameStoredBlock byte = 13
)

// Version is the data-port protocol this program speaks. Version 2: the
// storage node takes a restore's plan from the servers, and the agent
// sends no Read frames.
const Version = 2

// VersionError is a peer that speaks another version of the protocol.
type VersionError struct {
	Peer, Ours int
	// PeerIs names the peer: "agent" or "storage node".
	PeerIs string
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("the %s speaks data-port protocol version %d and this side version %d: run the same Cairn release on agents and storage nodes",
		e.PeerIs, e.Peer, e.Ours)
}

// KeepaliveInterval is how often a side that has written nothing sends a
// keepalive; a peer's timeout must be well above it.
const KeepaliveInterval = 10 * time.Second

// MaxFrame bounds a frame's payload so a malformed length cannot make a
// peer allocate without limit.
const MaxFrame = 8 << 20

// Hello opens a connection.
type Hello struct {
	V       int    `json:"v"`
	Ticket  string `json:"ticket"`
	Client  string `json:"client"`
	Version string `json:"version"`
	// PackedReadStart is the newest packed ReadStart form the agent reads
	// (PackedReadStartVersion); 0, as from an older agent, is JSON only.
	PackedReadStart int `json:"packed_read_start,omitempty"`
	// StoredBlocks is the newest StoredBlock form the agent reads
	// (StoredBlockVersion); 0, as from an older agent, is Records only.
	StoredBlocks int `json:"stored_blocks,omitempty"`
}

// Accept answers a valid Hello.
type Accept struct {
	V     int    `json:"v"`
	JobID uint64 `json:"job_id"`
	Node  string `json:"node"`
}

// ReadStart opens the answer to one read of a restore's plan: the entries
// it reads, in the order their records come. It names paths only; where
// they lie on the volumes stays on the node.
type ReadStart struct {
	SessionID uuid.UUID   `json:"session_id"`
	Entries   []ReadEntry `json:"entries"`
}

// ReadEntry is one entry a read brings back.
type ReadEntry struct {
	Path fileindex.Path `json:"path"`
	// Ancestor marks a directory read only because it lies above a path
	// chosen for the restore (wire.ReadLoc.Ancestor).
	Ancestor bool `json:"ancestor,omitempty"`
	// Block marks a block of a large file read where it lies
	// (wire.ReadLoc.Block), not an entry of its own: the counts of
	// entries asked and restored leave it out. An older node does not
	// set it, and its blocks are counted as entries.
	Block bool `json:"block,omitempty"`
}

// RestoreEnd closes a restore stream: the node served every read of the
// plan, Reads of them with Entries entries in all.
type RestoreEnd struct {
	Reads   int   `json:"reads"`
	Entries int64 `json:"entries"`
}

// End closes the agent's side: for a backup it says the stream is complete.
type End struct {
	Warnings []string `json:"warnings,omitempty"`
	// Notes are lines for the job log at level info: what the backup
	// left out on purpose (sockets, entries with the nodump flag), which
	// does not make the job end with warnings.
	Notes   []string `json:"notes,omitempty"`
	Entries int64    `json:"entries"`
	Files   int64    `json:"files"`
	Bytes   int64    `json:"bytes"`
}

// Result answers a backup's End once the session is committed.
type Result struct {
	JobID   uint64            `json:"job_id"`
	Stats   wire.SessionStats `json:"stats"`
	Volumes []string          `json:"volumes"`
}

// Damaged names entries of a Read that are lost, and why: their data lies
// in a damaged block (Seq), past the end of a truncated volume, on a
// volume that cannot be read, or in a session the key does not open. None
// of them will be restored; records of one that already came are to be
// thrown away.
type Damaged struct {
	SessionID uuid.UUID        `json:"session_id"`
	Seq       uint64           `json:"seq"`
	Reason    string           `json:"reason"`
	Paths     []fileindex.Path `json:"paths"`
}

// MaxDamagedPaths bounds the paths of one Damaged frame, so a frame that
// names a whole missing volume's entries stays far below MaxFrame.
const MaxDamagedPaths = 2000

// ReadDone says a Read was served: Asked entries were asked for, Entries
// of them came as records and Lost were named in Damaged frames (an entry
// whose records came and that was then named counts in both). Every entry
// asked for is in one or the other.
type ReadDone struct {
	SessionID uuid.UUID `json:"session_id"`
	Entries   int       `json:"entries"`
	Asked     int       `json:"asked"`
	Lost      int       `json:"lost"`
}

// StallError is a read or write that the timeout of SetTimeout ended: the
// peer sent nothing, not even a keepalive, or took none of what was
// written. It wraps os.ErrDeadlineExceeded.
type StallError struct {
	Write bool // the peer stopped reading; else it stopped sending
	After time.Duration
	Err   error
}

func (e *StallError) Error() string {
	if e.Write {
		return fmt.Sprintf("the peer took no data for %s: it stopped reading", e.After)
	}
	return fmt.Sprintf("the peer sent nothing for %s, not even a keepalive", e.After)
}

func (e *StallError) Unwrap() error { return e.Err }

// Conn is one data connection. One goroutine reads and one writes, as with
// a net.Conn; Keepalive's goroutine writes too, under wmu.
type Conn struct {
	c     net.Conn
	batch *recordBatcher // nil on a connection made by NewConn
	r     *bufio.Reader
	buf   []byte
	ahead *readAhead // nil unless ReadAhead was called
	// maxFrame bounds the frames read: MaxFrame, or strangerFrame until
	// a server's connection is admitted.
	maxFrame uint32

	wmu   sync.Mutex
	w     *bufio.Writer
	wrote time.Time // last flush, under wmu

	timeout atomic.Int64 // SetTimeout, in nanoseconds
	heard   atomic.Int64 // when a frame last came in, UnixNano
	rdl     time.Time    // the read deadline the caller set; owned by the reader

	closed    chan struct{}
	closeOnce sync.Once
}

// streamBuffer is the size of a stream's read and write buffers.
const streamBuffer = 256 << 10

// NewConn wraps an established (TLS) connection.
func NewConn(c net.Conn) *Conn {
	return &Conn{c: c, r: bufio.NewReaderSize(c, streamBuffer), w: bufio.NewWriterSize(c, streamBuffer), maxFrame: MaxFrame, closed: make(chan struct{})}
}

// A server's connection is a stranger's until it shows a ticket: anyone who
// reaches the port can open many and keep them until the hello timeout.
// Until Admit, it reads and writes through small buffers, and takes frames
// of at most strangerFrame (a hello with its ticket is a few KiB), so that
// each holds tens of KiB, not the 768 KiB of a stream's buffers or a frame
// of MaxFrame sent slowly.
const (
	strangerBuffer = 16 << 10
	strangerFrame  = 64 << 10
)

func newStrangerConn(c net.Conn) *Conn {
	return &Conn{c: c, r: bufio.NewReaderSize(c, strangerBuffer), w: bufio.NewWriterSize(c, strangerBuffer), maxFrame: strangerFrame, closed: make(chan struct{})}
}

// Admit gives a server's connection, whose peer showed a valid ticket, the
// buffers and frame limit of a stream. Call it from the reading goroutine,
// between frames, before ReadAhead and Keepalive; what the peer sent past
// the last frame read is kept.
func (c *Conn) Admit() {
	if c.r.Size() < streamBuffer {
		c.r = bufio.NewReaderSize(keepBuffered(c.r, c.c), streamBuffer)
	}
	c.wmu.Lock()
	if c.w.Size() < streamBuffer {
		// Empty, or its bytes go out first, as they would have.
		_ = c.w.Flush()
		c.w = bufio.NewWriterSize(c.c, streamBuffer)
	}
	c.wmu.Unlock()
	c.maxFrame = MaxFrame
	if c.batch != nil {
		c.batch.admit()
	}
}

// keepBuffered is a reader of what r holds already, then of src: r's
// buffered bytes, copied out, before the source r read them from.
func keepBuffered(r *bufio.Reader, src io.Reader) io.Reader {
	n := r.Buffered()
	if n == 0 {
		return src
	}
	held, _ := r.Peek(n)
	return io.MultiReader(bytes.NewReader(bytes.Clone(held)), src)
}

// SetTimeout bounds every wait of the connection from now on: a write the
// peer does not take within d, and a ReadFrame that gets no frame (a
// keepalive counts) within d, fail with a *StallError. A keepalive that
// comes in also gives a pending write d more, since the peer lives: it
// may be busy (a storage node waiting for a tape takes no data). A read
// deadline the caller sets wins over d until it is cleared. 0 turns the
// timeout off.
func (c *Conn) SetTimeout(d time.Duration) { c.timeout.Store(int64(d)) }

func (c *Conn) timeoutD() time.Duration { return time.Duration(c.timeout.Load()) }

// Keepalive sends a keepalive frame whenever nothing was written for
// interval, until the connection is closed or a write fails. Call it once.
func (c *Conn) Keepalive(interval time.Duration) {
	c.wmu.Lock()
	c.wrote = time.Now()
	c.wmu.Unlock()
	go func() {
		t := time.NewTicker(max(interval/4, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-c.closed:
				return
			case <-t.C:
			}
			c.wmu.Lock()
			var err error
			if time.Since(c.wrote) >= interval {
				err = c.gathered(func() error {
					if err := c.writeFrame(FrameKeepalive, nil); err != nil {
						return err
					}
					return c.flush()
				})
			}
			c.wmu.Unlock()
			if err != nil {
				return
			}
		}
	}()
}

// WriteFrame buffers one frame; Flush sends it.
func (c *Conn) WriteFrame(t byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.gathered(func() error { return c.writeFrame(t, payload) })
}

// gathered runs write, under wmu, with the TLS records it makes sent
// together (recordBatcher).
func (c *Conn) gathered(write func() error) error {
	if c.batch == nil || !c.batch.handshakeDone() {
		// A write runs the handshake first, whose messages must go at
		// once: the peer answers them.
		return write()
	}
	c.batch.gather()
	err := write()
	if serr := c.batch.send(); err == nil && serr != nil {
		err = c.stalled(true, serr)
	}
	return err
}

func (c *Conn) writeFrame(t byte, payload []byte) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("data frame of %d bytes exceeds %d", len(payload), MaxFrame)
	}
	var hdr [5]byte
	hdr[0] = t
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	c.writeDeadline()
	if _, err := c.w.Write(hdr[:]); err != nil {
		return c.stalled(true, err)
	}
	_, err := c.w.Write(payload)
	return c.stalled(true, err)
}

// WriteFrameTail writes one frame whose payload is head then tail, and
// sends it. A large tail (file data a storage node decoded) goes from
// where it lies to the connection, past the write buffer: bulk bytes are
// copied once fewer. The frame is on its way when it returns; no Flush is
// needed.
func (c *Conn) WriteFrameTail(t byte, head, tail []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.gathered(func() error { return c.writeFrameTail(t, head, tail) })
}

func (c *Conn) writeFrameTail(t byte, head, tail []byte) error {
	n := len(head) + len(tail)
	if n > MaxFrame {
		return fmt.Errorf("data frame of %d bytes exceeds %d", n, MaxFrame)
	}
	var hdr [5]byte
	hdr[0] = t
	binary.BigEndian.PutUint32(hdr[1:], uint32(n))
	c.writeDeadline()
	if _, err := c.w.Write(hdr[:]); err != nil {
		return c.stalled(true, err)
	}
	if _, err := c.w.Write(head); err != nil {
		return c.stalled(true, err)
	}
	if len(tail) < directWrite {
		if _, err := c.w.Write(tail); err != nil {
			return c.stalled(true, err)
		}
		return c.flush()
	}
	if err := c.flush(); err != nil {
		return err
	}
	c.writeDeadline()
	if _, err := c.c.Write(tail); err != nil {
		return c.stalled(true, err)
	}
	c.wrote = time.Now()
	return nil
}

// directWrite is the size from which WriteFrameTail writes a tail past the
// buffer: below it, the extra write (a TLS record and a system call) costs
// more than the copy.
const directWrite = 32 << 10

// writeDeadline gives the next write the timeout, when there is one: a
// full buffer goes to the socket inside Write.
func (c *Conn) writeDeadline() {
	if d := c.timeoutD(); d > 0 {
		_ = c.c.SetWriteDeadline(time.Now().Add(d))
	}
}

// stalled turns a deadline that the timeout set into a *StallError.
func (c *Conn) stalled(write bool, err error) error {
	d := c.timeoutD()
	if err == nil || d <= 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	var se *StallError
	if errors.As(err, &se) {
		return err
	}
	return &StallError{Write: write, After: d, Err: err}
}

// heardFrom notes a frame from the peer: it lives, so a write it has not
// taken yet gets the whole timeout again.
func (c *Conn) heardFrom(t byte) {
	c.heard.Store(time.Now().UnixNano())
	if t == FrameKeepalive {
		c.writeDeadline()
	}
}

// WriteJSON writes a frame whose payload is v as JSON, and flushes.
func (c *Conn) WriteJSON(t byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := c.WriteFrame(t, b); err != nil {
		return err
	}
	return c.Flush()
}

// WriteError sends an Error frame, best effort.
func (c *Conn) WriteError(e *wire.Error) error { return c.WriteJSON(FrameError, e) }

// Flush sends buffered frames.
func (c *Conn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.gathered(c.flush)
}

func (c *Conn) flush() error {
	c.writeDeadline()
	err := c.w.Flush()
	if err == nil {
		c.wrote = time.Now()
	}
	return c.stalled(true, err)
}

// ReadFrame reads the next frame, keepalives aside. The payload is valid
// until the next call.
func (c *Conn) ReadFrame() (byte, []byte, error) {
	if c.ahead != nil {
		return c.ahead.next(c)
	}
	for {
		if d := c.timeoutD(); d > 0 && c.rdl.IsZero() {
			_ = c.c.SetReadDeadline(time.Now().Add(d))
		}
		t, p, err := c.readFrame(c.buf)
		c.buf = p
		if err != nil {
			return t, p, c.stalled(false, err)
		}
		c.heardFrom(t)
		if t != FrameKeepalive {
			return t, p, nil
		}
	}
}

// readFrame reads the next frame into buf, grown when it is too small.
func (c *Conn) readFrame(buf []byte) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return 0, buf, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > c.maxFrame {
		return 0, buf, fmt.Errorf("data frame of %d bytes exceeds %d: the peer is not a Cairn agent or node", n, c.maxFrame)
	}
	if cap(buf) >= int(n) {
		p := buf[:n]
		if _, err := io.ReadFull(c.r, p); err != nil {
			return 0, p, fmt.Errorf("data frame cut short: %w", err)
		}
		return hdr[0], p, nil
	}
	// The length is the peer's word, given before anything proves who the
	// peer is: the buffer grows with the bytes that arrive, doubling, so
	// a header alone cannot make each connection hold MaxFrame.
	p := buf[:0]
	for len(p) < int(n) {
		chunk := min(int(n)-len(p), max(len(p), frameChunk))
		if need := len(p) + chunk; cap(p) < need {
			// Grown to this step's need, rounded up to frameChunk: append's
			// own growth adds a quarter to a frame just past a power of two
			// (1.25 MiB for a stored block of 1 MiB and its head), and a
			// read-ahead keeps a dozen such buffers.
			grown := make([]byte, len(p), (need+frameChunk-1)/frameChunk*frameChunk)
			copy(grown, p)
			p = grown
		}
		if _, err := io.ReadFull(c.r, p[len(p):len(p)+chunk]); err != nil {
			return 0, p, fmt.Errorf("data frame cut short: %w", err)
		}
		p = p[:len(p)+chunk]
	}
	return hdr[0], p, nil
}

// frameChunk is the first step by which a frame buffer grows.
const frameChunk = 64 << 10

// ReadAhead makes the connection read up to depth frames ahead of
// ReadFrame, on a goroutine of its own: the wait for the network and the
// TLS decryption (a core's worth of work at a few hundred MB/s) then
// overlap with what the caller does with the frame before. A payload from
// ReadFrame stays valid until the next call, as without read-ahead, and
// read deadlines bound the wait for the next frame as before. Call it
// once, from the goroutine that reads, before the ReadFrame calls it
// should speed up and before any TakeFrame; the goroutine ends when the
// connection is closed or a read fails. It holds up to depth+2 frame
// buffers, and up to maxLent more in place of frames taken.
func (c *Conn) ReadAhead(depth int) {
	if c.ahead != nil {
		return
	}
	depth = max(depth, 1)
	a := &readAhead{
		frames: make(chan aheadFrame, depth),
		// Room for every buffer there can be: depth+2 of its own, and
		// a nil for each of the first maxLent taken (TakeFrame).
		free: make(chan []byte, depth+2+maxLent),
		done: c.closed,
	}
	for range depth + 1 {
		a.free <- nil
	}
	a.free <- c.buf
	c.buf = nil
	c.ahead = a
	// The goroutine reads with no socket deadline; waits are bounded in next.
	_ = c.c.SetReadDeadline(time.Time{})
	go func() {
		for {
			var buf []byte
			select {
			case buf = <-a.free:
			case <-a.done:
				return
			}
			t, p, err := c.readFrame(buf)
			if err == nil {
				c.heardFrom(t)
				if t == FrameKeepalive {
					a.free <- p // never blocks: it was taken from free
					continue
				}
			}
			select {
			case a.frames <- aheadFrame{t: t, p: p, err: err}:
			case <-a.done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
}

// TakeFrame makes the payload ReadFrame returned last the caller's: the
// next ReadFrame does not read into it, and the caller may keep it while it
// reads on, on any goroutine. GiveFrame hands it back once the caller is
// done with it. With ReadAhead, the frames taken and not given back count
// against the read-ahead's buffers beyond the first maxLent of them: a
// caller that keeps more waits for its next frame until it gives one back.
// It saves the copy of each frame a caller that hands frames to other
// goroutines would otherwise make (a restore's Records frames, a copy of
// every restored byte).
func (c *Conn) TakeFrame() []byte {
	a := c.ahead
	if a == nil {
		p := c.buf
		c.buf = nil
		return p
	}
	p := a.last
	a.last, a.held = nil, false
	if a.lent < maxLent {
		// A buffer more for the goroutine to fill, while this one is
		// away; there is room for it (ReadAhead).
		a.lent++
		a.free <- nil
	}
	return p
}

// GiveFrame hands back a payload TakeFrame took, for a later frame. Without
// ReadAhead it is left to the collector.
func (c *Conn) GiveFrame(p []byte) {
	if a := c.ahead; a != nil && p != nil {
		select {
		case a.free <- p[:0]:
		default: // never: free has room for every buffer there is
		}
	}
}

// maxLent is how many frames taken (TakeFrame) the read-ahead replaces with
// buffers of its own.
const maxLent = 8

// readAhead is the state of ReadAhead. Its goroutine owns the bufio
// reader; the one that calls ReadFrame owns last, lent, err and the
// deadline.
type readAhead struct {
	frames chan aheadFrame
	free   chan []byte   // buffers the goroutine may fill
	done   chan struct{} // the connection's closed

	last []byte // the payload ReadFrame returned last
	// held: last is a buffer of free's to give back, even when nil (an
	// empty frame read into a buffer not made yet).
	held     bool
	lent     int   // buffers added for frames taken
	err      error // the read error that ended the goroutine
	mu       sync.Mutex
	deadline time.Time
}

type aheadFrame struct {
	t   byte
	p   []byte
	err error
}

func (a *readAhead) next(c *Conn) (byte, []byte, error) {
	if a.err != nil {
		return 0, nil, a.err
	}
	if a.held {
		a.free <- a.last // never blocks: free has room for every buffer
		a.last, a.held = nil, false
	}
	a.mu.Lock()
	d := a.deadline
	a.mu.Unlock()
	// Without a deadline of the caller's, the timeout runs from when the
	// peer was last heard, or from now: while the frames waited for this
	// call the goroutine did not read, so the peer's silence was not seen.
	since := time.Now()
	timeout := c.timeoutD()
	for {
		until := d
		if until.IsZero() && timeout > 0 {
			until = time.Unix(0, max(c.heard.Load(), since.UnixNano())).Add(timeout)
		}
		var expired <-chan time.Time
		var timer *time.Timer
		if !until.IsZero() {
			timer = time.NewTimer(time.Until(until))
			expired = timer.C
		}
		var f aheadFrame
		var got, closed bool
		select {
		case f = <-a.frames:
			got = true
		case <-expired:
		case <-a.done:
			closed = true
		}
		if timer != nil {
			timer.Stop()
		}
		switch {
		case got:
			if f.err != nil {
				a.err = c.stalled(false, f.err)
				return 0, nil, a.err
			}
			a.last, a.held = f.p, true
			return f.t, f.p, nil
		case closed:
			return 0, nil, fmt.Errorf("read data frame: %w", net.ErrClosed)
		}
		if d.IsZero() && time.Unix(0, c.heard.Load()).Add(timeout).After(time.Now()) {
			continue // a keepalive came meanwhile
		}
		err := fmt.Errorf("read data frame: %w", os.ErrDeadlineExceeded)
		if d.IsZero() {
			return 0, nil, &StallError{After: timeout, Err: err}
		}
		return 0, nil, err
	}
}

func (a *readAhead) setDeadline(t time.Time) {
	a.mu.Lock()
	a.deadline = t
	a.mu.Unlock()
}

// ReadJSON reads a frame of type want into v. An Error frame comes back as
// its *wire.Error.
func (c *Conn) ReadJSON(want byte, v any) error {
	t, p, err := c.ReadFrame()
	if err != nil {
		return err
	}
	return DecodeJSON(t, p, want, v)
}

// DecodeJSON decodes a frame already read.
func DecodeJSON(t byte, p []byte, want byte, v any) error {
	if t == FrameError {
		var we wire.Error
		if err := json.Unmarshal(p, &we); err != nil {
			return fmt.Errorf("malformed error frame: %w", err)
		}
		if we.Hint == "" {
			we.Hint = wire.HintFor(we.Code)
		}
		return &we
	}
	if t != want {
		return fmt.Errorf("unexpected data frame type %d, want %d", t, want)
	}
	if err := json.Unmarshal(p, v); err != nil {
		return fmt.Errorf("malformed data frame %d: %w", t, err)
	}
	return nil
}

// SetDeadline sets the connection's deadline. Call it from the goroutine
// that reads.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rdl = t
	if c.ahead != nil {
		c.ahead.setDeadline(t)
		return c.c.SetWriteDeadline(t)
	}
	return c.c.SetDeadline(t)
}

// SetReadDeadline bounds the wait for the next frame. Call it from the
// goroutine that reads.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rdl = t
	if c.ahead != nil {
		c.ahead.setDeadline(t) // the socket's reads must not fail under the read-ahead
		return nil
	}
	return c.c.SetReadDeadline(t)
}

// Close closes the connection. It may be called from any goroutine, also
// while another reads or writes: theirs fail.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.c.Close()
}

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.c.RemoteAddr() }
