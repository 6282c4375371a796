package storagenode

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/storagenode/library"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

const tapeTestBS = volume.MinBlockSize

type tapeRigOpts struct {
	cartridge, zone int64
	tapes           int
	spool           bool
	chunk           int64
	profile         string
	realClock       bool
	libDir          string        // "" for a new library in a temporary directory
	idle            time.Duration // the node's IdleTimeout; its default when 0
}

// nodeTapeRig is a storage node with one emulated library, lib1, and its
// tape pool, Tape.
type nodeTapeRig struct {
	*nodeRig
	lib   *library.Manager
	spool string
	opts  tapeRigOpts
}

// newNodeTapeRig starts NATS, the fake servers and a storage node with one
// emulated library of o.tapes cartridges, all labeled for pool Tape
// through the node's tape.label order.
func newNodeTapeRig(t testing.TB, o tapeRigOpts) *nodeTapeRig {
	t.Helper()
	r := &nodeTapeRig{nodeRig: newNodeRig(t, fakePool{name: "Tape", mediaType: "tape", library: "lib1"})}
	r.serve()
	if o.libDir == "" {
		o.libDir = filepath.Join(t.TempDir(), "lib1")
	}
	r.startNode(t, o)
	r.labelTapes(r.barcodes()...)
	return r
}

func (r *nodeTapeRig) barcodes() []string {
	var out []string
	for i := range r.opts.tapes {
		out = append(out, fmt.Sprintf("CRN%03dL9", i+1))
	}
	return out
}

// startNode starts the storage node (again, after stopNode: the library's
// state and cartridges stay in o.libDir).
func (r *nodeTapeRig) startNode(t testing.TB, o tapeRigOpts) {
	t.Helper()
	r.opts = o
	cfg := r.config()
	if o.idle > 0 {
		cfg.IdleTimeout = o.idle
	}
	cfg.Libraries = []library.Config{{Name: "lib1", Emulated: &library.EmulatedConfig{
		Dir: o.libDir, Drives: 1, Slots: o.tapes + 2, MailSlots: 1, Barcodes: r.barcodes(),
		CartridgeBytes: o.cartridge, EarlyWarningBytes: o.zone, VirtualClock: !o.realClock, Profile: o.profile,
	}, MountPoll: 20 * time.Millisecond}}
	tp := TapePoolConfig{Name: "Tape", Library: "lib1"}
	if o.spool {
		r.spool = filepath.Join(t.TempDir(), "spool")
		tp.SpoolDir, tp.SpoolChunkBytes = r.spool, o.chunk
	}
	cfg.TapePools = []TapePoolConfig{tp}
	r.start(cfg)
	r.lib = r.node.libs["lib1"]
	r.waitRegistered()
}

func (r *nodeTapeRig) stopNode() { r.node.Close() }

// backup streams fs as job's backup to the tape pool, in frames of a MiB,
// and returns the result.
func (r *nodeTapeRig) backup(job uint64, fs []testFile) (*dataplane.Result, error) {
	return r.sendFiles(job, fs, sendOpts{batch: 1 << 20})
}

func checkRestored(t testing.TB, got map[string][]byte, fs []testFile) {
	t.Helper()
	for _, f := range fs {
		if string(got[f.path]) != string(f.content) {
			t.Fatalf("%s: %d bytes restored, want %d", f.path, len(got[f.path]), len(f.content))
		}
	}
}

// A session spans two small cartridges, with spooling off and on: the
// next tape is loaded at early warning, the first is reported full, the
// file split across the two restores, the commit carries the drive's
// figures, and no spool file is left.
func TestTapeBackupSpansCartridges(t *testing.T) {
	for _, spool := range []bool{false, true} {
		t.Run(fmt.Sprintf("spool=%v", spool), func(t *testing.T) {
			// Early warning 20 MiB in: the zone holds two spool chunks, a
			// block, a part's end and its padding.
			r := newNodeTapeRig(t, tapeRigOpts{cartridge: 40 << 20, zone: 20 << 20, tapes: 3, spool: spool, chunk: 1 << 20})
			fs := randomFiles(5, 12, 2<<20+100_000) // 26 MB
			res, err := r.backup(1, fs)
			if err != nil {
				t.Fatal(err)
			}
			c := r.fake.commit(t, 1)
			if len(c.Parts) != 2 || c.Parts[0].VolumeID == c.Parts[1].VolumeID || c.Parts[0].Final || !c.Parts[1].Final {
				t.Fatalf("parts %+v", c.Parts)
			}
			if len(res.Volumes) != 2 || res.Volumes[0] != "CRN001L9" || res.Volumes[1] != "CRN002L9" {
				t.Fatalf("volumes %v", res.Volumes)
			}
			if c.Tape == nil || c.Tape.Tapes != 2 || c.Tape.DriveBytes < 25<<20 || c.Tape.DriveSeconds <= 0 || c.Tape.Spooled != spool {
				t.Fatalf("tape figures %+v", c.Tape)
			}
			r.fake.mu.Lock()
			full := r.fake.grants[1].Full
			r.fake.mu.Unlock()
			if full != c.Parts[0].VolumeID {
				t.Fatalf("second acquire %+v does not report the first tape full", r.fake.grants[1])
			}
			// A file lies across the two tapes.
			rr := r.fake.readRequest(t, 1)
			split := ""
			for _, l := range rr.Locs {
				if l.Loc.Seq < c.Parts[1].FirstSeq && l.Loc.EndSeq >= c.Parts[1].FirstSeq {
					split = string(l.Path)
				}
			}
			if split == "" {
				t.Fatalf("no file is split across the tapes: parts %+v, locs %+v", c.Parts, rr.Locs)
			}
			back := r.restore(1000+1, r.fake.readRequest(t, 1, split))
			got := back.whole
			if len(got) != 1 || len(back.lost) > 0 {
				t.Fatalf("restored %d files, lost %v", len(got), back.lost)
			}
			for _, f := range fs {
				if f.path == split && string(got[split]) != string(f.content) {
					t.Fatalf("split file %s: %d bytes restored", split, len(got[split]))
				}
			}
			checkRestored(t, r.restore(1000+1, rr).whole, fs)
			if r.spool != "" {
				if left := spoolFiles(t, r.spool); len(left) > 0 {
					t.Fatalf("spool left %v", left)
				}
			}
			r.fake.mu.Lock()
			moves := len(r.fake.moves)
			r.fake.mu.Unlock()
			if moves == 0 {
				t.Fatal("no tape move reported")
			}
		})
	}
}

// One file of a tape that holds many sessions is read with one locate,
// and no more of the tape than the blocks it lies in.
func TestTapeRestoreOneFileReadsLittle(t *testing.T) {
	r := newNodeTapeRig(t, tapeRigOpts{cartridge: 1 << 30, zone: 64 << 20, tapes: 1})
	var all [][]testFile
	for job := uint64(1); job <= 12; job++ {
		fs := randomFiles(job, 16, 256<<10)
		if _, err := r.backup(job, fs); err != nil {
			t.Fatal(err)
		}
		all = append(all, fs)
	}
	d := r.lib.EmulatedDrive(0)
	before := d.Stats()
	want := all[8][9]
	got := r.restore(1000+9, r.fake.readRequest(t, 9, want.path)).whole
	after := d.Stats()
	if string(got[want.path]) != string(want.content) || len(got) != 1 {
		t.Fatalf("restored %d files", len(got))
	}
	onTape := before.BytesWritten
	read := after.BytesRead - before.BytesRead
	locates := after.Locates - before.Locates
	// The reader locates straight to the file's first block (the key is
	// checked at the part header only if a block does not decrypt) and
	// stops at its last: the two 1 MiB blocks the file lies in, of the
	// tape's 48 MiB. The tape stayed in the drive since the backups, so
	// the mount trusts the label it read then: one locate, to the file.
	t.Logf("one file of 256 KiB from a tape with 12 sessions (%d MiB): %d KiB read, %d locates", onTape>>20, read>>10, locates)
	if read > 5<<19 || locates != 1 {
		t.Fatalf("read %d of %d bytes with %d locates", read, onTape, locates)
	}
}

// A medium error mid-backup: the session goes on on the next tape, the bad
// one is reported with the medium error, and everything restores,
// including what was written on the bad tape before the error.
func TestTapeMediumErrorMidBackup(t *testing.T) {
	for _, spool := range []bool{false, true} {
		t.Run(fmt.Sprintf("spool=%v", spool), func(t *testing.T) {
			r := newNodeTapeRig(t, tapeRigOpts{cartridge: 1 << 30, zone: 64 << 20, tapes: 2, spool: spool, chunk: 1 << 20})
			// Label, mark, the part's header; a medium error 6 MiB in, which
			// the rest of the session, on the next tape in the same drive,
			// does not reach.
			r.lib.EmulatedDrive(0).SetFaults(tape.Faults{MediumErrorAt: []int64{2 + 96}})
			fs := randomFiles(8, 8, 1<<20)
			if _, err := r.backup(1, fs); err != nil {
				t.Fatal(err)
			}
			c := r.fake.commit(t, 1)
			r.fake.mu.Lock()
			bad := r.fake.vols[0]
			r.fake.mu.Unlock()
			if bad.state != "bad" || !strings.Contains(bad.reason, "medium error") {
				t.Fatalf("first tape %+v", bad)
			}
			if len(c.Parts) != 2 || c.Parts[0].VolumeID != bad.id || c.Parts[1].StreamStart != c.Parts[0].StreamEnd || c.Parts[0].StreamEnd == 0 {
				t.Fatalf("parts %+v", c.Parts)
			}
			if !c.Parts[0].Torn || c.Parts[1].Torn || c.Parts[0].Final || !c.Parts[1].Final {
				t.Fatalf("the part on the bad tape is not committed torn, the next one whole: %+v", c.Parts)
			}
			r.lib.EmulatedDrive(0).SetFaults(tape.Faults{})
			res := r.restore(1000+1, r.fake.readRequest(t, 1))
			if len(res.lost) > 0 {
				t.Fatalf("lost %v", res.lost)
			}
			checkRestored(t, res.whole, fs)
		})
	}
}

// A write-protected cartridge granted: reported bad, the next tape used.
func TestTapeWriteProtectedIsReportedBad(t *testing.T) {
	r := newNodeTapeRig(t, tapeRigOpts{cartridge: 1 << 30, zone: 64 << 20, tapes: 2})
	if err := tape.SetWriteProtect(r.lib.CartridgePath("CRN001L9"), true); err != nil {
		t.Fatal(err)
	}
	fs := randomFiles(9, 4, 300<<10)
	res, err := r.backup(1, fs)
	if err != nil {
		t.Fatal(err)
	}
	r.fake.mu.Lock()
	first := *r.fake.vols[0]
	grants := slices.Clone(r.fake.grants)
	r.fake.mu.Unlock()
	if first.state != "bad" || !strings.Contains(first.reason, "write-protected") || len(grants) != 2 || grants[1].Bad != first.id {
		t.Fatalf("first tape %+v, acquires %+v", first, grants)
	}
	if len(res.Volumes) != 1 || res.Volumes[0] != "CRN002L9" {
		t.Fatalf("volumes %v", res.Volumes)
	}
	checkRestored(t, r.restore(1000+1, r.fake.readRequest(t, 1)).whole, fs)
}

// No volume: the job reports the servers' reason and asks again; when a
// tape is granted it goes on, and says it no longer waits.
func TestTapeBackupWaitsForAVolume(t *testing.T) {
	r := newNodeTapeRig(t, tapeRigOpts{cartridge: 1 << 30, zone: 64 << 20, tapes: 1})
	r.fake.mu.Lock()
	r.fake.noVolume = true
	r.fake.mu.Unlock()
	fs := randomFiles(10, 3, 100<<10)
	done := make(chan error, 1)
	go func() {
		_, err := r.backup(1, fs)
		done <- err
	}()
	poll.Until(t, 10*time.Second, func() error {
		r.fake.mu.Lock()
		w, asked := slices.Clone(r.fake.waiting), len(r.fake.grants)
		r.fake.mu.Unlock()
		if len(w) == 1 && strings.Contains(w[0], "no appendable volume in pool Tape") && asked >= 3 {
			return nil
		}
		return fmt.Errorf("waiting reports %q after %d requests", w, asked)
	})
	r.fake.mu.Lock()
	r.fake.noVolume = false
	r.fake.mu.Unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the backup did not resume")
	}
	poll.Until(t, 10*time.Second, func() error {
		r.fake.mu.Lock()
		w := slices.Clone(r.fake.waiting)
		r.fake.mu.Unlock()
		if i := slices.Index(w, ""); i > 0 {
			return nil
		}
		return fmt.Errorf("waiting reports %q: never cleared", w)
	})
	checkRestored(t, r.restore(1000+1, r.fake.readRequest(t, 1)).whole, fs)
}

func TestTapeConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.DataDir = "/d"
	c.Libraries = []library.Config{{Name: "lib1", Emulated: &library.EmulatedConfig{Dir: "/l", CartridgeBytes: 1 << 30, EarlyWarningBytes: 16 << 20}}}
	c.TapePools = []TapePoolConfig{{Name: "Tape", Library: "lib1", SpoolDir: "/s", SpoolChunkBytes: 4 << 20}}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "tape_pools[0].spool_chunk_size: tape pool Tape: two spool chunks of 4M (and a block, a part's end and its padding) need 16513K of early warning zone; the cartridges of library lib1 have 16M: set spool_chunk_size to at most 3M") {
		t.Fatalf("two chunks larger than the zone: %v", err)
	}
	c.TapePools[0].SpoolChunkBytes = 1 << 20
	if err := c.Validate(); err != nil {
		t.Fatalf("a node with only a tape pool: %v", err)
	}
	c.TapePools[0].Library = "lib2"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `library "lib2" is not one of this node's libraries`) {
		t.Fatalf("unknown library: %v", err)
	}
}

// The node carries out a library order once per request id: a repeat (the
// servers lost the answer) gets the first answer and moves nothing again;
// one id for another order is refused. A label order for the label a tape
// already carries is done already.
func TestLibraryOrdersOncePerRequest(t *testing.T) {
	r := newNodeTapeRig(t, tapeRigOpts{cartridge: 64 << 20, tapes: 2})
	order := func(req wire.LibraryMoveReq) (wire.LibraryMoveResp, error) {
		var resp wire.LibraryMoveResp
		err := wire.Request(context.Background(), r.nc, wire.NodeSubject("sn1", wire.OpNodeLibraryMove), req, &resp)
		return resp, err
	}
	move := wire.LibraryMoveReq{Library: "lib1", Op: wire.MoveTransfer, Slot: 1, To: 3, Start: wire.Start{RequestID: "m-1"}}
	first, err := order(move)
	if err != nil || len(first.Moves) != 1 || first.Moves[0].Barcode != "CRN001L9" {
		t.Fatalf("transfer: %+v %v", first, err)
	}
	move.Retry = true
	again, err := order(move)
	if err != nil || !reflect.DeepEqual(again, first) {
		t.Fatalf("repeat of the transfer: %+v %v, first %+v", again, err, first)
	}
	var st wire.LibraryStatus
	if err := wire.Request(context.Background(), r.nc, wire.NodeSubject("sn1", wire.OpNodeLibraryStatus), wire.LibraryStatusReq{Library: "lib1"}, &st); err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Slots {
		if (s.Number == 3 && s.Barcode != "CRN001L9") || (s.Number == 1 && s.Full) {
			t.Fatalf("after a transfer and its repeat, slot %d holds %q: %+v", s.Number, s.Barcode, st.Slots)
		}
	}
	other := wire.LibraryMoveReq{Library: "lib1", Op: wire.MoveTransfer, Slot: 2, To: 4, Start: wire.Start{RequestID: "m-1"}}
	if _, err := order(other); wire.CodeOf(err) != wire.CodeAlreadyExists {
		t.Fatalf("one request id for another move: %v", err)
	}
	// Without a request id each order is its own: moving back works.
	if _, err := order(wire.LibraryMoveReq{Library: "lib1", Op: wire.MoveTransfer, Slot: 3, To: 1}); err != nil {
		t.Fatal(err)
	}

	label := func(id uuid.UUID, rid string) error {
		return wire.Request(context.Background(), r.nc, wire.NodeSubject("sn1", wire.OpNodeTapeLabel), wire.TapeLabelOrder{
			Library: "lib1", Slot: 1, Barcode: "CRN001L9", VolumeID: id, Name: "CRN001L9", Pool: "Tape", BlockSize: tapeTestBS,
			Created: time.Now(), RequestID: rid,
		}, nil)
	}
	if err := label(r.fake.vols[0].id, "lab-again"); err != nil {
		t.Fatalf("a label order for the label the tape carries: %v", err)
	}
	if err := label(uuid.New(), "lab-other"); wire.CodeOf(err) != wire.CodeForeignLabel {
		t.Fatalf("a label order for another volume on a labeled tape: %v", err)
	}
}

// TestCloseAnswersTheOrdersUnderWay: a node stopped while it carries out
// an order (a robot move that does not end) answers it, canceled, before
// it closes its libraries and its connection: the servers hear why, at
// once, instead of waiting out their timeout for an answer that never
// comes.
func TestCloseAnswersTheOrdersUnderWay(t *testing.T) {
	r := newNodeTapeRig(t, tapeRigOpts{tapes: 2, cartridge: 64 << 20})
	r.lib.Emulated().StickRobot(true)
	answered := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		answered <- wire.Request(ctx, r.nc, wire.NodeSubject("sn1", wire.OpNodeLibraryMove),
			wire.LibraryMoveReq{Library: "lib1", Op: wire.MoveLoad, Slot: 1, Drive: 0, Start: wire.Start{RequestID: "move-1"}}, &wire.LibraryMoveResp{})
	}()
	poll.Until(t, 10*time.Second, func() error {
		if n := r.node.orderRuns.Running(); n != 1 {
			return fmt.Errorf("%d orders under way", n)
		}
		return nil
	})
	start := time.Now()
	r.stopNode()
	select {
	case err := <-answered:
		if err == nil || wire.CodeOf(err) == wire.CodeTimeout {
			t.Fatalf("the move under way when the node stopped: %v", err)
		}
		t.Logf("answered %s after Close began: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(20 * time.Second):
		t.Fatal("the move under way when the node stopped got no answer")
	}
}

// TestAttemptsOfAJobNeverOverlap: an attempt the servers stopped before
// its stream connected (the agent's dial was under way) is refused when it
// connects, and the stream of an attempt the servers gave up on stops when
// the next attempt connects, so it neither holds the drive nor writes
// beside it.
func TestAttemptsOfAJobNeverOverlap(t *testing.T) {
	r := newNodeTapeRig(t, tapeRigOpts{tapes: 2, cartridge: 64 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dialAttempt := func(job uint64, attempt int) *dataplane.Conn {
		t.Helper()
		return r.hello(r.sign(ticket.Ticket{JobID: job, Op: ticket.OpBackup, Attempt: attempt}))
	}
	stop := func(job uint64, attempt int) {
		t.Helper()
		var res wire.CancelResult
		if err := wire.Request(ctx, r.nc, wire.NodeSubject("sn1", wire.OpCancel), wire.CancelJob{JobID: job, Attempt: attempt, Reason: "requeued"}, &res); err != nil {
			t.Fatal(err)
		}
	}

	// Stopped before it connected: refused.
	stop(7, 1)
	late := dialAttempt(7, 1)
	defer late.Close()
	err := late.ReadJSON(dataplane.FrameAccept, &dataplane.Accept{})
	if wire.CodeOf(err) != wire.CodeAborted {
		t.Fatalf("a stream of a stopped attempt: %v", err)
	}
	t.Logf("the late stream: %v", err)

	// The next attempt runs; one after it stops it.
	second := dialAttempt(7, 2)
	defer second.Close()
	if err := second.ReadJSON(dataplane.FrameAccept, &dataplane.Accept{}); err != nil {
		t.Fatalf("attempt 2: %v", err)
	}
	third := dialAttempt(7, 3)
	defer third.Close()
	if err := third.ReadJSON(dataplane.FrameAccept, &dataplane.Accept{}); err != nil {
		t.Fatalf("attempt 3: %v", err)
	}
	_ = second.SetDeadline(time.Now().Add(20 * time.Second))
	for {
		// Attempt 2's stream ends: what it says (if anything) before its
		// connection closes is its failure.
		if _, _, err := second.ReadFrame(); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("attempt 2's stream goes on beside attempt 3")
			}
			break
		}
	}
	// And an older attempt that connects now is refused.
	old := dialAttempt(7, 2)
	defer old.Close()
	if err := old.ReadJSON(dataplane.FrameAccept, &dataplane.Accept{}); wire.CodeOf(err) != wire.CodeAborted {
		t.Fatalf("attempt 2 again while attempt 3 runs: %v", err)
	}
}

// TestRecycledTapeIsRelabeledBeforeData: a tape the servers recycled into
// a new volume (its old backups all expired) is granted with the volume
// its label still names; the node writes the new volume's label over the
// old one before the session's data, reads it back and reports it. The
// tape then holds the new volume only: a mount that expects the old one
// finds another label, and a read of the old session loses its entries
// instead of reading what the new session wrote in its place.
func TestRecycledTapeIsRelabeledBeforeData(t *testing.T) {
	r := newNodeTapeRig(t, tapeRigOpts{cartridge: 40 << 20, zone: 20 << 20, tapes: 1})
	old := randomFiles(21, 3, 300_000)
	if _, err := r.backup(1, old); err != nil {
		t.Fatal(err)
	}
	oldID := r.fake.commit(t, 1).Parts[0].VolumeID

	newID := uuid.New()
	r.fake.mu.Lock()
	r.fake.grant = func(req wire.VolumeAcquireReq) (wire.VolumeGrant, error) {
		return wire.VolumeGrant{ID: newID, Name: "CRN001L9", Pool: "Tape", Bytes: int64(r.fake.bs), BlockSize: r.fake.bs,
			BlockRawSize: volume.MinBlockRawSize, MediaType: "tape", Barcode: "CRN001L9", Library: "lib1", Relabel: oldID, Created: time.Now()}, nil
	}
	// The fake servers plan the reads of either volume of the cartridge.
	r.fake.vols = append(r.fake.vols, &fakeVol{id: newID, name: "CRN001L9", barcode: "CRN001L9", end: int64(r.fake.bs), state: "full"})
	r.fake.mu.Unlock()
	fresh := randomFiles(22, 3, 200_000)
	if _, err := r.backup(2, fresh); err != nil {
		t.Fatal(err)
	}
	c := r.fake.commit(t, 2)
	if len(c.Parts) != 1 || c.Parts[0].VolumeID != newID || c.Parts[0].VolumeStart != int64(r.fake.bs) {
		t.Fatalf("parts of the session on the recycled tape %+v", c.Parts)
	}
	r.fake.mu.Lock()
	labeled := slices.Clone(r.fake.labeled)
	r.fake.mu.Unlock()
	if len(labeled) != 1 || labeled[0].VolumeID != newID || labeled[0].JobID != 2 {
		t.Fatalf("volume.labeled reports %+v, want one of volume %s by job 2", labeled, newID)
	}
	checkRestored(t, r.restore(1002, r.fake.readRequest(t, 2)).whole, fresh)

	ctx := context.Background()
	mt, err := r.lib.Mount(ctx, library.MountRequest{Job: 3, Barcode: "CRN001L9", Volume: newID})
	if err != nil {
		t.Fatal(err)
	}
	if l := mt.Label(); l.VolumeID != newID || l.Pool != "Tape" || l.Name != "CRN001L9" {
		t.Fatalf("label on the recycled tape %+v", l)
	}
	mt.Release(nil)
	if _, err := r.lib.Mount(ctx, library.MountRequest{Job: 4, Barcode: "CRN001L9", Volume: oldID}); !errors.Is(err, library.ErrBarcodeMismatch) {
		t.Fatalf("mount of the volume recycled away: %v, want a label mismatch", err)
	}
	if back := r.restore(1001, r.fake.readRequest(t, 1)); len(back.whole) != 0 || len(back.lost) != len(old) {
		t.Fatalf("a read of the old session restored %d files and lost %d, want all %d lost", len(back.whole), len(back.lost), len(old))
	}
}

// An S2 pool's empty tape labeled at a format before S2 (a scratch tape
// labeled before an upgrade) is labeled again at this format, the same
// volume, when a session goes on to it: here after a medium error on the
// first tape, with S2 blocks in flight, which could not be sealed again
// as zstd without reusing their nonces.
func TestS2PoolUpgradesAnEmptyOlderTapesLabel(t *testing.T) {
	r := newNodeTapeRig(t, tapeRigOpts{cartridge: 1 << 30, zone: 64 << 20, tapes: 2})
	r.fake.mu.Lock()
	r.fake.pool.compression, r.fake.pool.codec = true, volume.CompressionS2
	second := *r.fake.vols[1]
	r.fake.mu.Unlock()
	old := volume.Label{FormatVersion: 4, VolumeID: second.id, Name: second.name, Barcode: second.barcode, Pool: "Tape",
		BlockSize: r.fake.bs, PartAlign: r.fake.bs, Created: time.Now(), MediaType: "tape"}
	if err := r.lib.Label(t.Context(), 2, second.barcode, old, true); err != nil {
		t.Fatal(err)
	}
	// A medium error about two thirds into the session, its blocks S2;
	// what is left (on the next tape, in the same drive) does not reach
	// the same record.
	r.lib.EmulatedDrive(0).SetFaults(tape.Faults{MediumErrorAt: []int64{2 + 90}})
	rnd := rand.New(rand.NewPCG(23, 4))
	var fs []testFile
	for i := range 24 {
		fs = append(fs, testFile{fmt.Sprintf("/logs/app-%02d.log", i), sample.LogText(rnd, 1<<20)})
	}
	if _, err := r.backup(1, fs); err != nil {
		t.Fatalf("the session did not go on to the older tape: %v", err)
	}
	c := r.fake.commit(t, 1)
	if len(c.Parts) != 2 || c.Parts[1].VolumeID != second.id || !c.Parts[0].Torn {
		t.Fatalf("parts %+v: want a torn part on the failed tape, then one on %s", c.Parts, second.name)
	}
	r.lib.EmulatedDrive(0).SetFaults(tape.Faults{})
	res := r.restore(1001, r.fake.readRequest(t, 1))
	if len(res.lost) > 0 {
		t.Fatalf("lost %v", res.lost)
	}
	checkRestored(t, res.whole, fs)
	mt, err := r.lib.Mount(t.Context(), library.MountRequest{Job: 2, Barcode: second.barcode, Volume: second.id})
	if err != nil {
		t.Fatal(err)
	}
	defer mt.Release(nil)
	if l := mt.Label(); l.FormatVersion != volume.FormatVersion || l.VolumeID != second.id || l.Name != second.name || l.PartAlign != r.fake.bs {
		t.Fatalf("label of the second tape %+v, want format %d and the same volume", l, volume.FormatVersion)
	}
}
