package server

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// commitBackup runs a backup of entries through the node protocol, as the
// storage node would, and returns its job id and its one index segment.
func (h *harness) commitBackup(tkKey ed25519.PublicKey, orders chan *nats.Msg, entries []fileindex.Entry) (uint64, []byte) {
	h.t.Helper()
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv"}, Level: "full"}, &started))
	order := h.backupOrder(orders)
	tk, err := ticket.Verify(order.Ticket, tkKey, time.Now(), time.Second)
	h.must(err)
	var g wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: tk.JobID, Pool: "Default"}, &g))
	h.must(h.node(wire.OpVolumeLabeled, wire.VolumeLabeled{JobID: tk.JobID, VolumeID: g.ID}, nil))
	b := fileindex.NewSegmentBuilder(0)
	for i := range entries {
		h.must(b.Add(&entries[i]))
	}
	seg := b.Flush()
	h.must(h.node(wire.OpSessionIndex, wire.SessionIndexReq{JobID: tk.JobID, No: 0, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}, nil))
	h.must(h.node(wire.OpSessionCommit, wire.SessionCommitReq{
		JobID: tk.JobID, SessionID: uuid.New(), Segments: 1,
		Parts: []wire.SessionPart{{VolumeID: g.ID, VolumeStart: 256 << 10, DataStart: 256<<10 + 64, End: 512 << 10, Final: true}},
		Stats: wire.SessionStats{Entries: int64(len(entries)), Files: int64(len(entries))},
	}, nil))
	return tk.JobID, seg.Data
}

// TestDamagedIndexAnswersNamingTheBackup damages a backup's index segment
// in the running server's catalog.db, in place as a bit flip on disk
// would: its chunk (the catalog stores segments chunked) overwritten with a
// segment header that claims 2^30 entries. ls and restore of that backup
// must answer an error naming it, and the server must live on; it used to
// die of out of memory on the first read.
func TestDamagedIndexAnswersNamingTheBackup(t *testing.T) {
	h := newHarness(t)
	tkKey, orders := h.setup()
	id, data := h.commitBackup(tkKey, orders, []fileindex.Entry{
		{Path: "/srv", Type: fileindex.TypeDir, Mode: 0o755},
		{Path: "/srv/a", Type: fileindex.TypeFile, Size: 10},
		{Path: "/srv/b", Type: fileindex.TypeFile, Size: 20},
	})
	pit := wire.PointInTime{Client: "web", BackupID: id}
	var ls wire.TreeListResp
	h.must(h.api(wire.OpTreeList, wire.TreeListReq{PointInTime: pit, Path: "/srv"}, &ls))

	path := filepath.Join(h.srv.cfg.DataDir, "catalog.db")
	file, err := os.ReadFile(path)
	h.must(err)
	_, data, err = fileindex.ChunkSegment(data, 0)
	h.must(err)
	if !bytes.Contains(file, data) {
		t.Fatalf("the segment's chunk is not in %s", path)
	}
	bad := []byte("CRNX\x01\x00")
	bad = binary.AppendUvarint(bad, 1<<30)
	for n := 1; ; n++ {
		if rest := len(data) - len(bad) - n; len(binary.AppendUvarint(nil, uint64(rest))) == n {
			bad = binary.AppendUvarint(bad, uint64(rest))
			break
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	h.must(err)
	// Every copy: pages bbolt freed can still hold one.
	for at := bytes.Index(file, data); at >= 0; at = bytes.Index(file, data) {
		copy(file[at:], bad)
		_, err = f.WriteAt(bad, int64(at)) // in place: the server has the file mapped
		h.must(err)
	}
	h.must(f.Close())

	wantDamaged := func(what string, err error) {
		t.Helper()
		wantCode(t, err, wire.CodeCorrupt)
		if msg := "index of backup " + strconv.FormatUint(id, 10) + " is damaged"; !strings.Contains(err.Error(), msg) {
			t.Fatalf("%s: %q does not say %q", what, err, msg)
		}
		if we := wire.AsError(err); !strings.Contains(we.Hint, "cairn volume") {
			t.Fatalf("%s: hint %q does not point at the volumes", what, we.Hint)
		}
	}
	wantDamaged("tree.list", h.api(wire.OpTreeList, wire.TreeListReq{PointInTime: pit, Path: "/srv"}, nil))
	wantDamaged("restore.start", h.api(wire.OpRestoreStart, wire.RestoreStartReq{PointInTime: pit, To: "/r"}, nil))
	var st wire.StatusResp
	h.must(h.api(wire.OpStatus, wire.Empty{}, &st))
}
