package catalog

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/retention"
)

func expire(by string, ids ...uint64) *Command {
	e := &BackupsExpire{By: by}
	for _, id := range ids {
		e.Backups = append(e.Backups, ExpiringBackup{ID: id, Reason: "no rule keeps it"})
	}
	return &Command{Op: OpExpireBackups, Expire: e}
}

func deleteCmd(ids ...uint64) *Command {
	c := expire("alice", ids...)
	c.Expire.Manual = true
	return c
}

// chain runs a full and n incrementals, each on a volume of its own, and
// returns their ids, oldest first.
func (c *testCatalog) chain(n int) []uint64 {
	c.t.Helper()
	ids := []uint64{c.backup(LevelFull, []fileindex.Entry{dir("/srv"), file("/srv/a", 1)})}
	for i := range n {
		ids = append(ids, c.backup(LevelIncremental, []fileindex.Entry{file("/srv/a", int64(i+2))}))
	}
	return ids
}

func (c *testCatalog) volumeOf(backup uint64) *Volume {
	c.t.Helper()
	b, err := c.s.Backup(backup)
	if err != nil {
		c.t.Fatal(err)
	}
	v, err := c.s.Volume(b.Parts[0].VolumeID)
	if err != nil {
		c.t.Fatal(err)
	}
	return v
}

func TestExpiryKeepsWhatOthersBuildOnAndRemovesTheRest(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	ids := c.chain(2) // full, incr, incr
	vol0 := c.volumeOf(ids[0])
	before, _ := c.s.Counts()

	// The full alone: the incrementals build on it.
	res := c.must(expire("expiry pass", ids[0]))
	if len(res.Expired) != 0 || len(res.Kept) != 1 || res.Kept[0].Reason != "backup 2 builds on it" {
		t.Fatalf("expire the full alone: %+v", res)
	}
	if _, err := c.s.Backup(ids[0]); err != nil {
		t.Fatalf("the full went: %v", err)
	}

	// The full and its first incremental: the second still needs both.
	res = c.must(expire("expiry pass", ids[0], ids[1]))
	if len(res.Expired) != 0 || len(res.Kept) != 2 {
		t.Fatalf("expire full and first incremental: %+v", res)
	}

	// The whole chain goes, with its index, and the volumes it was on.
	res = c.must(expire("expiry pass", ids...))
	if !slices.Equal(res.Expired, ids) || len(res.Kept) != 0 || len(res.Emptied) != 3 {
		t.Fatalf("expire the chain: %+v", res)
	}
	for _, id := range ids {
		if _, err := c.s.Backup(id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("backup %d after expiry: %v", id, err)
		}
		if _, err := c.s.SegmentInfos(id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("segments of backup %d after expiry: %v", id, err)
		}
	}
	after, _ := c.s.Counts()
	if before.IndexSegments == 0 || after.IndexSegments != 0 || after.IndexBytes != 0 || after.Backups[BackupComplete] != 0 {
		t.Fatalf("counts before %+v after %+v", before, after)
	}
	// Nothing dangles: no segment bucket, no index entry by client or volume.
	err := c.s.view(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bSegMeta, bSegData, bBackups, bBackupsByClient, bVolumeBackups} {
			if n := tx.Bucket(b).Stats().KeyN; n != 0 {
				t.Errorf("bucket %s holds %d keys after the expiry of every backup", b, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := c.s.Volume(vol0.ID); v.State != VolumeExpired {
		t.Fatalf("volume of the full %s", v.State)
	}
	hist, err := c.s.Expiries(0, 0)
	if err != nil || len(hist) != 3 || hist[0].Backup != ids[2] || hist[2].Reason != "no rule keeps it" || hist[0].By != "expiry pass" {
		t.Fatalf("history %+v %v", hist, err)
	}
	// A retried batch changes nothing and is not refused.
	if res := c.must(expire("expiry pass", ids...)); len(res.Expired) != 0 {
		t.Fatalf("retried batch %+v", res)
	}
}

func TestExpiredChainLeavesTheRetainedRestorable(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	old := c.chain(2)
	full := c.backup(LevelFull, []fileindex.Entry{dir("/srv"), file("/srv/a", 10), file("/srv/b", 1)})
	incr := c.backup(LevelIncremental, []fileindex.Entry{file("/srv/a", 11)})
	if b, _ := c.s.Backup(incr); b.Parent != full {
		t.Fatalf("incremental's parent %d, want %d", b.Parent, full)
	}
	res := c.must(expire("expiry pass", old...))
	if len(res.Expired) != 3 {
		t.Fatalf("%+v", res)
	}
	got, err := c.s.Lookup(incr, []string{"/srv/a", "/srv/b"})
	if err != nil || got["/srv/a"].Size != 11 || got["/srv/b"].Size != 1 {
		t.Fatalf("lookup in the retained chain: %+v %v", got, err)
	}
	it, _, err := c.s.Tree(incr)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := fileindex.Collect(it)
	if err != nil || len(entries) != 3 {
		t.Fatalf("tree of the retained chain: %d entries, %v", len(entries), err)
	}
}

func TestHoldWinsARaceWithTheExpiry(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	ids := c.chain(1)
	// The pass computed its batch before the hold came in; the hold is
	// first in the log, so the batch keeps the backup.
	batch := expire("expiry pass", ids...)
	c.must(&Command{Op: OpHold, Hold: &Hold{Backup: ids[1], Reason: "case 4711", By: "alice"}})
	res := c.must(batch)
	if len(res.Expired) != 0 || len(res.Kept) != 2 || !strings.Contains(res.Kept[0].Reason, "case 4711") ||
		res.Kept[1].Reason != "backup 2 builds on it" {
		t.Fatalf("expiry after a hold: %+v", res)
	}
	// An operator cannot delete it either.
	e := c.refused(CodeWrongState, deleteCmd(ids[1]))
	if !strings.Contains(e.Msg, "backup 2 is on legal hold") {
		t.Fatalf("delete of a held backup: %s", e.Msg)
	}
	c.must(&Command{Op: OpRelease, Hold: &Hold{Backup: ids[1]}})

	// A hold on the client covers all its backups.
	c.must(&Command{Op: OpHold, Hold: &Hold{Client: "web1"}})
	if res := c.must(expire("expiry pass", ids...)); len(res.Expired) != 0 {
		t.Fatalf("expiry under a client hold: %+v", res)
	}
	holds, _ := c.s.Holds()
	if len(holds) != 1 || holds[0].Client != "web1" {
		t.Fatalf("holds %+v", holds)
	}
	c.must(&Command{Op: OpRelease, Hold: &Hold{Client: "web1"}})
	c.refused(CodeNotFound, &Command{Op: OpRelease, Hold: &Hold{Client: "web1"}})
	c.refused(CodeUnknownClient, &Command{Op: OpHold, Hold: &Hold{Client: "nobody"}})
	c.refused(CodeNotFound, &Command{Op: OpHold, Hold: &Hold{Backup: 999}})
	c.refused(CodeInvalidArgument, &Command{Op: OpHold, Hold: &Hold{}})
	if res := c.must(expire("expiry pass", ids...)); len(res.Expired) != 2 {
		t.Fatalf("expiry after the release: %+v", res)
	}
}

func TestRunningRestoreKeepsWhatItReads(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	ids := c.chain(1)
	restore := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobRestore, Client: "web1", BackupID: ids[1], Target: "/r", Node: "sn1", Pool: "disk1"}}).JobID
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: restore, Node: "sn1"}})
	res := c.must(expire("expiry pass", ids...))
	if len(res.Expired) != 0 || len(res.Kept) != 2 || res.Kept[0].Reason != "restore job 3 reads it" {
		t.Fatalf("expiry under a restore: %+v", res)
	}
	if v := c.volumeOf(ids[0]); v.State != VolumeAppend {
		t.Fatalf("volume read by the restore is %s", v.State)
	}
	c.refused(CodeWrongState, deleteCmd(ids...))
	c.must(&Command{Op: OpUpdateJob, JobUpdate: &JobUpdate{ID: restore, State: JobFailed, Error: "done"}})
	if res := c.must(expire("expiry pass", ids...)); len(res.Expired) != 2 {
		t.Fatalf("expiry after the restore ended: %+v", res)
	}
}

func TestDeleteNamesItsDependents(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	ids := c.chain(2)
	e := c.refused(CodeWrongState, deleteCmd(ids[0]))
	if e.Msg != "backup 1 cannot be deleted: backup 2 builds on it" || !strings.Contains(e.Hint, "--with-dependents") {
		t.Fatalf("refusal %q hint %q", e.Msg, e.Hint)
	}
	deps, err := c.s.Dependents(ids[0])
	if err != nil || len(deps) != 2 || deps[0].ID != ids[1] || deps[1].ID != ids[2] {
		t.Fatalf("dependents %+v %v", deps, err)
	}
	c.refused(CodeNotFound, deleteCmd(999))
	// The newest alone may go; then the rest with its dependents.
	if res := c.must(deleteCmd(ids[2])); !slices.Equal(res.Expired, ids[2:]) {
		t.Fatalf("%+v", res)
	}
	if res := c.must(deleteCmd(ids[0], ids[1])); !slices.Equal(res.Expired, ids[:2]) {
		t.Fatalf("%+v", res)
	}
	if hist, _ := c.s.Expiries(0, 1); len(hist) != 1 || hist[0].By != "alice" {
		t.Fatalf("history %+v", hist)
	}
}

func TestWritingBackupKeepsItsParent(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	ids := c.chain(0)
	writing := c.startBackup(LevelIncremental)
	if b, _ := c.s.Backup(writing); b.Parent != ids[0] {
		t.Fatalf("parent %d", b.Parent)
	}
	res := c.must(expire("expiry pass", ids[0], writing))
	if len(res.Expired) != 0 || len(res.Kept) != 2 || res.Kept[0].Reason != "it is being written" {
		t.Fatalf("%+v", res)
	}
}

func TestForgetExpiredVolume(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	ids := c.chain(0)
	v := c.volumeOf(ids[0])
	c.refused(CodeWrongState, &Command{Op: OpForgetVolume, VolumeForget: &VolumeForget{VolumeID: v.ID}})
	c.must(expire("expiry pass", ids...))
	// A late report of the node cannot make it writable again.
	c.refused(CodeWrongState, &Command{Op: OpUpdateVolume, VolumeUpdate: &VolumeUpdate{ID: v.ID, State: VolumeAppend}})
	c.must(&Command{Op: OpForgetVolume, VolumeForget: &VolumeForget{VolumeID: v.ID}})
	if _, err := c.s.VolumeByName(v.Name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("volume after forget: %v", err)
	}
	c.must(&Command{Op: OpForgetVolume, VolumeForget: &VolumeForget{VolumeID: v.ID}}) // a retry
}

// tapeBackup labels tape CRN001L9 for pool Weekly and commits a backup on
// it; it returns the tape's volume and the backup.
func (c *testCatalog) tapeBackup() (uuid.UUID, uint64) {
	c.t.Helper()
	c.tapeSetup()
	w1 := c.label("CRN001L9", "Weekly", 1)
	const bs = 64 << 10
	job := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: LevelFull, Pool: "Weekly", Paths: []fileindex.Path{"/srv"}}}).JobID
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: job, Node: "sn1"}})
	segs := c.writeIndex(job, []fileindex.Entry{file("/srv/a", 10)}, 4<<10)
	c.must(&Command{Op: OpCommitBackup, Commit: &BackupCommit{BackupID: job, SessionID: uuid.New(), Segments: segs,
		Parts: []Part{{VolumeID: w1, VolumeStart: bs, End: 3 * bs, Final: true}}}})
	return w1, job
}

func TestTapeOfExpiredBackupsBecomesRecyclable(t *testing.T) {
	c := newTestCatalog(t)
	w1, job := c.tapeBackup()
	const bs = 64 << 10
	res := c.must(expire("expiry pass", job))
	if len(res.Emptied) != 1 {
		t.Fatalf("%+v", res)
	}
	if v, _ := c.s.Volume(w1); v.State != VolumeRecyclable {
		t.Fatalf("tape %s", v.State)
	}
	// A tape that failed stays in error when its backups go.
	w2 := c.label("CRN002L9", "Weekly", 2)
	bad := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: LevelFull, Pool: "Weekly", Paths: []fileindex.Path{"/srv"}}}).JobID
	c.must(&Command{Op: OpDispatchJob, Dispatch: &JobDispatch{JobID: bad, Node: "sn1"}})
	segs := c.writeIndex(bad, []fileindex.Entry{file("/srv/a", 10)}, 4<<10)
	c.must(&Command{Op: OpCommitBackup, Commit: &BackupCommit{BackupID: bad, SessionID: uuid.New(), Segments: segs,
		Parts: []Part{{VolumeID: w2, VolumeStart: bs, End: 3 * bs, Final: true}}}})
	c.must(&Command{Op: OpUpdateVolume, VolumeUpdate: &VolumeUpdate{ID: w2, State: VolumeError, Error: "medium error"}})
	if res := c.must(expire("expiry pass", bad)); len(res.Expired) != 1 || len(res.Emptied) != 0 {
		t.Fatalf("%+v", res)
	}
	if v, _ := c.s.Volume(w2); v.State != VolumeError {
		t.Fatalf("failed tape after its backups went: %s", v.State)
	}
	// The next backup of the pool that needs a tape may start it over.
	next := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: LevelFull, Pool: "Weekly", Paths: []fileindex.Path{"/srv"}}}).JobID
	c.must(&Command{Op: OpRecycleTape, TapeRecycle: &TapeRecycle{VolumeID: w1, WriterJob: next}})
	v, _ := c.s.Volume(w1)
	if v.State != VolumeAppend || v.Bytes != 64<<10 || v.Sessions != 0 || len(v.PartStarts) != 0 || v.WriterJob != next {
		t.Fatalf("recycled tape %+v", v)
	}
	c.must(&Command{Op: OpRecycleTape, TapeRecycle: &TapeRecycle{VolumeID: w1, WriterJob: next}}) // a retry
	c.refused(CodeWrongState, &Command{Op: OpRecycleTape, TapeRecycle: &TapeRecycle{VolumeID: w1, WriterJob: job}})
}

func TestPlanExpiryKeepsAdHocBackups(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	srv := c.chain(0)
	srv = append(srv, c.backup(LevelFull, []fileindex.Entry{dir("/srv")}), c.backup(LevelFull, []fileindex.Entry{dir("/srv")}))
	etc := c.backupOf("/etc")
	c.backupOf("/etc")
	c.backupOf("/etc")
	fs := FileSetOf([]string{"/srv"}, nil)
	keep2 := &retention.Policy{Rules: retention.Rules{Last: 2}}
	plan, err := c.s.PlanExpiry(func(client, fileSet string) (*retention.Policy, bool) {
		return keep2, client == "web1" && fileSet == fs
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, d := range plan.Expired() {
		got = append(got, d.ID)
	}
	if plan.Groups != 1 || plan.Backups != 3 || !slices.Equal(got, srv[:1]) || etc == 0 {
		t.Fatalf("plan: groups %d backups %d expires %v", plan.Groups, plan.Backups, got)
	}
	// Planned for some clients only.
	all := func(string, string) (*retention.Policy, bool) { return keep2, true }
	if p, _ := c.s.PlanExpiryOf([]string{"web1"}, all, true); p.Backups != 6 || len(p.Decisions) != 2 {
		t.Fatalf("plan of web1: %d backups, %d expire", p.Backups, len(p.Decisions))
	}
	if p, _ := c.s.PlanExpiryOf([]string{}, all, true); p.Backups != 0 {
		t.Fatalf("plan of no client read %d backups", p.Backups)
	}
	// A hold is seen.
	c.must(&Command{Op: OpHold, Hold: &Hold{Backup: srv[0]}})
	plan, _ = c.s.PlanExpiry(func(string, string) (*retention.Policy, bool) { return keep2, true }, true)
	for _, d := range plan.Decisions {
		if d.ID == srv[0] {
			t.Fatalf("held backup expires: %s", d.Why())
		}
	}
}

// backupOf runs a full of path to disk1.
func (c *testCatalog) backupOf(path string) uint64 {
	c.t.Helper()
	id := c.startBackup(LevelFull, path)
	segs := c.writeIndex(id, []fileindex.Entry{dir(path)}, 4<<10)
	vol := c.volumeFor(id)
	c.must(&Command{Op: OpCommitBackup, Commit: &BackupCommit{BackupID: id, SessionID: uuid.New(), Segments: segs,
		Parts: []Part{{VolumeID: vol, Part: 1, VolumeStart: DefaultBlockSize, End: 1 << 20, Final: true}}}})
	return id
}

func TestFormat2CatalogGetsTheVolumeIndex(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	ids := c.chain(0)
	path := c.s.Path()
	// Make it a format 2 catalog: no index, format 2.
	err := c.s.db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bHolds, bVolumeBackups, bExpiries} {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bMeta).Put(keyFormat, u64(2))
	})
	if err != nil {
		t.Fatal(err)
	}
	c.s.Close()
	ro, err := OpenReadOnly(path)
	if err != nil {
		t.Fatalf("read-only open of format 2: %v", err)
	}
	if h, err := ro.Holds(); err != nil || len(h) != 0 {
		t.Fatalf("holds of a format 2 catalog: %v %v", h, err)
	}
	ro.Close()
	s, err := Open(filepath.Clean(path))
	if err != nil {
		t.Fatal(err)
	}
	c.s = s
	res := c.must(expire("expiry pass", ids...))
	if len(res.Emptied) != 1 {
		t.Fatalf("the upgraded catalog does not know the volume's backups: %+v", res)
	}
}

// TestBatchesExpireAChainInOnePass: a pass cut into commands of one backup
// each still expires a whole chain, since its batches go newest first.
func TestBatchesExpireAChainInOnePass(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	ids := c.chain(3)
	c.backup(LevelFull, []fileindex.Entry{dir("/srv")})
	keep1 := &retention.Policy{Rules: retention.Rules{Last: 1}}
	plan, err := c.s.PlanExpiry(func(string, string) (*retention.Policy, bool) { return keep1, true }, true)
	if err != nil {
		t.Fatal(err)
	}
	var expired []uint64
	for _, e := range plan.Batches(1, "expiry pass") {
		res := c.must(&Command{Op: OpExpireBackups, Expire: e})
		if len(res.Kept) != 0 {
			t.Fatalf("batch %+v kept %+v", e.Backups, res.Kept)
		}
		expired = append(expired, res.Expired...)
	}
	slices.Sort(expired)
	if !slices.Equal(expired, ids) {
		t.Fatalf("expired %v, want %v", expired, ids)
	}
}

// TestVolumeStaysWhileABackupIsOnIt: a volume that another backup is on
// stays writable when one of its backups expires.
func TestVolumeStaysWhileABackupIsOnIt(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	first := c.chain(0)[0]
	vol := c.volumeOf(first)
	second := c.startBackup(LevelFull, "/etc")
	segs := c.writeIndex(second, []fileindex.Entry{dir("/etc")}, 4<<10)
	c.must(&Command{Op: OpUpdateVolume, VolumeUpdate: &VolumeUpdate{ID: vol.ID, WriterJob: &second}})
	c.must(&Command{Op: OpCommitBackup, Commit: &BackupCommit{BackupID: second, SessionID: uuid.New(), Segments: segs,
		Parts: []Part{{VolumeID: vol.ID, VolumeStart: vol.Bytes, End: vol.Bytes + 1<<20, Final: true}}}})
	if res := c.must(expire("expiry pass", first)); len(res.Emptied) != 0 {
		t.Fatalf("%+v", res)
	}
	if v, _ := c.s.Volume(vol.ID); v.State != VolumeAppend {
		t.Fatalf("volume with a backup left is %s", v.State)
	}
	if res := c.must(expire("expiry pass", second)); len(res.Emptied) != 1 {
		t.Fatalf("%+v", res)
	}
}

// A recyclable tape recycled with a new id becomes a new volume of the
// same cartridge: created now, its old id gone (by name, the barcode finds
// the new one), the old id named as the label still on the tape until its
// writer reports the new label; a retry changes nothing.
func TestRecycledTapeBecomesANewVolume(t *testing.T) {
	c := newTestCatalog(t)
	w1, job := c.tapeBackup()
	const bs = 64 << 10
	c.must(expire("expiry pass", job))
	next := c.must(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "web1", Level: LevelFull, Pool: "Weekly", Paths: []fileindex.Path{"/srv"}}}).JobID
	nid := uuid.New()
	c.refused(CodeInvalidArgument, &Command{Op: OpRecycleTape, TapeRecycle: &TapeRecycle{VolumeID: w1, WriterJob: next, NewID: nid}})
	c.refused(CodeInvalidArgument, &Command{Op: OpRenewTape, TapeRecycle: &TapeRecycle{VolumeID: w1, WriterJob: next}})
	recycle := &Command{Op: OpRenewTape, TapeRecycle: &TapeRecycle{VolumeID: w1, WriterJob: next, NewID: nid}}
	if res := c.must(recycle); res.VolumeID != nid {
		t.Fatalf("recycled into %s, want %s", res.VolumeID, nid)
	}
	if _, err := c.s.Volume(w1); err == nil {
		t.Fatal("the old volume is still there")
	}
	v, err := c.s.VolumeByName("CRN001L9")
	if err != nil || v.ID != nid || v.Relabel != w1 || v.State != VolumeAppend || v.Bytes != bs || v.WriterJob != next || v.Barcode != "CRN001L9" ||
		!v.Created.Equal(c.clock) {
		t.Fatalf("recycled tape %+v, %v", v, err)
	}
	if res := c.must(&Command{Op: OpRenewTape, TapeRecycle: &TapeRecycle{VolumeID: w1, WriterJob: next, NewID: nid}}); res.VolumeID != nid {
		t.Fatalf("a retry answered %s", res.VolumeID)
	}
	c.must(&Command{Op: OpUpdateVolume, VolumeUpdate: &VolumeUpdate{ID: nid, Relabeled: true}})
	if v, _ := c.s.Volume(nid); v.Relabel != uuid.Nil {
		t.Fatalf("relabeled tape still names %s", v.Relabel)
	}
}
