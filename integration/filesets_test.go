package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/wire"
)

// TestLatestIsPerFileSet: backups chain per file set, and "the latest"
// of 'cairn ls' and 'cairn restore' is the latest of the file set that
// holds the path asked for. Backing up a second tree of a client does not
// hide the first: ls and a restore without --backup still find it, and
// say which backup and file set they used. The first backup of each file
// set is a full, and its job log says why; a path no file set holds is
// refused with the client's file sets listed.
func TestLatestIsPerFileSet(t *testing.T) {
	s := newStack(t, stackOpts{})
	c := s.client
	root := t.TempDir()
	etc, srv := filepath.Join(root, "etc"), filepath.Join(root, "srv")
	for name, content := range map[string]string{
		filepath.Join(etc, "hosts"):              "127.0.0.1 localhost\n",
		filepath.Join(etc, "ssl", "openssl.cnf"): "[ req ]\n",
		filepath.Join(srv, "www", "index.html"):  "<h1>hello</h1>\n",
	} {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The first backup of each tree: an incremental asked, a full run.
	a := s.backup("incremental", etc)
	b := s.backup("incremental", srv)
	for _, j := range []wire.JobInfo{a, b} {
		if j.Level != "full" || j.FileSet == nil || len(j.FileSet.Paths) != 1 {
			t.Fatalf("first backup of a tree: job %d level %s, file set %+v", j.ID, j.Level, j.FileSet)
		}
		promoted := false
		for _, l := range s.job(j.ID).Log {
			promoted = promoted || strings.HasPrefix(l.Msg, "promoted to full: no full of this fileset yet in pool "+s.pool)
		}
		if !promoted {
			t.Errorf("the job log of backup job %d does not say why it ran a full: %+v", j.ID, s.job(j.ID).Log)
		}
	}
	if a.FileSet.ID == b.FileSet.ID {
		t.Fatalf("two trees, one file set %s", a.FileSet.ID)
	}
	short := func(j wire.JobInfo) string { return j.FileSet.ID[:8] }

	// ls of the first tree, after the second was backed up: its files,
	// from its backup, and the first line says which.
	r := s.ok("ls", "--client", c, etc)
	if !strings.Contains(r.stdout, "hosts") || !strings.Contains(r.stdout, "ssl/") ||
		!strings.HasPrefix(r.stdout, "backup "+strconv.FormatUint(a.BackupID, 10)+" of "+c) ||
		!strings.Contains(r.stdout, "file set "+short(a)+" ("+etc+")") {
		t.Fatalf("ls of %s after a backup of %s:\n%s", etc, srv, r)
	}
	var listing struct {
		Backup wire.BackupInfo `json:"backup"`
	}
	s.json(&listing, "ls", "--client", c, filepath.Join(etc, "ssl"))
	if listing.Backup.ID != a.BackupID || listing.Backup.FileSet != a.FileSet.ID {
		t.Fatalf("ls --json of %s: backup %+v, want backup %d", filepath.Join(etc, "ssl"), listing.Backup, a.BackupID)
	}

	// A file of the first tree restores without --backup, from its backup.
	to := filepath.Join(t.TempDir(), "r")
	rj := s.restore(to, filepath.Join(etc, "hosts"))
	if rj.BackupID != a.BackupID || rj.FileSet == nil || rj.FileSet.ID != a.FileSet.ID {
		t.Fatalf("restore of %s: from backup %d, file set %+v; want backup %d", filepath.Join(etc, "hosts"), rj.BackupID, rj.FileSet, a.BackupID)
	}
	if got, err := os.ReadFile(filepath.Join(to, etc, "hosts")); err != nil || string(got) != "127.0.0.1 localhost\n" {
		t.Fatalf("restored hosts: %q, %v", got, err)
	}
	// Without --json the start says which backup and file set it reads.
	r = s.ok("restore", "--client", c, "--to", filepath.Join(t.TempDir(), "r2"), filepath.Join(srv, "www"))
	if !strings.Contains(r.stdout, "from backup "+strconv.FormatUint(b.BackupID, 10)+", file set "+short(b)+" ("+srv+")") {
		t.Fatalf("restore of %s does not say its backup and file set:\n%s", srv, r)
	}

	// job show and job list name the file set.
	r = s.ok("job", "show", strconv.FormatUint(a.ID, 10))
	if !strings.Contains(r.stdout, "file set") || !strings.Contains(r.stdout, short(a)+" ("+etc+")") {
		t.Fatalf("job show of backup job %d:\n%s", a.ID, r)
	}
	r = s.ok("job", "list")
	if !strings.Contains(r.stdout, "FILE SET") || !strings.Contains(r.stdout, short(a)+" ("+etc+")") || !strings.Contains(r.stdout, short(b)+" ("+srv+")") {
		t.Fatalf("job list:\n%s", r)
	}

	// --fileset picks a file set; one that does not hold the path, or none
	// of the client's, is refused with the file sets listed.
	r = s.ok("ls", "--client", c, "--fileset", short(a), etc)
	if !strings.Contains(r.stdout, "hosts") {
		t.Fatalf("ls --fileset %s %s:\n%s", short(a), etc, r)
	}
	sets := []string{"its file sets are", short(a) + " (" + etc + ")", short(b) + " (" + srv + ")"}
	s.fails(1, append([]string{"file set " + short(b) + " of client " + c + " does not hold " + etc}, sets...),
		"ls", "--client", c, "--fileset", short(b), etc)
	s.fails(1, append([]string{"client " + c + " has no file set 0000", "--fileset"}, sets...),
		"ls", "--client", c, "--fileset", "0000")
	// A path no backup holds.
	s.fails(1, append([]string{"no backup of client " + c + " holds /home/alice", "--fileset"}, sets...),
		"ls", "--client", c, "/home/alice")
	r2 := filepath.Join(t.TempDir(), "r3")
	s.fails(1, append([]string{"no backup of client " + c + " holds /home/alice"}, sets...),
		"restore", "--client", c, "--to", r2, "/home/alice")
	emptyOrMissing(t, r2)
	s.fails(2, []string{"--backup or --fileset, not both"}, "ls", "--client", c, "--backup", "1", "--fileset", short(a))
}
