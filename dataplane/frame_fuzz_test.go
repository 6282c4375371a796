package dataplane

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// streamConn is a Conn that reads data, then sees the peer close: what a
// node's data port reads from whoever connects.
func streamConn(t testing.TB, data []byte) *Conn { return NewConn(sentConn(t, data)) }

// sentConn is a connection whose peer sends data and closes.
func sentConn(t testing.TB, data []byte) net.Conn {
	a, b := net.Pipe()
	go func() {
		b.Write(data)
		b.Close()
	}()
	t.Cleanup(func() { a.Close() })
	return a
}

func frame(t byte, payload []byte) []byte {
	out := []byte{t, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(len(payload)))
	return append(out, payload...)
}

func jsonFrame(t byte, v any) []byte {
	b, _ := json.Marshal(v)
	return frame(t, b)
}

// TestFrameBufferGrowsWithTheBytes: a frame's length comes from the peer
// before anything proves who it is. A reader that allocated the stated
// length up front gave 8 MiB to each connection that sent 5 bytes, so a
// few hundred such connections held gigabytes.
func TestFrameBufferGrowsWithTheBytes(t *testing.T) {
	c := streamConn(t, []byte{FrameRecords, 0, 0x7f, 0xff, 0xff}) // 8 MiB - 1, then the peer hangs up
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := c.ReadFrame()
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("err = %v, want a frame cut short", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("5 bytes of a frame header made the reader allocate %d bytes", grew)
	}
	// A whole large frame still arrives whole.
	big := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16)
	c = streamConn(t, frame(FrameRecords, big))
	typ, p, err := c.ReadFrame()
	if err != nil || typ != FrameRecords || !bytes.Equal(p, big) {
		t.Fatalf("large frame: type %d, %d bytes, %v", typ, len(p), err)
	}
	// A frame just past a power of two, as a stored block of 1 MiB with
	// its head, gets a buffer of its size, not a quarter more.
	block := bytes.Repeat([]byte{7}, 1<<20+40)
	c = streamConn(t, frame(FrameStoredBlock, block))
	if _, p, err = c.ReadFrame(); err != nil || !bytes.Equal(p, block) || cap(p) > len(block)+frameChunk {
		t.Fatalf("a frame of %d bytes: %d read into a buffer of %d, %v", len(block), len(p), cap(p), err)
	}
}

// frameTypes is what each frame type's payload decodes into.
var frameTypes = map[byte]func() any{
	FrameHello: func() any { return new(Hello) }, FrameAccept: func() any { return new(Accept) },
	FrameEnd: func() any { return new(End) }, FrameResult: func() any { return new(Result) },
	FrameReadStart: func() any { return new(ReadStart) }, FrameDamaged: func() any { return new(Damaged) },
	FrameReadDone: func() any { return new(ReadDone) },
}

func seedFrames(f *testing.F) {
	var all []byte
	for _, fr := range [][]byte{
		jsonFrame(FrameHello, Hello{V: 1, Ticket: "eyJ2IjoxfQ.c2ln", Client: "web", Version: "1.0"}),
		jsonFrame(FrameAccept, Accept{V: Version, JobID: 7, Node: "sn1"}),
		frame(FrameRecords, []byte{1, 5, 'h', 'e', 'l', 'l', 'o'}),
		jsonFrame(FrameEnd, End{Warnings: []string{"w"}, Entries: 3, Files: 2, Bytes: 100}),
		jsonFrame(FrameResult, Result{JobID: 7, Stats: wire.SessionStats{Entries: 3}, Volumes: []string{"Default-0001"}}),
		jsonFrame(FrameError, wire.Errorf(wire.CodeTicketRejected, "", "no")),
		jsonFrame(FrameReadStart, ReadStart{SessionID: uuid.New(), Entries: []ReadEntry{{Path: "/a"}, {Path: "/", Ancestor: true}}}),
		jsonFrame(FrameEnd, RestoreEnd{Reads: 1, Entries: 2}),
		jsonFrame(FrameDamaged, Damaged{SessionID: uuid.New(), Seq: 3, Reason: "bad block", Paths: []fileindex.Path{"/a"}}),
		jsonFrame(FrameReadDone, ReadDone{SessionID: uuid.New(), Entries: 2}),
		frame(FrameReadStartPacked, PackReadStart(&ReadStart{SessionID: uuid.New(), Entries: []ReadEntry{{Path: "/a"}, {Path: "/ab", Block: true}}})),
		frame(FrameStoredBlock, append(AppendStoredHead(nil, 1, 7), 0x28, 0xb5, 0x2f, 0xfd)),
	} {
		f.Add(fr, false)
		all = append(all, fr...)
	}
	f.Add(all, false)
	f.Add(all, true)
	f.Add([]byte{FrameRecords, 0xff, 0xff, 0xff, 0xff}, false)
	f.Add([]byte{FrameRecords, 0, 0x7f, 0xff, 0xff}, true)
}

// FuzzReadFrames reads arbitrary bytes as a data connection's frames, with
// and without read-ahead, and decodes each frame's payload as its type's
// JSON: every malformed stream ends in an error, never a panic or an
// allocation past what arrived.
func FuzzReadFrames(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, data []byte, ahead bool) {
		c := streamConn(t, data)
		if ahead {
			c.ReadAhead(2)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		read := 0 // bytes of the frames read so far
		for {
			typ, p, err := c.ReadFrame()
			if err != nil {
				if err == io.EOF && read != len(data) {
					t.Fatalf("clean end after %d of %d bytes", read, len(data))
				}
				return
			}
			if len(p) > MaxFrame || read+5+len(p) > len(data) {
				t.Fatalf("frame of %d bytes from a stream of %d", len(p), len(data))
			}
			read += 5 + len(p)
			if newV, ok := frameTypes[typ]; ok {
				_ = DecodeJSON(typ, p, typ, newV())
			}
			if typ == FrameReadStartPacked {
				_, _ = UnpackReadStart(p)
			}
			if typ == FrameStoredBlock {
				if codec, n, data, err := ParseStoredBlock(p); err == nil && (codec == 0 || n <= 0 || n > MaxFrame || len(data) >= len(p)) {
					t.Fatalf("stored block %x parsed to codec %d, %d bytes, %d compressed", p, codec, n, len(data))
				}
			}
			if typ == FrameError {
				var we *wire.Error
				if err := DecodeJSON(typ, p, FrameAccept, new(Accept)); err == nil || (errors.As(err, &we) && we.Hint == "" && we.Code != "") && wire.HintFor(we.Code) != "" {
					t.Fatalf("error frame %q decoded to %v", p, err)
				}
			}
		}
	})
}

// FuzzHello reads an arbitrary first frame as a storage node does: a Hello
// whose ticket is verified with a real key. Only a ticket the key signed is
// accepted, and every refusal is a *ticket.Error or a frame error.
func FuzzHello(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	tk, err := ticket.Sign(ticket.Ticket{JobID: 7, Client: "web", Node: "sn1", Op: ticket.OpBackup,
		Issued: now, Expires: now.Add(time.Hour)}, priv)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(jsonFrame(FrameHello, Hello{V: 1, Ticket: tk, Client: "web", Version: "1.0"}))
	f.Add(jsonFrame(FrameHello, Hello{V: 1, Ticket: tk[:len(tk)-3] + "AAA"}))
	f.Add(jsonFrame(FrameHello, Hello{}))
	f.Add(jsonFrame(FrameError, wire.Errorf(wire.CodeBadRequest, "", "x")))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := streamConn(t, data)
		var h Hello
		if err := c.ReadJSON(FrameHello, &h); err != nil {
			return
		}
		got, err := ticket.Verify(h.Ticket, pub, now, time.Second)
		if err != nil {
			var te *ticket.Error
			if !errors.As(err, &te) {
				t.Fatalf("refusal %T %v is not a ticket error", err, err)
			}
			return
		}
		if h.Ticket != tk || got.JobID != 7 || got.Node != "sn1" {
			t.Fatalf("accepted a ticket the key did not sign: %q", h.Ticket)
		}
	})
}
