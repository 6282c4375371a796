package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// send delivers sig to the process itself (not its group), as a logrotate
// hook's 'kill -HUP $(cat pidfile)' or a service manager does.
func (p *proc) send(sig syscall.Signal) {
	p.t.Helper()
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		p.t.Fatalf("%s was never started", p.name)
	}
	if err := syscall.Kill(cmd.Process.Pid, sig); err != nil {
		p.t.Fatalf("signal %s: %v", p.name, err)
	}
}

// waitExit waits up to timeout for the process to end on its own, and
// reports whether it did.
func (p *proc) waitExit(timeout time.Duration) bool {
	return p.signal(0, timeout) // signal 0 delivers nothing
}

// pid is the process id of the running process.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// logSince is what the process logged after the first len(before) bytes.
func (p *proc) logSince(before string) string {
	return strings.TrimPrefix(p.logText(), before)
}

// waitLog waits until the process logged every one of want after before.
func (p *proc) waitLog(t *testing.T, timeout time.Duration, before string, want ...string) {
	t.Helper()
	poll.Until(t, timeout, func() error {
		if !p.alive() {
			return fmt.Errorf("%s exited: %v", p.name, p.exitErr())
		}
		got := p.logSince(before)
		for _, w := range want {
			if !strings.Contains(got, w) {
				return fmt.Errorf("%s has not logged %q yet", p.name, w)
			}
		}
		return nil
	})
}

// slowStack is a stack whose agent streams at most rate bytes per second,
// so that a backup of a few tens of MiB is still running when a role is
// signalled.
func slowStack(t *testing.T, rate int64, nodeArgs ...string) *stack {
	return newStack(t, stackOpts{agentConfig: map[string]any{"max_bytes_per_second": rate}, nodeArgs: nodeArgs})
}

func jobLogText(j wire.JobInfo) string {
	var b strings.Builder
	for _, l := range j.Log {
		b.WriteString(l.Msg + "\n")
	}
	return b.String()
}

// TestSIGHUPKeepsRolesRunning sends SIGHUP to the server, the storage node
// and the agent, as a logrotate hook does: each goes on running (SIGHUP's
// default action is to exit), reloads its config file's log level and its
// certificates, and logs what it reloaded; a backup and a restore work
// after it.
func TestSIGHUPKeepsRolesRunning(t *testing.T) {
	s := newStack(t, stackOpts{})
	tree := makeTree(t, smallSpec(21))
	want := snapshot(t, tree)

	type hupped struct {
		p      *proc
		before string
		want   []string
	}
	var all []hupped
	for _, h := range []hupped{
		{s.server, "", []string{"SIGHUP: reloading", "take effect at a restart"}},
		{s.storage, "", []string{"SIGHUP: reloading", "data port certificate (unchanged"}},
		{s.agent, "", []string{"SIGHUP: reloading", "every other setting takes effect at a restart"}},
	} {
		h.before = h.p.logText()
		h.p.send(syscall.SIGHUP)
		t.Logf("SIGHUP to %s (pid %d)", h.p.name, h.p.pid())
		all = append(all, h)
	}
	for _, h := range all {
		h.p.waitLog(t, 15*time.Second, h.before, h.want...)
	}
	// A second one, as the next day's rotation sends. Waited for to its
	// last line: the agent's handler still reading its config file when
	// the file is changed below would take the new level from this
	// SIGHUP, and the next one's lines would then go unlogged.
	// By index: a range variable is a copy, and its before was lost, so
	// the wait below looked from the first SIGHUP on and passed at once;
	// the agent then read its file after the change below and took the
	// new level from this SIGHUP (seen in make test).
	for i := range all {
		all[i].before = all[i].p.logText()
		all[i].p.send(syscall.SIGHUP)
	}
	for _, h := range all {
		h.p.waitLog(t, 15*time.Second, h.before, h.want...)
	}

	// The agent's config file asks for warnings only from now on: after
	// SIGHUP, the agent no longer logs the start of a backup.
	var fields map[string]any
	data, err := os.ReadFile(s.agentCfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatal(err)
	}
	fields["log_level"] = "warn"
	writeJSON(t, s.agentCfg, fields)
	before := s.agent.logText()
	s.agent.send(syscall.SIGHUP)
	s.agent.waitLog(t, 15*time.Second, before, "log level WARN")
	quietFrom := s.agent.logText()

	j := s.backup("full", tree)
	to := filepath.Join(t.TempDir(), "restored")
	s.restore(to, "--backup", strconv.FormatUint(j.BackupID, 10))
	checkRestored(t, want, to, tree)
	for _, h := range all {
		if !h.p.alive() {
			t.Errorf("%s exited after SIGHUP: %v", h.p.name, h.p.exitErr())
		}
	}
	if got := s.agent.logSince(quietFrom); strings.Contains(got, "backup started") {
		t.Errorf("the agent still logs at info after its config file's log_level became warn and it got SIGHUP:\n%s", got)
	}
}

// TestStorageNodeDrainsOnSIGTERM stops a storage node with SIGTERM in the
// middle of a backup. With time to drain, the node takes no new session,
// the servers send it no job, the running backup finishes and commits, and
// the node exits 0. With a drain timeout shorter than the backup, the node
// hands the session back: rolled back on its volume, the job back in the
// queue, never half recorded; the node exits 0, and the job succeeds on its
// next attempt when a node is back.
func TestStorageNodeDrainsOnSIGTERM(t *testing.T) {
	big, snapBig := randomFilesTree(t, 6, 8<<20, 31)

	t.Run("finishes", func(t *testing.T) {
		s := slowStack(t, 8<<20)
		id := s.startStreaming(big)
		before := s.storage.logText()
		s.storage.send(syscall.SIGTERM)
		s.storage.waitLog(t, 10*time.Second, before, "taking no new session")

		// A backup asked for now waits: the only node of the pool drains.
		small := makeTree(t, smallSpec(32))
		var queued wire.JobStarted
		s.json(&queued, "backup", "--client", s.client, "--path", small, "--level", "full")
		if !strings.Contains(queued.Waiting, "stopping") {
			t.Errorf("a backup started while the only storage node drains does not wait for it: %+v", queued)
		}

		if !s.storage.waitExit(90 * time.Second) {
			t.Fatalf("the storage node did not exit within 90s of SIGTERM")
		}
		if err := s.storage.exitErr(); err != nil {
			t.Errorf("the storage node exited with %v after draining, want exit 0", err)
		}
		j := s.job(id)
		if j.State != "success" || j.Attempt != 1 {
			t.Fatalf("the backup running when the storage node got SIGTERM ended %s at attempt %d: %s\n%s", j.State, j.Attempt, j.Error, jobLogText(j))
		}
		if !strings.Contains(s.storage.logText(), "every session finished") {
			t.Errorf("the storage node did not say its sessions finished before it stopped")
		}
		if q := s.job(queued.JobID); q.State != "queued" {
			t.Errorf("the backup asked for during the drain is %s, want queued", q.State)
		}

		s.storage.start()
		if j := s.waitEnded(queued.JobID, 60*time.Second); j.State != "success" {
			t.Errorf("the queued backup ended %s once the node was back: %s", j.State, j.Error)
		}
		s.checkBackupRestores(s.job(id).BackupID, snapBig, big)
	})

	for _, how := range []string{"drain timeout", "second SIGTERM"} {
		t.Run("handed back after a "+how, func(t *testing.T) {
			handedBack(t, big, snapBig, how == "second SIGTERM")
		})
	}
}

// handedBack stops a storage node mid-backup with a drain cut short by a
// 1s drain timeout, or by a second SIGTERM: the session is handed back and
// the backup succeeds on its next attempt once the node is back.
func handedBack(t *testing.T, big string, snapBig *sample.Manifest, second bool) {
	drain := "1s"
	if second {
		drain = "5m"
	}
	s := slowStack(t, 4<<20, "--drain-timeout", drain)
	id := s.startStreaming(big)
	before := s.storage.logText()
	s.storage.send(syscall.SIGTERM)
	if second {
		s.storage.waitLog(t, 10*time.Second, before, "taking no new session")
		s.storage.send(syscall.SIGTERM)
	}
	if !s.storage.waitExit(30 * time.Second) {
		t.Fatalf("the storage node did not exit within 30s of SIGTERM with its drain cut short")
	}
	if err := s.storage.exitErr(); err != nil {
		t.Errorf("the storage node exited with %v after handing its session back, want exit 0", err)
	}
	var j wire.JobInfo
	poll.Until(t, 20*time.Second, func() error {
		j = s.job(id)
		if j.State != "queued" {
			return fmt.Errorf("job %d is %s, want queued after its storage node handed it back", id, j.State)
		}
		return nil
	})
	if log := jobLogText(j); !strings.Contains(log, "handed it back") {
		t.Errorf("the job log does not say the storage node handed the backup back:\n%s", log)
	}
	s.checkNoneComplete("the handed-back backup")
	s.storage.start()
	j = s.waitRetried(id, 120*time.Second)
	for _, v := range s.volumes() {
		if size := fileSize(t, v.Path); size != v.Bytes {
			t.Errorf("volume %s: %d bytes on disk, %d committed", v.Name, size, v.Bytes)
		}
	}
	s.checkBackupRestores(j.BackupID, snapBig, big)
	if second && !strings.Contains(s.storage.logText(), "second signal: cutting the drain short") {
		t.Errorf("the storage node does not say the second SIGTERM cut its drain short")
	}
}

// TestAgentRestartedMidBackup kills an agent with SIGKILL in the middle of
// a backup and starts it again: the restarted agent (a new instance, no job
// running) has the servers send the job back to the queue at once, saying
// the agent restarted, not fail it as a fault of the client's disk; the
// job succeeds on its next attempt. Then SIGTERM in the middle of the next
// backup: the agent hands the job back and exits 0, and the job succeeds
// once the agent is back.
func TestAgentRestartedMidBackup(t *testing.T) {
	s := slowStack(t, 8<<20)
	big, snapBig := randomFilesTree(t, 6, 8<<20, 41)

	id := s.startStreaming(big)
	s.agent.kill()
	s.agent.start()
	j := s.waitEnded(id, 90*time.Second)
	if j.State != "success" || j.Attempt < 2 {
		t.Fatalf("the backup whose agent was killed and restarted ended %s at attempt %d: %s (%s)\n%s", j.State, j.Attempt, j.Error, j.ErrorCode, jobLogText(j))
	}
	if log := jobLogText(j); !strings.Contains(log, "the agent of client "+s.client+" restarted") {
		t.Errorf("the job log does not say the agent restarted:\n%s", log)
	}
	s.checkBackupRestores(j.BackupID, snapBig, big)

	id = s.startStreaming(big)
	if !s.agent.signal(syscall.SIGTERM, 30*time.Second) {
		t.Fatalf("the agent did not exit within 30s of SIGTERM")
	}
	if err := s.agent.exitErr(); err != nil {
		t.Errorf("the agent exited with %v on SIGTERM mid-backup, want exit 0", err)
	}
	if !strings.Contains(s.agent.logText(), "every running job was handed back") {
		t.Errorf("the agent did not say it handed its job back")
	}
	poll.Until(t, 20*time.Second, func() error {
		j = s.job(id)
		if j.State != "queued" {
			return fmt.Errorf("job %d is %s (%s), want queued after its agent stopped", id, j.State, j.Error)
		}
		return nil
	})
	s.agent.start()
	s.waitRetried(id, 90*time.Second)
}

// TestDuplicateAgent starts a second agent under the name of a running one,
// as a cloned VM or a copied credential does. The servers notice the two
// processes alive at once: 'client list' marks the client (and --json
// names both processes), a backup of it fails at once with a message
// naming both hosts and a hint instead of 'ticket already used', and each
// agent logs an error naming the other. Once the clone stops, backups work
// again; a restarted agent (the old process gone) is never a duplicate.
func TestDuplicateAgent(t *testing.T) {
	s := newStack(t, stackOpts{})
	tree := makeTree(t, smallSpec(51))
	s.backup("full", tree)

	// A restart is not a duplicate.
	s.agent.kill()
	s.agent.start()
	s.waitReady()
	s.backup("incremental", tree)

	clone := newProc(t, s.logs, s.dir, "agent-clone", "agent", "--nats", s.url, "--nats-nkey", s.seed(wire.KindAgent, s.client), "--config", s.agentCfg, "--name", s.client,
		"--metrics-addr", anyAddr)
	t.Cleanup(clone.stop)
	clone.start()
	var c wire.ClientInfo
	poll.Until(t, 20*time.Second, func() error {
		var clients []wire.ClientInfo
		if err := s.tryJSON(&clients, "client", "list"); err != nil {
			return err
		}
		for _, c = range clients {
			if c.Name == s.client && c.Duplicate != "" && len(c.Instances) == 2 {
				return nil
			}
		}
		return fmt.Errorf("client %s is not marked as duplicate: %+v", s.client, clients)
	})
	pids := []int{s.agent.pid(), clone.pid()}
	for _, pid := range pids {
		if !strings.Contains(c.Duplicate, fmt.Sprintf("(pid %d)", pid)) {
			t.Errorf("the duplicate does not name the agent process %d: %s", pid, c.Duplicate)
		}
	}
	r := s.ok("client", "list")
	if !strings.Contains(r.stdout, "DUPLICATE") || !strings.Contains(r.stderr, "hint: stop the clone") {
		t.Errorf("'cairn client list' does not show the duplicate:\n%s", r)
	}

	r = s.fails(1, []string{"agents run as client " + s.client, "stop the clone"}, "backup", "--client", s.client, "--path", tree, "--wait")
	for _, pid := range pids {
		if !strings.Contains(r.stderr, fmt.Sprintf("(pid %d)", pid)) {
			t.Errorf("the refused backup does not name the agent process %d:\n%s", pid, r)
		}
	}
	for _, p := range []*proc{s.agent, clone} {
		p.waitLog(t, 20*time.Second, "", "another agent runs as this client")
	}
	if strings.Contains(s.agent.logText()+clone.logText(), "ticket already used") {
		t.Errorf("an agent met 'ticket already used': the job reached both")
	}

	// The clone goes; once the servers have not heard from it for the
	// liveness timeout, the client is one agent again.
	clone.stop()
	poll.Until(t, 20*time.Second, func() error {
		var clients []wire.ClientInfo
		if err := s.tryJSON(&clients, "client", "list"); err != nil {
			return err
		}
		for _, c := range clients {
			if c.Name == s.client && c.Duplicate != "" {
				return fmt.Errorf("client %s is still marked duplicate", s.client)
			}
		}
		return nil
	})
	s.backup("incremental", tree)
}

// TestLeaderSIGTERMHandsOver stops the leading server with SIGTERM in the
// middle of a backup: it hands the leadership to another server before it
// goes, so the group has a leader at once instead of after an election
// timeout, it exits 0, and the backup completes.
func TestLeaderSIGTERMHandsOver(t *testing.T) {
	c := newClusterSys(t, clusterOpts{agentRate: slowRate})
	big := randomTree(t, 61)
	snapBig := snapshot(t, big)
	id := startBackup(c, "web01", "full", big)
	waitStreaming(c, id)

	old := c.leader()
	if old == nil {
		t.Fatal("no leader")
	}
	before := old.proc.logText()
	at := time.Now()
	stop(old.proc) // SIGTERM; fails the test unless it exits 0
	stopped := time.Since(at)
	nl := c.waitLeader(20*time.Second, old)
	t.Logf("leader %s stopped in %s; %s leads %s after the SIGTERM", old.name, stopped.Round(time.Millisecond), nl.name, time.Since(at).Round(time.Millisecond))
	log := old.proc.logSince(before)
	if !strings.Contains(log, "leadership transferred") {
		t.Errorf("the leader did not hand the leadership over before it stopped:\n%s", log)
	}
	j := waitJob(c, id, 90*time.Second)
	if j.State != "success" {
		t.Fatalf("the backup running when the leader stopped ended %s: %s", j.State, j.Error)
	}
	to := filepath.Join(t.TempDir(), "big")
	c.as("web01").restore(to, "--backup", strconv.FormatUint(j.BackupID, 10))
	checkRestored(t, snapBig, to, big)
}
