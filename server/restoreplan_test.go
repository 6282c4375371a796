package server

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/wire"
)

// A restore's plan says where its data lies on the volumes: the servers hand
// it only to the storage node the job runs on (the one its ticket names), at
// the attempt that runs, for volumes of pools that node serves; never to the
// agent, nor to another node.
func TestRestorePlanGoesOnlyToTheNodeThatHoldsTheTicket(t *testing.T) {
	h := newHarness(t)
	_, orders := h.setup()
	var backup wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv"}, Pool: "Default"}, &backup))
	<-orders
	var g wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: backup.JobID, Pool: "Default"}, &g))
	h.must(h.node(wire.OpVolumeLabeled, wire.VolumeLabeled{JobID: backup.JobID, VolumeID: g.ID}, nil))
	h.commitOne(backup.JobID, []wire.SessionPart{{VolumeID: g.ID, VolumeStart: 256 << 10, DataStart: 256<<10 + 64, End: 512 << 10, Final: true}})
	sn2 := wire.NodeRegisterReq{ID: "sn2", DataAddr: "127.0.0.1:2", CertSHA256: strings.Repeat("cd", 32),
		Pools: []wire.NodePool{{Name: "Default", Type: "disk", Dir: "/srv/pool2"}}}
	h.must(wire.Request(h.ctx, h.nc, wire.FromNodeSubject("sn2", wire.OpNodeRegister), sn2, nil))

	var rs wire.JobStarted
	h.must(h.api(wire.OpRestoreStart, wire.RestoreStartReq{PointInTime: wire.PointInTime{Client: "web"}, To: "/r"}, &rs))
	var order wire.RunRestore
	body, err := wire.Unmarshal((<-orders).Data)
	h.must(err)
	h.must(json.Unmarshal(body, &order))
	req := wire.RestorePlanReq{JobID: rs.JobID, Attempt: order.Attempt}

	wantCode(t, h.agent(wire.OpRestorePlan, req, nil), wire.CodeUnknownOperation)
	wantCode(t, wire.Request(h.ctx, h.nc, wire.FromNodeSubject("sn2", wire.OpRestorePlan), req, nil), wire.CodeInvalidArgument)
	wantCode(t, h.node(wire.OpRestorePlan, wire.RestorePlanReq{JobID: rs.JobID, Attempt: order.Attempt + 1}, nil), wire.CodeAborted)
	for _, other := range []uint64{backup.JobID, rs.JobID + 100} {
		if err := h.node(wire.OpRestorePlan, wire.RestorePlanReq{JobID: other, Attempt: 1}, nil); err == nil {
			t.Fatalf("the plan of job %d, which runs nowhere, was handed out", other)
		}
	}

	var plan wire.RestorePlanResp
	h.must(h.node(wire.OpRestorePlan, req, &plan))
	if !plan.Done || len(plan.Reads) != 1 || len(plan.Reads[0].Parts) != 1 || plan.Reads[0].Parts[0].VolumeID != g.ID || plan.Packed != nil {
		t.Fatalf("plan %+v", plan)
	}
	// Asked for packed reads, the page holds the same reads packed.
	packedReq := req
	packedReq.Packed = wire.PackedVersion
	var packed wire.RestorePlanResp
	h.must(h.node(wire.OpRestorePlan, packedReq, &packed))
	if packed.Reads != nil || packed.Packed == nil || packed.Cursor != plan.Cursor || packed.Done != plan.Done {
		t.Fatalf("packed plan %+v", packed)
	}
	unpacked, err := wire.UnpackReads(packed.Packed)
	h.must(err)
	if !reflect.DeepEqual(unpacked, plan.Reads) {
		t.Fatalf("packed reads %+v, want %+v", unpacked, plan.Reads)
	}

	// The node no longer serves the pool: its volumes are not its to read.
	h.must(h.node(wire.OpNodeRegister, wire.NodeRegisterReq{ID: "sn1", DataAddr: "127.0.0.1:1", CertSHA256: strings.Repeat("ab", 32),
		Pools: []wire.NodePool{{Name: "Other", Type: "disk", Dir: "/srv/other"}}}, nil))
	err = h.node(wire.OpRestorePlan, req, nil)
	wantCode(t, err, wire.CodeInvalidArgument)
	if !strings.Contains(err.Error(), "pool Default, which storage node sn1 does not serve") {
		t.Fatalf("refusal %v", err)
	}
}
