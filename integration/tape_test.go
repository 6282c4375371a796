package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"

	"github.com/cairnbackup/cairn/devstack"
	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// TestTapeEndToEnd drives tape through the command line against an
// all-in-one stack with an emulated library (so the test has an operator's
// hands at the mail slots): labeling slots, the library's status and
// moves, a backup that spans two small cartridges through the spool, a
// restore from them, and a restore that waits for "insert tape X" after
// its tapes went to the vault and goes on once they are imported.
func TestTapeEndToEnd(t *testing.T) {
	s, st := startTapeStack(t, devstack.Config{
		CartridgeBytes: 24 << 20, EarlyWarningBytes: 15 << 20, SpoolChunkBytes: 1 << 20,
	})
	emu := st.Library().Emulated()

	// The library before any label: blank tapes in slots 1-20.
	r := s.ok("library", "status")
	if !strings.Contains(r.stdout, "CRN001L9") || !strings.Contains(r.stdout, "(not labeled)") || !strings.Contains(r.stdout, "20 of 24 slots full") {
		t.Fatalf("library status:\n%s", r)
	}
	var libs []wire.LibraryStatus
	s.json(&libs, "library", "status", "--library", "lib1")
	if len(libs) != 1 || len(libs[0].Drives) != 2 || len(libs[0].Slots) != 26 || libs[0].Node != "dev-node" {
		t.Fatalf("library status --json: %+v", libs)
	}

	// Labels: one request per slot; a failed tape does not stop the others.
	r = s.ok("media", "label", "--library", "lib1", "--slots", "1-3", "--pool", "Weekly")
	for _, bc := range []string{"CRN001L9", "CRN002L9", "CRN003L9"} {
		if !strings.Contains(r.stdout, bc+" labeled as volume "+bc+" of pool Weekly") {
			t.Fatalf("label output:\n%s", r)
		}
	}
	r = s.fails(1, []string{"slot 3: not labeled", "already volume CRN003L9", "slot 4: CRN004L9 labeled", "slot 22: not labeled", "empty", "2 of 3 tapes not labeled"},
		"media", "label", "--slots", "3-4,22", "--pool", "Weekly")
	s.fails(2, []string{"slots"}, "media", "label", "--slots", "x-y", "--pool", "Weekly")
	s.fails(1, []string{`library "lib9" is not known`}, "media", "label", "--library", "lib9", "--slots", "5", "--pool", "Weekly")
	s.fails(1, []string{"not a tape pool"}, "media", "label", "--slots", "5", "--pool", "Default")
	// A write-protected tape is refused by the node, which says so; the
	// catalog records nothing.
	if err := tape.SetWriteProtect(st.Library().CartridgePath("CRN005L9"), true); err != nil {
		t.Fatal(err)
	}
	s.fails(1, []string{"slot 5: not labeled", "write", "1 of 1 tapes not labeled"}, "media", "label", "--slots", "5", "--pool", "Weekly")
	s.json(&libs, "library", "status")
	if sl := libs[0].Slots[4]; sl.Barcode != "CRN005L9" || sl.Volume != "" {
		t.Fatalf("slot 5 after a refused label: %+v", sl)
	}
	if sl := libs[0].Slots[0]; sl.Volume != "CRN001L9" || sl.Pool != "Weekly" || sl.State != "append" {
		t.Fatalf("slot 1 after labeling: %+v", sl)
	}

	// Moves.
	s.ok("library", "load", "--drive", "0", "--slot", "2")
	var drives []struct {
		Library string `json:"library"`
		wire.DriveInfo
	}
	s.json(&drives, "drive", "status")
	if len(drives) != 2 || drives[0].Barcode != "CRN002L9" {
		t.Fatalf("drive status after a load: %+v", drives)
	}
	if loc := tapeLocation(s, "CRN002L9"); loc != "drive 0" {
		t.Fatalf("loaded tape at %q", loc)
	}
	s.ok("library", "unload", "--drive", "0")
	s.ok("library", "transfer", "--from", "4", "--to", "24")
	if loc := tapeLocation(s, "CRN004L9"); loc != "slot 24" {
		t.Fatalf("transferred tape at %q", loc)
	}
	s.fails(2, []string{"--slot"}, "library", "load", "--drive", "0")
	s.fails(1, []string{"lib1"}, "library", "load", "--drive", "7", "--slot", "1")
	if loc := tapeLocation(s, "CRN002L9"); loc != "slot 2" {
		t.Fatalf("unloaded tape at %q", loc)
	}
	r = s.ok("volume", "list")
	if !strings.Contains(r.stdout, "tape CRN001L9: slot 1 of lib1") {
		t.Fatalf("volume list:\n%s", r)
	}

	// A backup to tape, bigger than a cartridge's room before early warning.
	src := makeTree(t, sample.Spec{TextFiles: 20, RandomFiles: 90, MaxFileSize: 256 << 10, SparseSize: 1 << 20, Seed: 7})
	snap := snapshot(t, src)
	var job wire.JobInfo
	s.json(&job, "backup", "--client", "web", "--path", src, "--level", "full", "--pool", "Weekly", "--wait")
	if job.State != "success" || job.Tape == nil || job.Tape.Tapes < 2 || len(job.Volumes) < 2 || !job.Tape.Spooled || job.Tape.DriveBytes == 0 {
		t.Fatalf("backup to tape: %+v, tape %+v", job, job.Tape)
	}
	r = s.ok("job", "show", strconv.FormatUint(job.ID, 10))
	if !strings.Contains(r.stdout, "MB/s of drive time") || !strings.Contains(r.stdout, "drive stops") || !strings.Contains(r.stdout, "spooled") {
		t.Fatalf("job show of a tape backup:\n%s", r)
	}
	to := filepath.Join(t.TempDir(), "restore")
	s.restore(to, "--backup", strconv.FormatUint(job.BackupID, 10))
	checkRestored(t, snap, to, src)

	// Its tapes go to the vault: exported, then taken out of the mail slots.
	tapes := slices.Clone(job.Volumes)
	for _, bc := range tapes {
		s.ok("library", "export", "--barcode", bc)
	}
	for mail := devstack.LibrarySlots + 1; mail <= devstack.LibrarySlots+devstack.LibraryMail; mail++ {
		if _, err := emu.Remove(mail); err != nil {
			t.Fatalf("take a tape out of mail slot %d: %v", mail, err)
		}
	}
	s.ok("library", "status")
	for _, bc := range tapes {
		if loc := tapeLocation(s, bc); loc != "vault" {
			t.Fatalf("tape %s taken out of the library is at %q", bc, loc)
		}
	}

	// A restore waits for them, saying what to do, and goes on once they
	// are imported.
	to2 := filepath.Join(t.TempDir(), "restore2")
	var started wire.JobStarted
	s.json(&started, "restore", "--client", "web", "--to", to2, "--backup", strconv.FormatUint(job.BackupID, 10), "--wait=false")
	var waiting wire.JobInfo
	poll.Until(t, time.Minute, func() error {
		waiting = s.job(started.JobID)
		if waiting.State != "running" || !strings.Contains(waiting.Waiting, "insert tape "+tapes[0]) {
			return fmt.Errorf("restore job %s, waiting %q", waiting.State, waiting.Waiting)
		}
		return nil
	})
	r = s.ok("job", "show", strconv.FormatUint(started.JobID, 10))
	if !strings.Contains(r.stdout, "waiting") || !strings.Contains(r.stdout, "insert tape "+tapes[0]) {
		t.Fatalf("job show of a waiting restore:\n%s", r)
	}
	for _, bc := range tapes {
		if _, err := emu.Insert(0, bc); err != nil {
			t.Fatalf("insert %s: %v", bc, err)
		}
	}
	// The waiting job looks at the mail slots itself and may take a tape
	// in before the operator's import does; the two never move the same
	// cartridge, so the import succeeds either way.
	if r := s.cairn("library", "import"); r.code != 0 {
		t.Fatalf("import:\n%s", r)
	}
	var done wire.JobInfo
	poll.Until(t, 2*time.Minute, func() error {
		done = s.job(started.JobID)
		if done.State == "running" || done.State == "queued" {
			return fmt.Errorf("restore job %s, waiting %q", done.State, done.Waiting)
		}
		return nil
	})
	if done.State != "success" || done.Waiting != "" {
		t.Fatalf("restore after the import: %+v", done)
	}
	checkRestored(t, snap, to2, src)
	for _, bc := range tapes {
		if loc := tapeLocation(s, bc); !strings.HasPrefix(loc, "slot ") && !strings.HasPrefix(loc, "drive ") {
			t.Errorf("imported tape %s at %q", bc, loc)
		}
	}
}

// tapeLocation is where the catalog says the tape with barcode is.
func tapeLocation(s *stack, barcode string) string {
	s.t.Helper()
	var vols []wire.VolumeInfo
	s.json(&vols, "volume", "list")
	for _, v := range vols {
		if v.Barcode == barcode {
			return v.Location
		}
	}
	raw, _ := json.Marshal(vols)
	s.t.Fatalf("no volume %s in %s", barcode, raw)
	return ""
}

// Bad tapes end to end, as the storage node's and the servers' own tests
// have them against fakes: a backup granted a write-protected tape, and a
// backup whose tape shows a medium error midway, each go on on another
// tape; the bad tape is named, marked error in the catalog with the reason,
// and everything restores, from both tapes.
func TestTapeBadMediaEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		spoil        func(t *testing.T, st *devstack.Stack)
		heal         func(t *testing.T, st *devstack.Stack)
	}{
		{
			name: "write-protected", reason: "write-protected",
			spoil: func(t *testing.T, st *devstack.Stack) {
				if err := tape.SetWriteProtect(st.Library().CartridgePath(devstack.Barcode(1)), true); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			// Label, file mark and the part's header, then about 5 MiB of
			// data in 256 KiB blocks: the error comes midway through the
			// session.
			name: "medium error", reason: "medium error",
			// Drive 0, the one drive left empty, gets the bad tape; the
			// next one waits in drive 1. A spooled session starts again
			// on the next tape, so drive 1 must not show the error too.
			spoil: func(t *testing.T, st *devstack.Stack) {
				st.Library().EmulatedDrive(0).SetFaults(tape.Faults{MediumErrorAt: []int64{2 + 20}})
			},
			heal: func(t *testing.T, st *devstack.Stack) {
				st.Library().EmulatedDrive(0).SetFaults(tape.Faults{})
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, st := startTapeStack(t, devstack.Config{
				CartridgeBytes: 64 << 20, EarlyWarningBytes: 48 << 20, SpoolChunkBytes: 1 << 20,
			})

			// One tape in the pool, which the backup is granted first, and
			// one of Scratch in drive 1 it can go on to.
			bad, next := devstack.Barcode(1), devstack.Barcode(2)
			s.ok("media", "label", "--slots", "1", "--pool", "Weekly")
			s.ok("media", "label", "--slots", "2", "--pool", "Scratch")
			for d := range devstack.LibraryDrives {
				if r := s.cairn("library", "unload", "--drive", strconv.Itoa(d)); r.code != 0 && !strings.Contains(r.output(), "empty") {
					t.Fatalf("unload drive %d:\n%s", d, r)
				}
			}
			s.ok("library", "load", "--drive", "1", "--slot", "2")
			if loc := tapeLocation(s, bad); loc != "slot 1" {
				t.Fatalf("tape %s at %q before the backup", bad, loc)
			}
			tc.spoil(t, st)

			src := makeTree(t, sample.Spec{RandomFiles: 16, MaxFileSize: 1 << 20, Seed: 11})
			snap := snapshot(t, src)
			var job wire.JobInfo
			s.json(&job, "backup", "--client", "web", "--path", src, "--level", "full", "--pool", "Weekly", "--wait")
			if job.State != "success" || !slices.Contains(job.Volumes, next) {
				t.Fatalf("backup granted a bad tape: %+v", job)
			}
			var vol wire.VolumeInfo
			for _, v := range s.volumes() {
				if v.Barcode == bad {
					vol = v
				}
			}
			if vol.State != "error" || !strings.Contains(vol.Error, tc.reason) {
				t.Fatalf("the bad tape in the catalog: %+v, want state error with %q", vol, tc.reason)
			}
			r := s.ok("job", "show", strconv.FormatUint(job.ID, 10))
			if !strings.Contains(r.stdout, "volume "+bad+" marked error") || !strings.Contains(r.stdout, tc.reason) {
				t.Fatalf("the job's log does not name the bad tape %s:\n%s", bad, r)
			}

			if tc.heal != nil {
				tc.heal(t, st)
			}
			to := filepath.Join(t.TempDir(), "restore")
			s.restore(to, "--backup", strconv.FormatUint(job.BackupID, 10))
			checkRestored(t, snap, to, src)
		})
	}
}

// startTapeStack starts an all-in-one stack with an emulated library for
// client "web", logging to a file the test prints when it fails, and
// returns the command runner for it with the stack. cfg sets the tape
// sizes; the directory, client and logger are the helper's.
func startTapeStack(t *testing.T, cfg devstack.Config) (*stack, *devstack.Stack) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	dir := t.TempDir()
	logFile := filepath.Join(dir, "stack.log")
	lf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lf.Close() })
	cfg.Dir, cfg.Client = filepath.Join(dir, "state"), "web"
	cfg.Logger = slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.MountPoll == 0 {
		cfg.MountPoll = 200 * time.Millisecond
	}
	st, err := devstack.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	l := &logs{}
	l.add(logFile)
	l.printOnFailure(t)
	return &stack{t: t, dir: dir, logs: l, url: st.URL(), client: "web", node: "dev-node", pool: "Default",
		adminFlags: []string{"--nats-nkey", st.AdminAuth.NkeyFile}}, st
}
