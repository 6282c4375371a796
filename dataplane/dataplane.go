// Package dataplane is the direct stream between an agent and a storage
// node: bulk data never crosses NATS. The node listens with TLS on its data
// port; its certificate is self-signed and pinned: the servers learn its
// SHA-256 when the node registers and hand it to the agent with the job.
//
// A connection carries frames: a type byte, a 4-byte big-endian length and
// the payload. The agent opens with Hello (the job ticket); the node answers
// Accept or Error. A backup then sends Records frames (whole stream records,
// media/volume encoding) and End; the node answers Result once the session is
// durable and in the catalog. A restore sends Read frames; the node answers
// each with Records and Damaged frames and a ReadDone, and the agent closes
// with End. An Error frame from either side ends the connection.
package dataplane

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/wire"
)

// Frame types.
const (
	FrameHello    byte = 1
	FrameAccept   byte = 2
	FrameRecords  byte = 3
	FrameEnd      byte = 4
	FrameResult   byte = 5
	FrameError    byte = 6
	FrameRead     byte = 7
	FrameDamaged  byte = 8
	FrameReadDone byte = 9
)

// MaxFrame bounds a frame's payload so a malformed length cannot make a
// peer allocate without limit.
const MaxFrame = 8 << 20

// Hello opens a connection.
type Hello struct {
	V       int    `json:"v"`
	Ticket  string `json:"ticket"`
	Client  string `json:"client"`
	Version string `json:"version"`
}

// Accept answers a valid Hello.
type Accept struct {
	JobID uint64 `json:"job_id"`
	Node  string `json:"node"`
}

// End closes the agent's side: for a backup it says the stream is complete.
type End struct {
	Warnings []string `json:"warnings,omitempty"`
	Entries  int64    `json:"entries"`
	Files    int64    `json:"files"`
	Bytes    int64    `json:"bytes"`
}

// Result answers a backup's End once the session is committed.
type Result struct {
	JobID   uint64            `json:"job_id"`
	Stats   wire.SessionStats `json:"stats"`
	Volumes []string          `json:"volumes"`
}

// Damaged reports entries of a Read whose data was lost to a bad block.
type Damaged struct {
	SessionID uuid.UUID `json:"session_id"`
	Seq       uint64    `json:"seq"`
	Reason    string    `json:"reason"`
	Paths     []string  `json:"paths"`
}

// ReadDone says a Read was fully served.
type ReadDone struct {
	SessionID uuid.UUID `json:"session_id"`
	Entries   int       `json:"entries"`
}

// Conn is one data connection.
type Conn struct {
	c     net.Conn
	r     *bufio.Reader
	w     *bufio.Writer
	buf   []byte
	ahead *readAhead // nil unless ReadAhead was called
}

// NewConn wraps an established (TLS) connection.
func NewConn(c net.Conn) *Conn {
	return &Conn{c: c, r: bufio.NewReaderSize(c, 256<<10), w: bufio.NewWriterSize(c, 256<<10)}
}

// WriteFrame buffers one frame; Flush sends it.
func (c *Conn) WriteFrame(t byte, payload []byte) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("data frame of %d bytes exceeds %d", len(payload), MaxFrame)
	}
	var hdr [5]byte
	hdr[0] = t
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if _, err := c.w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := c.w.Write(payload)
	return err
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
func (c *Conn) Flush() error { return c.w.Flush() }

// ReadFrame reads the next frame. The payload is valid until the next call.
func (c *Conn) ReadFrame() (byte, []byte, error) {
	if c.ahead != nil {
		return c.ahead.next()
	}
	t, p, err := c.readFrame(c.buf)
	c.buf = p
	return t, p, err
}

// readFrame reads the next frame into buf, grown when it is too small.
func (c *Conn) readFrame(buf []byte) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return 0, buf, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFrame {
		return 0, buf, fmt.Errorf("data frame of %d bytes exceeds %d: the peer is not a Cairn agent or node", n, MaxFrame)
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
		p = slices.Grow(p, chunk)
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
// should speed up; the goroutine ends when the connection is closed or a
// read fails. It holds up to depth+2 frame buffers.
func (c *Conn) ReadAhead(depth int) {
	if c.ahead != nil {
		return
	}
	depth = max(depth, 1)
	a := &readAhead{
		frames: make(chan aheadFrame, depth),
		free:   make(chan []byte, depth+2),
		done:   make(chan struct{}),
	}
	for range depth + 1 {
		a.free <- nil
	}
	a.free <- c.buf
	c.buf = nil
	c.ahead = a
	go func() {
		for {
			var buf []byte
			select {
			case buf = <-a.free:
			case <-a.done:
				return
			}
			t, p, err := c.readFrame(buf)
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

// readAhead is the state of ReadAhead. Its goroutine owns the bufio
// reader; the one that calls ReadFrame owns last, err and the deadline.
type readAhead struct {
	frames chan aheadFrame
	free   chan []byte // buffers the goroutine may fill
	done   chan struct{}
	once   sync.Once

	last     []byte // the payload ReadFrame returned last
	err      error  // the read error that ended the goroutine
	mu       sync.Mutex
	deadline time.Time
}

type aheadFrame struct {
	t   byte
	p   []byte
	err error
}

func (a *readAhead) next() (byte, []byte, error) {
	if a.err != nil {
		return 0, nil, a.err
	}
	if a.last != nil {
		a.free <- a.last // never blocks: free has room for every buffer
		a.last = nil
	}
	a.mu.Lock()
	d := a.deadline
	a.mu.Unlock()
	var expired <-chan time.Time
	if !d.IsZero() {
		t := time.NewTimer(time.Until(d))
		defer t.Stop()
		expired = t.C
	}
	select {
	case f := <-a.frames:
		if f.err != nil {
			a.err = f.err
			return 0, nil, f.err
		}
		a.last = f.p
		return f.t, f.p, nil
	case <-expired:
		return 0, nil, fmt.Errorf("read data frame: %w", os.ErrDeadlineExceeded)
	case <-a.done:
		return 0, nil, fmt.Errorf("read data frame: %w", net.ErrClosed)
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

// SetDeadline sets the connection's deadline.
func (c *Conn) SetDeadline(t time.Time) error {
	if c.ahead != nil {
		c.ahead.setDeadline(t)
		return c.c.SetWriteDeadline(t)
	}
	return c.c.SetDeadline(t)
}

// SetReadDeadline bounds the wait for the next frame.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.ahead != nil {
		c.ahead.setDeadline(t) // the socket's reads must not fail under the read-ahead
		return nil
	}
	return c.c.SetReadDeadline(t)
}

// Close closes the connection.
func (c *Conn) Close() error {
	if c.ahead != nil {
		c.ahead.once.Do(func() { close(c.ahead.done) })
	}
	return c.c.Close()
}

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.c.RemoteAddr() }
