package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/devstack"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// TestConsolidateDiskAndTape folds chains into synthetic fulls disk to
// disk, disk to tape and tape to tape (the library's two drives: one reads
// the chain's tape, the other writes a new one), with no agent involved:
// each new full restores the tree of its chain's newest point in time,
// exactly (deletions and renames of the incrementals included), from one
// session, and the next incremental builds on it. Bad input (no chain, an
// unknown pool, a source volume gone) fails with a clear error and records
// nothing.
func TestConsolidateDiskAndTape(t *testing.T) {
	s, st := startTapeStack(t, devstack.Config{
		CartridgeBytes: 24 << 20, EarlyWarningBytes: 15 << 20, SpoolChunkBytes: 1 << 20,
	})
	consolidate := func(args ...string) wire.JobInfo {
		t.Helper()
		var j wire.JobInfo
		s.json(&j, append([]string{"backup", "consolidate", "--client", "web", "--wait"}, args...)...)
		if j.State != "success" || j.BackupID == 0 {
			t.Fatalf("synthetic full job %d ended %s: %s", j.ID, j.State, j.Error)
		}
		return j
	}
	backup := func(level string, src string, extra ...string) wire.JobInfo {
		t.Helper()
		var j wire.JobInfo
		s.json(&j, append([]string{"backup", "--client", "web", "--path", src, "--level", level, "--wait"}, extra...)...)
		if j.State != "success" {
			t.Fatalf("%s backup job %d ended %s: %s", level, j.ID, j.State, j.Error)
		}
		return j
	}
	backups := func() map[uint64]wire.BackupInfo {
		t.Helper()
		var list []wire.BackupInfo
		s.json(&list, "backup", "list", "--client", "web")
		out := map[uint64]wire.BackupInfo{}
		for _, b := range list {
			out[b.ID] = b
		}
		return out
	}

	// Nothing to fold yet.
	s.fails(1, []string{"client web has no complete backup to consolidate", "run a full backup"}, "backup", "consolidate", "--client", "web")
	s.fails(1, []string{`client "nobody" is not known`}, "backup", "consolidate", "--client", "nobody")

	src := makeTree(t, smallSpec(14))
	full := backup("full", src)
	s.fails(1, []string{"is a full with nothing after it to fold in"}, "backup", "consolidate", "--client", "web")
	if err := sample.Change(src, 1); err != nil {
		t.Fatal(err)
	}
	backup("incremental", src)
	churn(t, src, 2)
	backup("incremental", src)
	snap2 := snapshot(t, src)
	before := backups()
	s.fails(1, []string{`pool "Nowhere" does not exist`}, "backup", "consolidate", "--client", "web", "--pool", "Nowhere")
	if after := backups(); len(after) != len(before) {
		t.Fatalf("a refused consolidation left backups behind: %d before, %d after", len(before), len(after))
	}

	// Disk to disk.
	var tip wire.BackupInfo
	for _, b := range before {
		if b.StartTime.After(tip.StartTime) {
			tip = b
		}
	}
	synth := consolidate()
	all := backups()
	b := all[synth.BackupID]
	if b.Level != "full" || b.Parent != 0 || b.Consolidates != tip.ID || !b.StartTime.Equal(tip.StartTime) || b.Pool != "Default" || b.State != "complete" {
		t.Fatalf("synthetic full %+v: want a complete full of pool Default at the point in time of backup %d (%s)", b, tip.ID, tip.StartTime)
	}
	job := s.job(synth.ID)
	if !logSays(job, "folds in "+strconv.FormatUint(full.BackupID, 10)+" (full") {
		t.Errorf("the job log does not say what was folded in:\n%v", job.Log)
	}
	dir := t.TempDir()
	r := s.restore(filepath.Join(dir, "synth"))
	if r.BackupID != synth.BackupID {
		t.Errorf("the restore of the latest point in time read backup %d, not the synthetic full %d", r.BackupID, synth.BackupID)
	}
	checkRestored(t, snap2, filepath.Join(dir, "synth"), src)

	// The next incremental builds on it.
	churn(t, src, 3)
	snap3 := snapshot(t, src)
	incr3 := backup("incremental", src)
	if p := backups()[incr3.BackupID].Parent; p != synth.BackupID {
		t.Fatalf("the incremental after the synthetic full builds on backup %d, want %d", p, synth.BackupID)
	}

	// Disk to tape: with no tape labeled for the pool yet, the job waits,
	// saying what to do, and goes on once tapes are labeled.
	var started wire.JobStarted
	s.json(&started, "backup", "consolidate", "--client", "web", "--pool", "Weekly")
	s.waitJob(started.JobID, 60*time.Second, func(j wire.JobInfo) error {
		if j.State != "running" || !strings.Contains(j.Waiting, "no appendable volume in pool Weekly") ||
			!strings.Contains(j.Waiting, "cairn media label --library lib1 --slots N-M --pool Weekly") {
			return fmt.Errorf("job %d is %s, waiting %q", j.ID, j.State, j.Waiting)
		}
		return nil
	})
	s.ok("media", "label", "--library", "lib1", "--slots", "1-4", "--pool", "Weekly")
	onTape := s.waitEnded(started.JobID, 2*time.Minute)
	if onTape.State != "success" {
		t.Fatalf("the synthetic full to tape, once tapes were labeled: %+v", onTape)
	}
	if b := backups()[onTape.BackupID]; b.Pool != "Weekly" || b.Consolidates != incr3.BackupID || len(b.Volumes) == 0 {
		t.Fatalf("synthetic full to tape: %+v", b)
	}
	s.restore(filepath.Join(dir, "tape"), "--backup", strconv.FormatUint(onTape.BackupID, 10))
	checkRestored(t, snap3, filepath.Join(dir, "tape"), src)

	// Tape to tape: an incremental on the tape full, then both folded onto
	// another tape.
	churn(t, src, 4)
	snap4 := snapshot(t, src)
	incr4 := backup("incremental", src, "--pool", "Weekly")
	if p := backups()[incr4.BackupID].Parent; p != onTape.BackupID {
		t.Fatalf("the tape incremental builds on backup %d, want %d", p, onTape.BackupID)
	}
	tapeToTape := consolidate()
	all = backups()
	tt := all[tapeToTape.BackupID]
	if tt.Pool != "Weekly" || tt.Consolidates != incr4.BackupID {
		t.Fatalf("tape to tape synthetic full: %+v", tt)
	}
	for _, v := range tt.Volumes {
		for _, src := range append(all[onTape.BackupID].Volumes, all[incr4.BackupID].Volumes...) {
			if v == src {
				t.Errorf("the tape-to-tape synthetic full wrote to tape %s, which it read", v)
			}
		}
	}
	s.restore(filepath.Join(dir, "tape2"), "--backup", strconv.FormatUint(tapeToTape.BackupID, 10))
	checkRestored(t, snap4, filepath.Join(dir, "tape2"), src)

	// A source volume gone: the job fails saying which, and nothing is
	// recorded.
	churn(t, src, 5)
	backup("incremental", src) // on the disk chain: Default's synthetic full, incr3, this
	vols, err := filepath.Glob(filepath.Join(st.PoolDir(), "*.cvol"))
	if err != nil || len(vols) == 0 {
		t.Fatalf("the disk pool's volumes: %v %v", vols, err)
	}
	for _, v := range vols {
		if err := os.Rename(v, v+".away"); err != nil {
			t.Fatal(err)
		}
	}
	before = backups()
	var failed wire.JobInfo
	res := s.cairn("backup", "consolidate", "--client", "web", "--pool", "Weekly", "--wait", "--json")
	if res.code == 0 {
		t.Fatalf("a consolidation with its volumes gone succeeded:\n%s", res)
	}
	if err := res.decodeJSON(&failed); err == nil && failed.State == "success" {
		t.Fatalf("a consolidation with its volumes gone: %+v", failed)
	}
	if !strings.Contains(res.output(), "missing") {
		t.Errorf("the failure does not say the volume is missing:\n%s", res)
	}
	after := backups()
	for id, b := range after {
		if _, ok := before[id]; !ok && b.State == "complete" {
			t.Errorf("a failed consolidation recorded backup %+v", b)
		}
	}
	for _, v := range vols {
		if err := os.Rename(v+".away", v); err != nil {
			t.Fatal(err)
		}
	}
}

func logSays(j wire.JobInfo, what string) bool {
	for _, l := range j.Log {
		if strings.Contains(l.Msg, what) {
			return true
		}
	}
	return false
}

// churn changes a sample tree once more after sample.Change: a file
// appended to, one deleted, one renamed, the directory of the round before
// removed and a new one with a file made, so that each incremental of a
// chain deletes and renames what the ones before it wrote.
func churn(t *testing.T, src string, round int) {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(src, "logs", "*", "*.log"))
	if err != nil || len(logs) < 2 {
		t.Fatalf("logs of the sample tree: %v %v", logs, err)
	}
	f, err := os.OpenFile(logs[0], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(f, "round %d\n", round)
	f.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(err)
	must(os.Remove(logs[len(logs)-1]))
	must(os.Rename(logs[1], logs[1]+fmt.Sprintf(".round-%d", round)))
	must(os.RemoveAll(filepath.Join(src, fmt.Sprintf("round-%d", round-1))))
	must(os.MkdirAll(filepath.Join(src, fmt.Sprintf("round-%d", round)), 0o755))
	must(os.WriteFile(filepath.Join(src, fmt.Sprintf("round-%d", round), "note.txt"), []byte(strings.Repeat("x", 1000*round)), 0o644))
}
