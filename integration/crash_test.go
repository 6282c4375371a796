package integration

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/media/volume"
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
	_, parts := openVolumeFile(t, path)
	return parts
}

// openVolumeFile opens a volume file, closed when the test ends, and reads
// its parts.
func openVolumeFile(t *testing.T, path string) (*os.File, []volume.PartInfo) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
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
		t.Fatalf("parts of %s: %v", path, err)
	}
	return f, parts
}

// TestStorageNodeKilledMidBackup kills the storage node with SIGKILL while
// a backup streams to it. The job goes back to the queue at once (the agent
// sees the stream break) and says what it waits for, instead of hanging;
// nothing of the interrupted session is in the catalog; the node restarts
// cleanly on the same data directory; the job runs again (attempt 2) and
// succeeds after the torn tail is cut off the volume; the earlier backup
// restores byte for byte; and the next backup works.
func TestStorageNodeKilledMidBackup(t *testing.T) {
	s := newStack(t, stackOpts{})
	small := makeTree(t, smallSpec(11))
	snapSmall := snapshot(t, small)
	earlier := s.backup("full", small)
	vol := s.volumes()[0]

	// Enough random data that the stream takes a few seconds.
	big, snapBig := randomFilesTree(t, 12, 32<<20, 13)
	id := s.startStreaming(big)

	// The agent notices the broken stream and the job goes back to the
	// queue, waiting for a storage node of its pool; the server's liveness
	// watchdog (5s here) is only the last resort.
	queued, _ := s.killMidBackup(s.storage, id)
	if !strings.Contains(queued.Waiting, s.node) || queued.Attempt != 1 {
		t.Errorf("the requeued backup does not say it waits for storage node %s: %+v", s.node, queued)
	}
	if log := jobLogText(queued); !strings.Contains(log, "back in the queue after attempt 1 on storage node "+s.node) || !strings.Contains(log, "broke during the backup") {
		t.Errorf("the job log does not tell why it went back to the queue:\n%s", log)
	}
	s.checkNoneComplete("the interrupted backup", earlier.BackupID)
	// What the dead node left on the volume is a torn part past the
	// committed end.
	if parts := volumeParts(t, vol.Path); len(parts) != 2 || !parts[1].Torn {
		t.Errorf("volume %s after the kill: %d parts, want the committed one and a torn one: %+v", vol.Name, len(parts), parts)
	}

	// The node starts again on the same data directory, and the queued job
	// runs on it again.
	s.storage.start()
	s.waitReady()
	if !s.storage.alive() {
		t.Fatalf("the storage node did not restart: %v", s.storage.exitErr())
	}
	retried := s.waitRetried(id, 60*time.Second)
	if !strings.Contains(s.storage.logText(), "cut off an uncommitted tail") {
		t.Errorf("the storage node did not report cutting the torn tail off a volume")
	}
	s.checkBackupRestores(retried.BackupID, snapBig, big)
	s.checkBackupRestores(earlier.BackupID, snapSmall, small)

	next := s.backup("incremental", small)
	vols := s.volumes()
	sessions := 0
	for _, v := range vols {
		for i, p := range volumeParts(t, v.Path) {
			if p.Torn {
				t.Errorf("volume %s still holds a torn part (%d) after the next backup: %s", v.Name, i, p.TornReason)
			}
		}
		if size := fileSize(t, v.Path); size != v.Bytes {
			t.Errorf("volume file %s has %d bytes; the catalog has %d committed", v.Path, size, v.Bytes)
		}
		sessions += v.Sessions
	}
	if sessions != 3 {
		t.Errorf("the volumes hold %d sessions, want 3 (earlier, the retried one, next): %+v", sessions, vols)
	}
	s.checkBackupRestores(next.BackupID, snapSmall, small)
}

// TestStorageNodeKilledAfterIndexSegmentsSent: the storage node sends a
// session's index segments to the catalog while it writes the session.
// Killed after the catalog took some, the attempt leaves none behind: the
// requeue drops them, the second attempt sends its index from segment 0
// again, and the backup restores byte for byte.
func TestStorageNodeKilledAfterIndexSegmentsSent(t *testing.T) {
	s := newStack(t, stackOpts{nodeArgs: []string{"--log-level", "debug"}})
	src := filepath.Join(t.TempDir(), "src")
	// Many small files first, to make index segments (about 6,500
	// entries each), then enough random data that the stream goes on
	// after the catalog took two of them.
	for d := range 15 {
		dir := filepath.Join(src, "a", fmt.Sprintf("d%02d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 1000 {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d.txt", i)), fmt.Appendf(nil, "file %d of directory %d\n", i, d), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeRandomFiles(t, filepath.Join(src, "z"), 8, 32<<20, 21)

	id := s.startStreaming(src)
	second := regexp.MustCompile(`msg="index segment sent".* no=1 `)
	poll.Until(t, 60*time.Second, func() error {
		if !second.MatchString(s.storage.logText()) {
			return errors.New("the storage node has not sent a second index segment")
		}
		return nil
	})
	s.killMidBackup(s.storage, id)
	// A file of the first segment changes before the second attempt reads
	// it, so that attempt's index is not the first one's again (offsets
	// count from the session's start: the same tree gives the same bytes).
	if err := os.WriteFile(filepath.Join(src, "a", "d00", "f0000.txt"), []byte("changed between the attempts\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := snapshot(t, src)
	s.storage.start()
	s.waitReady()
	retried := s.waitRetried(id, 90*time.Second)
	s.checkBackupRestores(retried.BackupID, want, src)
}
