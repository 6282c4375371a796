package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/wire"
)

// startBackup starts a backup of src for client without waiting for it.
func startBackup(c *clusterSys, client, level, src string) uint64 {
	c.t.Helper()
	var st wire.JobStarted
	c.as(client).json(&st, "backup", "--client", client, "--level", level, "--path", src)
	return st.JobID
}

// waitJob waits until job id ended and returns it.
func waitJob(c *clusterSys, id uint64, timeout time.Duration) wire.JobInfo {
	c.t.Helper()
	return c.as("").waitEnded(id, timeout)
}

// waitStreaming waits until a backup reports progress, and returns it.
func waitStreaming(c *clusterSys, id uint64) wire.JobInfo {
	c.t.Helper()
	return c.as("").waitStreaming(id, 30*time.Second, nil)
}

// slowRate is the agents' stream cap in the tests that kill a role under a
// running backup: a tree of randomTree's 8 MiB takes about 8 seconds.
const slowRate = 1 << 20

// randomTree is 8 files of 1 MiB of random data: at slowRate a backup of
// it streams for seconds, with little for the machine to do.
func randomTree(t *testing.T, seed uint64) string {
	dir := filepath.Join(t.TempDir(), fmt.Sprintf("random-%d", seed))
	writeRandomFiles(t, dir, 8, 1<<20, seed)
	return dir
}

// raftLogSays counts the lines of a server's log with msg.
func raftLogSays(p *proc, msg string) int {
	return strings.Count(p.logText(), `msg="`+msg+`"`)
}

var compactedTo = regexp.MustCompile(`msg="compacting logs" .*to=(\d+)`)

// TestLeaderKilledDuringBackup kills the leader with SIGKILL in the middle
// of a backup: another server leads within seconds, the backup keeps
// streaming to its storage node, reports to the new leader and succeeds on
// its first attempt; nothing committed is lost. The killed server restarts
// and catches up from the log. Then a follower is killed while the group
// writes enough for Raft to snapshot the catalog and compact its log past
// the follower's place, so when it restarts it catches up from a snapshot.
// All three catalogs are identical at the end, and every backup restores.
func TestLeaderKilledDuringBackup(t *testing.T) {
	c := newClusterSys(t, clusterOpts{agentRate: slowRate, server: map[string]any{
		"raft_snapshot_threshold": 100, "raft_trailing_logs": 50, "raft_snapshot_interval": int64(200 * time.Millisecond),
	}})
	trees := map[uint64]treeAt{}
	var started []uint64
	small := randomTree(t, 21)
	first := c.as("web01").backup("full", small)
	trees[first.BackupID] = treeAt{"web01", small, snapshot(t, small)}
	started = append(started, first.ID)

	big := randomTree(t, 22)
	snapBig := snapshot(t, big)
	id := startBackup(c, "web01", "full", big)
	trees[id] = treeAt{"web01", big, snapBig}
	started = append(started, id)
	before := waitStreaming(c, id)

	old := c.leader()
	if old == nil {
		t.Fatal("no leader")
	}
	oldStatus, err := c.status(old)
	if err != nil {
		t.Fatal(err)
	}
	kill(old.proc)
	killed := time.Now()
	nl := c.waitLeader(20*time.Second, old)
	took := time.Since(killed)
	t.Logf("leader %s killed after %d bytes of job %d; %s leads after %s", old.name, before.Progress.Bytes, id, nl.name, took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("a new leader took %s", took)
	}
	// Everything the old leader had committed is on the new one.
	if st, err := c.status(nl); err != nil || st.LastIndex < oldStatus.CommitIndex {
		t.Errorf("new leader %s: %+v (%v); the old leader had committed index %d", nl.name, st, err, oldStatus.CommitIndex)
	}

	// The backup streams on while the servers elect, and the new leader
	// hears its progress.
	var during wire.JobInfo
	poll.Until(t, 20*time.Second, func() error {
		during = c.as("").job(id)
		if during.State != "running" {
			return nil
		}
		if during.Progress == nil || during.Progress.Bytes <= before.Progress.Bytes {
			return fmt.Errorf("the new leader sees no progress of job %d past %d bytes: %+v", id, before.Progress.Bytes, during.Progress)
		}
		return nil
	})
	if during.State == "running" {
		t.Logf("the new leader sees job %d at %d bytes", id, during.Progress.Bytes)
	}
	done := waitJob(c, id, 2*time.Minute)
	if done.State != "success" || done.Attempt != 1 {
		t.Fatalf("the backup across the leader change: %+v", done)
	}

	// The old leader comes back and catches up from the log.
	old.proc.start()
	c.waitReady()
	if n := raftLogSays(old.proc, "Installed remote snapshot"); n != 0 {
		t.Errorf("%s caught up from a snapshot; want from the log", old.name)
	}
	if err := os.WriteFile(filepath.Join(small, "more.txt"), []byte("one more file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	again := c.as("web01").backup("incremental", small)
	trees[again.BackupID] = treeAt{"web01", small, snapshot(t, small)}
	started = append(started, again.ID)

	// A follower misses enough that the leader's log no longer holds its
	// place: it must be sent a snapshot.
	leader := c.leader()
	var follower *member
	for _, m := range c.servers {
		if m != leader {
			follower = m
			break
		}
	}
	fst, err := c.status(follower)
	if err != nil {
		t.Fatal(err)
	}
	kill(follower.proc)
	// Backups of a one-file tree: each writes a handful of catalog
	// entries in well under a second, a quick way to grow the log. (A
	// backup of a missing path no longer does: it is refused before a job
	// is made.)
	tiny := filepath.Join(t.TempDir(), "tiny")
	if err := os.MkdirAll(tiny, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tiny, "f"), []byte("a small file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tinyWant := snapshot(t, tiny)
	tinies := 0
	for i := 0; ; i++ {
		tinies++
		b := c.as("web01").backup("full", tiny)
		trees[b.BackupID] = treeAt{"web01", tiny, tinyWant}
		started = append(started, b.ID)
		m := compactedTo.FindAllStringSubmatch(leader.proc.logText(), -1)
		if len(m) > 0 {
			to, _ := strconv.ParseUint(m[len(m)-1][1], 10, 64)
			if to > fst.LastIndex {
				t.Logf("leader %s compacted its log to index %d after %d backups of a one-file tree; %s stopped at %d", leader.name, to, i+1, follower.name, fst.LastIndex)
				break
			}
		}
		if i > 100 {
			t.Fatalf("the leader did not compact its log past index %d", fst.LastIndex)
		}
	}
	follower.proc.start()
	c.waitReady()
	if raftLogSays(follower.proc, "Installed remote snapshot") == 0 || raftLogSays(follower.proc, "catalog restored from a snapshot") == 0 {
		t.Errorf("%s did not catch up from a snapshot", follower.name)
	}
	if err := os.WriteFile(filepath.Join(small, "last.txt"), []byte("the last file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	last := c.as("web01").backup("incremental", small)
	trees[last.BackupID] = treeAt{"web01", small, snapshot(t, small)}
	started = append(started, last.ID)
	restored := c.restoreAll(trees, last.BackupID)
	if len(restored) != 4+tinies {
		t.Errorf("restored backups %v, want %d", restored, 4+tinies)
	}
	d := c.compareCatalogs()
	if !slices.Equal(d.complete(), restored) {
		t.Errorf("the catalog's complete backups %v are not those restored, %v", d.complete(), restored)
	}
	c.checkJobs(d, started)
	c.checkAllEnded(d)
}

// TestQuorumLoss stops two of the three servers with SIGKILL. A write fails
// within seconds, not a hang, with an error that names the unreachable
// servers, and 'cairn cluster status' shows them unreachable; reads that may
// be a little stale (backup list, ls) still work from the last server. Once
// a second server is back, the group elects a leader and a backup works;
// nothing was lost or corrupted: every backup restores and the three
// catalogs are identical.
func TestQuorumLoss(t *testing.T) {
	c := newClusterSys(t, clusterOpts{})
	trees := map[uint64]treeAt{}
	var started []uint64
	small := makeTree(t, smallSpec(31))
	first := c.as("web01").backup("full", small)
	trees[first.BackupID] = treeAt{"web01", small, snapshot(t, small)}
	started = append(started, first.ID)
	// The one left must hold what the backup committed: the leader and
	// one other commit it, and the third applies it a moment later, or,
	// if both go first, never. Its reads below are of what it holds.
	c.waitSettled()

	l := c.leader()
	down := []*member{l}
	var survivor *member
	for _, m := range c.servers {
		switch {
		case m == l:
		case len(down) == 1:
			down = append(down, m)
		default:
			survivor = m
		}
	}
	for _, m := range down {
		kill(m.proc)
	}
	t.Logf("killed %s and %s (the leader was %s); %s runs alone", down[0].name, down[1].name, l.name, survivor.name)

	t0 := time.Now()
	r := c.cairn("backup", "--client", "web01", "--path", small, "--wait")
	took := time.Since(t0)
	checkFailure(t, r, 1, "no leader", down[0].name, down[1].name, "unreachable")
	t.Logf("a backup without a majority failed after %s: %s", took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
	if took > 15*time.Second {
		t.Errorf("a write without a majority took %s to fail; want seconds", took)
	}

	var st wire.ClusterStatusResp
	c.json(&st, "cluster", "status")
	if st.Leader != "" || st.Answered != survivor.name {
		t.Errorf("cluster status without a majority: leader %q, answered by %q", st.Leader, st.Answered)
	}
	for _, m := range st.Members {
		wantUp := m.Name == survivor.name
		if m.Reachable != wantUp {
			t.Errorf("cluster status says %s is reachable=%v: %+v", m.Name, m.Reachable, m)
		}
	}
	table := c.ok("cluster", "status").stdout
	for _, m := range down {
		if !regexp.MustCompile(`(?m)^` + m.name + `\s.*\sno\b`).MatchString(table) {
			t.Errorf("cluster status does not show %s unreachable:\n%s", m.name, table)
		}
	}
	if !strings.Contains(table, "leader: none") {
		t.Errorf("cluster status does not say there is no leader:\n%s", table)
	}

	// Reads still work, from the one server left.
	var bs []wire.BackupInfo
	c.json(&bs, "backup", "list", "--client", "web01")
	if len(bs) != 1 || bs[0].ID != first.BackupID || bs[0].State != "complete" {
		t.Errorf("backup list without a majority: %+v", bs)
	}
	ls := c.ok("ls", "--client", "web01", small).stdout
	if !strings.Contains(ls, "logs") || !strings.Contains(ls, "data") {
		t.Errorf("ls without a majority lists nothing known:\n%s", ls)
	}

	// A majority again: writes resume.
	down[0].proc.start()
	nl := c.waitLeader(30*time.Second, nil)
	t.Logf("%s back: %s leads", down[0].name, nl.name)
	c.waitReady()
	second := c.as("web01").backup("incremental", small)
	trees[second.BackupID] = treeAt{"web01", small, snapshot(t, small)}
	started = append(started, second.ID)

	down[1].proc.start()
	c.waitReady()
	restored := c.restoreAll(trees)
	if len(restored) != 2 {
		t.Errorf("restored backups %v, want 2", restored)
	}
	d := c.compareCatalogs()
	c.checkJobs(d, started)
	c.checkAllEnded(d)
}

// TestRecoverLostMajority loses two of three servers for good after some
// backups. The survivor is stopped, 'cairn cluster recover' makes it a group
// of one from a peers file, and started alone it leads: the earlier backups
// list and restore, and a new backup works.
func TestRecoverLostMajority(t *testing.T) {
	c := newClusterSys(t, clusterOpts{})
	trees := map[uint64]treeAt{}
	src := makeTree(t, smallSpec(61))
	full := c.as("web01").backup("full", src)
	trees[full.BackupID] = treeAt{"web01", src, snapshot(t, src)}
	if err := os.WriteFile(filepath.Join(src, "later.txt"), []byte("written after the full\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	inc := c.as("web01").backup("incremental", src)
	trees[inc.BackupID] = treeAt{"web01", src, snapshot(t, src)}
	c.waitSettled()

	// The leader and a follower are lost for good; their directories go
	// too, so nothing of them can come back.
	l := c.leader()
	lost := []*member{l}
	var survivor *member
	for _, m := range c.servers {
		switch {
		case m == l:
		case len(lost) == 1:
			lost = append(lost, m)
		default:
			survivor = m
		}
	}
	for _, m := range lost {
		kill(m.proc)
		if err := os.RemoveAll(m.data); err != nil {
			t.Fatal(err)
		}
	}
	// Alone, the survivor cannot elect itself.
	r := c.cairn("backup", "--client", "web01", "--path", src)
	checkFailure(t, r, 1, "no leader")

	stop(survivor.proc)
	peers := writeJSON(t, filepath.Join(c.dir, "peers.json"), []map[string]string{{"id": survivor.name, "address": survivor.raftAddr}})
	rec := runCairn(t, c.url, "cluster", "recover", "--data", survivor.data, "--peers", peers)
	if rec.code != 0 {
		t.Fatalf("cluster recover:\n%s", rec)
	}
	t.Logf("%s", strings.TrimSpace(rec.stdout))
	survivor.proc.start()
	if nl := c.waitLeader(30*time.Second, nil); nl != survivor {
		t.Fatalf("%s leads after the recovery, want %s", nl.name, survivor.name)
	}
	c.waitReady()
	var st wire.ClusterStatusResp
	c.json(&st, "cluster", "status")
	if st.Leader != survivor.name || len(st.Members) != 1 || st.Members[0].Name != survivor.name {
		t.Errorf("cluster status after the recovery: %+v", st)
	}

	var bs []wire.BackupInfo
	c.json(&bs, "backup", "list", "--client", "web01")
	var ids []uint64
	for _, b := range bs {
		if b.State == "complete" {
			ids = append(ids, b.ID)
		}
	}
	if !slices.Equal(ids, []uint64{full.BackupID, inc.BackupID}) && !slices.Equal(ids, []uint64{inc.BackupID, full.BackupID}) {
		t.Errorf("complete backups after the recovery: %+v", bs)
	}
	if err := os.WriteFile(filepath.Join(src, "after.txt"), []byte("written after the recovery\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	next := c.as("web01").backup("incremental", src)
	trees[next.BackupID] = treeAt{"web01", src, snapshot(t, src)}
	if restored := c.restoreAll(trees); len(restored) != 3 {
		t.Errorf("restored %v, want the 2 backups from before the recovery and the one after", restored)
	}
}

// TestClusterStorageNodes runs two storage nodes serving the same pool.
// Backups started together spread over both; an incremental goes to the
// node of its full; a node killed in the middle of
// a backup has it retried on the other node (attempt 2), which succeeds,
// and the killed session is nowhere in the catalog; an agent killed in the
// middle of a backup has it wait in the queue, saying why, and its next
// attempt runs once the agent is back; and every backup on either node
// restores.
func TestClusterStorageNodes(t *testing.T) {
	clients := []string{"web01", "web02", "web03"}
	c := newClusterSys(t, clusterOpts{nodes: 2, agents: clients, agentRate: slowRate})
	trees := map[uint64]treeAt{}
	var started []uint64
	track := func(client, src string, id uint64) {
		trees[id] = treeAt{client, src, snapshot(t, src)}
		started = append(started, id)
	}

	// Three backups at once go to both nodes.
	var ids []uint64
	for i, cl := range clients {
		src := randomTree(t, uint64(40+i))
		snap := snapshot(t, src)
		id := startBackup(c, cl, "full", src)
		trees[id] = treeAt{cl, src, snap}
		started = append(started, id)
		ids = append(ids, id)
	}
	used := map[string]int{}
	fullOn := map[string]string{}
	for i, id := range ids {
		j := waitJob(c, id, 2*time.Minute)
		if j.State != "success" {
			t.Fatalf("backup %d: %+v", id, j)
		}
		used[j.Node]++
		fullOn[clients[i]] = j.Node
	}
	t.Logf("three backups at once ran on %v", used)
	if len(used) != 2 {
		t.Errorf("three backups started together all ran on one node: %v", used)
	}
	// An incremental goes where its full is, whatever the load, so that a
	// restore reads the chain from one node.
	for i, cl := range clients {
		src := trees[ids[i]].src
		if err := os.WriteFile(filepath.Join(src, "changed.txt"), []byte("a change for the incremental\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		inc := c.as(cl).backup("incremental", src)
		track(cl, src, inc.BackupID)
		if inc.Node != fullOn[cl] {
			t.Errorf("the incremental %d of %s ran on %s; its full is on %s", inc.BackupID, cl, inc.Node, fullOn[cl])
		}
		// Whichever server answers, the list right after --wait holds it.
		var bs []wire.BackupInfo
		c.json(&bs, "backup", "list", "--client", cl)
		if i := slices.IndexFunc(bs, func(b wire.BackupInfo) bool { return b.ID == inc.BackupID }); i < 0 || bs[i].State != string(catalog.BackupComplete) {
			t.Errorf("backup list right after the incremental %d of %s ended: %+v", inc.BackupID, cl, bs)
		}
	}

	// A node killed mid-backup: the backup runs again on the other node.
	big := randomTree(t, 44)
	id := startBackup(c, "web01", "full", big)
	track("web01", big, id)
	j := waitStreaming(c, id)
	victim := c.node(j.Node)
	sessionsOn := func(node string) int {
		n := 0
		for _, v := range c.as("").volumes() {
			if v.Node == node {
				n += v.Sessions
			}
		}
		return n
	}
	sessionsBefore := sessionsOn(victim.name)
	kill(victim.proc)
	killed := time.Now()
	done := waitJob(c, id, 2*time.Minute)
	t.Logf("backup %d: node %s killed mid-backup; the job ended %s after it, %s on %s, attempt %d",
		id, victim.name, time.Since(killed).Round(time.Millisecond), done.State, done.Node, done.Attempt)
	if done.State != "success" || done.Attempt != 2 || done.Node == victim.name {
		t.Errorf("the backup whose node was killed: %+v", done)
	}
	log := ""
	for _, l := range done.Log {
		log += l.Msg + "\n"
	}
	if !strings.Contains(log, "attempt 1 on storage node "+victim.name) {
		t.Errorf("the job log does not say why attempt 1 ended:\n%s", log)
	}
	// The killed session is nowhere in the catalog: the backup lies on the
	// other node's volumes only, and the victim's hold what they held.
	vols := map[string]string{}
	for _, v := range c.as("").volumes() {
		vols[v.Name] = v.Node
	}
	for _, v := range done.Volumes {
		if vols[v] != done.Node {
			t.Errorf("backup %d, written on %s, lists volume %s of node %q", id, done.Node, v, vols[v])
		}
	}
	if n := sessionsOn(victim.name); n != sessionsBefore {
		t.Errorf("the volumes of %s hold %d sessions after the kill, %d before", victim.name, n, sessionsBefore)
	}
	victim.proc.start()
	c.waitReady()

	// An agent killed mid-backup: the backup goes back to the queue with
	// the reason, waits for the agent, and its next attempt runs once the
	// agent is back; nothing of the killed attempt is in the catalog.
	src := randomTree(t, 45)
	id = startBackup(c, "web02", "full", src)
	waitStreaming(c, id)
	ag := c.agent("web02")
	kill(ag.proc)
	killed = time.Now()
	var waiting wire.JobInfo
	poll.Until(t, time.Minute, func() error {
		if err := c.as("").tryJSON(&waiting, "job", "show", strconv.FormatUint(id, 10)); err != nil {
			return err
		}
		if waiting.State != "queued" || !strings.Contains(waiting.Waiting, "web02") {
			return fmt.Errorf("job %d is %s (attempt %d, waiting %q)", id, waiting.State, waiting.Attempt, waiting.Waiting)
		}
		return nil
	})
	t.Logf("backup %d: agent web02 killed mid-backup; requeued %s after it, waiting %q", id, time.Since(killed).Round(time.Millisecond), waiting.Waiting)
	if waiting.Attempt != 1 {
		t.Errorf("the backup whose agent was killed was ordered again before the agent was back: %+v", waiting)
	}
	var bs []wire.BackupInfo
	c.json(&bs, "backup", "list", "--client", "web02")
	for _, b := range bs {
		if b.ID == id && b.State == "complete" {
			t.Errorf("the backup whose agent was killed is complete: %+v", b)
		}
	}
	ag.proc.start()
	c.waitReady()
	done = waitJob(c, id, time.Minute)
	if done.State != "success" || done.Attempt != 2 {
		t.Errorf("the backup whose agent was killed, once the agent is back: %+v", done)
	}
	track("web02", src, done.BackupID)
	if err := os.WriteFile(filepath.Join(src, "again.txt"), []byte("after the agent came back\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	again := c.as("web02").backup("full", src)
	track("web02", src, again.BackupID)

	restored := c.restoreAll(trees)
	byNode := map[string]int{}
	for _, id := range restored {
		byNode[c.as("").job(id).Node]++
	}
	t.Logf("restored %d backups: %v by node", len(restored), byNode)
	if len(byNode) != 2 {
		t.Errorf("the backups restored were all on one node: %v", byNode)
	}
	d := c.compareCatalogs()
	c.checkJobs(d, started)
	c.checkAllEnded(d)
}
