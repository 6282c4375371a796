package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// fakeLibrary plays storage node sn1's library lib1 on NATS: an inventory
// of storage slots 1-4, mail slot 5 and two drives, the moves operators
// ask for (each also reported with tape.moved, as the node does), and
// labels, which fail with a foreign label for the barcodes in foreign
// unless overwritten.
type fakeLibrary struct {
	h *harness

	mu      sync.Mutex
	slots   map[int]string // storage and mail slots; "?" is a cartridge without a barcode
	drives  [2]string
	home    map[string]int
	foreign map[string]bool
	labels  []wire.TapeLabelOrder
	// hold, when set, keeps label orders waiting until it is closed.
	hold chan struct{}
}

const fakeMailSlot = 5

func newFakeLibrary(h *harness) *fakeLibrary {
	f := &fakeLibrary{h: h, slots: map[int]string{1: "CRN001L9", 2: "CRN002L9", 4: "?"}, home: map[string]int{}, foreign: map[string]bool{"CRN002L9": true}}
	r := wire.NewRouter()
	r.Handle(wire.OpNodeLibraryStatus, wire.Typed(func(_ context.Context, _ string, req wire.LibraryStatusReq) (wire.LibraryStatus, error) {
		if req.Library != "lib1" {
			return wire.LibraryStatus{}, wire.Errorf(wire.CodeNotFound, "", "no library %q here", req.Library)
		}
		return f.status(), nil
	}))
	r.Handle(wire.OpNodeLibraryMove, wire.Typed(func(_ context.Context, _ string, req wire.LibraryMoveReq) (wire.LibraryMoveResp, error) {
		return f.move(req)
	}))
	r.Handle(wire.OpNodeTapeLabel, wire.Typed(func(_ context.Context, _ string, o wire.TapeLabelOrder) (wire.TapeLabelResult, error) {
		f.mu.Lock()
		f.labels = append(f.labels, o)
		hold := f.hold
		f.mu.Unlock()
		if hold != nil {
			<-hold
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.slots[o.Slot] != o.Barcode {
			return wire.TapeLabelResult{}, wire.Errorf(wire.CodeBarcodeMismatch, "", "slot %d holds %q", o.Slot, f.slots[o.Slot])
		}
		if f.foreign[o.Barcode] && !o.Overwrite {
			return wire.TapeLabelResult{}, wire.Errorf(wire.CodeForeignLabel, "pass --overwrite if the tape's data is not needed",
				"tape %s holds a label Cairn did not write", o.Barcode)
		}
		return wire.TapeLabelResult{Barcode: o.Barcode, VolumeID: o.VolumeID, Slot: o.Slot}, nil
	}))
	prefix := wire.NodeSubject("sn1", "")
	_, err := wire.Serve(h.ctx, h.nc, prefix+">", "", slog.New(slog.NewTextHandler(io.Discard, nil)), r.Dispatch(func(s string) (string, bool) {
		return strings.TrimPrefix(s, prefix), strings.HasPrefix(s, prefix)
	}))
	h.must(err)
	h.must(h.nc.Flush())
	return f
}

func (f *fakeLibrary) status() wire.LibraryStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := wire.LibraryStatus{Library: "lib1", Node: "sn1", Changer: "fake"}
	for i, bc := range f.drives {
		st.Drives = append(st.Drives, wire.DriveInfo{Number: i, Barcode: bc, State: "idle"})
	}
	for n := 1; n <= fakeMailSlot; n++ {
		bc := f.slots[n]
		sl := wire.SlotInfo{Number: n, Mail: n == fakeMailSlot, Full: bc != "", Barcode: bc}
		if bc == "?" {
			sl.Barcode = ""
		}
		st.Slots = append(st.Slots, sl)
	}
	return st
}

func where(n int) string {
	if n == fakeMailSlot {
		return "mail slot " + strconv.Itoa(n)
	}
	return "slot " + strconv.Itoa(n)
}

func (f *fakeLibrary) move(req wire.LibraryMoveReq) (wire.LibraryMoveResp, error) {
	f.mu.Lock()
	var moves []wire.TapeMove
	find := func(bc string) int {
		for n, b := range f.slots {
			if b == bc {
				return n
			}
		}
		return 0
	}
	free := func(lo, hi int) int {
		for n := lo; n <= hi; n++ {
			if f.slots[n] == "" {
				return n
			}
		}
		return 0
	}
	switch req.Op {
	case wire.MoveLoad:
		from := req.Slot
		if req.Barcode != "" {
			from = find(req.Barcode)
		}
		bc := f.slots[from]
		delete(f.slots, from)
		f.drives[req.Drive] = bc
		f.home[bc] = from
		moves = append(moves, wire.TapeMove{Barcode: bc, From: where(from), To: fmt.Sprintf("drive %d", req.Drive)})
	case wire.MoveUnload:
		bc := f.drives[req.Drive]
		to := req.Slot
		if to == 0 {
			to = f.home[bc]
		}
		f.drives[req.Drive] = ""
		f.slots[to] = bc
		moves = append(moves, wire.TapeMove{Barcode: bc, From: fmt.Sprintf("drive %d", req.Drive), To: where(to)})
	case wire.MoveImport:
		if bc := f.slots[fakeMailSlot]; bc != "" {
			to := free(1, fakeMailSlot-1)
			delete(f.slots, fakeMailSlot)
			f.slots[to] = bc
			moves = append(moves, wire.TapeMove{Barcode: bc, From: where(fakeMailSlot), To: where(to)})
		}
	case wire.MoveExport:
		from := req.Slot
		if req.Barcode != "" {
			from = find(req.Barcode)
		}
		bc := f.slots[from]
		delete(f.slots, from)
		f.slots[fakeMailSlot] = bc
		moves = append(moves, wire.TapeMove{Barcode: bc, From: where(from), To: where(fakeMailSlot)})
	default:
		f.mu.Unlock()
		return wire.LibraryMoveResp{}, wire.Errorf(wire.CodeInvalidArgument, "", "move %s not played by the fake", req.Op)
	}
	f.mu.Unlock()
	// The node reports every move it makes, operator's ones included.
	for _, m := range moves {
		f.h.must(f.h.node(wire.OpTapeMoved, wire.TapeMoved{Library: "lib1", Barcode: m.Barcode, From: m.From, To: m.To, Reason: "operator", Time: time.Now()}, nil))
	}
	return wire.LibraryMoveResp{Moves: moves}, nil
}

// operator takes the cartridge out of the mail slot, or puts one in.
func (f *fakeLibrary) operator(barcode string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if barcode == "" {
		delete(f.slots, fakeMailSlot)
	} else {
		f.slots[fakeMailSlot] = barcode
	}
}

func (f *fakeLibrary) labelOrders() []wire.TapeLabelOrder {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.labels)
}

// tapeSetup registers sn1 with library lib1 and tape pool Weekly on top of
// the disk setup, and starts its fake library.
func (h *harness) tapeSetup() (*fakeLibrary, chan *nats.Msg) {
	_, orders := h.setup()
	h.must(h.node(wire.OpNodeRegister, wire.NodeRegisterReq{
		ID: "sn1", DataAddr: "127.0.0.1:1", CertSHA256: strings.Repeat("ab", 32),
		Pools: []wire.NodePool{
			{Name: "Default", Type: "disk", Dir: "/srv/pool", MaxVolumeBytes: 64 << 20},
			{Name: "Weekly", Type: "tape", Library: "lib1"},
		},
		Libraries: []wire.NodeLibrary{{Name: "lib1", Changer: "fake", Drives: 2, Slots: 4, MailSlots: 1}},
	}, nil))
	return newFakeLibrary(h), orders
}

func (h *harness) volume(barcode string) wire.VolumeInfo {
	h.t.Helper()
	var vols wire.VolumeListResp
	h.must(h.api(wire.OpVolumeList, wire.VolumeListReq{}, &vols))
	for _, v := range vols.Volumes {
		if v.Barcode == barcode {
			return v
		}
	}
	h.t.Fatalf("no volume %s in %+v", barcode, vols.Volumes)
	return wire.VolumeInfo{}
}

func TestTapeLabelStatusAndMoves(t *testing.T) {
	h := newHarness(t)
	lib, _ := h.tapeSetup()
	var pools wire.PoolListResp
	h.must(h.api(wire.OpPoolList, wire.Empty{}, &pools))
	types := map[string]string{}
	for _, p := range pools.Pools {
		types[p.Name] = p.Type
	}
	if types["Weekly"] != "tape" || types[catalog.ScratchPool] != "tape" || types["Default"] != "disk" {
		t.Fatalf("pools %v", types)
	}

	var lr wire.MediaLabelResp
	h.must(h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 1, Pool: "Weekly"}, &lr))
	if v := lr.Volume; v.Name != "CRN001L9" || v.Barcode != "CRN001L9" || v.Pool != "Weekly" || v.State != "append" || v.Location != "slot 1" || v.Library != "lib1" {
		t.Fatalf("labeled %+v", v)
	}
	orders := lib.labelOrders()
	if len(orders) != 1 || orders[0].Barcode != "CRN001L9" || orders[0].Name != "CRN001L9" || orders[0].BlockSize != defaultBlockSize ||
		orders[0].VolumeID != lr.Volume.ID || orders[0].Pool != "Weekly" {
		t.Fatalf("label orders %+v", orders)
	}
	// A tape the catalog has is never labeled again, and the node is not asked.
	wantCode(t, h.api(wire.OpMediaLabel, wire.MediaLabelReq{Library: "lib1", Slot: 1, Pool: "Weekly", Overwrite: true}, nil), wire.CodeAlreadyExists)
	// The node's refusal passes through with its code and hint, and
	// records nothing.
	err := h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 2, Pool: catalog.ScratchPool}, nil)
	wantCode(t, err, wire.CodeForeignLabel)
	if we := wire.AsError(err); !strings.Contains(we.Hint, "--overwrite") {
		t.Fatalf("hint %q", we.Hint)
	}
	if n := len(lib.labelOrders()); n != 2 {
		t.Fatalf("%d label orders, want 2", n)
	}
	var vols wire.VolumeListResp
	h.must(h.api(wire.OpVolumeList, wire.VolumeListReq{}, &vols))
	if len(vols.Volumes) != 1 {
		t.Fatalf("a refused label left volumes: %+v", vols.Volumes)
	}
	h.must(h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 2, Pool: catalog.ScratchPool, Overwrite: true}, nil))
	wantCode(t, h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 3, Pool: "Weekly"}, nil), wire.CodeNotFound)        // empty
	wantCode(t, h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 4, Pool: "Weekly"}, nil), wire.CodeInvalidArgument) // no barcode
	wantCode(t, h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 9, Pool: "Weekly"}, nil), wire.CodeNotFound)
	wantCode(t, h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 3, Pool: "Default"}, nil), wire.CodeInvalidArgument)
	wantCode(t, h.api(wire.OpMediaLabel, wire.MediaLabelReq{Library: "lib9", Slot: 3, Pool: "Weekly"}, nil), wire.CodeNotFound)
	wantCode(t, h.api(wire.OpLibraryMove, wire.LibraryMoveReq{Op: "juggle"}, nil), wire.CodeInvalidArgument)

	// Status adds what the catalog knows to each slot.
	var st wire.LibraryStatusResp
	h.must(h.api(wire.OpLibraryStatus, wire.LibraryStatusReq{}, &st))
	if len(st.Libraries) != 1 || st.Libraries[0].Node != "sn1" || len(st.Libraries[0].Slots) != 5 || len(st.Libraries[0].Drives) != 2 {
		t.Fatalf("status %+v", st)
	}
	s1 := st.Libraries[0].Slots[0]
	if s1.Volume != "CRN001L9" || s1.Pool != "Weekly" || s1.State != "append" {
		t.Fatalf("slot 1 %+v", s1)
	}

	// Moves are recorded once, though the node reports them too.
	var mr wire.LibraryMoveResp
	h.must(h.api(wire.OpLibraryMove, wire.LibraryMoveReq{Op: wire.MoveLoad, Slot: 1, Drive: 0}, &mr))
	if len(mr.Moves) != 1 || h.volume("CRN001L9").Location != "drive 0" {
		t.Fatalf("load: %+v, volume %+v", mr, h.volume("CRN001L9"))
	}
	h.must(h.api(wire.OpLibraryMove, wire.LibraryMoveReq{Op: wire.MoveUnload, Drive: 0}, nil))
	v, err := h.srv.store.TapeByBarcode("CRN001L9")
	h.must(err)
	if v.Location != "slot 1" || len(v.Moves) != 3 || v.Moves[1].From != "slot 1" || v.Moves[1].To != "drive 0" {
		t.Fatalf("moves %+v", v.Moves)
	}
	// Exported and taken out of the mail slot: in the vault.
	h.must(h.api(wire.OpLibraryMove, wire.LibraryMoveReq{Op: wire.MoveExport, Barcode: "CRN002L9"}, nil))
	if loc := h.volume("CRN002L9").Location; loc != "mail slot 5" {
		t.Fatalf("exported tape at %q", loc)
	}
	lib.operator("")
	h.must(h.api(wire.OpLibraryStatus, wire.LibraryStatusReq{Library: "lib1"}, &st))
	if loc := h.volume("CRN002L9").Location; loc != catalog.LocationVault {
		t.Fatalf("tape taken out of the mail slot at %q", loc)
	}

	// A second library whose node does not answer: a listing still shows
	// lib1 and says why lib2 is missing; asking for lib2 alone fails.
	h.must(wire.Request(h.ctx, h.nc, wire.FromNodeSubject("sn2", wire.OpNodeRegister), wire.NodeRegisterReq{
		ID: "sn2", DataAddr: "127.0.0.1:2", CertSHA256: strings.Repeat("cd", 32),
		Libraries: []wire.NodeLibrary{{Name: "lib2", Changer: "fake", Drives: 1, Slots: 8}},
	}, nil))
	start := time.Now()
	h.must(h.api(wire.OpLibraryStatus, wire.LibraryStatusReq{}, &st))
	if len(st.Libraries) != 2 || st.Libraries[0].Error != nil || len(st.Libraries[0].Slots) != 5 ||
		st.Libraries[1].Library != "lib2" || st.Libraries[1].Node != "sn2" || st.Libraries[1].Error == nil {
		t.Fatalf("status with lib2's node silent: %+v", st)
	}
	if !strings.Contains(st.Libraries[1].Error.Message, "sn2") || time.Since(start) > 10*time.Second {
		t.Fatalf("lib2: %+v after %v", st.Libraries[1].Error, time.Since(start))
	}
	if err := h.api(wire.OpLibraryStatus, wire.LibraryStatusReq{Library: "lib2"}, nil); err == nil {
		t.Fatal("status of lib2 alone answered")
	}
}

func TestTapeAcquireWaitCommitAndRestorePlan(t *testing.T) {
	h := newHarness(t)
	lib, orders := h.tapeSetup()
	h.must(h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 1, Pool: "Weekly"}, nil))
	h.must(h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 2, Pool: catalog.ScratchPool, Overwrite: true}, nil))
	h.must(h.api(wire.OpLibraryMove, wire.LibraryMoveReq{Op: wire.MoveExport, Slot: 2}, nil))
	lib.operator("")
	h.must(h.api(wire.OpLibraryStatus, wire.LibraryStatusReq{}, nil))

	backup := func() uint64 {
		var started wire.JobStarted
		h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv"}, Level: "incremental", Pool: "Weekly"}, &started))
		<-orders
		return started.JobID
	}
	job := backup()
	var g1 wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: job, Pool: "Weekly"}, &g1))
	const bs = defaultBlockSize
	if g1.Barcode != "CRN001L9" || g1.MediaType != "tape" || g1.Library != "lib1" || g1.Bytes != bs || g1.BlockSize != bs || g1.Parts != 0 || g1.New {
		t.Fatalf("grant %+v", g1)
	}
	// The tape fills; the only other tape is a scratch tape in the vault.
	err := h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: job, Pool: "Weekly", Full: g1.ID, Used: []uuid.UUID{g1.ID}}, nil)
	wantCode(t, err, wire.CodeNoVolume)
	reason := wire.AsError(err).Message
	if reason != "no appendable volume in pool Weekly in library lib1; 1 scratch tape in vault" {
		t.Fatalf("no-volume message %q", reason)
	}
	if v := h.volume("CRN001L9"); v.State != "full" {
		t.Fatalf("full tape is %s", v.State)
	}
	h.must(h.node(wire.OpJobWaiting, wire.JobWaitingReq{JobID: job, Reason: reason}, nil))
	var ji wire.JobInfo
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: job}, &ji))
	if ji.State != "running" || ji.Waiting != reason {
		t.Fatalf("waiting job %+v", ji)
	}
	// The operator imports it; the job gets it from Scratch.
	lib.operator("CRN002L9")
	h.must(h.api(wire.OpLibraryMove, wire.LibraryMoveReq{Op: wire.MoveImport}, nil))
	if loc := h.volume("CRN002L9").Location; loc != "slot 2" {
		t.Fatalf("imported tape at %q", loc)
	}
	var g2 wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: job, Pool: "Weekly", Used: []uuid.UUID{g1.ID}}, &g2))
	if g2.Barcode != "CRN002L9" || g2.Pool != "Weekly" || h.volume("CRN002L9").Pool != "Weekly" {
		t.Fatalf("grant from scratch %+v", g2)
	}
	h.must(h.node(wire.OpJobWaiting, wire.JobWaitingReq{JobID: job, Reason: ""}, nil))

	commit := func(job uint64, parts []wire.SessionPart) uuid.UUID {
		b := fileindex.NewSegmentBuilder(0)
		e := fileindex.Entry{Path: fmt.Sprintf("/srv/f%d", job), Type: fileindex.TypeFile, Size: 10, Loc: fileindex.Location{Seq: 1}}
		h.must(b.Add(&e))
		seg := b.Flush()
		h.must(h.node(wire.OpSessionIndex, wire.SessionIndexReq{JobID: job, No: 0, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}, nil))
		sid := uuid.New()
		h.must(h.node(wire.OpSessionCommit, wire.SessionCommitReq{
			JobID: job, SessionID: sid, Segments: 1, Parts: parts, Stats: wire.SessionStats{Entries: 1, Files: 1, ContentBytes: 10},
			Tape: &wire.TapeStats{DriveBytes: 12 * bs, DriveSeconds: 0.25, Stops: 2, Tapes: len(parts)},
		}, nil))
		return sid
	}
	commit(job, []wire.SessionPart{
		{VolumeID: g1.ID, Part: 0, VolumeStart: bs, DataStart: bs + 64, End: 10 * bs},
		{VolumeID: g2.ID, Part: 1, VolumeStart: bs, DataStart: bs + 64, End: 3 * bs, Final: true},
	})
	ji = wire.JobInfo{} // decoding into it would keep fields the answer omits
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: job}, &ji))
	if ji.State != "success" || ji.Waiting != "" || ji.Tape == nil || ji.Tape.Stops != 2 || ji.Tape.Tapes != 2 {
		t.Fatalf("committed job %+v tape %+v", ji, ji.Tape)
	}
	// An incremental goes on the second tape, after the first session.
	incr := backup()
	var g3 wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: incr, Pool: "Weekly"}, &g3))
	if g3.ID != g2.ID || g3.Bytes != 3*bs || g3.Parts != 1 {
		t.Fatalf("incremental's grant %+v", g3)
	}
	commit(incr, []wire.SessionPart{{VolumeID: g2.ID, Part: 0, VolumeStart: 3 * bs, DataStart: 3*bs + 64, End: 5 * bs, Final: true}})

	// The restore plan carries what a tape reader needs.
	var rs wire.JobStarted
	h.must(h.api(wire.OpRestoreStart, wire.RestoreStartReq{PointInTime: wire.PointInTime{Client: "web"}, To: "/r"}, &rs))
	<-orders
	var plan wire.RestorePlanResp
	h.must(h.node(wire.OpRestorePlan, wire.RestorePlanReq{JobID: rs.JobID, Attempt: 1}, &plan))
	if !plan.Done || len(plan.Reads) != 2 {
		t.Fatalf("plan %+v", plan)
	}
	full, inc := plan.Reads[0].Parts, plan.Reads[1].Parts
	if len(full) != 2 || len(inc) != 1 {
		t.Fatalf("plan parts %+v / %+v", full, inc)
	}
	p := inc[0]
	if p.MediaType != "tape" || p.Barcode != "CRN002L9" || p.Library != "lib1" || p.BlockSize != bs ||
		!slices.Equal(p.PartStarts, []int64{bs, 3 * bs}) || p.VolumeBytes != 5*bs {
		t.Fatalf("incremental's read part %+v", p)
	}
	if !slices.Equal(full[1].PartStarts, []int64{bs}) || full[0].Barcode != "CRN001L9" || full[0].VolumeBytes != 10*bs {
		t.Fatalf("full's read parts %+v", full)
	}

	// A tape that fails goes to error with the reason, and the job is told
	// what would help.
	third := backup()
	var g4 wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: third, Pool: "Weekly"}, &g4))
	err = h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: third, Pool: "Weekly", Bad: g4.ID, BadReason: "medium error at block 40"}, nil)
	wantCode(t, err, wire.CodeNoVolume)
	if msg := wire.AsError(err).Message; msg != "no appendable volume in pool Weekly in library lib1" || !strings.Contains(wire.AsError(err).Hint, "cairn media label --library lib1") {
		t.Fatalf("no-volume error %+v", err)
	}
	if v := h.volume("CRN002L9"); v.State != "error" || v.Error != "medium error at block 40" {
		t.Fatalf("bad tape %+v", v)
	}
}

func TestWaitingJobIsNotStalled(t *testing.T) {
	// Steps of the server's clock shorter than the liveness timeout keep
	// the node and agent online; the stall timeout is twenty hours.
	h := newFakeClockHarness(t, func(c *Config) { c.LivenessTimeout = 10 * time.Hour; c.StallTimeout = 20 * time.Hour })
	_, orders := h.tapeSetup()
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv"}, Pool: "Weekly"}, &started))
	<-orders
	h.must(h.node(wire.OpJobWaiting, wire.JobWaitingReq{JobID: started.JobID, Reason: "insert tape CRN007L9 into library lib1"}, nil))
	// Twice the stall timeout, checked at every step: the waiting job is
	// not failed at any moment of it.
	var ji wire.JobInfo
	for range 8 {
		h.advance(5 * time.Hour)
		h.srv.orch.Kick()
		poll.Holds(t, 100*time.Millisecond, func() error {
			ji = wire.JobInfo{}
			h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &ji))
			if ji.State != "running" || ji.Waiting != "insert tape CRN007L9 into library lib1" {
				return fmt.Errorf("a job waiting for a tape: %+v", ji)
			}
			return nil
		})
	}
	// Once it no longer waits, silence is a stall again.
	h.must(h.node(wire.OpJobWaiting, wire.JobWaitingReq{JobID: started.JobID}, nil))
	for range 5 {
		h.advance(5 * time.Hour)
	}
	poll.Until(t, 10*time.Second, func() error {
		ji = wire.JobInfo{}
		h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &ji))
		if ji.State == "running" {
			return fmt.Errorf("job %d still running", ji.ID)
		}
		return nil
	})
	if ji.State != "failed" || !strings.Contains(ji.Error, "no progress") {
		t.Fatalf("a silent job after waiting: %+v", ji)
	}
}

// A label carries its request id: repeats, while the first runs or after it
// ended, answer its volume, and the node is ordered once.
func TestTapeLabelRequestIDs(t *testing.T) {
	h := newHarness(t)
	lib, _ := h.tapeSetup()
	lib.mu.Lock()
	lib.hold = make(chan struct{})
	lib.mu.Unlock()
	req := wire.MediaLabelReq{Slot: 1, Pool: "Weekly", Start: wire.Start{RequestID: "lab-1"}}
	answers := make(chan wire.MediaLabelResp, 3)
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		go func() {
			var r wire.MediaLabelResp
			if err := h.api(wire.OpMediaLabel, req, &r); err != nil {
				errs <- err
				return
			}
			answers <- r
		}()
	}
	poll.Until(t, 10*time.Second, func() error {
		if n := len(lib.labelOrders()); n != 1 {
			return fmt.Errorf("%d label orders", n)
		}
		return nil
	})
	close(lib.hold)
	var vol uuid.UUID
	for i := 0; i < 3; i++ {
		select {
		case err := <-errs:
			t.Fatal(err)
		case r := <-answers:
			if vol == uuid.Nil {
				vol = r.Volume.ID
			}
			if r.Volume.ID != vol || r.Volume.Barcode != "CRN001L9" {
				t.Fatalf("answer %+v, another was volume %s", r, vol)
			}
		}
	}
	req.Retry = true
	var again wire.MediaLabelResp
	h.must(h.api(wire.OpMediaLabel, req, &again))
	if again.Volume.ID != vol || !again.Repeated {
		t.Fatalf("a repeat after the label: %+v", again)
	}
	if n := len(lib.labelOrders()); n != 1 {
		t.Fatalf("%d label orders for one request", n)
	}
	other := wire.MediaLabelReq{Slot: 2, Pool: catalog.ScratchPool, Overwrite: true, Start: wire.Start{RequestID: "lab-1", Retry: true}}
	wantCode(t, h.api(wire.OpMediaLabel, other, nil), wire.CodeAlreadyExists)
}
