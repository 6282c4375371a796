package dataplane

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"testing/synctest"
	"time"
)

// With read-ahead, frames come in order, a payload stays intact until the
// next ReadFrame while the goroutine fills the others, a read deadline
// bounds the wait for a frame without breaking the stream, and the end of
// the stream is reported, every time it is asked for.
//
// It runs in a synctest bubble: synctest.Wait lets the read-ahead goroutine
// go as far as it can before a payload is checked, and the deadline is on
// the bubble's clock.
func TestReadAhead(t *testing.T) {
	synctest.Test(t, testReadAhead)
}

func testReadAhead(t *testing.T) {
	a, b := net.Pipe()
	w, r := NewConn(a), NewConn(b)
	defer r.Close()
	frame := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 1+i*7919%(300<<10)) }
	const n = 40
	sent := make(chan struct{})
	go func() {
		defer w.Close()
		for i := range n {
			if err := w.WriteFrame(FrameRecords, frame(i)); err != nil {
				t.Error(err)
				return
			}
			if err := w.Flush(); err != nil {
				t.Error(err)
				return
			}
		}
		<-sent
		if err := w.WriteJSON(FrameEnd, End{Files: 7}); err != nil {
			t.Error(err)
		}
	}()
	// A frame before ReadAhead is read the plain way.
	if typ, p, err := r.ReadFrame(); err != nil || typ != FrameRecords || !bytes.Equal(p, frame(0)) {
		t.Fatalf("frame 0: %d %v", typ, err)
	}
	r.ReadAhead(2)
	for i := 1; i < n; i++ {
		typ, p, err := r.ReadFrame()
		if err != nil || typ != FrameRecords {
			t.Fatalf("frame %d: type %d, %v", i, typ, err)
		}
		synctest.Wait() // let the goroutine read ahead over p if it would
		if !bytes.Equal(p, frame(i)) {
			t.Fatalf("frame %d mangled", i)
		}
	}
	mustNot := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustNot(r.SetReadDeadline(time.Now().Add(20 * time.Millisecond)))
	if _, _, err := r.ReadFrame(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("no frame before the deadline: %v", err)
	}
	mustNot(r.SetReadDeadline(time.Time{}))
	close(sent)
	var end End
	if err := r.ReadJSON(FrameEnd, &end); err != nil || end.Files != 7 {
		t.Fatalf("the stream goes on after a deadline: %+v %v", end, err)
	}
	for range 2 {
		if _, _, err := r.ReadFrame(); !errors.Is(err, io.EOF) {
			t.Fatalf("end of stream: %v", err)
		}
	}
}

// Close ends a read-ahead that waits for a frame.
func TestReadAheadClose(t *testing.T) {
	synctest.Test(t, testReadAheadClose)
}

func testReadAheadClose(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	r := NewConn(b)
	r.ReadAhead(1)
	done := make(chan error, 1)
	go func() {
		_, _, err := r.ReadFrame()
		done <- err
	}()
	synctest.Wait() // ReadFrame waits for the read-ahead
	r.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a frame from a closed connection")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrame still waits after Close")
	}
}
