package dataplane

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// tlsPair is a data connection over net.Pipe, TLS on both ends as the
// node and the agent make it, handshake done; batched or not.
func tlsPair(t testing.TB, batched bool, wrapClient func(net.Conn) net.Conn) (client, server *Conn) {
	t.Helper()
	cert, _, err := LoadOrCreateCert(t.TempDir(), "sn1")
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	var raw net.Conn = a
	if wrapClient != nil {
		raw = wrapClient(a)
	}
	ccfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	var ctls, stls *tls.Conn
	if batched {
		client, ctls = clientConn(raw, ccfg)
		server = ServerConn(b, ServerConfig(cert))
		stls = server.c.(*tls.Conn)
	} else {
		ctls, stls = tls.Client(raw, ccfg), tls.Server(b, ServerConfig(cert))
		client, server = NewConn(ctls), NewConn(stls)
	}
	var wg sync.WaitGroup
	var serr error
	wg.Add(1)
	go func() { defer wg.Done(); serr = stls.Handshake() }()
	cerr := ctls.Handshake()
	wg.Wait()
	if err := errors.Join(cerr, serr); err != nil {
		t.Fatal(err)
	}
	server.Admit() // as the node does once the ticket holds
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// A frame of 1 MiB goes to the socket in a few writes, not in one per TLS
// record (64 and more), and comes out whole, in order with the frames
// around it.
func TestRecordsOfAFrameGoTogether(t *testing.T) {
	var counted *countingConn
	client, server := tlsPair(t, true, func(c net.Conn) net.Conn { counted = &countingConn{Conn: c}; return counted })
	large := bytes.Repeat([]byte("0123456789abcdef"), (1<<20)/16)
	go func() {
		for range 2 {
			typ, p, err := server.ReadFrame()
			if err != nil || typ != FrameRecords {
				t.Errorf("frame: %d, %v", typ, err)
				return
			}
			_ = p
		}
	}()
	before := counted.writes.Load()
	if err := client.WriteFrameTail(FrameRecords, []byte("head"), large); err != nil {
		t.Fatal(err)
	}
	if err := client.WriteFrame(FrameRecords, []byte("small")); err != nil {
		t.Fatal(err)
	}
	if err := client.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := counted.writes.Load() - before; n > 8 {
		t.Fatalf("1 MiB and a small frame took %d writes to the socket, want a few", n)
	}
}

// Frames of every size cross a batched connection whole and in order, both
// ways at once, with keepalives going meanwhile.
func TestBatchedFramesBothWays(t *testing.T) {
	client, server := tlsPair(t, true, nil)
	client.Keepalive(time.Millisecond)
	server.Keepalive(time.Millisecond)
	sizes := []int{0, 1, 100, 16 << 10, directWrite - 1, directWrite, 300 << 10, 1 << 20, MaxFrame}
	frame := func(i, n int) []byte { return bytes.Repeat([]byte{byte(i + 1)}, n) }
	send := func(c *Conn) error {
		for i, n := range sizes {
			var err error
			if i%2 == 0 {
				err = c.WriteFrameTail(FrameRecords, nil, frame(i, n))
			} else {
				err = c.WriteFrame(FrameRecords, frame(i, n))
			}
			if err != nil {
				return err
			}
		}
		return c.Flush()
	}
	recv := func(c *Conn) error {
		for i, n := range sizes {
			typ, p, err := c.ReadFrame()
			if err != nil {
				return err
			}
			if typ != FrameRecords || !bytes.Equal(p, frame(i, n)) {
				return errors.New("a frame came mangled or out of order")
			}
		}
		return nil
	}
	errs := make(chan error, 3)
	go func() { errs <- send(client) }()
	go func() { errs <- send(server) }()
	go func() { errs <- recv(server) }()
	if err := recv(client); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkTLSBatching sends 64 MiB in the frames a restore sends (1 MiB
// of records, WriteFrameTail) over TLS on loopback, with TLS records written
// one by one and gathered; cpu-ms/GiB is both ends together.
func BenchmarkTLSBatching(b *testing.B) {
	for _, batched := range []bool{false, true} {
		name := "one-write-per-record"
		if batched {
			name = "gathered"
		}
		b.Run(name, func(b *testing.B) {
			cert, _, err := LoadOrCreateCert(b.TempDir(), "sn1")
			if err != nil {
				b.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			const total = 64 << 20
			tail := bytes.Repeat([]byte{7}, 1<<20)
			done := make(chan struct{})
			go func() {
				raw, err := ln.Accept()
				if err != nil {
					return
				}
				var c *Conn
				if batched {
					c = ServerConn(raw, ServerConfig(cert))
					c.Admit()
				} else {
					c = NewConn(tls.Server(raw, ServerConfig(cert)))
				}
				defer c.Close()
				got := 0
				for {
					_, p, err := c.ReadFrame()
					if err != nil {
						return
					}
					if got += len(p); got >= total+len("head")*total/len(tail) {
						got = 0
						done <- struct{}{}
					}
				}
			}()
			raw, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
			var c *Conn
			if batched {
				c, _ = clientConn(raw, cfg)
			} else {
				c = NewConn(tls.Client(raw, cfg))
			}
			defer c.Close()
			// The handshake, outside the timing.
			if err := c.WriteFrame(FrameRecords, nil); err != nil {
				b.Fatal(err)
			}
			if err := c.Flush(); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(total)
			b.ResetTimer()
			cpu0 := cpuTime(b)
			for range b.N {
				for n := 0; n < total; n += len(tail) {
					if err := c.WriteFrameTail(FrameRecords, []byte("head"), tail); err != nil {
						b.Fatal(err)
					}
				}
				<-done
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-cpu0).Milliseconds())*float64(1<<30)/float64(total)/float64(b.N), "cpu-ms/GiB")
			b.StartTimer()
		})
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// The handshake runs inside the first write when nothing ran it before
// (the node's side, when it writes first): its messages go at once, not
// gathered for a send that waits for the peer's answer to them.
func TestHandshakeInsideAGatheredWrite(t *testing.T) {
	cert, _, err := LoadOrCreateCert(t.TempDir(), "sn1")
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	client, _ := clientConn(a, &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true})
	server := ServerConn(b, ServerConfig(cert))
	defer client.Close()
	defer server.Close()
	errc := make(chan error, 1)
	go func() {
		_, p, err := client.ReadFrame()
		if err == nil && string(p) != "first" {
			err = errors.New("frame mangled")
		}
		errc <- err
	}()
	if err := server.WriteFrame(FrameRecords, []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := server.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
