package catalog

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
)

// tapeSetup registers a client and a storage node owning library lib1, with
// tape pools Weekly (in lib1) and Scratch.
func (c *testCatalog) tapeSetup() {
	c.t.Helper()
	c.must(&Command{Op: OpRegisterClient, Client: &Client{Name: "web1"}})
	c.must(&Command{Op: OpRegisterNode, Node: &StorageNode{
		ID: "sn1", DataAddr: "a:1",
		Libraries: []NodeLibrary{{Name: "lib1", Drives: 2, Slots: 24, MailSlots: 2}},
		Pools: []NodePool{
			{Name: "Weekly", Type: PoolTypeTape, Library: "lib1"},
			{Name: ScratchPool, Type: PoolTypeTape},
		},
	}})
}

func (c *testCatalog) label(barcode, pool string, slot int) uuid.UUID {
	c.t.Helper()
	id := uuid.New()
	c.must(&Command{Op: OpLabelTape, TapeLabel: &TapeLabel{
		VolumeID: id, Barcode: barcode, Library: "lib1", Node: "sn1", Pool: pool, Location: SlotLocation(slot), BlockSize: 64 << 10,
	}})
	return id
}

func TestTapePoolsAndLibraries(t *testing.T) {
	c := newTestCatalog(t)
	c.tapeSetup()
	p, err := c.s.Pool("Weekly")
	if err != nil || p.Type != PoolTypeTape || p.Library != "lib1" || !p.Serves("sn1") || p.MaxVolumeBytes != 0 {
		t.Fatalf("tape pool %+v %v", p, err)
	}
	if n, err := c.s.LibraryOwner("lib1"); err != nil || n.ID != "sn1" {
		t.Fatalf("owner of lib1: %+v %v", n, err)
	}
	// A pool keeps its type and library.
	c.refused(CodeInvalidArgument, &Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn1", Pools: []NodePool{{Name: "Weekly", Dir: "/x"}}}})
	c.refused(CodeInvalidArgument, &Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn1",
		Libraries: []NodeLibrary{{Name: "lib2"}}, Pools: []NodePool{{Name: "Weekly", Type: PoolTypeTape, Library: "lib2"}}}})
	// A tape pool in a library the node does not own.
	c.refused(CodeInvalidArgument, &Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn2", Pools: []NodePool{{Name: "Daily", Type: PoolTypeTape, Library: "lib9"}}}})
	c.refused(CodeInvalidArgument, &Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn2", Pools: []NodePool{{Name: "Daily", Type: "cloud"}}}})
	// Tape volumes come from labeling only.
	c.refused(CodeInvalidArgument, &Command{Op: OpCreateVolume, Volume: &Volume{ID: uuid.New(), Pool: "Weekly"}})

	// The library moves to another node: the last to announce it owns it.
	c.must(&Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn2", Libraries: []NodeLibrary{{Name: "lib1"}}}})
	if n, err := c.s.LibraryOwner("lib1"); err != nil || n.ID != "sn2" {
		t.Fatalf("owner of lib1 after the move: %+v %v", n, err)
	}
	if n, _ := c.s.Node("sn1"); len(n.Libraries) != 0 {
		t.Fatalf("sn1 still owns %+v", n.Libraries)
	}
}

func TestTapeLabelMoveAndAssign(t *testing.T) {
	c := newTestCatalog(t)
	c.tapeSetup()
	w1 := c.label("CRN001L9", "Weekly", 1)
	s2 := c.label("CRN002L9", ScratchPool, 2)
	v, err := c.s.TapeByBarcode("CRN001L9")
	if err != nil {
		t.Fatal(err)
	}
	if v.ID != w1 || v.Name != "CRN001L9" || v.State != VolumeAppend || v.Bytes != 64<<10 || v.Location != "slot 1" ||
		v.Library != "lib1" || v.MediaType != PoolTypeTape || len(v.Moves) != 1 || v.Moves[0].Reason != "labeled" {
		t.Fatalf("labeled volume %+v", v)
	}
	// A barcode is labeled once; only tape pools take tapes.
	e := c.refused(CodeAlreadyExists, &Command{Op: OpLabelTape, TapeLabel: &TapeLabel{VolumeID: uuid.New(), Barcode: "CRN001L9", Library: "lib1", Pool: "Weekly", BlockSize: 1}})
	if !strings.Contains(e.Msg, "CRN001L9") || e.Hint == "" {
		t.Fatalf("refusal %+v", e)
	}
	c.must(&Command{Op: OpCreatePool, Pool: &Pool{Name: "disk1"}})
	c.refused(CodeInvalidArgument, &Command{Op: OpLabelTape, TapeLabel: &TapeLabel{VolumeID: uuid.New(), Barcode: "CRN003L9", Library: "lib1", Pool: "disk1", BlockSize: 1}})
	c.refused(CodeNotFound, &Command{Op: OpLabelTape, TapeLabel: &TapeLabel{VolumeID: uuid.New(), Barcode: "CRN003L9", Library: "lib1", Pool: "Nope", BlockSize: 1}})

	// Moves: the location follows, history is kept and bounded, unknown
	// barcodes change nothing.
	c.must(&Command{Op: OpMoveTape, TapeMove: &TapeMove{Library: "lib1", Barcode: "CRN001L9", From: "slot 1", To: "drive 0", Reason: "job 3"}})
	before := dump(t, c.s)
	// The same move reported twice (the node's report and the operator's
	// command) is recorded once.
	c.must(&Command{Op: OpMoveTape, TapeMove: &TapeMove{Library: "lib1", Barcode: "CRN001L9", From: "slot 1", To: "drive 0", Reason: "operator"}})
	c.must(&Command{Op: OpMoveTape, TapeMove: &TapeMove{Library: "lib1", Barcode: "BLANK1L9", From: "slot 7", To: "drive 1"}})
	c.must(&Command{Op: OpMoveTape, TapeMove: &TapeMove{Library: "lib2", Barcode: "CRN001L9", From: "slot 7", To: "drive 1"}})
	if after := dump(t, c.s); after != before {
		t.Fatal("a move of a tape the catalog does not know changed it")
	}
	for i := range MaxVolumeMoves + 5 {
		c.must(&Command{Op: OpMoveTape, TapeMove: &TapeMove{Library: "lib1", Barcode: "CRN002L9", From: "x", To: SlotLocation(i)}})
	}
	c.must(&Command{Op: OpMoveTape, TapeMove: &TapeMove{Library: "lib1", Barcode: "CRN002L9", From: "mail slot 25", To: LocationVault, Reason: "export"}})
	v2, _ := c.s.Volume(s2)
	if len(v2.Moves) != MaxVolumeMoves || v2.Location != LocationVault || v2.Moves[len(v2.Moves)-1].To != LocationVault || v2.Moves[0].To != "slot 6" {
		t.Fatalf("moves: %d, location %q, first %+v", len(v2.Moves), v2.Location, v2.Moves[0])
	}

	// A Scratch tape joins a pool, held by the job that needed it.
	job := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: LevelFull, Pool: "Weekly", Paths: []fileindex.Path{"/srv"}}}).JobID
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: job, Node: "sn1"}})
	c.refused(CodeWrongState, &Command{Op: OpAssignTape, TapeAssign: &TapeAssign{VolumeID: w1, Pool: ScratchPool}})
	c.must(&Command{Op: OpAssignTape, TapeAssign: &TapeAssign{VolumeID: s2, Pool: "Weekly", WriterJob: job}})
	c.must(&Command{Op: OpAssignTape, TapeAssign: &TapeAssign{VolumeID: s2, Pool: "Weekly", WriterJob: job}}) // a retry
	v2, _ = c.s.Volume(s2)
	if v2.Pool != "Weekly" || v2.WriterJob != job {
		t.Fatalf("assigned tape %+v", v2)
	}
}

func TestTapeCommitKeepsPartStartsAndStats(t *testing.T) {
	c := newTestCatalog(t)
	c.tapeSetup()
	w1 := c.label("CRN001L9", "Weekly", 1)
	w2 := c.label("CRN002L9", "Weekly", 2)
	const bs = 64 << 10
	commit := func(parts []Part, full []uuid.UUID) uint64 {
		job := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: LevelFull, Pool: "Weekly", Paths: []fileindex.Path{"/srv"}}}).JobID
		c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: job, Node: "sn1"}})
		waiting := "insert tape CRN002L9 into library lib1"
		c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: job, Waiting: &waiting}})
		if j, _ := c.s.Job(job); j.Waiting != waiting || j.State != JobRunning {
			t.Fatalf("running job waiting %q (%s)", j.Waiting, j.State)
		}
		segs := c.writeIndex(job, []fileindex.Entry{file("/srv/a", 10)}, 4<<10)
		c.must(&Command{Op: OpCommitBackup, Commit: &BackupCommit{
			BackupID: job, SessionID: uuid.New(), Segments: segs, Parts: parts, Full: full,
			Tape: &TapeStats{DriveBytes: 3 * bs, DriveSeconds: 0.5, Stops: 1, Tapes: len(parts)},
		}})
		return job
	}
	// A session spans two tapes, then a second session on the second tape.
	j1 := commit([]Part{
		{VolumeID: w1, Part: 0, VolumeStart: bs, End: 10 * bs},
		{VolumeID: w2, Part: 1, VolumeStart: bs, End: 4 * bs, Final: true},
	}, []uuid.UUID{w1})
	commit([]Part{{VolumeID: w2, Part: 0, VolumeStart: 4 * bs, End: 6 * bs, Final: true}}, nil)
	v1, _ := c.s.Volume(w1)
	v2, _ := c.s.Volume(w2)
	if v1.State != VolumeFull || v1.Bytes != 10*bs || !slices.Equal(v1.PartStarts, []int64{bs}) {
		t.Fatalf("first tape %+v", v1)
	}
	if v2.State != VolumeAppend || v2.Bytes != 6*bs || !slices.Equal(v2.PartStarts, []int64{bs, 4 * bs}) || v2.Sessions != 2 {
		t.Fatalf("second tape %+v", v2)
	}
	j, _ := c.s.Job(j1)
	if j.Tape == nil || j.Tape.Stops != 1 || j.Tape.Tapes != 2 || j.Waiting != "" {
		t.Fatalf("job tape stats %+v, waiting %q", j.Tape, j.Waiting)
	}
	// A part may not start inside what is committed.
	job := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: LevelFull, Pool: "Weekly", Paths: []fileindex.Path{"/srv"}}}).JobID
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: job, Node: "sn1"}})
	segs := c.writeIndex(job, []fileindex.Entry{file("/srv/a", 10)}, 4<<10)
	c.refused(CodeWrongState, &Command{Op: OpCommitBackup, Commit: &BackupCommit{BackupID: job, SessionID: uuid.New(), Segments: segs,
		Parts: []Part{{VolumeID: w2, VolumeStart: 5 * bs, End: 7 * bs, Final: true}}}})

	// A snapshot carries the tape data into a fresh catalog.
	want := dump(t, c.s)
	img := snapshot(t, NewFSM(c.s, testLogger(t)))
	fresh, err := Open(filepath.Join(t.TempDir(), "fresh.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := NewFSM(fresh, testLogger(t)).Restore(io.NopCloser(bytes.NewReader(img))); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, fresh); got != want {
		t.Fatal("restored catalog differs")
	}
	rv, _ := fresh.Volume(w2)
	if !slices.Equal(rv.PartStarts, v2.PartStarts) || rv.Location != "slot 2" || len(rv.Moves) != 1 {
		t.Fatalf("restored tape %+v", rv)
	}
	rj, _ := fresh.Job(j1)
	if rj.Tape == nil || *rj.Tape != *j.Tape {
		t.Fatalf("restored job tape stats %+v", rj.Tape)
	}
	// The new commands survive the encoding of the Raft log.
	for _, cmd := range []*Command{
		{Op: OpLabelTape, TapeLabel: &TapeLabel{VolumeID: w1, Barcode: "X"}},
		{Op: OpMoveTape, TapeMove: &TapeMove{Barcode: "X", To: "vault"}},
		{Op: OpAssignTape, TapeAssign: &TapeAssign{VolumeID: w1, Pool: "Weekly"}},
	} {
		b, err := EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeCommand(b)
		if err != nil || fmt.Sprint(got) == "" || got.Op != cmd.Op {
			t.Fatalf("decode %s: %+v %v", cmd.Op, got, err)
		}
	}
	if _, err := EncodeCommand(&Command{Op: OpMoveTape}); err == nil {
		t.Fatal("a move without its payload encoded")
	}
}
