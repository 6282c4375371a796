package dataplane

import (
	"bufio"
	"crypto/tls"
	"net"
	"sync"
)

// recordBatcher sits between a TLS connection and its socket. TLS cuts what
// it is given into records of at most 16 KiB and writes each with a system
// call of its own; while Conn writes a frame, the batcher gathers those
// records and sends them in one call, and it reads the socket in large
// pieces for the records coming in. On loopback both ends together took
// 1.15-1.24 CPU seconds per GiB of restore frames, against 1.48-1.78 with a
// write per record (BenchmarkTLSBatching). Outside a frame, and until the
// handshake is done, writes go straight through: the handshake, alerts, a
// key update.
type recordBatcher struct {
	net.Conn
	in *bufio.Reader

	mu   sync.Mutex // TLS writes under its own lock; Conn gathers under wmu
	hold bool
	out  []byte // allocated at the first gathering, after the handshake
	// err is the first failed write to the socket. TLS took the records
	// it held as sent, so the stream is broken from there on: every
	// later write fails with it, as TLS itself would after a failed write.
	err error

	tls    *tls.Conn // the connection the batcher is under
	shaken bool      // its handshake is done; under Conn's wmu
}

// handshakeDone reports whether the TLS connection has done its handshake,
// after which its writes may be gathered.
func (b *recordBatcher) handshakeDone() bool {
	if !b.shaken {
		b.shaken = b.tls.ConnectionState().HandshakeComplete
	}
	return b.shaken
}

// batchSize bounds what is gathered: Conn's write buffer, flushed at once,
// is 256 KiB of frames, which TLS makes into 16 records and their overhead.
const batchSize = 272 << 10

func newRecordBatcher(c net.Conn, readBuffer int) *recordBatcher {
	return &recordBatcher{Conn: c, in: bufio.NewReaderSize(c, readBuffer)}
}

// admit gives the batcher a stream's read buffer (Conn.Admit). TLS holds
// what it read from the socket already; the old buffer's bytes are kept.
func (b *recordBatcher) admit() {
	if b.in.Size() < streamBuffer {
		b.in = bufio.NewReaderSize(keepBuffered(b.in, b.Conn), streamBuffer)
	}
}

func (b *recordBatcher) Read(p []byte) (int, error) { return b.in.Read(p) }

func (b *recordBatcher) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if !b.hold {
		n, err := b.Conn.Write(p)
		b.err = err
		return n, err
	}
	if len(b.out)+len(p) > cap(b.out) {
		if err := b.sendLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(b.out) {
			n, err := b.Conn.Write(p)
			b.err = err
			return n, err
		}
	}
	b.out = append(b.out, p...)
	return len(p), nil
}

func (b *recordBatcher) sendLocked() error {
	if b.err != nil || len(b.out) == 0 {
		return b.err
	}
	_, b.err = b.Conn.Write(b.out)
	b.out = b.out[:0]
	return b.err
}

// gather starts holding TLS records; send sends what was held and stops.
func (b *recordBatcher) gather() {
	b.mu.Lock()
	b.hold = true
	if b.out == nil {
		b.out = make([]byte, 0, batchSize)
	}
	b.mu.Unlock()
}

func (b *recordBatcher) send() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hold = false
	return b.sendLocked()
}

// ServerConn is the storage node's side of an accepted data connection; the
// TLS handshake runs on its first read or write.
func ServerConn(raw net.Conn, cfg *tls.Config) *Conn {
	b := newRecordBatcher(raw, strangerBuffer)
	b.tls = tls.Server(b, cfg)
	c := newStrangerConn(b.tls)
	c.batch = b
	return c
}

// clientConn is the agent's side, before the handshake.
func clientConn(raw net.Conn, cfg *tls.Config) (*Conn, *tls.Conn) {
	b := newRecordBatcher(raw, streamBuffer)
	b.tls = tls.Client(b, cfg)
	c := NewConn(b.tls)
	c.batch = b
	return c, b.tls
}
