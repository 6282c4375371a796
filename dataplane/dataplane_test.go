package dataplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/wire"
)

// listen opens a data port as a storage node does: TCP, each connection
// taking TLS with the node's certificate from dir.
func listen(t *testing.T, dir string) (net.Listener, string, *tls.Config) {
	t.Helper()
	cert, fp, err := LoadOrCreateCert(dir, "sn1")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, fp, ServerConfig(cert)
}

func TestFramesOverPinnedTLS(t *testing.T) {
	dir := t.TempDir()
	ln, fp, cfg := listen(t, dir)
	_, fp2, err := LoadOrCreateCert(dir, "sn1")
	if err != nil || fp2 != fp {
		t.Fatalf("certificate not reused: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		conn := ServerConn(c, cfg)
		defer conn.Close()
		var h Hello
		if err := conn.ReadJSON(FrameHello, &h); err != nil {
			done <- err
			return
		}
		conn.Admit() // as the node does once the ticket holds
		typ, p, err := conn.ReadFrame()
		if err != nil || typ != FrameRecords || !bytes.Equal(p, bytes.Repeat([]byte{7}, 1<<20)) {
			done <- errors.New("records frame mangled")
			return
		}
		done <- conn.WriteError(wire.Errorf(wire.CodePoolFull, "", "pool %s full", h.Client))
	}()
	conn, err := Dial(context.Background(), ln.Addr().String(), fp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.WriteJSON(FrameHello, Hello{V: 1, Client: "web"}); err != nil {
		t.Fatal(err)
	}
	if err := conn.WriteFrame(FrameRecords, bytes.Repeat([]byte{7}, 1<<20)); err != nil {
		t.Fatal(err)
	}
	conn.Flush()
	err = conn.ReadJSON(FrameResult, &Result{})
	if wire.CodeOf(err) != wire.CodePoolFull || !strings.Contains(err.Error(), "web") {
		t.Fatalf("err = %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestDialRefusesWrongCertificate(t *testing.T) {
	ln, _, cfg := listen(t, t.TempDir())
	_, other, _ := LoadOrCreateCert(t.TempDir(), "impostor")
	go func() {
		c, err := ln.Accept()
		if err == nil {
			tls.Server(c, cfg).Handshake()
			c.Close()
		}
	}()
	_, err := Dial(context.Background(), ln.Addr().String(), other)
	if err == nil || !strings.Contains(err.Error(), "different node") {
		t.Fatalf("err = %v", err)
	}
}

func TestReadFrameRejectsHugeLength(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	go b.Write([]byte{FrameRecords, 0xff, 0xff, 0xff, 0xff})
	_, _, err := NewConn(a).ReadFrame()
	if err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("err = %v", err)
	}
}

// WriteFrameTail sends one frame of head and tail, whether the tail goes
// through the write buffer (small) or past it (large), in order with the
// frames buffered before it, and refuses a frame over MaxFrame.
func TestWriteFrameTail(t *testing.T) {
	a, b := net.Pipe()
	w, r := NewConn(a), NewConn(b)
	defer w.Close()
	defer r.Close()
	small, large := []byte("tail"), bytes.Repeat([]byte("0123456789abcdef"), directWrite/16*4)
	errc := make(chan error, 1)
	go func() {
		errc <- errors.Join(
			w.WriteFrame(FrameRecords, []byte("buffered")),
			w.WriteFrameTail(FrameRecords, []byte("head"), small),
			w.WriteFrameTail(FrameRecords, []byte("head"), large),
			w.WriteFrameTail(FrameRecords, nil, large),
		)
	}()
	for i, want := range [][]byte{[]byte("buffered"), append([]byte("head"), small...), append([]byte("head"), large...), large} {
		typ, p, err := r.ReadFrame()
		if err != nil || typ != FrameRecords || !bytes.Equal(p, want) {
			t.Fatalf("frame %d: type %d, %d bytes (want %d), %v", i, typ, len(p), len(want), err)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrameTail(FrameRecords, make([]byte, 1), make([]byte, MaxFrame)); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("a frame over MaxFrame: %v", err)
	}
}
