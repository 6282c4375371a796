package dataplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"os"
	"testing"
	"time"
)

// pair is a TLS connection over loopback: real sockets, whose buffers fill
// when a side stops reading.
func pair(t *testing.T) (client, server *Conn) {
	t.Helper()
	ln, fp := listen(t, t.TempDir())
	accepted := make(chan *Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		if err := c.(*tls.Conn).Handshake(); err != nil {
			close(accepted)
			return
		}
		accepted <- NewConn(c)
	}()
	client, err := Dial(context.Background(), ln.Addr().String(), fp)
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// A peer that stops reading makes the writer fail within its timeout,
// with an error that says so, instead of holding it forever.
func TestWriteToAStalledPeerFails(t *testing.T) {
	w, _ := pair(t) // the server side never reads
	w.SetTimeout(200 * time.Millisecond)
	start := time.Now()
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		if err = w.WriteFrame(FrameRecords, bytes.Repeat([]byte{1}, 1<<20)); err == nil {
			err = w.Flush()
		}
	}
	var se *StallError
	if !errors.As(err, &se) || !se.Write || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writing to a peer that reads nothing: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the write failed after %s, the timeout is 200ms", took)
	}
	t.Logf("%v", err)
}

// Keepalives are never returned, keep a reader waiting while they come,
// and a peer that sends nothing at all fails the read within the timeout;
// with and without read-ahead.
func TestKeepaliveHoldsTheReader(t *testing.T) {
	for _, ahead := range []bool{false, true} {
		r, w := pair(t)
		r.SetTimeout(500 * time.Millisecond)
		if ahead {
			r.ReadAhead(2)
		}
		w.Keepalive(25 * time.Millisecond)
		sent := make(chan error, 1)
		go func() {
			time.Sleep(1500 * time.Millisecond) // a busy peer: three timeouts of keepalives only
			sent <- w.WriteJSON(FrameEnd, End{Files: 3})
		}()
		var end End
		if err := r.ReadJSON(FrameEnd, &end); err != nil || end.Files != 3 {
			t.Fatalf("ahead=%v: a frame after keepalives: %+v %v", ahead, end, err)
		}
		if err := <-sent; err != nil {
			t.Fatal(err)
		}

		quiet, _ := pair(t)
		quiet.SetTimeout(300 * time.Millisecond)
		if ahead {
			quiet.ReadAhead(1)
		}
		start := time.Now()
		_, _, err := quiet.ReadFrame()
		var se *StallError
		if !errors.As(err, &se) || se.Write || time.Since(start) > 5*time.Second {
			t.Fatalf("ahead=%v: a silent peer: %v after %s", ahead, err, time.Since(start))
		}
	}
}

// A peer busy with something else (a node waiting for a tape takes no
// data) but sending keepalives holds a pending write open past the
// timeout, when the writer reads ahead.
func TestKeepaliveHoldsAPendingWrite(t *testing.T) {
	w, busy := pair(t)
	w.SetTimeout(500 * time.Millisecond)
	w.ReadAhead(1)
	busy.Keepalive(25 * time.Millisecond)
	busy.SetTimeout(10 * time.Second) // a writer that failed must not hang the test
	const frames = 24
	wrote := make(chan error, 1)
	go func() {
		for range frames {
			if err := w.WriteFrame(FrameRecords, bytes.Repeat([]byte{2}, 1<<20)); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- w.Flush()
	}()
	time.Sleep(1500 * time.Millisecond) // a busy peer: three timeouts pass while the writer is blocked
	select {
	case err := <-wrote:
		t.Fatalf("the writer gave up while its busy peer sent keepalives: %v", err)
	default:
	}
	for i := range frames {
		typ, p, err := busy.ReadFrame()
		if err != nil || typ != FrameRecords || len(p) != 1<<20 {
			t.Fatalf("frame %d: %d %v", i, typ, err)
		}
	}
	if err := <-wrote; err != nil {
		t.Fatalf("a write to a busy peer that sends keepalives: %v", err)
	}
}
