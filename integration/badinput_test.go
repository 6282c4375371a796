package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/wire"
)

// TestBadInput gives the command line what an administrator gets wrong:
// each is refused with an 'error:' line that names the thing, a 'hint:'
// line that says what to do, and a non-zero exit (2 for a command line
// that cannot be understood), and nothing stored is harmed.
func TestBadInput(t *testing.T) {
	s := newStack(t, stackOpts{})
	src := makeTree(t, smallSpec(17))
	dir := t.TempDir()
	c := s.client

	// Before any backup.
	s.fails(1, []string{"no complete backup", "run a backup first"}, "restore", "--client", c, "--to", filepath.Join(dir, "r0"))
	s.fails(1, []string{"no complete backup at or before", "backup list"},
		"restore", "--client", c, "--to", filepath.Join(dir, "r0"), "--at", time.Now().Format("2006-01-02 15:04:05"))
	s.fails(1, []string{"no complete backup"}, "ls", "--client", c)
	emptyOrMissing(t, filepath.Join(dir, "r0"))

	// Paths, clients, levels, jobs that do not exist.
	s.fails(1, []string{"/no/such", "does not exist on client " + c},
		"backup", "--client", c, "--path", "/no/such", "--wait")
	s.fails(1, []string{`client "nosuch" is not known`, "cairn agent --name"},
		"backup", "--client", "nosuch", "--path", src, "--wait")
	s.fails(1, []string{`"nosuch" is not known`}, "restore", "--client", "nosuch", "--to", filepath.Join(dir, "r0"))
	s.fails(1, []string{`"nosuch" is not known`}, "backup", "list", "--client", "nosuch")
	s.fails(1, []string{`"relative/dir" is not an absolute path`}, "backup", "--client", c, "--path", "relative/dir", "--wait")
	s.fails(1, []string{`level "weekly"`, "full, incremental or differential"},
		"backup", "--client", c, "--path", src, "--level", "weekly", "--wait")
	s.fails(1, []string{`pool "Nope" does not exist`, "pool list"}, "backup", "--client", c, "--path", src, "--pool", "Nope", "--wait")
	s.fails(1, []string{"job 9999 does not exist", "job list"}, "job", "show", "9999")
	// A filter that names nothing is an error, not an empty table.
	s.fails(1, []string{`job state "bogus" is not known`, "running, success"}, "job", "list", "--state", "bogus")
	s.fails(1, []string{`client "nosuch" is not known`, "client list"}, "job", "list", "--client", "nosuch")
	s.fails(1, []string{`pool "nosuch" does not exist`, "pool list"}, "volume", "list", "--pool", "nosuch")

	// Command lines that cannot be understood: exit 2 and where to read up.
	s.fails(2, []string{"unknown flag: --no-such-flag", "hint: see 'cairn backup --help'"}, "backup", "--no-such-flag")
	s.fails(2, []string{"unknown command", "hint: see 'cairn --help'"}, "bakup")
	s.fails(2, []string{"pass --client"}, "backup", "--path", src)
	s.fails(2, []string{`"twelve" is not a number`}, "job", "show", "twelve")
	s.fails(2, []string{`time "yesterday-ish" is not understood`, "hint: see 'cairn restore --help'"},
		"restore", "--client", c, "--to", filepath.Join(dir, "r0"), "--at", "yesterday-ish")
	s.fails(2, []string{"--backup or --at, not both"}, "restore", "--client", c, "--to", filepath.Join(dir, "r0"), "--backup", "1", "--at", "2h ago")
	s.fails(2, []string{`--to "relative" must be an absolute path`}, "restore", "--client", c, "--to", "relative")
	emptyOrMissing(t, filepath.Join(dir, "r0"))

	// None of it made a job: the path the agent does not have was refused
	// before one was made, as the rest was; so no job failed, none counts
	// in the failed-jobs metric, and no backup came of any of it.
	noFailedJobs := func(when string) {
		t.Helper()
		var failed []wire.JobInfo
		s.json(&failed, "job", "list", "--state", "failed")
		if len(failed) != 0 {
			t.Errorf("%s: bad input left failed jobs: %+v", when, failed)
		}
		metrics, err := s.metricsText("server")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(l, "cairn_jobs_total{") && strings.Contains(l, `state="failed"`) {
				t.Errorf("%s: bad input counts as a failed job: %s", when, l)
			}
		}
	}
	var jobs []wire.JobInfo
	s.json(&jobs, "job", "list")
	if len(jobs) != 0 {
		t.Errorf("bad input left these jobs: %+v", jobs)
	}
	noFailedJobs("before any backup")
	var backups []wire.BackupInfo
	s.json(&backups, "backup", "list")
	for _, b := range backups {
		if b.State == "complete" {
			t.Errorf("bad input made a backup: %+v", b)
		}
	}

	// A restore into a directory that is not empty needs --force.
	snap := snapshot(t, src)
	b := s.backup("full", src)
	target := filepath.Join(dir, "busy")
	if err := os.MkdirAll(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "keep-me"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.fails(1, []string{target, "not empty", "choose an empty directory", "--force"}, "restore", "--client", c, "--to", target)
	if ents, _ := os.ReadDir(target); len(ents) != 1 {
		t.Errorf("a refused restore changed %s: %v", target, ents)
	}
	noFailedJobs("after a restore into a directory that is not empty")
	s.restore(target, "--force", "--backup", strconv.FormatUint(b.BackupID, 10))
	checkRestored(t, snap, target, src)
	if data, err := os.ReadFile(filepath.Join(target, "keep-me")); err != nil || string(data) != "mine\n" {
		t.Errorf("a forced restore harmed a file outside what it restores: %q, %v", data, err)
	}

	// With a backup: a path no backup's file set holds (the error lists
	// them), one that its file set holds but it does not, a malformed
	// time and one before it.
	s.fails(1, []string{"no backup of client " + c + " holds /no/such", "its file sets are", src, "--fileset"},
		"restore", "--client", c, "--to", filepath.Join(dir, "r1"), "/no/such")
	s.fails(1, []string{"no backup of client " + c + " holds /no/such", "its file sets are", src}, "ls", "--client", c, "/no/such")
	s.fails(1, []string{"holds nothing at " + filepath.Join(src, "no-such"), "cairn ls"},
		"restore", "--client", c, "--to", filepath.Join(dir, "r1"), filepath.Join(src, "no-such"))
	s.fails(1, []string{"holds nothing at " + filepath.Join(src, "no-such")}, "ls", "--client", c, filepath.Join(src, "no-such"))
	s.fails(1, []string{"no complete backup at or before"}, "restore", "--client", c, "--to", filepath.Join(dir, "r1"), "--at", "2001-01-01")
	s.fails(1, []string{"has no backup 9999"}, "restore", "--client", c, "--to", filepath.Join(dir, "r1"), "--backup", "9999")
	emptyOrMissing(t, filepath.Join(dir, "r1"))

	// Reading a file that is not a volume.
	s.fails(1, []string{"/no/such.cvol"}, "volume", "ls", "/no/such.cvol", "--sessions")
	s.fails(1, []string{"not a Cairn volume"}, "volume", "ls", filepath.Join(src, "misc", "script.sh"), "--sessions")
	vol := s.volumes()[0].Path
	s.fails(1, []string{"/no/such-keys.json"}, "volume", "extract", vol, "--key-file", "/no/such-keys.json", "--to", filepath.Join(dir, "x"))
	s.fails(1, []string{"not a Cairn key file"}, "volume", "extract", vol, "--key-file", filepath.Join(src, "misc", "script.sh"), "--to", filepath.Join(dir, "x"))
	emptyOrMissing(t, filepath.Join(dir, "x"))

	// A role started with a configuration it cannot run with.
	for _, args := range [][]string{
		{"storagenode", "--name", "x", "--data", filepath.Join(dir, "sn"), "--metrics-addr", ""},
		{"server", "--data", filepath.Join(dir, "srv"), "--raft-addr", freeport.LoopbackAddr(t), "--liveness-timeout", "1ms", "--metrics-addr", ""},
		{"agent", "--name", "bad.name", "--metrics-addr", ""},
	} {
		r := runCairn(t, s.url, args...)
		if r.code == 0 {
			t.Errorf("started with a bad configuration:\n%s", r)
			continue
		}
		checkFailure(t, r, 1, "config", "--help")
	}

	// After all that, the system still works.
	s.backup("incremental", src)
}
