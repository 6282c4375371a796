package agent

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/wire"
)

// A storage node that dies after the hello and before it accepts the job
// is a node lost, for the server to send the job to another node: not the
// client's failure, and not a bare "EOF".
func TestDialNodeDiesBeforeAccepting(t *testing.T) {
	l, fp := listenNode(t)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_, _, _ = dataplane.NewConn(c).ReadFrame() // the hello
		c.Close()
	}()
	a := &Agent{cfg: Config{Name: "web"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := a.dial(ctx, wire.DataEndpoint{Node: "sn1", Addr: l.Addr().String(), CertSHA256: fp}, "ticket", 1)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeNodeLost || !strings.Contains(we.Message, "storage node sn1") {
		t.Fatalf("dial a node that closes before accepting: %v, want a node-lost error naming sn1", err)
	}
	// The code is the agent's answer; the cause stays under it, for the
	// agent's own code and log to see what broke.
	if !errors.Is(err, io.EOF) {
		t.Errorf("dial a node that closes before accepting: %v does not wrap io.EOF", err)
	}
}

// A storage node of data-port protocol version 1 answers a hello with an
// Accept that names no version, then waits for the Read frames it used to
// get: a restore refuses it at once, saying which versions met, while a
// backup, whose frames did not change, goes on.
func TestDialRefusesANodeOfAnOlderProtocolForARestore(t *testing.T) {
	l, fp := listenNode(t)
	hellos := make(chan dataplane.Hello, 2)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conn := dataplane.NewConn(c)
			var h dataplane.Hello
			_ = conn.ReadJSON(dataplane.FrameHello, &h)
			hellos <- h
			_ = conn.WriteJSON(dataplane.FrameAccept, map[string]any{"job_id": 7, "node": "sn1"})
		}
	}()
	a := &Agent{cfg: Config{Name: "web"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ep := wire.DataEndpoint{Node: "sn1", Addr: l.Addr().String(), CertSHA256: fp}
	_, err := a.dial(ctx, ep, "ticket", dataplane.Version)
	if h := <-hellos; h.V != dataplane.Version {
		t.Fatalf("the hello says version %d, want %d", h.V, dataplane.Version)
	}
	var ve *dataplane.VersionError
	if wire.CodeOf(err) != wire.CodeUnsupportedVersion || !errors.As(err, &ve) || ve.Peer != 1 || !strings.Contains(err.Error(), "storage node speaks data-port protocol version 1") {
		t.Fatalf("restore with a version-1 node: %v", err)
	}
	conn, err := a.dial(ctx, ep, "ticket", 1)
	if err != nil {
		t.Fatalf("backup with a version-1 node: %v", err)
	}
	conn.Close()
}
