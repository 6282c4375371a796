package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/devstack"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// TestCancelRestoreWaitingForTape: a restore whose tape is in the vault
// waits for "insert tape X"; 'cairn job cancel' ends it (exit 0), it is
// canceled and waits for nothing, and its target got nothing. Once the tape
// is back, the next restore from it succeeds: the canceled one holds no
// drive and left the node's library as it was.
func TestCancelRestoreWaitingForTape(t *testing.T) {
	s, st := startTapeStack(t, devstack.Config{})
	emu := st.Library().Emulated()

	s.ok("media", "label", "--library", "lib1", "--slots", "1", "--pool", "Weekly")
	src := makeTree(t, sample.Spec{TextFiles: 5, RandomFiles: 5, MaxFileSize: 64 << 10, Seed: 9})
	snap := snapshot(t, src)
	var job wire.JobInfo
	s.json(&job, "backup", "--client", "web", "--path", src, "--level", "full", "--pool", "Weekly", "--wait")
	if job.State != "success" || len(job.Volumes) != 1 {
		t.Fatalf("backup to tape: %+v", job)
	}
	bc := job.Volumes[0]
	s.ok("library", "export", "--barcode", bc)
	removed := 0
	for mail := devstack.LibrarySlots + 1; mail <= devstack.LibrarySlots+devstack.LibraryMail; mail++ {
		if _, err := emu.Remove(mail); err == nil {
			removed++
		}
	}
	if removed != 1 {
		t.Fatalf("took %d tapes out of the mail slots, want the exported one", removed)
	}
	s.ok("library", "status")

	to := filepath.Join(t.TempDir(), "restore")
	var started wire.JobStarted
	s.json(&started, "restore", "--client", "web", "--to", to, "--backup", strconv.FormatUint(job.BackupID, 10), "--wait=false")
	id := strconv.FormatUint(started.JobID, 10)
	poll.Until(t, time.Minute, func() error {
		w := s.job(started.JobID)
		if w.State != "running" || !strings.Contains(w.Waiting, "insert tape "+bc) {
			return fmt.Errorf("restore job %s, waiting %q", w.State, w.Waiting)
		}
		return nil
	})
	r := s.ok("job", "cancel", id, "--reason", "the tape stays in the vault")
	if !strings.Contains(r.stdout, "restore job "+id+" canceled") || !strings.Contains(r.stdout, "the tape stays in the vault") {
		t.Fatalf("cancel of a restore waiting for a tape:\n%s", r)
	}
	j := s.job(started.JobID)
	if j.State != "canceled" || j.Waiting != "" || j.CancelReason != "the tape stays in the vault" {
		t.Fatalf("canceled restore %+v", j)
	}
	logText, err := os.ReadFile(filepath.Join(s.dir, "stack.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logText), `component=storagenode`) || !regexp.MustCompile(`msg="stopping a job on the servers' order" component=storagenode .*job=`+id+` `).Match(logText) {
		t.Fatalf("the storage node did not stop restore job %s waiting for its tape", id)
	}
	if entries, err := os.ReadDir(to); err == nil && len(entries) > 0 {
		t.Fatalf("the canceled restore wrote %d entries into its target", len(entries))
	}
	// A repeated cancel (a script's retry) finds it canceled: exit 0.
	if r := s.ok("job", "cancel", id); !strings.Contains(r.stdout, "restore job "+id+" canceled") {
		t.Fatalf("a repeated cancel:\n%s", r)
	}

	// The tape comes back; the next restore reads it.
	if _, err := emu.Insert(0, bc); err != nil {
		t.Fatalf("insert %s: %v", bc, err)
	}
	if r := s.cairn("library", "import"); r.code != 0 {
		t.Fatalf("import:\n%s", r)
	}
	to2 := filepath.Join(t.TempDir(), "restore2")
	s.restore(to2, "--backup", strconv.FormatUint(job.BackupID, 10))
	checkRestored(t, snap, to2, src)
}
