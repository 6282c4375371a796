package dataplane

import (
	"bytes"
	"strings"
	"testing"
)

// strangerConn is a server's connection before Admit that reads data,
// then sees the peer close.
func strangerConn(t *testing.T, data []byte) *Conn { return newStrangerConn(sentConn(t, data)) }

// Until it is admitted, a server's connection takes no frame larger than a
// hello needs, and holds small buffers; admitted, it takes a stream's
// frames.
func TestStrangersSendSmallFrames(t *testing.T) {
	big := bytes.Repeat([]byte{7}, strangerFrame+1)
	c := strangerConn(t, frame(FrameHello, big))
	if c.r.Size() > strangerBuffer || c.w.Size() > strangerBuffer {
		t.Fatalf("a stranger's connection holds buffers of %d and %d bytes", c.r.Size(), c.w.Size())
	}
	if _, _, err := c.ReadFrame(); err == nil || !strings.Contains(err.Error(), "exceeds 65536") {
		t.Fatalf("a frame of %d bytes from a stranger: %v; want it refused", len(big), err)
	}
	c = strangerConn(t, frame(FrameRecords, big))
	c.Admit()
	if c.r.Size() != streamBuffer || c.w.Size() != streamBuffer {
		t.Fatalf("admitted, the connection holds buffers of %d and %d bytes", c.r.Size(), c.w.Size())
	}
	if _, p, err := c.ReadFrame(); err != nil || !bytes.Equal(p, big) {
		t.Fatalf("a frame of %d bytes once admitted: %d bytes, %v", len(big), len(p), err)
	}
}

// What the peer sent past the hello (a backup's first records, sent before
// the Accept came back) is read after Admit as it came, from the small
// buffer that held it.
func TestAdmitKeepsWhatCameAhead(t *testing.T) {
	records := bytes.Repeat([]byte("0123456789abcdef"), 64<<10)
	data := append(jsonFrame(FrameHello, Hello{V: Version, Client: "web"}), frame(FrameRecords, records)...)
	data = append(data, frame(FrameEnd, []byte("{}"))...)
	c := strangerConn(t, data)
	var h Hello
	if err := c.ReadJSON(FrameHello, &h); err != nil || h.Client != "web" {
		t.Fatalf("hello: %+v, %v", h, err)
	}
	if c.r.Buffered() == 0 {
		t.Fatal("nothing past the hello is buffered: the test shows nothing")
	}
	c.Admit()
	if typ, p, err := c.ReadFrame(); err != nil || typ != FrameRecords || !bytes.Equal(p, records) {
		t.Fatalf("the records frame after Admit: type %d, %d bytes, %v", typ, len(p), err)
	}
	if typ, _, err := c.ReadFrame(); err != nil || typ != FrameEnd {
		t.Fatalf("the frame after it: type %d, %v", typ, err)
	}
}
