package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// mountTmpfs mounts a tmpfs of size on dir until the test ends. Its cleanup
// is registered now, so it runs after that of anything started later (the
// storage node that holds files on it).
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if _, err := exec.LookPath("mount"); err != nil {
		need(t, "mount(8)", err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		need(t, "permission to mount a tmpfs (root)", fmt.Errorf("mount -t tmpfs on %s: %v: %s", dir, err, out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			_ = exec.Command("umount", "-l", dir).Run()
		}
	})
}

func writeRandom(t *testing.T, path string, n int, seed uint64) {
	t.Helper()
	if err := os.WriteFile(path, sample.RandomBytes(rand.New(rand.NewPCG(seed, seed)), n), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPoolFull runs a storage node whose pool is a 24 MiB filesystem: a
// backup that does not fit fails with a message naming the pool and what to
// do, leaves no backup behind, and harms neither the backup before it nor
// the one after, once there is room again.
func TestPoolFull(t *testing.T) {
	poolDir := filepath.Join(t.TempDir(), "pool")
	if err := os.MkdirAll(poolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, poolDir, "24m")
	s := newStack(t, stackOpts{poolDir: poolDir})

	src := makeTree(t, sample.Spec{TextFiles: 20, RandomFiles: 5, MaxFileSize: 32 << 10, Seed: 7})
	snap := snapshot(t, src)
	first := s.backup("full", src)
	vol := s.volumes()[0]

	// More than the space left: the filesystem fills in the middle of it.
	huge := filepath.Join(src, "data", "huge.bin")
	writeRandom(t, huge, 28<<20, 9)
	r := s.fails(1, []string{"pool Default", "full", "free space in " + poolDir, "rerun the job"},
		"backup", "--client", s.client, "--path", src, "--wait")

	var failed []wire.JobInfo
	s.json(&failed, "job", "list", "--state", "failed")
	if len(failed) != 1 || failed[0].Type != "backup" || failed[0].ErrorCode != wire.CodePoolFull {
		t.Fatalf("failed jobs: %+v\n%s", failed, r)
	}
	failedJob := s.job(failed[0].ID)
	if failedJob.State != "failed" || failedJob.Hint == "" {
		t.Errorf("job show of the failed backup: %+v", failedJob)
	}
	s.checkNoneComplete("the failed backup", first.BackupID)
	// The failed session was cut off its volume: the space is free again,
	// and the volume holds exactly what the catalog says it does.
	if size := fileSize(t, vol.Path); size != vol.Bytes {
		t.Errorf("volume file %s after the failed backup has %d bytes; the catalog has %d", vol.Path, size, vol.Bytes)
	}
	if after := s.volumes(); len(after) != 1 || after[0].Bytes != vol.Bytes || after[0].State != vol.State {
		t.Errorf("volumes after the failed backup: %+v, before: %+v", after, vol)
	}

	// The backup from before is intact.
	to := filepath.Join(t.TempDir(), "first")
	s.restore(to, "--backup", strconv.FormatUint(first.BackupID, 10))
	checkRestored(t, snap, to, src)

	// With the huge file gone, the next backup fits, and restores.
	if err := os.Remove(huge); err != nil {
		t.Fatal(err)
	}
	next := s.backup("incremental", src)
	to = filepath.Join(t.TempDir(), "next")
	s.restore(to, "--backup", strconv.FormatUint(next.BackupID, 10))
	checkRestored(t, snapshot(t, src), to, src)
}

// TestPoolFullDuringConsolidation: a synthetic full that does not fit its
// pool (a 24 MiB filesystem holding a 14 MiB chain) fails with the pool's
// message, is cut off its volume, records no backup, and leaves the chain
// whole; once the filesystem has room, the same fold succeeds and restores.
func TestPoolFullDuringConsolidation(t *testing.T) {
	poolDir := filepath.Join(t.TempDir(), "pool")
	if err := os.MkdirAll(poolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, poolDir, "24m")
	s := newStack(t, stackOpts{poolDir: poolDir})
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(src, "data.bin"), 14<<20, 11)
	full := s.backup("full", src)
	writeRandom(t, filepath.Join(src, "more.bin"), 64<<10, 12)
	incr := s.backup("incremental", src)
	want := snapshot(t, src)
	vols := s.volumes()

	r := s.fails(1, []string{"pool Default", "full", "free space in " + poolDir},
		"backup", "consolidate", "--client", s.client, "--wait")
	t.Logf("the fold that did not fit:\n%s", r)
	var failed []wire.JobInfo
	s.json(&failed, "job", "list", "--state", "failed")
	if len(failed) != 1 || failed[0].Level != "synthetic-full" || failed[0].ErrorCode != wire.CodePoolFull {
		t.Fatalf("failed jobs: %+v\n%s", failed, r)
	}
	s.checkNoneComplete("the failed synthetic full", full.BackupID, incr.BackupID)
	for _, v := range vols {
		if size := fileSize(t, v.Path); size != v.Bytes {
			t.Errorf("volume file %s after the failed fold has %d bytes; the catalog has %d", v.Path, size, v.Bytes)
		}
	}
	if after := s.volumes(); len(after) != len(vols) {
		t.Errorf("volumes after the failed fold: %+v, before: %+v", after, vols)
	}
	s.checkBackupRestores(incr.BackupID, want, src)

	if out, err := exec.Command("mount", "-o", "remount,size=64m", poolDir).CombinedOutput(); err != nil {
		t.Fatalf("remount the pool's tmpfs larger: %v: %s", err, out)
	}
	var j wire.JobInfo
	s.json(&j, "backup", "consolidate", "--client", s.client, "--wait")
	if j.State != "success" || j.BackupID == 0 {
		t.Fatalf("the fold once there is room: %+v", j)
	}
	s.checkBackupRestores(j.BackupID, want, src)
}
