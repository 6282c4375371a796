package server

import (
	"testing"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/fieldcheck"
	"github.com/cairnbackup/cairn/wire"
)

// A committed part reaches the catalog with every field the node sent,
// Torn among them, and job.show and volume.show show a torn part.
func TestTornPartIsRecordedAndShown(t *testing.T) {
	var sp wire.SessionPart
	fieldcheck.Fill(&sp)
	if err := fieldcheck.Carried(sp, catalog.Part(sp)); err != nil {
		t.Fatal(err)
	}

	h := newHarness(t)
	_, orders := h.tapeSetup()
	h.must(h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 1, Pool: "Weekly"}, nil))
	h.must(h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 2, Pool: "Weekly", Overwrite: true}, nil))
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv"}, Pool: "Weekly"}, &started))
	<-orders
	job := started.JobID
	var g1, g2 wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: job, Pool: "Weekly"}, &g1))
	// A medium error in the first tape: the node reports it bad and goes
	// on on the second.
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: job, Pool: "Weekly", Bad: g1.ID, BadReason: "medium error at block 40", Used: []uuid.UUID{g1.ID}}, &g2))
	const bs = defaultBlockSize
	h.commitOne(job, []wire.SessionPart{
		{VolumeID: g1.ID, Part: 0, VolumeStart: bs, DataStart: bs + 64, End: 40 * bs, StreamEnd: 39*bs - 64, Torn: true},
		{VolumeID: g2.ID, Part: 1, VolumeStart: bs, DataStart: bs + 64, End: 3 * bs, StreamStart: 39*bs - 64, StreamEnd: 41 * bs, Final: true},
	})

	var ji wire.JobInfo
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: job}, &ji))
	if len(ji.Parts) != 2 || !ji.Parts[0].Torn || ji.Parts[0].Volume != g1.Name || ji.Parts[1].Torn || !ji.Parts[1].Final || ji.Parts[1].Volume != g2.Name {
		t.Fatalf("job.show parts %+v", ji.Parts)
	}
	var vs wire.VolumeShowResp
	h.must(h.api(wire.OpVolumeShow, wire.VolumeShowReq{Name: g1.Name}, &vs))
	if vs.Volume.State != "error" || vs.Volume.Error != "medium error at block 40" || len(vs.Parts) != 1 ||
		!vs.Parts[0].Torn || vs.Parts[0].BackupID != ji.BackupID || vs.Parts[0].Client != "web" || vs.Parts[0].End != 40*bs {
		t.Fatalf("volume.show of the bad tape: %+v", vs)
	}
	vs = wire.VolumeShowResp{} // decoding into it would keep fields the answer omits
	h.must(h.api(wire.OpVolumeShow, wire.VolumeShowReq{Name: g2.Name}, &vs))
	if len(vs.Parts) != 1 || vs.Parts[0].Torn || !vs.Parts[0].Final {
		t.Fatalf("volume.show of the second tape: %+v", vs)
	}
	wantCode(t, h.api(wire.OpVolumeShow, wire.VolumeShowReq{Name: "NOPE01L9"}, nil), wire.CodeNotFound)
}

// commitOne commits job's session of one file with parts.
func (h *harness) commitOne(job uint64, parts []wire.SessionPart) {
	b := fileindex.NewSegmentBuilder(0)
	e := fileindex.Entry{Path: "/srv/f", Type: fileindex.TypeFile, Size: 10, Loc: fileindex.Location{Seq: 1}}
	h.must(b.Add(&e))
	seg := b.Flush()
	h.must(h.node(wire.OpSessionIndex, wire.SessionIndexReq{JobID: job, No: 0, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}, nil))
	h.must(h.node(wire.OpSessionCommit, wire.SessionCommitReq{
		JobID: job, SessionID: uuid.New(), Segments: 1, Parts: parts, Stats: wire.SessionStats{Entries: 1, Files: 1, ContentBytes: 10},
	}, nil))
}
