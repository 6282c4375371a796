package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// TestStorageNodeKilledMidConsolidation kills the storage node with
// SIGKILL while it makes a synthetic full from a chain on its disk pool.
// The job goes back to the queue and says it waits for that node (the one
// that holds the chain); nothing of the torn session is in the catalog; the
// node restarts on the same data directory and the fold runs again
// (attempt 2) and succeeds. The synthetic full restores the chain's last
// point in time byte for byte, the chain still restores, the next
// incremental builds on the synthetic full, and no volume keeps a torn part.
func TestStorageNodeKilledMidConsolidation(t *testing.T) {
	s := newStack(t, stackOpts{})
	// Enough random data that the fold takes a few seconds.
	src, _ := randomFilesTree(t, 8, 32<<20, 19)
	full := s.backup("full", src)
	f, err := os.OpenFile(filepath.Join(src, "added.log"), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "a change for the incremental")
	f.Close()
	incr := s.backup("incremental", src)
	atIncr := snapshot(t, src)

	vols := s.volumes()
	if len(vols) != 1 {
		t.Fatalf("the chain lies on %d volumes, want one: %+v", len(vols), vols)
	}
	var started wire.JobStarted
	s.json(&started, "backup", "consolidate", "--client", s.client)
	id := started.JobID
	// Stopped once the new session grows the volume past what the catalog
	// holds, so that the kill falls in its middle: the fold of 256 MiB
	// takes a fraction of a second here, less than a progress report's
	// interval.
	poll.Until(t, 60*time.Second, func() error {
		if size := fileSize(t, vols[0].Path); size <= vols[0].Bytes {
			return fmt.Errorf("volume %s is %d bytes, as committed", vols[0].Name, size)
		}
		return nil
	})
	pause(t, s.storage)
	if j := s.job(id); j.State != "running" {
		t.Fatalf("the synthetic full ended (%s) before its node was stopped; make the tree bigger", j.State)
	}
	queued, _ := s.killMidBackup(s.storage, id)
	if !strings.Contains(queued.Waiting, s.node) || queued.Attempt != 1 {
		t.Errorf("the requeued synthetic full does not say it waits for storage node %s: %+v", s.node, queued)
	}
	s.checkNoneComplete("the interrupted synthetic full", full.BackupID, incr.BackupID)

	s.storage.start()
	s.waitReady()
	retried := s.waitRetried(id, 2*time.Minute)
	if log := jobLogText(retried); !strings.Contains(log, "attempt 1 on storage node "+s.node) {
		t.Errorf("the job log does not say why attempt 1 ended:\n%s", log)
	}
	var backups []wire.BackupInfo
	s.json(&backups, "backup", "list", "--client", s.client)
	var synth wire.BackupInfo
	for _, b := range backups {
		if b.ID == retried.BackupID {
			synth = b
		}
	}
	if synth.Level != "full" || synth.State != "complete" || synth.Consolidates != incr.BackupID {
		t.Fatalf("the synthetic full after the kill: %+v", synth)
	}
	s.checkBackupRestores(synth.ID, atIncr, src)
	s.checkBackupRestores(incr.BackupID, atIncr, src)

	if err := os.WriteFile(filepath.Join(src, "after.txt"), []byte("after the fold\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	next := s.backup("incremental", src)
	var nextInfo wire.BackupInfo
	s.json(&backups, "backup", "list", "--client", s.client)
	for _, b := range backups {
		if b.ID == next.BackupID {
			nextInfo = b
		}
	}
	if nextInfo.Parent != synth.ID {
		t.Errorf("the incremental after the fold builds on backup %d, want the synthetic full %d", nextInfo.Parent, synth.ID)
	}
	s.checkBackupRestores(next.BackupID, snapshot(t, src), src)
	for _, v := range s.volumes() {
		for i, p := range volumeParts(t, v.Path) {
			if p.Torn {
				t.Errorf("volume %s still holds a torn part (%d): %s", v.Name, i, p.TornReason)
			}
		}
		if size := fileSize(t, v.Path); size != v.Bytes {
			t.Errorf("volume file %s has %d bytes; the catalog has %d committed", v.Path, size, v.Bytes)
		}
	}
}
