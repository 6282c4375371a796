package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// poolOf is the Default pool as pool list shows it.
func (s *stack) poolOf() wire.PoolInfo {
	s.t.Helper()
	var pools []wire.PoolInfo
	s.json(&pools, "pool", "list")
	for _, p := range pools {
		if p.Name == s.pool {
			return p
		}
	}
	s.t.Fatalf("pool %s is not listed: %+v", s.pool, pools)
	return wire.PoolInfo{}
}

// volumesOf are the volumes a backup has parts on, by name.
func volumesOf(t *testing.T, backups []wire.BackupInfo, id uint64) []string {
	t.Helper()
	for _, b := range backups {
		if b.ID == id {
			return b.Volumes
		}
	}
	t.Fatalf("backup %d is not listed", id)
	return nil
}

// TestDeletedBackupsGiveTheirSpaceBack, with real processes: backups each
// on volumes of their own (volume-size=6m), the deletion of a full others
// build on is refused naming them, deleted with its dependents once
// confirmed, the volumes they were alone on are deleted from the pool
// directory by the storage node, and pool list shows the space back; the
// backups kept still restore. A storage node killed (SIGKILL) while its
// volumes await deletion keeps them in the catalog as expired, reclaimable,
// with their files, until it is back and the next prune deletes them.
func TestDeletedBackupsGiveTheirSpaceBack(t *testing.T) {
	s := newStack(t, stackOpts{poolOpts: ",volume-size=6m"})
	src := filepath.Join(t.TempDir(), "src")
	writeRandomFiles(t, src, 3, 512<<10, 1)
	full1 := s.backup("full", src)
	writeRandomFiles(t, src, 3, 512<<10, 2)
	incr1 := s.backup("incremental", src)
	writeRandomFiles(t, src, 3, 512<<10, 3)
	full2 := s.backup("full", src)
	writeRandomFiles(t, src, 3, 512<<10, 4)
	snap := snapshot(t, src)
	incr2 := s.backup("incremental", src)

	var backups []wire.BackupInfo
	s.json(&backups, "backup", "list", "--client", s.client, "--path", src)
	if len(backups) != 4 {
		t.Fatalf("backups of %s: %+v", src, backups)
	}
	old := append(volumesOf(t, backups, full1.BackupID), volumesOf(t, backups, incr1.BackupID)...)
	kept := append(volumesOf(t, backups, full2.BackupID), volumesOf(t, backups, incr2.BackupID)...)
	for _, v := range old {
		if slices.Contains(kept, v) {
			t.Fatalf("volume %s holds an old and a kept backup: old on %v, kept on %v", v, old, kept)
		}
	}
	before := s.poolOf()

	// Bad input: a full an incremental builds on.
	id := strconv.FormatUint(full1.BackupID, 10)
	s.fails(1, []string{fmt.Sprintf("backup %d cannot be deleted: backup %d builds on it", full1.BackupID, incr1.BackupID), "--with-dependents"},
		"backup", "delete", id)
	// Not confirmed: stdin is no terminal here, and --yes is missing.
	s.fails(2, []string{"pass --yes"}, "backup", "delete", id, "--with-dependents")

	// With the storage node dead, the deletion goes through the catalog and
	// the volumes wait, expired, with their files.
	s.storage.kill()
	var del wire.BackupDeleteResp
	s.json(&del, "backup", "delete", id, "--with-dependents", "--yes")
	if !slices.Equal(del.Deleted, []uint64{full1.BackupID, incr1.BackupID}) || len(del.Pending) != len(old) {
		t.Fatalf("deleted %v, waiting %v", del.Deleted, del.Pending)
	}
	for _, v := range s.volumes() {
		if slices.Contains(old, v.Name) {
			if v.State != "expired" || fileSize(t, v.Path) == 0 {
				t.Fatalf("volume %s with its node dead: %+v", v.Name, v)
			}
		}
	}
	if p := s.poolOf(); p.ReclaimableBytes == 0 || p.UsedBytes >= before.UsedBytes {
		t.Fatalf("pool while its node is dead: %+v (before %+v)", p, before)
	}

	s.storage.start()
	s.waitReady()
	var pr wire.PruneResp
	poll.Until(t, 30*time.Second, func() error {
		s.json(&pr, "prune")
		for _, v := range s.volumes() {
			if slices.Contains(old, v.Name) {
				return fmt.Errorf("volume %s is still in the catalog (%s): prune said %+v", v.Name, v.State, pr)
			}
		}
		return nil
	})
	for _, v := range old {
		if _, err := os.Stat(filepath.Join(s.poolDir, v+".cvol")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("volume file %s after prune: %v", v, err)
		}
	}
	after := s.poolOf()
	if after.ReclaimableBytes != 0 || after.UsedBytes >= before.UsedBytes || after.Volumes != before.Volumes-len(old) {
		t.Errorf("pool after prune: %+v, before: %+v", after, before)
	}
	var hist []wire.ExpiryRecord
	s.json(&hist, "prune", "--history")
	if len(hist) != 2 || hist[0].BackupID != incr1.BackupID || hist[1].Reason != "deleted by hand" {
		t.Errorf("history %+v", hist)
	}

	// What is kept restores: the newest, through its chain.
	to := filepath.Join(t.TempDir(), "restored")
	s.restore(to, "--backup", strconv.FormatUint(incr2.BackupID, 10))
	checkRestored(t, snap, to, src)
}

// TestPruneUnderKeepLast2, with real processes: three fulls of a file set,
// each on volumes of its own, under a policy that keeps the last 2. prune
// --dry-run says the oldest would go and why; prune expires it, its volume
// file leaves the pool directory, pool list shows the space back, and the
// two kept backups restore what they held.
func TestPruneUnderKeepLast2(t *testing.T) {
	s := newStack(t, stackOpts{poolOpts: ",volume-size=6m"})
	src := filepath.Join(t.TempDir(), "src")
	var fulls []wire.JobInfo
	var snaps []*sample.Manifest
	for i := range 3 {
		writeRandomFiles(t, src, 3, 512<<10, uint64(10+i))
		snaps = append(snaps, snapshot(t, src))
		fulls = append(fulls, s.backup("full", src))
	}
	var backups []wire.BackupInfo
	s.json(&backups, "backup", "list", "--client", s.client)
	oldVols := volumesOf(t, backups, fulls[0].BackupID)
	before := s.poolOf()

	s.ok("policy", "create", "nightly", "--client", s.client, "--path", src, "--schedule", "daily 02:00", "--pool", s.pool, "--keep-last", "2")

	// On hold, the oldest stays whatever the policy says, and cannot be
	// deleted; released, it goes.
	oldest := strconv.FormatUint(fulls[0].BackupID, 10)
	s.ok("backup", "hold", oldest, "--reason", "case 4711")
	var held wire.PruneResp
	s.json(&held, "prune", "--dry-run")
	if held.Expired != 0 {
		t.Fatalf("prune --dry-run with the oldest on hold: %+v", held)
	}
	var show wire.BackupShowResp
	s.json(&show, "backup", "show", oldest)
	if show.Backup.Hold == nil || show.Backup.Hold.Reason != "case 4711" || show.Retention != "on legal hold" {
		t.Fatalf("backup show of the held backup: %+v", show)
	}
	s.fails(1, []string{"on legal hold (case 4711)", "cairn backup release"}, "backup", "delete", oldest)
	s.ok("backup", "release", oldest)

	var dry wire.PruneResp
	s.json(&dry, "prune", "--dry-run")
	if dry.Expired != 1 || len(dry.Groups) != 1 || dry.Groups[0].Policy != "nightly" || dry.Groups[0].Expire[0].ID != fulls[0].BackupID ||
		dry.Groups[0].Expire[0].Reason != "no rule keeps it" {
		t.Fatalf("prune --dry-run: %+v", dry)
	}
	if r := s.ok("prune", "--dry-run"); !strings.Contains(r.stdout, "would expire: no rule keeps it") {
		t.Errorf("prune --dry-run for people:\n%s", r.stdout)
	}
	s.json(&backups, "backup", "list", "--policy", "nightly")
	if len(backups) != 3 || backups[2].Expires != "no rule keeps it" || backups[0].Expires != "" {
		t.Fatalf("backup list --policy: %+v", backups)
	}
	var pr wire.PruneResp
	s.json(&pr, "prune")
	if pr.Expired != 1 || len(pr.Pending) != 0 {
		t.Fatalf("prune: %+v", pr)
	}
	for _, v := range oldVols {
		if _, err := os.Stat(filepath.Join(s.poolDir, v+".cvol")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("volume file %s after prune: %v", v, err)
		}
	}
	if after := s.poolOf(); after.ReclaimableBytes != 0 || after.UsedBytes >= before.UsedBytes || after.Volumes != before.Volumes-len(oldVols) {
		t.Errorf("pool after prune %+v, before %+v", after, before)
	}
	for i := 1; i < 3; i++ {
		to := filepath.Join(t.TempDir(), fmt.Sprint("restored", i))
		s.restore(to, "--backup", strconv.FormatUint(fulls[i].BackupID, 10))
		checkRestored(t, snaps[i], to, src)
	}
}
