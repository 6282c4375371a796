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

// extraServer starts a server outside the group the harness formed, with
// the harness's flags and extra, and stops it when the test ends.
func (c *clusterSys) extraServer(name string, extra ...string) *member {
	c.t.Helper()
	m := &member{name: name, raftAddr: freeport.LoopbackAddr(c.t), data: filepath.Join(c.dir, name)}
	args := append([]string{"server", "--nats", c.url, "--name", name, "--data", m.data, "--raft-addr", m.raftAddr,
		"--liveness-timeout", "4s", "--metrics-addr", anyAddr, "--log-level", "debug"}, extra...)
	m.proc = newProc(c.t, c.logs, c.dir, name, args...)
	m.proc.start()
	c.t.Cleanup(m.proc.stop)
	c.waitAnswers(m)
	return m
}

// dropServer takes m out of the servers the harness waits for (it was
// removed from the group) and still stops it when the test ends.
func (c *clusterSys) dropServer(m *member) {
	c.servers = slices.DeleteFunc(c.servers, func(o *member) bool { return o == m })
	c.t.Cleanup(m.proc.stop)
}

// secrets is the group's secrets file.
func (c *clusterSys) secrets() string { return filepath.Join(c.dir, "secrets.json") }

// members lists the group's members as cluster status shows them.
func (c *clusterSys) members() map[string]wire.MemberStatus {
	c.t.Helper()
	var st wire.ClusterStatusResp
	c.json(&st, "cluster", "status")
	out := map[string]wire.MemberStatus{}
	for _, m := range st.Members {
		out[m.Name] = m
	}
	return out
}

// wantMembers checks that the group's members are exactly names, all
// voters.
func (c *clusterSys) wantMembers(names ...string) {
	c.t.Helper()
	got := c.members()
	var have []string
	for n, m := range got {
		have = append(have, n)
		if !m.Voter {
			c.t.Errorf("member %s is not a voter: %+v", n, m)
		}
	}
	slices.Sort(have)
	slices.Sort(names)
	if !slices.Equal(have, names) {
		c.t.Errorf("the group's members are %v, want %v", have, names)
	}
}

// readsAgree makes n admin reads and checks that every answer knows the
// backups, and the client web01: a server outside the group answering from
// a frozen or empty catalog gives itself away.
func (c *clusterSys) readsAgree(n int, backups ...uint64) {
	c.t.Helper()
	wrong := 0
	for i := range n {
		var bs []wire.BackupInfo
		c.json(&bs, "backup", "list")
		var ids []uint64
		for _, b := range bs {
			ids = append(ids, b.ID)
		}
		var clients []wire.ClientInfo
		c.json(&clients, "client", "list")
		known := slices.ContainsFunc(clients, func(ci wire.ClientInfo) bool { return ci.Name == "web01" })
		for _, id := range backups {
			if !slices.Contains(ids, id) {
				wrong++
				c.t.Errorf("read %d: backup list answered %v, without backup %d", i, ids, id)
				break
			}
		}
		if !known {
			wrong++
			c.t.Errorf("read %d: client list answered %+v, without web01", i, clients)
		}
	}
	if wrong > 0 {
		c.t.Errorf("%d of %d reads answered wrong", wrong, 2*n)
	}
}

// TestJoinChecksTheNewServer: 'cairn cluster join' asks the new server
// before it touches the configuration, and refuses, changing nothing and
// saying what to do, an address where nothing answers (before, the dead
// voter took the majority away from a group with one server down: every
// write failed), a server with keys of its own (before, it was accepted,
// and once it led every backup and restore failed), a wrong Raft address,
// and a member of another group. A right server joins as a non-voter, and
// votes once caught up. Then 'cluster remove' of the leader hands the
// leadership over first, and removals down to one voter say what the group
// lost; the last voter is not removed.
func TestJoinChecksTheNewServer(t *testing.T) {
	c := newClusterSys(t, clusterOpts{})
	small := makeTree(t, smallSpec(41))

	// s3 is down: s1 and s2 are a majority of three, not of four.
	s3 := c.member("s3")
	stop(s3.proc)
	table := c.ok("cluster", "status").stdout
	if !strings.Contains(table, "s3") || !strings.Contains(table, "no: ") {
		t.Errorf("cluster status does not mark s3 unreachable:\n%s", table)
	}
	r := c.cairn("cluster", "join", "--name", "s4", "--raft-addr", freeport.LoopbackAddr(t))
	checkFailure(t, r, 1, "s4", "does not answer", "unchanged")
	t.Logf("join of a server that does not run: %s", strings.TrimSpace(r.stderr))
	c.wantMembers("s1", "s2", "s3")
	c.as("web01").backup("full", small) // the group kept its majority
	s3.proc.start()
	c.waitSettled()

	// A server with a key-encryption key of its own: no --secrets.
	own := c.extraServer("s4", "--bootstrap=false")
	r = c.cairn("cluster", "join", "--name", "s4", "--raft-addr", own.raftAddr)
	checkFailure(t, r, 1, "key-encryption key", "--secrets", "unchanged")
	t.Logf("join of a server with its own keys: %s", strings.TrimSpace(r.stderr))
	c.wantMembers("s1", "s2", "s3")
	stop(own.proc)

	// The right server, at a Raft address it does not listen at.
	good := c.extraServer("s5", "--secrets", c.secrets())
	r = c.cairn("cluster", "join", "--name", "s5", "--raft-addr", freeport.LoopbackAddr(t))
	checkFailure(t, r, 1, "listens for Raft at "+good.raftAddr, "--raft-addr "+good.raftAddr)
	c.wantMembers("s1", "s2", "s3")

	// A member of a group of its own. The command names this group: one
	// that names none is refused while two groups share the NATS
	// (TestGroupsOnOneNATSAnswerOnlyTheirOwn).
	var cs wire.ClusterStatusResp
	c.json(&cs, "cluster", "status")
	t.Setenv("CAIRN_GROUP", cs.Group)
	alone := c.extraServer("s6", "--secrets", c.secrets(), "--bootstrap")
	refused := false
	for range 10 {
		// Whichever server takes it, this group's answers.
		r = c.cairn("cluster", "join", "--name", "s6", "--raft-addr", alone.raftAddr)
		if strings.Contains(r.stdout, "joined the group") {
			t.Errorf("a server of another group joined:\n%s", r)
		}
		if r.code != 0 {
			checkFailure(t, r, 1, "is a member of", "another group")
			refused = true
			break
		}
	}
	if !refused {
		t.Errorf("the join of a member of another group was never refused")
	}
	stop(alone.proc)
	c.wantMembers("s1", "s2", "s3")

	out := c.ok("cluster", "join", "--name", "s5", "--raft-addr", good.raftAddr).stdout
	if !strings.Contains(out, "caught up") || !strings.Contains(out, "votes now") {
		t.Errorf("join of s5 says:\n%s", out)
	}
	c.wantMembers("s1", "s2", "s3", "s5")
	poll.Until(t, 10*time.Second, func() error {
		if m := c.members()["s5"]; !m.Reachable || !m.Voter {
			return fmt.Errorf("s5 in cluster status: %+v", m)
		}
		return nil
	})
	again := c.ok("cluster", "join", "--name", "s5", "--raft-addr", good.raftAddr).stdout
	if !strings.Contains(again, "already") {
		t.Errorf("joining a voter again says:\n%s", again)
	}
	c.servers = append(c.servers, good)
	c.waitSettled()
	c.as("web01").backup("incremental", small)

	// The leader removes itself: it hands the leadership over first.
	l := c.leader()
	if l == nil {
		t.Fatal("no leader")
	}
	out = c.ok("cluster", "remove", "--name", l.name).stdout
	if !strings.Contains(out, "handed the leadership to") {
		t.Errorf("removing the leader %s says:\n%s", l.name, out)
	}
	c.dropServer(l)
	c.waitSettled()
	left := c.members()
	if _, ok := left[l.name]; ok || len(left) != 3 {
		t.Errorf("after removing the leader %s the members are %v", l.name, left)
	}
	c.as("web01").backup("incremental", small)

	// Down to two voters, then one: each removal says what the group lost.
	for len(c.servers) > 1 {
		victim := c.servers[len(c.servers)-1]
		if l := c.leader(); l == victim {
			victim = c.servers[0]
		}
		out := c.ok("cluster", "remove", "--name", victim.name).stdout
		t.Logf("remove %s: %s", victim.name, strings.TrimSpace(out))
		c.dropServer(victim)
		if len(c.servers) == 2 && !strings.Contains(out, "warning:") {
			t.Errorf("removing down to two voters gives no warning:\n%s", out)
		}
		if len(c.servers) == 1 && !strings.Contains(out, "only voter") {
			t.Errorf("removing the last-but-one voter does not say the group survives no failure:\n%s", out)
		}
		c.waitSettled()
	}
	r = c.cairn("cluster", "remove", "--name", c.servers[0].name)
	checkFailure(t, r, 1, "only voter")
	c.as("web01").backup("incremental", small) // the one voter left leads
}

// TestNonMembersAnswerNoRole: servers that are not members of the group
// answer no admin: a server started to be joined later (with
// --bootstrap=false, and without any flag, which made it bootstrap a group
// of its own and become a second leader before), and a member removed
// while it runs, whose catalog stops where it left. Every one of 20 reads
// answers right. A server of another group on the same NATS is named in
// 'cairn cluster status' and 'cairn status', and in the members' logs.
func TestNonMembersAnswerNoRole(t *testing.T) {
	c := newClusterSys(t, clusterOpts{})
	small := makeTree(t, smallSpec(43))
	first := c.as("web01").backup("full", small)

	waiting := c.extraServer("s4", "--secrets", c.secrets(), "--bootstrap=false")
	unflagged := c.extraServer("s5", "--secrets", c.secrets())
	// Give a non-member the time a member takes to subscribe.
	poll.Until(t, 10*time.Second, func() error {
		st, err := c.status(unflagged)
		if err != nil {
			return err
		}
		if st.State == "Leader" {
			t.Fatalf("s5, started without --bootstrap, formed a group of its own and leads it: %+v", st)
		}
		if st.Member {
			return fmt.Errorf("s5 says it is a member: %+v", st)
		}
		return nil
	})
	c.readsAgree(20, first.BackupID)
	poll.Until(t, 10*time.Second, func() error {
		table := c.ok("cluster", "status").stdout
		for _, m := range []*member{waiting, unflagged} {
			if !strings.Contains(table, "not a member: server "+m.name) {
				return fmt.Errorf("cluster status does not name %s waiting to be joined:\n%s", m.name, table)
			}
		}
		return nil
	})
	for _, m := range []*member{waiting, unflagged} {
		if st, err := c.status(m); err != nil || st.Group != "" || st.Member {
			t.Errorf("%s, never joined: %+v, %v", m.name, st, err)
		}
	}

	// s3 is removed and goes on running.
	s3 := c.member("s3")
	c.ok("cluster", "remove", "--name", "s3")
	c.dropServer(s3)
	poll.Until(t, 10*time.Second, func() error {
		st, err := c.status(s3)
		if err != nil {
			return err
		}
		if st.Member {
			return fmt.Errorf("s3, removed, says it is a member: %+v", st)
		}
		return nil
	})
	second := c.as("web01").backup("incremental", small)
	c.readsAgree(20, first.BackupID, second.BackupID)
	var jobs []wire.JobInfo
	for range 20 {
		c.json(&jobs, "job", "list")
		if !slices.Contains(jobIDs(jobs), second.ID) {
			t.Errorf("job list answered %v, without job %d", jobIDs(jobs), second.ID)
		}
	}
	if !s3.proc.alive() {
		t.Errorf("s3 stopped when it was removed: %v", s3.proc.exitErr())
	}

	// A group of its own on the same NATS, started on purpose. Commands
	// that name no group are refused while it runs
	// (TestGroupsOnOneNATSAnswerOnlyTheirOwn): these name this one.
	var cs wire.ClusterStatusResp
	c.json(&cs, "cluster", "status")
	t.Setenv("CAIRN_GROUP", cs.Group)
	other := c.extraServer("s6", "--bootstrap")
	poll.Until(t, 20*time.Second, func() error {
		table := c.ok("cluster", "status").stdout
		if !strings.Contains(table, "ANOTHER GROUP") || !strings.Contains(table, "s6") {
			return fmt.Errorf("cluster status does not warn of s6's group:\n%s", table)
		}
		var st wire.StatusResp
		c.json(&st, "status")
		if len(st.OtherGroups) == 0 {
			return fmt.Errorf("status does not name another group: %+v", st)
		}
		return nil
	})
	poll.Until(t, 10*time.Second, func() error {
		for _, m := range c.servers {
			if !strings.Contains(m.proc.logText(), "ANOTHER GROUP") {
				return fmt.Errorf("%s's log does not say it sees another group", m.name)
			}
		}
		return nil
	})
	stop(other.proc)
}
