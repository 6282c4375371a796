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

// Frames taken (TakeFrame) stay intact while the reader goes on, with and
// without read-ahead; with it, a reader that keeps every frame gets
// maxLent of them beyond the read-ahead's buffers and then waits for one
// to be given back, and buffers given back are filled again rather than new
// ones made.
func TestTakenFramesStayTheTakers(t *testing.T) {
	for _, ahead := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "ahead"}[ahead], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { testTakenFrames(t, ahead) })
		})
	}
}

func testTakenFrames(t *testing.T, ahead bool) {
	a, b := net.Pipe()
	w, r := NewConn(a), NewConn(b)
	defer r.Close()
	// Frames of one size: a buffer given back holds any of them.
	frame := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 50<<10) }
	const n = 60
	go func() {
		defer w.Close()
		for i := range n {
			if w.WriteFrame(FrameRecords, frame(i)) != nil || w.Flush() != nil {
				return
			}
		}
	}()
	const depth = 2
	if ahead {
		r.ReadAhead(depth)
	}
	var kept [][]byte
	read := func(i int) error {
		typ, p, err := r.ReadFrame()
		if err != nil {
			return err
		}
		if typ != FrameRecords || !bytes.Equal(p, frame(i)) {
			t.Fatalf("frame %d: type %d, %d bytes", i, typ, len(p))
		}
		taken := r.TakeFrame()
		if &taken[0] != &p[0] || len(taken) != len(p) {
			t.Fatalf("frame %d: TakeFrame gave another payload than ReadFrame", i)
		}
		kept = append(kept, taken)
		return nil
	}
	i := 0
	if ahead {
		// Every frame kept: the read-ahead's own buffers and maxLent
		// more, and then no frame until one comes back.
		for ; i < depth+2+maxLent; i++ {
			if err := read(i); err != nil {
				t.Fatalf("frame %d of those the read-ahead has room for: %v", i, err)
			}
		}
		r.SetReadDeadline(time.Now().Add(time.Second))
		if err := read(i); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a frame beyond every buffer kept: %v", err)
		}
		r.SetReadDeadline(time.Time{})
	}
	for j, p := range kept {
		if !bytes.Equal(p, frame(j)) {
			t.Fatalf("kept frame %d changed", j)
		}
	}
	held := map[*byte]bool{}
	for _, p := range kept {
		held[&p[:1][0]] = true
		r.GiveFrame(p)
	}
	kept = nil
	// From here on each frame is given back once the next is read: the
	// buffers are those given back, and the frames read into them whole.
	var prev []byte
	for ; i < n; i++ {
		if err := read(i); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		p := kept[len(kept)-1]
		kept = kept[:0]
		if prev != nil {
			r.GiveFrame(prev)
		}
		if ahead && !held[&p[:1][0]] {
			t.Fatalf("frame %d came in a new buffer, not one given back", i)
		}
		prev = p
	}
}

// Empty frames cost the read-ahead none of its buffers: one read into a
// buffer not made yet is nil, and was once taken for no buffer at all, so
// that a few of them left the read-ahead none to read the next frame into.
func TestReadAheadKeepsItsBuffersOverEmptyFrames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		w, r := NewConn(a), NewConn(b)
		defer r.Close()
		const empty = 20
		go func() {
			defer w.Close()
			for range empty {
				if w.WriteFrame(FrameRecords, nil) != nil {
					return
				}
			}
			if w.WriteFrame(FrameRecords, []byte("after")) != nil || w.Flush() != nil {
				return
			}
		}()
		r.ReadAhead(1)
		r.SetReadDeadline(time.Now().Add(time.Minute))
		for i := range empty + 1 {
			typ, p, err := r.ReadFrame()
			if err != nil || typ != FrameRecords {
				t.Fatalf("frame %d: type %d, %v", i, typ, err)
			}
			if i == empty && string(p) != "after" {
				t.Fatalf("the frame after the empty ones: %q", p)
			}
		}
	})
}
