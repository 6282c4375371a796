package integration

import (
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cairnbackup/cairn/devstack"
	"github.com/cairnbackup/cairn/wire"
)

// TestConsolidateChangedBlocks: a chain in which a large file was changed
// in place and another appended to, twice, so that their versions keep
// blocks of every session of the chain, folds into a synthetic full that
// holds the files whole again, by blocks: it restores exactly (the tree
// and one file alone) after the chain it came from is deleted and its
// volumes pruned, and the next incremental stores the blocks around its
// change, not the file. That chain then folds onto tape, and restores
// again once the disk chain is gone.
func TestConsolidateChangedBlocks(t *testing.T) {
	s, _ := startTapeStack(t, devstack.Config{CartridgeBytes: 64 << 20, EarlyWarningBytes: 48 << 20, SpoolChunkBytes: 1 << 20})
	src, random, put := largeFiles(t, 15)
	main, log := filepath.Join(src, "main.db"), filepath.Join(src, "wal.log")
	mainData, logData := random(16<<20), random(6<<20)
	info := func(id uint64) wire.BackupInfo {
		t.Helper()
		var list []wire.BackupInfo
		s.json(&list, "backup", "list", "--client", s.client)
		for _, b := range list {
			if b.ID == id {
				return b
			}
		}
		t.Fatalf("backup %d is not in the list: %+v", id, list)
		return wire.BackupInfo{}
	}
	backup := func(level string, extra ...string) wire.BackupInfo {
		t.Helper()
		var j wire.JobInfo
		s.json(&j, append([]string{"backup", "--client", s.client, "--path", src, "--level", level, "--wait"}, extra...)...)
		if j.State != "success" || j.BackupID == 0 {
			t.Fatalf("%s backup job %d ended %s: %s", level, j.ID, j.State, j.Error)
		}
		return info(j.BackupID)
	}
	var consolidated wire.JobInfo // the last synthetic full's job
	consolidate := func(args ...string) wire.BackupInfo {
		t.Helper()
		j := &consolidated
		s.json(j, append([]string{"backup", "consolidate", "--client", s.client, "--wait"}, args...)...)
		if j.State != "success" || j.BackupID == 0 {
			t.Fatalf("synthetic full job %d ended %s: %s", j.ID, j.State, j.Error)
		}
		return info(j.BackupID)
	}
	// restored checks the restore of backup id, whole and of main.db alone.
	restored := func(what string, id uint64, want map[string][32]byte) {
		t.Helper()
		to := filepath.Join(t.TempDir(), "all")
		s.restore(to, "--backup", strconv.FormatUint(id, 10))
		sameDigests(t, what, digests(t, filepath.Join(to, src)), want)
		one := filepath.Join(t.TempDir(), "one")
		s.restore(one, "--backup", strconv.FormatUint(id, 10), main)
		if got := digests(t, filepath.Join(one, src)); len(got) != 1 || got["main.db"] != want["main.db"] {
			t.Errorf("%s, main.db alone: %d files, digest %x, want %x", what, len(got), got["main.db"], want["main.db"])
		}
	}
	deleteChain := func(full uint64) {
		t.Helper()
		s.ok("backup", "delete", strconv.FormatUint(full, 10), "--with-dependents", "--yes")
		s.ok("prune")
	}

	put(main, mainData, 0)
	put(log, logData, 0)
	put(filepath.Join(src, "small.conf"), []byte("threads = 4\n"), 0)
	full := backup("full")
	copy(mainData[5<<20:], random(4096))
	put(main, mainData, 1)
	logData = append(logData, random(1<<20)...)
	put(log, logData, 1)
	backup("incremental")
	copy(mainData[12<<20:], random(4096))
	put(main, mainData, 2)
	logData = append(logData, random(512<<10)...)
	put(log, logData, 2)
	backup("incremental")
	state := digests(t, src)

	// Disk to disk; the chain it came from deleted and pruned.
	synth := consolidate()
	if job := s.job(consolidated.ID); !logSays(job, "bytes of large files assembled there from their blocks") {
		t.Errorf("the job log does not say what was assembled:\n%v", job.Log)
	}
	restored("synthetic full", synth.ID, state)
	deleteChain(full.ID)
	restored("synthetic full alone", synth.ID, state)

	// The next incremental builds on the synthetic full's block lists.
	copy(mainData[8<<20:], random(4096))
	put(main, mainData, 3)
	state = digests(t, src)
	incr := backup("incremental")
	if incr.Parent != synth.ID {
		t.Fatalf("the incremental after the synthetic full builds on backup %d, want %d", incr.Parent, synth.ID)
	}
	t.Logf("the incremental after the synthetic full stored %d bytes (the synthetic full %d)", incr.StoredBytes, synth.StoredBytes)
	// A change costs the blocks around it (about 2 MiB, 8 MiB at most),
	// where main.db alone is 16 MiB.
	if incr.StoredBytes > 9<<20 {
		t.Errorf("the incremental after the synthetic full stored %d bytes: more than the blocks around its change", incr.StoredBytes)
	}

	// Disk to tape: the synthetic full and the incremental on it, whose
	// main.db keeps blocks the synthetic full wrote.
	s.ok("media", "label", "--library", "lib1", "--slots", "1-2", "--pool", "Weekly")
	onTape := consolidate("--pool", "Weekly")
	if onTape.Pool != "Weekly" || onTape.Consolidates != incr.ID {
		t.Fatalf("synthetic full to tape: %+v", onTape)
	}
	restored("synthetic full on tape", onTape.ID, state)
	deleteChain(synth.ID)
	restored("synthetic full on tape alone", onTape.ID, state)
}
