package storagenode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/storagenode/library"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// The library returns domain errors; the node's edge gives them their
// code and hint, and on this side of the wire the domain error is still
// there for errors.Is, down to the tape's own.
func TestLibraryErrorsGetTheirCodeAtTheEdge(t *testing.T) {
	r := newNodeTapeRig(t, tapeRigOpts{cartridge: 1 << 30, zone: 64 << 20, tapes: 1})
	order := wire.TapeLabelOrder{Library: "lib1", Slot: 1, Barcode: "CRN001L9", VolumeID: uuid.New(), Name: "CRN001L9", Pool: "Tape", BlockSize: tapeTestBS, Created: time.Now()}

	// Over NATS, as 'cairn media label' sees it: the code and the hint.
	err := wire.Request(context.Background(), r.nc, wire.NodeSubject("sn1", wire.OpNodeTapeLabel), order, &wire.TapeLabelResult{})
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeForeignLabel || !strings.Contains(we.Hint, "--overwrite") || !strings.Contains(we.Message, "CRN001L9") {
		t.Fatalf("labeling a labeled tape over NATS: %#v", err)
	}

	// At the edge, before the wire: the same code, and the causes.
	l := volume.Label{VolumeID: order.VolumeID, Name: order.Name, Pool: order.Pool, BlockSize: order.BlockSize, Created: order.Created, MediaType: "tape"}
	lerr := r.lib.Label(testCtx(t), 1, "CRN001L9", l, false)
	edge := edgeError(fmt.Errorf("label order: %w", lerr))
	if edge.Code != wire.CodeForeignLabel || edge.Hint != we.Hint || !errors.Is(edge, library.ErrForeignLabel) || !errors.Is(edge, tape.ErrLabelled) {
		t.Fatalf("edge error %#v of %v", edge, lerr)
	}
	var le *library.Error
	if !errors.As(edge, &le) || le.Library != "lib1" {
		t.Fatalf("the library's error is not in the edge's: %v", edge)
	}
	if err := orderError(nil); err != nil {
		t.Fatalf("orderError(nil) = %#v", err)
	}
}

// A backup's failure keeps its cause for the node's log and the tests
// while the servers get the code.
func TestClassifyKeepsTheCause(t *testing.T) {
	s := &session{stream: stream{n: &Node{cfg: Config{ID: "sn1"}}, t: ticket.Ticket{Pool: "Default"}}}
	cause := &os.PathError{Op: "write", Path: "/p/v.cvol", Err: syscall.ENOSPC}
	we := s.classify(fmt.Errorf("write volume: %w", cause))
	var pe *os.PathError
	if we.Code != wire.CodePoolFull || !errors.As(we, &pe) || !errors.Is(we, syscall.ENOSPC) {
		t.Fatalf("%#v", we)
	}
}

// A backup that a stopping node cuts off is handed back, and the answer
// still wraps what cut it off and the code it had first: the hand-back
// used to keep only their message.
func TestHandedBackKeepsTheCause(t *testing.T) {
	r := newRig(t, true)
	r.node.mu.Lock()
	r.node.handingBack = true
	r.node.mu.Unlock()
	s := &session{stream: stream{n: r.node, t: ticket.Ticket{JobID: 7, Pool: "Default"}, log: slog.New(slog.DiscardHandler)}}
	cause := &os.PathError{Op: "write", Path: "/p/v.cvol", Err: syscall.ENOSPC}
	we := s.fail(testCtx(t), fmt.Errorf("write volume: %w", cause))
	var pe *os.PathError
	if we.Code != wire.CodeHandedBack || !errors.As(we, &pe) || !errors.Is(we, syscall.ENOSPC) || !errors.Is(we, &wire.Error{Code: wire.CodePoolFull}) {
		t.Fatalf("a session cut off by a stopping node: %#v, want handed_back wrapping pool_full and the ENOSPC", we)
	}
	if !strings.Contains(we.Message, "handed it back (disk pool Default on storage node sn1 is full") {
		t.Fatalf("the message lost what happened: %s", we.Message)
	}
}
