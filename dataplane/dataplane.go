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
	c   net.Conn
	r   *bufio.Reader
	w   *bufio.Writer
	buf []byte
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
	var hdr [5]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFrame {
		return 0, nil, fmt.Errorf("data frame of %d bytes exceeds %d: the peer is not a Cairn agent or node", n, MaxFrame)
	}
	if cap(c.buf) < int(n) {
		c.buf = make([]byte, n)
	}
	p := c.buf[:n]
	if _, err := io.ReadFull(c.r, p); err != nil {
		return 0, nil, fmt.Errorf("data frame cut short: %w", err)
	}
	return hdr[0], p, nil
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
func (c *Conn) SetDeadline(t time.Time) error { return c.c.SetDeadline(t) }

// SetReadDeadline bounds the wait for the next frame.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.c.RemoteAddr() }
