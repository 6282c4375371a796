package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// spoolChunks lists the spool chunk files under dir, with what stat says
// of each.
func spoolChunks(t *testing.T, dir string) map[string]os.FileInfo {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "job-*", "spool-*.chunk"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]os.FileInfo{}
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			out[p] = fi
		}
	}
	return out
}

// TestStorageNodeKilledMidSpooledTapeBackup: a storage node process that
// spools a tape backup (an emulated library) is killed with SIGKILL in the
// middle of it, which leaves the spool chunks it was filling and
// despooling on disk. Restarted, it removes them before it takes any work
// and says so; the backup, which went back to the queue, starts over on
// it (a session never resumes from its chunks) and completes, and the
// backup committed to tape before the kill restores as before.
func TestStorageNodeKilledMidSpooledTapeBackup(t *testing.T) {
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	nodeCfg := writeJSON(t, filepath.Join(dir, "storagenode-tape.json"), map[string]any{
		"heartbeat_interval": int64(300 * time.Millisecond),
		"libraries": []any{map[string]any{"name": "lib1", "emulated": map[string]any{
			"dir": filepath.Join(dir, "lib1"), "drives": 1, "slots": 4, "mail_slots": 1,
			"barcodes":       []string{"SPL001L9", "SPL002L9", "SPL003L9"},
			"cartridge_size": "512M", "early_warning_size": "16M", "profile": "fast",
		}}},
		"tape_pools": []any{map[string]any{"name": "Weekly", "library": "lib1", "spool_dir": spoolDir, "spool_chunk_size": "1M"}},
	})
	// The agent streams slowly, so the backup is long enough to kill the
	// node in its middle.
	s := newStack(t, stackOpts{nodeArgs: []string{"--config", nodeCfg}, agentConfig: map[string]any{"max_bytes_per_second": 4 << 20}})
	s.ok("media", "label", "--library", "lib1", "--slots", "1-2", "--pool", "Weekly")

	small := makeTree(t, smallSpec(71))
	snapSmall := snapshot(t, small)
	var earlier wire.JobInfo
	s.json(&earlier, "backup", "--client", s.client, "--path", small, "--level", "full", "--pool", "Weekly", "--wait")
	if earlier.State != "success" || earlier.Tape == nil || !earlier.Tape.Spooled {
		t.Fatalf("the first backup to tape: %+v, tape %+v", earlier, earlier.Tape)
	}
	if left := spoolChunks(t, spoolDir); len(left) != 0 {
		t.Fatalf("a backup that completed left spool chunks: %v", left)
	}

	big, snapBig := randomFilesTree(t, 8, 8<<20, 73)
	id := s.startBackup(big, "--pool", "Weekly")
	s.waitStreaming(id, 60*time.Second, func(j wire.JobInfo) error {
		if j.Progress.Bytes < 6<<20 {
			return fmt.Errorf("job %d has not streamed 6 MiB yet: %+v", id, j.Progress)
		}
		if len(spoolChunks(t, spoolDir)) == 0 {
			return fmt.Errorf("job %d has no spool chunk on disk", id)
		}
		return nil
	})
	// The job goes back to the queue: the node is gone.
	s.killMidBackup(s.storage, id)
	orphans := spoolChunks(t, spoolDir)
	if len(orphans) == 0 {
		t.Fatal("the killed node left no spool chunk: nothing to test")
	}
	var bytes int64
	for p, fi := range orphans {
		bytes += fi.Size()
		t.Logf("left by the killed node: %s (%d bytes)", p, fi.Size())
	}

	s.storage.start()
	poll.Until(t, 30*time.Second, func() error {
		failIfCrashed(t, s.storage)
		if !strings.Contains(s.storage.logText(), "removed the spool chunks of backups that were cut off when this node last stopped") {
			return fmt.Errorf("the restarted node has not said it removed the orphaned spool chunks")
		}
		return nil
	})
	line := ""
	for _, l := range strings.Split(s.storage.logText(), "\n") {
		if strings.Contains(l, "removed the spool chunks") {
			line = l
		}
	}
	if !strings.Contains(line, "files="+strconv.Itoa(len(orphans))) || !strings.Contains(line, "dir="+spoolDir) {
		t.Errorf("the node's log line does not count the %d chunks (%d bytes) left in %s:\n%s", len(orphans), bytes, spoolDir, line)
	}
	// Each orphan is gone: a chunk by that name now is the retried
	// session's, another file.
	for p, fi := range orphans {
		if now, err := os.Stat(p); err == nil && os.SameFile(fi, now) {
			t.Errorf("orphaned spool chunk %s is still there after the restart", p)
		}
	}

	retried := s.waitRetried(id, 2*time.Minute)
	if left := spoolChunks(t, spoolDir); len(left) != 0 {
		t.Errorf("spool chunks left after the retried backup completed: %v", left)
	}
	s.checkBackupRestores(retried.BackupID, snapBig, big)
	s.checkBackupRestores(earlier.BackupID, snapSmall, small)
}
