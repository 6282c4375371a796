package integration

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// The command line as a script or cron job runs it: no terminal, and an
// exit code to go by.

// TestWaitFromAScript: 'cairn backup --wait' run with no terminal (cron,
// CI) prints what the job waits for and a progress line every
// --progress-interval, rather than nothing until the end. Ctrl-C (SIGINT)
// stops the waiting, not the job: the command exits 130, says the job goes
// on and how to follow it, and the job ends as it would have.
func TestWaitFromAScript(t *testing.T) {
	s := slowStack(t, 4<<20)
	big, _ := randomFilesTree(t, 3, 8<<20, 51) // 24 MiB at 4 MiB/s: 6 s

	// With its agent away, the job waits, and says what for.
	s.agent.stop()
	wait := s.cairnProc("backup-wait", "backup", "--client", s.client, "--path", big, "--level", "full", "--wait", "--progress-interval", "1s")
	wait.start()
	wait.waitLog(t, 30*time.Second, "", "waiting: the agent of client "+s.client+" is")
	s.agent.start()

	var id uint64
	poll.Until(t, 60*time.Second, func() error {
		if !wait.alive() {
			return fmt.Errorf("cairn backup --wait ended before it was interrupted:\n%s", wait.logText())
		}
		var jobs []wire.JobInfo
		if err := s.tryJSON(&jobs, "job", "list"); err != nil {
			return err
		}
		if len(jobs) == 0 || jobs[0].State != "running" || jobs[0].Progress == nil || jobs[0].Progress.Bytes == 0 {
			return fmt.Errorf("no backup moves data yet: %+v", jobs)
		}
		id = jobs[0].ID
		// Two lines a second apart, each with the rate.
		if n := strings.Count(wait.logText(), "MB/s"); n < 2 {
			return fmt.Errorf("%d progress lines so far:\n%s", n, wait.logText())
		}
		return nil
	})
	if !wait.signal(syscall.SIGINT, 10*time.Second) {
		t.Fatalf("cairn backup --wait did not end within 10s of SIGINT")
	}
	out := wait.logText()
	if code := exitCode(wait.exitErr()); code != 130 {
		t.Errorf("cairn backup --wait interrupted by SIGINT exited %d, want 130:\n%s", code, out)
	}
	for _, want := range []string{fmt.Sprintf("job %d goes on", id), fmt.Sprintf("cairn job show %d", id)} {
		if !strings.Contains(out, want) {
			t.Errorf("cairn backup --wait interrupted does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\r") || strings.Contains(out, "\033[") {
		t.Errorf("terminal controls in the output of a command with no terminal:\n%q", out)
	}
	if j := s.waitEnded(id, 90*time.Second); j.State != "success" {
		t.Fatalf("the backup whose --wait was interrupted ended %s: %s\n%s", j.State, j.Error, jobLogText(j))
	}
}

// cairnProc is an admin command of the stack run as a process of its own,
// for a test that signals it or reads what it printed while it runs; its
// stdout and stderr go to a log file, not a terminal.
func (s *stack) cairnProc(name string, args ...string) *proc {
	return newProc(s.t, s.logs, s.dir, name, append(append([]string{"--nats", s.url}, s.adminFlags...), args...)...)
}

// exitCode is the exit status of a process that ended with err.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestDataDirectoryInUse: a second 'cairn dev' on the directory of a
// running one, a 'cairn server' on its server's directory and a 'cairn
// cluster recover' of it stop at once, saying the directory is in use by
// the running one's PID (where they used to wait out the catalog's lock
// and say "open catalog: timeout"), and the running one goes on.
func TestDataDirectoryInUse(t *testing.T) {
	dir := t.TempDir()
	l := &logs{}
	l.printOnFailure(t)
	data := filepath.Join(dir, "dev")
	devArgs := func() []string {
		return []string{"dev", "--data", data, "--nats-port", strconv.Itoa(freeport.Loopback(t)), "--raft-addr", freeport.LoopbackAddr(t),
			"--client", "devhost", "--metrics-addr", ""}
	}
	first := newProc(t, l, dir, "dev", devArgs()...)
	t.Cleanup(first.stop)
	first.start()
	first.waitLog(t, 60*time.Second, "", "cairn dev is running")
	peers := writeJSON(t, filepath.Join(dir, "peers.json"), []map[string]string{{"id": "dev-server", "address": "127.0.0.1:7010"}})

	for _, c := range []struct {
		args []string
		dir  string
		role string
	}{
		{devArgs(), data, "dev"},
		{[]string{"server", "--data", filepath.Join(data, "server"), "--raft-addr", freeport.LoopbackAddr(t), "--metrics-addr", ""}, filepath.Join(data, "server"), "server"},
		{[]string{"cluster", "recover", "--data", filepath.Join(data, "server"), "--peers", peers}, filepath.Join(data, "server"), "server"},
	} {
		start := time.Now()
		r := runCairnAs(t, nil, nil, c.args...)
		want := fmt.Sprintf("data directory %s is in use by PID %d (cairn %s)", c.dir, first.pid(), c.role)
		if r.code != 1 || !strings.Contains(r.stderr, want) || !hasLinePrefix(r.stderr, "hint: ") || strings.Contains(r.stderr, "timeout") {
			t.Errorf("want exit 1 saying %q with a hint:\n%s", want, r)
		}
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("cairn %s took %v to say the directory is in use", c.args[0], took)
		}
	}
	if !first.alive() {
		t.Fatalf("the first cairn dev ended: %v\n%s", first.exitErr(), first.logText())
	}
}
