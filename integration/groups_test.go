package integration

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// TestGroupsOnOneNATSAnswerOnlyTheirOwn: two groups, each bootstrapped by
// a server of its own, share one NATS server; group A has the storage node
// and the agent. All servers answer in one NATS queue group, so each
// request reaches either group's server at random: before, a job list of
// A came back empty whenever B's server took it, and backups failed at
// random. Now a request names its group (CAIRN_GROUP for the commands; the
// node learned A at its first registration, the agent is told with
// --group), B's server hands A's requests on to A's, and every answer
// comes from A's catalog; B's own list never shows A's jobs. A command, and
// an agent's first registration, that name no group are refused by either
// server, naming both groups. Once A's server is down, a
// command and a storage node of group A, reaching only B's server, are
// refused with a message naming both groups.
func TestGroupsOnOneNATSAnswerOnlyTheirOwn(t *testing.T) {
	s := newStack(t, stackOpts{})
	tree := makeTree(t, smallSpec(61))
	var cs wire.ClusterStatusResp
	s.json(&cs, "cluster", "status")
	groupA := cs.Group
	if groupA == "" {
		t.Fatalf("cluster status names no group: %+v", cs)
	}
	first := s.backup("full", tree)

	// Group B: a server bootstrapped on its own, on the same NATS (as the
	// same NATS user as A's server: the servers' permissions are all of
	// NATS anyway).
	b := newProc(t, s.logs, s.dir, "server-b1", "server", "--bootstrap", "--nats", s.url, "--nats-nkey", s.seed(wire.KindServer, "s1"),
		"--name", "b1", "--data", filepath.Join(s.dir, "b1"), "--raft-addr", freeport.LoopbackAddr(t),
		"--liveness-timeout", "5s", "--metrics-addr", anyAddr, "--log-level", "debug")
	b.start()
	t.Cleanup(b.stop)
	groupB := b.boundAddr("a member of the group: answering storage nodes, agents and admins", "group")
	if groupB == "" || groupB == groupA {
		t.Fatalf("group B's id is %q, A's %q", groupB, groupA)
	}
	t.Logf("group A %s, group B %s", groupA, groupB)

	// A command that names no group could be answered by either: refused,
	// by whichever server takes it, with both groups named.
	t.Setenv("CAIRN_GROUP", "")
	poll.Until(t, 20*time.Second, func() error {
		r := s.cairn("job", "list")
		if r.code == 0 {
			return fmt.Errorf("a job list that names no group was answered:\n%s", r)
		}
		return nil
	})
	for i := range 6 {
		r := s.cairn("job", "list")
		checkFailure(t, r, 1, "names no group", groupA, groupB, "--group")
		if t.Failed() {
			t.Fatalf("try %d", i)
		}
	}

	// So is an agent's first registration when it is not told its group:
	// it says so and keeps trying; told, it registers with group A.
	s.agent.stop()
	s.agent.start()
	poll.Until(t, 30*time.Second, func() error {
		for _, l := range strings.Split(s.agent.logText(), "\n") {
			if strings.Contains(l, "registration with the servers failed") && strings.Contains(l, "names no group") &&
				strings.Contains(l, groupA) && strings.Contains(l, groupB) {
				return nil
			}
		}
		return fmt.Errorf("the agent started without its group does not say its registration was refused, naming both groups")
	})
	s.agent.stop()
	s.agent.args = append(s.agent.args, "--group", groupA)
	s.agent.start()

	// Through group A: every answer is A's, whichever server NATS picks.
	t.Setenv("CAIRN_GROUP", groupA)
	s.waitReady()
	var jobs []uint64
	for range 3 {
		j := s.backup("incremental", tree)
		jobs = append(jobs, j.ID)
	}
	want := snapshot(t, tree)
	for i := range 2 {
		to := filepath.Join(t.TempDir(), fmt.Sprintf("restore%d", i))
		j := s.restore(to)
		jobs = append(jobs, j.ID)
		checkRestored(t, want, to, tree)
	}
	jobs = append(jobs, first.ID)
	for i := range 12 {
		var list []wire.JobInfo
		s.json(&list, "job", "list")
		got := jobIDs(list)
		for _, id := range jobs {
			if !slices.Contains(got, id) {
				t.Errorf("job list %d through group A answered %v, without job %d: group B's server answered it", i, got, id)
				break
			}
		}
		var backups []wire.BackupInfo
		s.json(&backups, "backup", "list")
		if len(backups) != 4 {
			t.Errorf("backup list %d through group A answered %d backups, want 4", i, len(backups))
		}
	}

	// Through group B: its own empty catalog, never A's jobs.
	t.Setenv("CAIRN_GROUP", groupB)
	for i := range 8 {
		var list []wire.JobInfo
		s.json(&list, "job", "list")
		if len(list) != 0 {
			t.Errorf("job list %d through group B answered %v: group A's jobs", i, jobIDs(list))
		}
	}

	// A's server stops: what is for group A reaches only B's server, which
	// refuses it and names both groups.
	t.Setenv("CAIRN_GROUP", groupA)
	s.server.stop()
	poll.Until(t, 30*time.Second, func() error {
		r := s.cairn("job", "list")
		if r.code == 0 {
			return fmt.Errorf("group A's job list was answered with A's server down:\n%s", r)
		}
		// While A's server was heard lately B says it does not answer
		// right now; then that no server of A runs on this NATS.
		if !strings.Contains(r.stderr, "no server of group "+groupA+" answers on this NATS") {
			return fmt.Errorf("not refused as another group's yet:\n%s", r)
		}
		checkFailure(t, r, 1, "for group "+groupA, "server b1 of group "+groupB)
		return nil
	})
	// The storage node, which learned group A, restarts with it set, and
	// its registration is refused the same way.
	s.storage.stop()
	s.storage.args = append(s.storage.args, "--group", groupA)
	s.storage.start()
	poll.Until(t, 30*time.Second, func() error {
		log := s.storage.logText()
		if !strings.Contains(log, "registration with the servers failed") || !strings.Contains(log, "no server of group "+groupA+" answers on this NATS") ||
			!strings.Contains(log, "server b1 of group "+groupB) {
			return fmt.Errorf("the storage node's log does not say its registration was refused by group B")
		}
		return nil
	})
	// And the agent, which knows group A, is not taken for online by B.
	t.Setenv("CAIRN_GROUP", groupB)
	var clients []wire.ClientInfo
	s.json(&clients, "client", "list")
	if len(clients) != 0 {
		t.Errorf("group B lists clients %+v: it took group A's agent's beats or registration", clients)
	}
}
