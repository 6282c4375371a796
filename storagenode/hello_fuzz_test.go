package storagenode

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

func helloFrame(h dataplane.Hello) []byte {
	b, _ := json.Marshal(h)
	out := []byte{dataplane.FrameHello, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	return append(out, b...)
}

// FuzzServeConnHello hands a real node's connection handler arbitrary bytes
// where the agent sends its Hello. No ticket the fuzzer can
// make is valid (the seeds hold tickets for another node, for no known
// operation, expired, and one already used), so every connection must end
// with one Error frame that refuses it, and the node must not panic.
func FuzzServeConnHello(f *testing.F) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := DefaultConfig()
	cfg.ID = "sn1"
	cfg.DataDir = f.TempDir()
	cfg.NATSURL = "nats://127.0.0.1:1" // never dialled: the node is not started
	cfg.Pools = []PoolConfig{{Name: "Default", Dir: f.TempDir()}}
	cfg.HelloTimeout = 5 * time.Second
	n, err := New(cfg, logger, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.guard.Close() })
	signer := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, ed25519.SeedSize))
	n.ticketKeys = []ed25519.PublicKey{signer.Public().(ed25519.PublicKey)}
	// The node asked the servers for the group's keys a moment ago (it
	// has no NATS here), so a ticket that does not verify is refused
	// without asking again.
	n.keysRefreshed = time.Now().Add(100 * 365 * 24 * time.Hour)

	now := time.Now()
	sign := func(tk ticket.Ticket) string {
		if tk.Issued.IsZero() {
			tk.Issued, tk.Expires = now.Add(-time.Minute), now.Add(time.Hour)
		}
		s, err := ticket.Sign(tk, signer)
		if err != nil {
			f.Fatal(err)
		}
		return s
	}
	used := ticket.Ticket{V: 1, ID: "used", JobID: 4, Client: "web", Node: "sn1", Op: ticket.OpBackup, Issued: now.Add(-time.Minute), Expires: now.Add(time.Hour)}
	if err := n.guard.Use(used, now); err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		sign(ticket.Ticket{JobID: 1, Client: "web", Node: "sn2", Op: ticket.OpBackup}),
		sign(ticket.Ticket{JobID: 2, Client: "web", Node: "sn1", Op: "format"}),
		sign(ticket.Ticket{JobID: 3, Client: "web", Node: "sn1", Op: ticket.OpRestore, Issued: now.Add(-3 * time.Hour), Expires: now.Add(-2 * time.Hour)}),
		sign(used),
		"",
	} {
		f.Add(helloFrame(dataplane.Hello{V: dataplane.Version, Ticket: s, Client: "web", Version: "1"}))
		f.Add(helloFrame(dataplane.Hello{V: 1, Ticket: s, Client: "web", Version: "1"}))
	}
	f.Add([]byte{dataplane.FrameRecords, 0, 0, 0, 1, 0})
	f.Add([]byte{dataplane.FrameHello, 0xff, 0xff, 0xff, 0xff})

	f.Fuzz(func(t *testing.T, data []byte) {
		conn := &streamConn{in: bytes.NewReader(data)}
		n.serveConn(context.Background(), dataplane.NewConn(conn), func() {})
		answer := dataplane.NewConn(&streamConn{in: bytes.NewReader(conn.out.Bytes())})
		err := answer.ReadJSON(dataplane.FrameAccept, new(dataplane.Accept))
		switch wire.CodeOf(err) {
		case wire.CodeBadRequest, wire.CodeTicketRejected, wire.CodeUnsupportedVersion:
		default:
			t.Fatalf("the node answered %v (code %q) to %q", err, wire.CodeOf(err), data)
		}
		if _, _, err := answer.ReadFrame(); err != io.EOF {
			t.Fatalf("the node said more after refusing %q: %v", data, err)
		}
	})
}

// streamConn is a connection whose peer sent in and then said no more;
// what the node writes lands in out. The handler under test reads and
// writes on its own goroutine, so a fuzz input runs without sockets.
type streamConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *streamConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *streamConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *streamConn) Close() error                { return nil }
func (c *streamConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7020}
}
func (c *streamConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *streamConn) SetDeadline(t time.Time) error      { return nil }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return nil }
