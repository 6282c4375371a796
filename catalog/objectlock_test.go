package catalog

import (
	"testing"
	"time"

	"github.com/google/uuid"
)

// lockedBackup runs a backup to pool vault (S3, locking) whose session's
// objects were locked until until, on a volume of its own.
func (c *testCatalog) lockedBackup(level Level, until time.Time) (uint64, uuid.UUID) {
	c.t.Helper()
	id := c.startBackupIn("vault", level)
	vol := c.volumeIn("vault", id)
	bs := int64(DefaultBlockSize)
	c.must(&Command{Op: OpCommitBackup, Commit: &BackupCommit{
		BackupID: id, SessionID: uuid.New(), LockedUntil: until,
		Parts: []Part{{VolumeID: vol, Part: 1, VolumeStart: bs, DataStart: bs + 4096, End: bs + 1<<20, Final: true}},
	}})
	return id, vol
}

func lockedCatalog(t *testing.T) *testCatalog {
	c := newTestCatalog(t)
	c.setup()
	c.must(&Command{Op: OpCreatePool, Pool: &Pool{Name: "vault", Type: PoolTypeS3, Nodes: []string{"sn1"}, KeyID: "k1"}})
	return c
}

// A backup committed with a later retain-until date extends the locks of
// every backup it builds on, and of their volumes, never bringing one
// forward; ObjectLocks gives each part its backup's date and the label
// the latest on the volume.
func TestCommitExtendsTheChainsLocks(t *testing.T) {
	c := lockedCatalog(t)
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	full, fullVol := c.lockedBackup(LevelFull, t0.Add(30*24*time.Hour))
	incr1, incr1Vol := c.lockedBackup(LevelIncremental, t0.Add(40*24*time.Hour))
	// A shorter date (the retention was shortened) extends nothing.
	incr2, _ := c.lockedBackup(LevelIncremental, t0.Add(35*24*time.Hour))

	until := func(id uint64) time.Time {
		b, err := c.s.Backup(id)
		if err != nil {
			t.Fatal(err)
		}
		return b.LockedUntil
	}
	if got := until(full); !got.Equal(t0.Add(40 * 24 * time.Hour)) {
		t.Fatalf("full locked until %s; want the first incremental's date", got)
	}
	if got := until(incr1); !got.Equal(t0.Add(40 * 24 * time.Hour)) {
		t.Fatalf("incremental 1 locked until %s; want its own date kept", got)
	}
	if got := until(incr2); !got.Equal(t0.Add(35 * 24 * time.Hour)) {
		t.Fatalf("incremental 2 locked until %s", got)
	}
	v, err := c.s.Volume(fullVol)
	if err != nil || !v.LockedUntil.Equal(t0.Add(40*24*time.Hour)) {
		t.Fatalf("the full's volume locked until %v (%v); want the incremental's date", v.LockedUntil, err)
	}
	locks, err := c.s.ObjectLocks(fullVol)
	if err != nil {
		t.Fatal(err)
	}
	want := []ObjectLock{
		{Start: 0, End: 1, Until: t0.Add(40 * 24 * time.Hour)},
		{Start: DefaultBlockSize, End: DefaultBlockSize + 1<<20, Until: t0.Add(40 * 24 * time.Hour), Backup: full},
	}
	if len(locks) != 2 || locks[0] != want[0] || locks[1] != want[1] {
		t.Fatalf("object locks of the full's volume:\n%+v\nwant\n%+v", locks, want)
	}
	vols, err := c.s.LockedVolumesOf([]uint64{incr1})
	if err != nil || len(vols) != 2 || vols[0] != incr1Vol || vols[1] != fullVol {
		t.Fatalf("locked volumes of incremental 1: %v, %v; want its own and the full's", vols, err)
	}
}

// A hold on a backup puts under legal hold its objects, those of every
// backup it builds on and the labels of their volumes, not those of the
// backups building on it; a client's hold covers all; a release lifts
// only what no other hold covers.
func TestObjectLocksFollowHolds(t *testing.T) {
	c := lockedCatalog(t)
	until := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	full, fullVol := c.lockedBackup(LevelFull, until)
	incr1, incr1Vol := c.lockedBackup(LevelIncremental, until)
	_, incr2Vol := c.lockedBackup(LevelIncremental, until)
	held := func(vol uuid.UUID) bool {
		t.Helper()
		locks, err := c.s.ObjectLocks(vol)
		if err != nil {
			t.Fatal(err)
		}
		if len(locks) != 2 || locks[0].Hold != locks[1].Hold {
			t.Fatalf("locks of volume %s: %+v; want the label held as its part", vol, locks)
		}
		return locks[1].Hold
	}
	check := func(what string, want ...bool) {
		t.Helper()
		for i, vol := range []uuid.UUID{fullVol, incr1Vol, incr2Vol} {
			if got := held(vol); got != want[i] {
				t.Fatalf("%s: backup %d's objects held %v, want %v", what, i+1, got, want[i])
			}
		}
	}
	check("no hold", false, false, false)
	c.must(&Command{Op: OpHold, Hold: &Hold{Backup: incr1, Reason: "case 1"}})
	check("incremental 1 held", true, true, false)
	c.must(&Command{Op: OpHold, Hold: &Hold{Backup: full, Reason: "case 2"}})
	c.must(&Command{Op: OpRelease, Hold: &Hold{Backup: incr1}})
	check("the full held, incremental 1 released", true, false, false)
	c.must(&Command{Op: OpHold, Hold: &Hold{Client: "web1", Reason: "case 3"}})
	check("the client held", true, true, true)
	c.must(&Command{Op: OpRelease, Hold: &Hold{Client: "web1"}})
	c.must(&Command{Op: OpRelease, Hold: &Hold{Backup: full}})
	check("all released", false, false, false)
}
