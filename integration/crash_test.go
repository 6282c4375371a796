package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// writeRandomFiles fills dir with n files of size random bytes each.
func writeRandomFiles(t *testing.T, dir string, n, size int, seed uint64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := rand.NewChaCha8([32]byte{byte(seed)})
	buf := make([]byte, size)
	for i := 0; i < n; i++ {
		_, _ = r.Read(buf)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("part-%02d.bin", i)), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// volumeParts lists the session parts on a volume file.
func volumeParts(t *testing.T, path string) []volume.PartInfo {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	v, err := volume.OpenVolume(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	parts, err := v.Parts()
	if err != nil {
		t.Fatal(err)
	}
	return parts
}

// TestStorageNodeKilledMidBackup kills the storage node with SIGKILL while
// a backup streams to it. The job fails soon (the agent sees the stream
// break) instead of hanging; the node restarts cleanly on the same data
// directory; the earlier backup restores byte for byte; and the next backup
// cuts the torn tail off the volume and succeeds.
func TestStorageNodeKilledMidBackup(t *testing.T) {
	s := newStack(t, stackOpts{})
	small := makeTree(t, smallSpec(11))
	snapSmall := snapshot(t, small)
	earlier := s.backup("full", small)
	vol := s.volumes()[0]

	// Enough random data that the stream takes a few seconds.
	big := filepath.Join(t.TempDir(), "big")
	writeRandomFiles(t, big, 12, 32<<20, 13)
	var started wire.JobStarted
	s.json(&started, "backup", "--client", s.client, "--path", big, "--level", "full")
	var progress int64
	eventually(t, 30*time.Second, func() error {
		j := s.job(started.JobID)
		if j.State != "running" {
			t.Fatalf("the big backup ended %s before the storage node could be killed in its middle: %+v", j.State, j)
		}
		if j.Progress == nil || j.Progress.Bytes == 0 {
			return fmt.Errorf("job %d shows no progress yet", started.JobID)
		}
		progress = j.Progress.Bytes
		return nil
	})
	s.storage.kill()
	killed := time.Now()
	t.Logf("killed the storage node after %d bytes of the backup", progress)

	// The agent notices the broken stream and the job fails; the server's
	// liveness watchdog (5s here) is only the last resort.
	var failed wire.JobInfo
	eventually(t, 20*time.Second, func() error {
		failed = s.job(started.JobID)
		if failed.State == "running" || failed.State == "queued" {
			return fmt.Errorf("job %d still %s %s after the storage node died", failed.ID, failed.State, time.Since(killed).Round(time.Millisecond))
		}
		return nil
	})
	t.Logf("job failed %s after the kill: %s", time.Since(killed).Round(time.Millisecond), failed.Error)
	if failed.State != "failed" || failed.Error == "" || failed.Hint == "" {
		t.Fatalf("the interrupted backup: %+v", failed)
	}
	if !strings.Contains(failed.Error, "storage node") {
		t.Errorf("the error of the interrupted backup does not name the storage node: %s", failed.Error)
	}
	if strings.Contains(failed.Error, "stopped answering") {
		t.Errorf("only the server's watchdog noticed the dead storage node, not the agent: %s", failed.Error)
	}
	var backups []wire.BackupInfo
	s.json(&backups, "backup", "list", "--client", s.client)
	for _, b := range backups {
		if b.ID != earlier.BackupID && b.State == "complete" {
			t.Errorf("the interrupted backup is listed as complete: %+v", b)
		}
	}
	// What the dead node left on the volume is a torn part past the
	// committed end.
	if parts := volumeParts(t, vol.Path); len(parts) != 2 || !parts[1].Torn {
		t.Errorf("volume %s after the kill: %d parts, want the committed one and a torn one: %+v", vol.Name, len(parts), parts)
	}

	// The node starts again on the same data directory.
	s.storage.start()
	s.waitReady()
	if !s.storage.alive() {
		t.Fatalf("the storage node did not restart: %v", s.storage.exitErr())
	}

	to := filepath.Join(t.TempDir(), "earlier")
	s.restore(to, "--backup", strconv.FormatUint(earlier.BackupID, 10))
	checkRestored(t, snapSmall, to, small)

	next := s.backup("incremental", small)
	if !strings.Contains(s.storage.logText(), "cut off an uncommitted tail") {
		t.Errorf("the storage node did not report cutting the torn tail off a volume")
	}
	vols := s.volumes()
	for _, v := range vols {
		for i, p := range volumeParts(t, v.Path) {
			if p.Torn {
				t.Errorf("volume %s still holds a torn part (%d) after the next backup: %s", v.Name, i, p.TornReason)
			}
		}
		if size := fileSize(t, v.Path); size != v.Bytes {
			t.Errorf("volume file %s has %d bytes; the catalog has %d committed", v.Path, size, v.Bytes)
		}
	}
	if len(vols) != 1 || vols[0].Sessions != 2 {
		t.Errorf("the next backup should append to the same volume: %+v", vols)
	}
	to = filepath.Join(t.TempDir(), "next")
	s.restore(to, "--backup", strconv.FormatUint(next.BackupID, 10))
	checkRestored(t, snapSmall, to, small)
}
