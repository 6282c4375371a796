package integration

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// freeze stops p with SIGSTOP (thaw resumes it): a role that is there but
// answers nothing, as under a long pause.
func freeze(t *testing.T, p *proc, sig syscall.Signal) {
	t.Helper()
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s to %s: %v", sig, p.name, err)
	}
}

// TestCancelJob cancels jobs of a cluster of real processes with 'cairn job
// cancel':
//   - a running backup stops at its agent and storage node, and ends as
//     canceled, saying who canceled it and why;
//   - a queued job (its agent is down) ends as canceled at once, and is
//     not run when the agent is back;
//   - the cancel of a running backup whose leader is killed between the
//     cancel and its effect (the storage node and the agent are frozen so
//     that nothing the old leader sends can take effect) is carried out by
//     the new leader, and the command waiting for it says it was canceled;
//   - the cancel of a job that ended fails (exit 1) and says so.
//
// Each canceled backup leaves nothing in the catalog (its backup aborted,
// its index gone, no volume held, no session committed), the next backup
// to the same pool succeeds, and the three catalogs are identical.
func TestCancelJob(t *testing.T) {
	c := newClusterSys(t, clusterOpts{agentRate: slowRate})
	var started []uint64
	admin := c.as("")

	// A running backup.
	id := startBackup(c, "web01", "full", randomTree(t, 31))
	started = append(started, id)
	waitStreaming(c, id)
	r := c.ok("job", "cancel", strconv.FormatUint(id, 10), "--reason", "wrong paths")
	if !strings.Contains(r.stdout, fmt.Sprintf("backup job %d canceled: canceled by ", id)) || !strings.Contains(r.stdout, "wrong paths") {
		t.Fatalf("cancel of a running backup:\n%s", r)
	}
	j := admin.job(id)
	if j.State != "canceled" || j.CanceledBy == "" || j.CancelReason != "wrong paths" {
		t.Fatalf("canceled running backup %+v", j)
	}
	node, agent := c.node("sn1").proc, c.agent("web01").proc
	poll.Until(t, 10*time.Second, func() error {
		if !strings.Contains(node.logText(), "stopping a job on the servers' order") {
			return fmt.Errorf("the storage node's log does not say it stopped job %d", id)
		}
		if !strings.Contains(agent.logText(), "stopping a job on the servers' order") {
			return fmt.Errorf("the agent's log does not say it stopped job %d", id)
		}
		return nil
	})

	// A queued job: its agent is down.
	kill(agent)
	poll.Until(t, 30*time.Second, func() error {
		var clients []wire.ClientInfo
		if err := admin.tryJSON(&clients, "client", "list"); err != nil {
			return err
		}
		if len(clients) != 1 || clients[0].Online {
			return fmt.Errorf("clients %+v: want web01 offline", clients)
		}
		return nil
	})
	var queued wire.JobStarted
	admin.json(&queued, "backup", "--client", "web01", "--path", "/srv", "--wait=false")
	started = append(started, queued.JobID)
	if j := admin.job(queued.JobID); j.State != "queued" {
		t.Fatalf("job %+v: want it queued while its agent is down", j)
	}
	r = c.ok("--json", "job", "cancel", strconv.FormatUint(queued.JobID, 10))
	if !strings.Contains(r.stdout, `"state": "canceled"`) && !strings.Contains(r.stdout, `"state":"canceled"`) {
		t.Fatalf("cancel of a queued job:\n%s", r)
	}
	agent.start()
	c.waitReady()
	var list []wire.JobInfo
	c.json(&list, "job", "list", "--state", "canceled")
	if ids := jobIDs(list); len(ids) != 2 || ids[0] != queued.JobID || ids[1] != id {
		t.Fatalf("job list --state canceled: %v, want [%d %d]", ids, queued.JobID, id)
	}

	// The leader is killed between the cancel and its effect.
	id2 := startBackup(c, "web01", "full", randomTree(t, 32))
	started = append(started, id2)
	waitStreaming(c, id2)
	old := c.leader()
	if old == nil {
		t.Fatal("no leader")
	}
	freeze(t, node, syscall.SIGSTOP)
	freeze(t, agent, syscall.SIGSTOP)
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			freeze(t, node, syscall.SIGCONT)
			freeze(t, agent, syscall.SIGCONT)
		}
	}
	defer thaw()
	carriesOut := regexp.MustCompile(fmt.Sprintf(`msg="carrying out the cancel of a job" .*job=%d `, id2))
	done := make(chan result, 1)
	go func() {
		done <- runCairn(t, c.url, "job", "cancel", strconv.FormatUint(id2, 10), "--reason", "leader killed")
	}()
	poll.Until(t, 20*time.Second, func() error {
		if !carriesOut.MatchString(old.proc.logText()) {
			return fmt.Errorf("leader %s does not carry out the cancel of job %d yet", old.name, id2)
		}
		return nil
	})
	if j := admin.job(id2); j.State != "running" || j.CanceledBy == "" {
		t.Fatalf("job %d before the leader is killed: %+v; want it running with its cancel recorded", id2, j)
	}
	kill(old.proc)
	nl := c.waitLeader(20*time.Second, old)
	poll.Until(t, 30*time.Second, func() error {
		if !carriesOut.MatchString(nl.proc.logText()) {
			return fmt.Errorf("new leader %s does not carry out the cancel of job %d", nl.name, id2)
		}
		return nil
	})
	thaw()
	var res result
	select {
	case res = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("'cairn job cancel' did not return")
	}
	if res.code != 0 || !strings.Contains(res.stdout, fmt.Sprintf("backup job %d canceled", id2)) || !strings.Contains(res.stdout, "leader killed") {
		t.Fatalf("cancel across the leader's death:\n%s", res)
	}
	if j := admin.job(id2); j.State != "canceled" {
		t.Fatalf("job %d after the new leader carried out its cancel: %+v", id2, j)
	}
	old.proc.start()
	c.waitReady()

	// A job that ended cannot be canceled; the pool takes the next backup.
	next := c.as("web01").backup("full", randomTree(t, 33))
	started = append(started, next.ID)
	if next.State != "success" {
		t.Fatalf("the backup after the cancels: %+v", next)
	}
	admin.fails(1, []string{fmt.Sprintf("job %d already ended (success)", next.ID)}, "job", "cancel", strconv.FormatUint(next.ID, 10))
	if r := admin.cairn("--json", "job", "cancel", strconv.FormatUint(next.ID, 10)); r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, `"code":"wrong_state"`) {
		t.Errorf("cancel of an ended job with --json:\n%s", r)
	}

	d := c.compareCatalogs()
	outcomes := c.checkJobs(d, started)
	c.checkAllEnded(d)
	if outcomes[catalog.JobSuccess] != 1 || outcomes[catalog.JobCanceled] < 3 {
		t.Errorf("outcomes %v: want 1 success and the 3 cancels", outcomes)
	}
	backups := map[uint64]catalog.Backup{}
	for _, b := range d.backups {
		backups[b.ID] = b
	}
	for _, j := range d.jobs {
		if j.State != catalog.JobCanceled {
			continue
		}
		if b := backups[j.BackupID]; b.State != catalog.BackupAborted || b.Segments != 0 || len(b.Parts) != 0 {
			t.Errorf("canceled job %d left backup %+v", j.ID, b)
		}
	}
	if strings.Contains(d.records["volumes"], `"writer_job"`) {
		t.Errorf("a volume is still held: %s", d.records["volumes"])
	}
}
