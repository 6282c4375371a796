package dataplane

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cairnbackup/cairn/wire"
)

// The timeouts run in synctest bubbles over net.Pipe: a pipe takes nothing
// a peer does not read, as a socket whose buffers are full, and the
// deadlines and keepalive ticks are on the bubble's clock.

// A peer that stops reading makes the writer fail after its timeout, with
// an error that says so, instead of holding it forever.
// Over TLS too, with its records gathered (recordBatcher): the write that
// blocks is the batcher's, outside TLS.
func TestWriteToAStalledPeerFails(t *testing.T) {
	t.Run("pipe", func(t *testing.T) {
		testWriteToAStalledPeerFails(t, func(t *testing.T) (*Conn, *Conn) {
			a, b := net.Pipe()
			return NewConn(a), NewConn(b)
		})
	})
	t.Run("tls-gathered", func(t *testing.T) {
		testWriteToAStalledPeerFails(t, func(t *testing.T) (*Conn, *Conn) { return tlsPair(t, true, nil) })
	})
}

func testWriteToAStalledPeerFails(t *testing.T, pair func(t *testing.T) (*Conn, *Conn)) {
	synctest.Test(t, func(t *testing.T) {
		w, stalled := pair(t) // stalled never reads
		defer w.Close()
		defer stalled.Close()
		w.SetTimeout(5 * time.Second)
		start := time.Now()
		err := w.WriteFrame(FrameRecords, bytes.Repeat([]byte{1}, 1<<20))
		if err == nil {
			err = w.Flush()
		}
		var se *StallError
		if !errors.As(err, &se) || !se.Write || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("writing to a peer that reads nothing: %v", err)
		}
		if took := time.Since(start); took != 5*time.Second {
			t.Fatalf("the write failed after %s, the timeout is 5s", took)
		}
		if want := "the peer took no data for 5s: it stopped reading"; err.Error() != want {
			t.Fatalf("error %q, want %q", err, want)
		}
	})
}

// Keepalives are never returned and keep a reader waiting while they
// come; a peer that sends nothing at all fails the read at the timeout;
// with and without read-ahead.
func TestKeepaliveHoldsTheReader(t *testing.T) {
	for _, ahead := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			a, b := net.Pipe()
			r, w := NewConn(a), NewConn(b)
			defer r.Close()
			defer w.Close()
			r.SetTimeout(time.Second)
			if ahead {
				r.ReadAhead(2)
			}
			w.Keepalive(100 * time.Millisecond)
			go func() {
				time.Sleep(10 * time.Second) // busy: ten timeouts of keepalives only
				_ = w.WriteJSON(FrameEnd, End{Files: 3})
			}()
			start := time.Now()
			var end End
			if err := r.ReadJSON(FrameEnd, &end); err != nil || end.Files != 3 {
				t.Fatalf("ahead=%v: a frame after keepalives: %+v %v", ahead, end, err)
			}
			if took := time.Since(start); took != 10*time.Second {
				t.Fatalf("ahead=%v: the frame came after %s, sent after 10s", ahead, took)
			}

			c, d := net.Pipe()
			quiet := NewConn(c)
			defer quiet.Close()
			defer d.Close()
			quiet.SetTimeout(time.Second)
			if ahead {
				quiet.ReadAhead(1)
			}
			start = time.Now()
			_, _, err := quiet.ReadFrame()
			var se *StallError
			if !errors.As(err, &se) || se.Write || time.Since(start) != time.Second {
				t.Fatalf("ahead=%v: a silent peer: %v after %s", ahead, err, time.Since(start))
			}
		})
	}
}

// A peer busy with something else (a node waiting for a tape takes no
// data) that sends keepalives holds a pending write open past the
// timeout, when the writer reads ahead; the write goes through once the
// peer reads.
func TestKeepaliveHoldsAPendingWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		w, busy := NewConn(a), NewConn(b)
		defer w.Close()
		defer busy.Close()
		w.SetTimeout(time.Second)
		w.ReadAhead(1)
		busy.Keepalive(100 * time.Millisecond)
		wrote := make(chan error, 1)
		go func() {
			if err := w.WriteFrame(FrameRecords, bytes.Repeat([]byte{2}, 1<<20)); err != nil {
				wrote <- err
				return
			}
			wrote <- w.Flush()
		}()
		time.Sleep(10 * time.Second) // busy: ten timeouts pass while the writer is blocked
		select {
		case err := <-wrote:
			t.Fatalf("the writer gave up while its busy peer sent keepalives: %v", err)
		default:
		}
		typ, p, err := busy.ReadFrame()
		if err != nil || typ != FrameRecords || len(p) != 1<<20 {
			t.Fatalf("the frame: %d, %d bytes, %v", typ, len(p), err)
		}
		if err := <-wrote; err != nil {
			t.Fatalf("a write to a busy peer that sends keepalives: %v", err)
		}
	})
}

// A write that stalled leaves the connection broken: TLS took the records
// the batcher held as sent. Every later write fails at once with that
// error, as TLS's own does, and nothing more goes to the peer: not the
// node's best-effort Error frame after a timeout, which would wait a whole
// timeout again, nor a frame that would reach the peer as a broken record.
func TestWritesAfterAStalledWriteFailAtOnce(t *testing.T) {
	for _, batched := range []bool{false, true} {
		name := "tls"
		if batched {
			name = "tls-gathered"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w, stalled := tlsPair(t, batched, nil)
				w.SetTimeout(5 * time.Second)
				// Under the batch's size: its records wait in the batcher
				// when the socket stops taking them.
				err := w.WriteFrameTail(FrameRecords, nil, bytes.Repeat([]byte{1}, 100<<10))
				var se *StallError
				if !errors.As(err, &se) {
					t.Fatalf("writing to a peer that reads nothing: %v", err)
				}
				start := time.Now()
				if err := w.WriteError(&wire.Error{Code: wire.CodeTimeout, Message: "stalled"}); err == nil {
					t.Fatal("a write after the stall succeeded")
				}
				if took := time.Since(start); took != 0 {
					t.Fatalf("a write after the stall took %s to fail", took)
				}
				stalled.Close()
			})
		})
	}
}
