package integration

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cairnbackup/cairn/wire"
)

// TestCommandSourceSendsChangedBlocks: a command source whose output (a
// 24 MiB dump, as pg_dump gives, that changes a little from one backup to
// the next) is cut into blocks: the incremental after a row changed and
// rows were appended stores the blocks around the changes, not the dump.
// A command that fails after printing a changed half of its dump fails
// the backup, which commits nothing, and the next incremental builds on
// the last good dump; each restores to exactly what its command printed.
func TestCommandSourceSendsChangedBlocks(t *testing.T) {
	bin := t.TempDir()
	dumpFile, status := filepath.Join(t.TempDir(), "dump"), filepath.Join(t.TempDir(), "status")
	script := filepath.Join(bin, "dump.sh")
	if err := os.WriteFile(script, fmt.Appendf(nil, "#!/bin/sh\ncat %s\nexit $(cat %s)\n", dumpFile, status), 0o755); err != nil {
		t.Fatal(err)
	}
	s := newStack(t, stackOpts{agentConfig: map[string]any{"allowed_command_dirs": []string{bin}}})
	tree := t.TempDir()
	if err := os.WriteFile(filepath.Join(tree, "app.conf"), []byte("db=app\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, random, _ := largeFiles(t, 17)
	dump := random(24 << 20)
	prints := func(content []byte, exit int) {
		t.Helper()
		if err := os.WriteFile(dumpFile, content, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(status, []byte(strconv.Itoa(exit)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	backup := func(level string) (wire.BackupInfo, [32]byte) {
		t.Helper()
		var j wire.JobInfo
		s.json(&j, "backup", "--client", s.client, "--path", tree, "--level", level, "--wait", "--command-source", "/db/app.sql="+script)
		if j.State != "success" || j.BackupID == 0 {
			t.Fatalf("%s backup job %d ended %s: %s", level, j.ID, j.State, j.Error)
		}
		var list []wire.BackupInfo
		s.json(&list, "backup", "list", "--client", s.client)
		for _, b := range list {
			if b.ID == j.BackupID {
				content, err := os.ReadFile(dumpFile)
				if err != nil {
					t.Fatal(err)
				}
				return b, sha256.Sum256(content)
			}
		}
		t.Fatalf("backup %d is not in the list", j.BackupID)
		return wire.BackupInfo{}, [32]byte{}
	}
	restored := func(b wire.BackupInfo, want [32]byte) {
		t.Helper()
		to := filepath.Join(t.TempDir(), "r")
		s.restore(to, "--backup", strconv.FormatUint(b.ID, 10), "/db/app.sql")
		got, err := os.ReadFile(filepath.Join(to, "db", "app.sql"))
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != want {
			t.Errorf("backup %d: the restored dump differs from what its command printed", b.ID)
		}
	}

	prints(dump, 0)
	full, fullSum := backup("full")
	copy(dump[11<<20:], "UPDATE: a row changed in place")
	dump = append(dump, random(64<<10)...)
	prints(dump, 0)
	incr, incrSum := backup("incremental")
	t.Logf("a 24 MiB dump: the full stored %d bytes, the incremental after a row changed and 64 KiB were appended %d", full.StoredBytes, incr.StoredBytes)
	// The blocks around the change and the end: 192 KiB on average, 1 MiB
	// at most, each.
	if incr.StoredBytes > 64<<10+3<<20 {
		t.Errorf("the incremental stored %d bytes: more than the blocks around the changes of the dump", incr.StoredBytes)
	}

	// A dump that fails halfway, having printed changed rows.
	half := append(random(1<<20), dump[1<<20:12<<20]...)
	prints(half, 3)
	r := s.cairn("backup", "--client", s.client, "--path", tree, "--level", "incremental", "--wait", "--json", "--command-source", "/db/app.sql="+script)
	if failed := lastJob(t, s); r.code == 0 || failed.State != "failed" || failed.ErrorCode != wire.CodeCommandFailed {
		t.Fatalf("a backup whose command failed: %s %s %s\n%s", failed.State, failed.ErrorCode, failed.Error, r)
	}
	var list []wire.BackupInfo
	s.json(&list, "backup", "list", "--client", s.client)
	for _, b := range list {
		if b.ID != full.ID && b.ID != incr.ID && b.State == "complete" {
			t.Fatalf("the failed command's backup was committed: %+v", b)
		}
	}

	// The next incremental builds on the last good dump.
	copy(dump[20<<20:], "UPDATE: another row")
	prints(dump, 0)
	next, nextSum := backup("incremental")
	if next.Parent != incr.ID || next.StoredBytes > 3<<20 {
		t.Errorf("the incremental after the failed one: parent %d (want %d), stored %d bytes", next.Parent, incr.ID, next.StoredBytes)
	}
	restored(full, fullSum)
	restored(incr, incrSum)
	restored(next, nextSum)
}
