package integration

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/internal/poll"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// clusterOpts shape a clustered system.
type clusterOpts struct {
	// nodes is the number of storage nodes (sn1, sn2, …) serving pool
	// Default, each with its own directory; 1 when 0.
	nodes int
	// agents are the clients; web01 when empty.
	agents []string
	// server holds extra fields of every server's config file.
	server map[string]any
	// agentNATS gives an agent (by client name) its own NATS URL instead of
	// the whole cluster's.
	agentNATS map[string]string
	// liveness is the servers' --liveness-timeout; 4s when empty.
	liveness string
	// agentRate caps every agent's backup stream, in bytes per second, so
	// that a small backup runs long enough to kill something under it; 0
	// is no cap.
	agentRate int64
}

// clusterSys is a Cairn system as a datacenter runs it, all on 127.0.0.1:
// a 3-node NATS cluster of nats-server processes, a group of 3 servers,
// storage nodes serving one pool, and agents, every role a process that
// gets all three NATS URLs.
type clusterSys struct {
	t    *testing.T
	dir  string
	logs *logs
	nats *natsCluster
	url  string
	// nc is the test's own NATS connection, for asking each server its own
	// view of the group.
	nc *nats.Conn

	servers []*member
	nodes   []*storageNode
	agents  []*agentProc
}

type member struct {
	name, raftAddr, data string
	proc                 *proc
}

type storageNode struct {
	name, data, poolDir string
	proc                *proc
}

type agentProc struct {
	name string
	proc *proc
}

// newClusterSys starts a NATS cluster, forms the group of servers (s1
// bootstraps, s2 and s3 join with 'cairn cluster join'), then starts the
// storage nodes and agents, and waits until everything is online.
// Everything it starts is stopped when the test ends.
func newClusterSys(t *testing.T, o clusterOpts) *clusterSys {
	t.Helper()
	if o.nodes == 0 {
		o.nodes = 1
	}
	if len(o.agents) == 0 {
		o.agents = []string{"web01"}
	}
	if o.liveness == "" {
		o.liveness = "4s"
	}
	dir := t.TempDir()
	c := &clusterSys{t: t, dir: dir, logs: &logs{}}
	c.logs.printOnFailure(t)
	c.logs.keepIn(t, os.Getenv("CAIRN_TEST_LOGS"))
	c.nats = newNATSCluster(t, c.logs, dir, natsOpts{})
	c.url = c.nats.URL()
	nc, err := nats.Connect(c.url, nats.Name("cairn-test"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	c.nc = nc
	t.Cleanup(nc.Close)

	// Every server of a group holds the same key-encryption key and ticket
	// signing key, from the secrets file 'cairn cluster init' makes.
	secrets := filepath.Join(dir, "secrets.json")
	if r := runCairn(t, "nats://127.0.0.1:1", "cluster", "init", "--out", secrets); r.code != 0 {
		t.Fatalf("make the group's secrets:\n%s", r)
	}
	serverCfg := []string{"--secrets", secrets}
	if o.server != nil {
		serverCfg = append(serverCfg, "--config", writeJSON(t, filepath.Join(dir, "server.json"), o.server))
	}
	for i := 1; i <= 3; i++ {
		m := &member{name: fmt.Sprintf("s%d", i), raftAddr: freeport.LoopbackAddr(t), data: filepath.Join(dir, fmt.Sprintf("s%d", i))}
		args := append([]string{"server", "--nats", c.url}, serverCfg...)
		args = append(args, "--name", m.name, "--data", m.data, "--raft-addr", m.raftAddr,
			"--bootstrap="+strconv.FormatBool(i == 1), "--liveness-timeout", o.liveness,
			"--metrics-addr", anyAddr, "--log-level", "debug")
		m.proc = newProc(t, c.logs, dir, m.name, args...)
		c.servers = append(c.servers, m)
	}
	nodeCfg := writeJSON(t, filepath.Join(dir, "storagenode.json"), map[string]any{"heartbeat_interval": int64(300 * time.Millisecond)})
	for i := 1; i <= o.nodes; i++ {
		n := &storageNode{name: fmt.Sprintf("sn%d", i),
			data: filepath.Join(dir, fmt.Sprintf("sn%d", i)), poolDir: filepath.Join(dir, fmt.Sprintf("pool-sn%d", i))}
		n.proc = newProc(t, c.logs, dir, n.name, "storagenode", "--nats", c.url, "--config", nodeCfg, "--name", n.name,
			"--data", n.data, "--data-addr", freeport.LoopbackAddr(t), "--pool", "Default="+n.poolDir, "--metrics-addr", anyAddr)
		c.nodes = append(c.nodes, n)
	}
	agentCfg := writeJSON(t, filepath.Join(dir, "agent.json"), map[string]any{
		"heartbeat_interval": int64(300 * time.Millisecond), "progress_interval": int64(100 * time.Millisecond),
		"max_bytes_per_second": o.agentRate,
	})
	for _, name := range o.agents {
		url := c.url
		if u := o.agentNATS[name]; u != "" {
			url = u
		}
		a := &agentProc{name: name}
		a.proc = newProc(t, c.logs, dir, "agent-"+name, "agent", "--nats", url, "--config", agentCfg, "--name", name,
			"--metrics-addr", anyAddr)
		c.agents = append(c.agents, a)
	}
	t.Cleanup(func() {
		for _, a := range c.agents {
			a.proc.stop()
		}
		for _, n := range c.nodes {
			n.proc.stop()
		}
		for _, m := range c.servers {
			m.proc.stop()
		}
	})

	s1 := c.servers[0]
	s1.proc.start()
	poll.Until(t, 30*time.Second, func() error {
		failIfCrashed(t, s1.proc)
		st, err := c.status(s1)
		if err != nil {
			return err
		}
		if st.State != "Leader" {
			return fmt.Errorf("s1 is %s", st.State)
		}
		// A leader answers roles, and so 'cluster join', only once it
		// holds its group's identity: a moment after it leads.
		if !st.Member {
			return fmt.Errorf("s1 leads but does not answer roles yet")
		}
		return nil
	})
	for _, m := range c.servers[1:] {
		m.proc.start()
		c.waitAnswers(m)
		c.ok("cluster", "join", "--name", m.name, "--raft-addr", m.raftAddr)
	}
	for _, n := range c.nodes {
		n.proc.start()
	}
	for _, a := range c.agents {
		a.proc.start()
	}
	c.waitReady()
	return c
}

// keepIn copies every log file of the test into dir/<test name> when it
// ends, when dir is set (CAIRN_TEST_LOGS), for reading a passing run.
func (l *logs) keepIn(t *testing.T, dir string) {
	if dir == "" {
		return
	}
	t.Cleanup(func() {
		to := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
		if err := os.MkdirAll(to, 0o755); err != nil {
			t.Log(err)
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, f := range l.files {
			if data, err := os.ReadFile(f); err == nil {
				_ = os.WriteFile(filepath.Join(to, filepath.Base(f)), data, 0o644)
			}
		}
	})
}

// as is the admin command line acting for client.
func (c *clusterSys) as(client string) *stack {
	return &stack{t: c.t, url: c.url, client: client, logs: c.logs}
}

func (c *clusterSys) cairn(args ...string) result {
	c.t.Helper()
	return runCairn(c.t, c.url, args...)
}

func (c *clusterSys) ok(args ...string) result {
	c.t.Helper()
	return c.as("").ok(args...)
}

func (c *clusterSys) json(v any, args ...string) {
	c.t.Helper()
	c.as("").json(v, args...)
}

func (c *clusterSys) member(name string) *member {
	for _, m := range c.servers {
		if m.name == name {
			return m
		}
	}
	c.t.Fatalf("no server %s", name)
	return nil
}

func (c *clusterSys) node(name string) *storageNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no storage node %s", name)
	return nil
}

func (c *clusterSys) agent(name string) *agentProc {
	for _, a := range c.agents {
		if a.name == name {
			return a
		}
	}
	c.t.Fatalf("no agent %s", name)
	return nil
}

// status asks one server for its own view of the group.
func (c *clusterSys) status(m *member) (wire.ServerStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var st wire.ServerStatus
	err := wire.Request(ctx, c.nc, wire.ServerSubject(m.name, wire.OpServerStatus), wire.Empty{}, &st)
	return st, err
}

// waitAnswers waits until a server answers on NATS.
func (c *clusterSys) waitAnswers(m *member) {
	c.t.Helper()
	poll.Until(c.t, 30*time.Second, func() error {
		failIfCrashed(c.t, m.proc)
		_, err := c.status(m)
		return err
	})
}

// leader is the running server that says it leads, nil when none does.
func (c *clusterSys) leader() *member {
	var found *member
	for _, m := range c.servers {
		if !m.proc.alive() {
			continue
		}
		if st, err := c.status(m); err == nil && st.State == "Leader" {
			if found != nil {
				return nil // two say so for a moment: an old leader stepping down
			}
			found = m
		}
	}
	return found
}

// waitLeader waits for a running server other than not to lead, and
// returns it.
func (c *clusterSys) waitLeader(timeout time.Duration, not *member) *member {
	c.t.Helper()
	var l *member
	poll.Until(c.t, timeout, func() error {
		l = c.leader()
		if l == nil || l == not {
			return fmt.Errorf("no new leader")
		}
		return nil
	})
	return l
}

// waitSettled waits until a leader leads every running server and each has
// applied everything in the leader's log.
func (c *clusterSys) waitSettled() {
	c.t.Helper()
	poll.Until(c.t, 60*time.Second, func() error {
		c.failIfCrashed()
		l := c.leader()
		if l == nil {
			return fmt.Errorf("no leader")
		}
		lst, err := c.status(l)
		if err != nil {
			return err
		}
		for _, m := range c.servers {
			if !m.proc.alive() {
				continue
			}
			st, err := c.status(m)
			if err != nil {
				return fmt.Errorf("%s: %v", m.name, err)
			}
			// Raft's applied index runs a little ahead of the catalog's.
			if st.Leader != lst.Name || st.AppliedIndex != lst.LastIndex || lst.AppliedIndex != lst.LastIndex || st.CatalogIndex != lst.CatalogIndex {
				return fmt.Errorf("%s (leader %q, applied %d, catalog at %d) is not caught up with leader %s (last index %d, applied %d, catalog at %d)",
					m.name, st.Leader, st.AppliedIndex, st.CatalogIndex, l.name, lst.LastIndex, lst.AppliedIndex, lst.CatalogIndex)
			}
		}
		return nil
	})
}

// waitReady waits until the group settled and every running storage node
// and agent is online.
func (c *clusterSys) waitReady() {
	c.t.Helper()
	c.waitSettled()
	a := c.as("")
	poll.Until(c.t, 60*time.Second, func() error {
		c.failIfCrashed()
		var clients []wire.ClientInfo
		if err := a.tryJSON(&clients, "client", "list"); err != nil {
			return err
		}
		online := map[string]bool{}
		for _, cl := range clients {
			online[cl.Name] = cl.Online
		}
		for _, ag := range c.agents {
			if ag.proc.alive() && !online[ag.name] {
				return fmt.Errorf("client %s is not online: %+v", ag.name, clients)
			}
		}
		var pools []wire.PoolInfo
		if err := a.tryJSON(&pools, "pool", "list"); err != nil {
			return err
		}
		nodeOnline := map[string]bool{}
		for _, p := range pools {
			for _, n := range p.Nodes {
				nodeOnline[n.Name] = n.Online
			}
		}
		for _, n := range c.nodes {
			if n.proc.alive() && !nodeOnline[n.name] {
				return fmt.Errorf("storage node %s is not online: %+v", n.name, pools)
			}
		}
		return nil
	})
}

// failIfCrashed fails the test at once when a role exited without the test
// stopping or killing it. A role the test ended is not waited for.
func (c *clusterSys) failIfCrashed() {
	c.t.Helper()
	var procs []*proc
	for _, m := range c.servers {
		procs = append(procs, m.proc)
	}
	for _, n := range c.nodes {
		procs = append(procs, n.proc)
	}
	for _, a := range c.agents {
		procs = append(procs, a.proc)
	}
	failIfCrashed(c.t, procs...)
}

// kill ends p with SIGKILL and notes the time in its log, so the log shows
// where its last run ended.
func kill(p *proc) {
	p.t.Helper()
	at := time.Now()
	p.kill()
	markLog(p, at, "killed with SIGKILL")
}

// stop ends p gracefully and notes it in its log.
func stop(p *proc) {
	p.t.Helper()
	at := time.Now()
	p.stop()
	markLog(p, at, "stopped with SIGTERM")
}

func markLog(p *proc, at time.Time, what string) {
	f, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "---- %s: %s %s\n", at.Format(time.RFC3339Nano), p.name, what)
}

// stopAll stops every role, followers before the leader, once the group has
// settled, so each catalog holds everything the leader committed.
func (c *clusterSys) stopAll() {
	c.t.Helper()
	c.waitSettled()
	for _, a := range c.agents {
		stop(a.proc)
	}
	for _, n := range c.nodes {
		stop(n.proc)
	}
	c.waitSettled()
	l := c.leader()
	for _, m := range c.servers {
		if m != l {
			stop(m.proc)
		}
	}
	if l != nil {
		stop(l.proc)
	}
}

// ---- catalogs ----

// catalogDump is a catalog as text, by record: what two members must agree on.
type catalogDump struct {
	records map[string]string
	jobs    []catalog.Job
	backups []catalog.Backup
}

// dumpCatalog reads a stopped server's catalog, read-only.
func dumpCatalog(t *testing.T, path string) *catalogDump {
	t.Helper()
	st, err := catalog.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d := &catalogDump{records: map[string]string{}}
	put := func(key string, v any, err error) {
		if err != nil {
			t.Fatalf("read %s of %s: %v", key, path, err)
		}
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		d.records[key] = string(data)
	}
	counts, err := st.Counts()
	put("counts", counts, err)
	clients, err := st.Clients()
	put("clients", clients, err)
	nodes, err := st.Nodes()
	put("storage nodes", nodes, err)
	pools, err := st.Pools()
	put("pools", pools, err)
	keys, err := st.Keys()
	put("keys", keys, err)
	vols, err := st.Volumes(catalog.VolumeFilter{})
	put("volumes", vols, err)
	jobs, err := st.Jobs(catalog.JobFilter{})
	put("jobs", jobs, err)
	for _, j := range jobs {
		full, err := st.Job(j.ID)
		put(fmt.Sprintf("job %d with its log", j.ID), full, err)
		d.jobs = append(d.jobs, *full)
	}
	backups, err := st.Backups(catalog.BackupFilter{})
	put("backups", backups, err)
	d.backups = backups
	for _, b := range backups {
		infos, err := st.SegmentInfos(b.ID)
		put(fmt.Sprintf("backup %d index segments", b.ID), infos, err)
		h := sha256.New()
		next := st.SegmentBytes(b.ID)
		for {
			seg, ok, err := next()
			if err != nil {
				t.Fatalf("read the index of backup %d in %s: %v", b.ID, path, err)
			}
			if !ok {
				break
			}
			h.Write(seg)
		}
		put(fmt.Sprintf("backup %d index data", b.ID), hex.EncodeToString(h.Sum(nil)), nil)
	}
	return d
}

// compareCatalogs stops everything and checks that every member's catalog
// holds exactly the same records. It returns the first member's.
func (c *clusterSys) compareCatalogs() *catalogDump {
	c.t.Helper()
	c.stopAll()
	var dumps []*catalogDump
	for _, m := range c.servers {
		dumps = append(dumps, dumpCatalog(c.t, filepath.Join(m.data, "catalog.db")))
	}
	for i, d := range dumps[1:] {
		var diffs []string
		keys := map[string]bool{}
		for k := range dumps[0].records {
			keys[k] = true
		}
		for k := range d.records {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			a, b := dumps[0].records[k], d.records[k]
			if a != b {
				diffs = append(diffs, fmt.Sprintf("%s:\n    %s: %.400s\n    %s: %.400s", k, c.servers[0].name, a, c.servers[i+1].name, b))
			}
		}
		if len(diffs) > 0 {
			if len(diffs) > 8 {
				diffs = append(diffs[:8], fmt.Sprintf("… and %d more", len(diffs)-8))
			}
			c.t.Errorf("the catalogs of %s and %s differ:\n  %s", c.servers[0].name, c.servers[i+1].name, strings.Join(diffs, "\n  "))
		}
	}
	c.t.Logf("catalogs of %d members identical: %d records, %d jobs, %d backups", len(dumps), len(dumps[0].records), len(dumps[0].jobs), len(dumps[0].backups))
	return dumps[0]
}

// ---- what the tests expect ----

// treeAt is a tree as it was when a backup of it started.
type treeAt struct {
	client, src string
	want        *sample.Manifest
}

// restoreAll restores every backup the catalog calls complete and compares
// it with the tree as it was when that backup started; every complete
// backup must be one the test started. It returns the backups restored.
//
// 'backup list' is answered by any server from its own catalog, caught up
// with the leader's first; a server with no leader to ask (right after a
// kill) answers from its catalog as it is: the list is read again until it
// holds the backups in known, which the caller saw complete.
func (c *clusterSys) restoreAll(trees map[uint64]treeAt, known ...uint64) []uint64 {
	c.t.Helper()
	var bs []wire.BackupInfo
	poll.Until(c.t, 30*time.Second, func() error {
		bs = nil
		c.json(&bs, "backup", "list")
		complete := map[uint64]bool{}
		for _, b := range bs {
			complete[b.ID] = b.State == string(catalog.BackupComplete)
		}
		for _, id := range known {
			if !complete[id] {
				return fmt.Errorf("backup %d, which ended complete, is not listed complete yet", id)
			}
		}
		return nil
	})
	var restored []uint64
	for _, b := range bs {
		if b.State != string(catalog.BackupComplete) {
			continue
		}
		tr, ok := trees[b.ID]
		if !ok {
			c.t.Errorf("the catalog calls backup %d of %s complete, but the test never started it", b.ID, b.Client)
			continue
		}
		to := filepath.Join(c.t.TempDir(), "restore")
		c.as(tr.client).restore(to, "--backup", strconv.FormatUint(b.ID, 10))
		checkRestored(c.t, tr.want, to, tr.src)
		restored = append(restored, b.ID)
	}
	slices.Sort(restored)
	return restored
}

// complete lists the backups a catalog calls complete.
func (d *catalogDump) complete() []uint64 {
	var ids []uint64
	for _, b := range d.backups {
		if b.State == catalog.BackupComplete {
			ids = append(ids, b.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// ---- what the logs say ----

// run is one stream of a job in a role's log: an agent's attempt or a
// storage node's session.
type run struct {
	proc       string
	job        uint64
	attempt    int // agents only
	start, end time.Time
	outcome    string // done, failed, committed, or what ended the process
}

var (
	logTime    = regexp.MustCompile(`^time=(\S+)`)
	logMsg     = regexp.MustCompile(` msg="?([^"=]*[^" ])"? `)
	logJob     = regexp.MustCompile(` job=(\d+)`)
	logAttempt = regexp.MustCompile(` attempt=(\d+)`)
	logMarker  = regexp.MustCompile(`^---- (\S+): `)
)

// runsIn reads the backup streams in a role's log file. A stream still open
// when the process ended ends there, with what ended it.
func runsIn(t *testing.T, p *proc, startMsg string, ends map[string]string) []run {
	t.Helper()
	f, err := os.Open(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []run
	type stream struct {
		job     uint64
		attempt int
	}
	open := map[stream]*run{}
	closeAll := func(at time.Time, why string) {
		for id, r := range open {
			r.end, r.outcome = at, why
			out = append(out, *r)
			delete(open, id)
		}
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := logMarker.FindStringSubmatch(line); m != nil {
			at, _ := time.Parse(time.RFC3339Nano, m[1])
			why := "process restarted"
			if i := strings.Index(line, " killed "); i > 0 {
				why = "killed"
			} else if strings.Contains(line, " stopped with ") {
				why = "stopped"
			}
			closeAll(at, why)
			continue
		}
		tm, msg, job := logTime.FindStringSubmatch(line), logMsg.FindStringSubmatch(line), logJob.FindStringSubmatch(line)
		if tm == nil || msg == nil || job == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, tm[1])
		if err != nil {
			continue
		}
		id, _ := strconv.ParseUint(job[1], 10, 64)
		key := stream{job: id}
		if a := logAttempt.FindStringSubmatch(line); a != nil {
			key.attempt, _ = strconv.Atoi(a[1])
		}
		switch {
		case msg[1] == startMsg:
			r := &run{proc: p.name, job: id, attempt: key.attempt, start: at}
			if prev := open[key]; prev != nil {
				t.Errorf("%s started attempt %d of job %d again at %s while its earlier stream (from %s) had not ended", p.name, key.attempt, id, at.Format(time.StampMilli), prev.start.Format(time.StampMilli))
				out = append(out, *prev)
			}
			open[key] = r
		case ends[msg[1]] != "":
			if r := open[key]; r != nil {
				r.end, r.outcome = at, ends[msg[1]]
				out = append(out, *r)
				delete(open, key)
			}
		}
	}
	closeAll(time.Now(), "still running")
	return out
}

// jobHistory is what the logs of every agent and storage node say of the
// backups' streams.
type jobHistory struct {
	agent, node map[uint64][]run
}

func (c *clusterSys) history() jobHistory {
	h := jobHistory{agent: map[uint64][]run{}, node: map[uint64][]run{}}
	for _, a := range c.agents {
		for _, r := range runsIn(c.t, a.proc, "backup started", map[string]string{"backup done": "done", "backup failed": "failed"}) {
			h.agent[r.job] = append(h.agent[r.job], r)
		}
	}
	for _, n := range c.nodes {
		// A stream the next attempt of its job stopped ends when the node
		// says so, before that attempt's stream starts; its failure is
		// logged a moment later.
		for _, r := range runsIn(c.t, n.proc, "backup session started", map[string]string{"backup session committed": "committed", "backup session failed": "failed",
			"stopping the stream of an earlier attempt of a job whose next attempt connected": "superseded"}) {
			h.node[r.job] = append(h.node[r.job], r)
		}
	}
	for _, m := range []map[uint64][]run{h.agent, h.node} {
		for _, rs := range m {
			sort.Slice(rs, func(i, j int) bool { return rs[i].start.Before(rs[j].start) })
		}
	}
	return h
}

// checkJobs checks that every backup job the test started ended, and that
// the logs agree with the catalog: no attempt ran twice, an attempt started
// only after the one before it ended, no two streams of a job overlapped on
// the storage nodes, a successful job committed exactly one session and a
// failed one none. It returns the jobs by outcome.
func (c *clusterSys) checkJobs(d *catalogDump, started []uint64) map[catalog.JobState]int {
	c.t.Helper()
	h := c.history()
	jobs := map[uint64]catalog.Job{}
	for _, j := range d.jobs {
		jobs[j.ID] = j
	}
	outcomes := map[catalog.JobState]int{}
	for _, id := range started {
		j, ok := jobs[id]
		if !ok {
			c.t.Errorf("job %d, which the test started, is not in the catalog: lost", id)
			continue
		}
		outcomes[j.State]++
		if !j.State.Done() {
			c.t.Errorf("job %d never ended: %s (waiting %q)", id, j.State, j.Waiting)
		}
		if j.State == catalog.JobFailed && j.Error == "" {
			c.t.Errorf("job %d failed without a reason", id)
		}
		ar := h.agent[id]
		seen := map[int]bool{}
		for i, r := range ar {
			if seen[r.attempt] {
				c.t.Errorf("job %d: the agent ran attempt %d twice", id, r.attempt)
			}
			seen[r.attempt] = true
			if r.attempt < 1 || r.attempt > j.Attempt {
				c.t.Errorf("job %d: the agent ran attempt %d, the catalog counts %d", id, r.attempt, j.Attempt)
			}
			if i > 0 && (r.attempt <= ar[i-1].attempt || r.start.Before(ar[i-1].end)) {
				c.t.Errorf("job %d: attempt %d started at %s, before attempt %d ended (%s, %s)", id, r.attempt,
					r.start.Format(time.StampMilli), ar[i-1].attempt, ar[i-1].end.Format(time.StampMilli), ar[i-1].outcome)
			}
		}
		nr := h.node[id]
		committed := 0
		for i, r := range nr {
			if r.outcome == "committed" {
				committed++
			}
			if i > 0 && r.start.Before(nr[i-1].end) {
				c.t.Errorf("job %d streamed to %s from %s while its stream to %s (until %s, %s) had not ended", id, r.proc,
					r.start.Format(time.StampMilli), nr[i-1].proc, nr[i-1].end.Format(time.StampMilli), nr[i-1].outcome)
			}
		}
		if len(nr) > j.Attempt {
			c.t.Errorf("job %d: %d sessions on the storage nodes, but %d attempts in the catalog", id, len(nr), j.Attempt)
		}
		switch {
		case j.State == catalog.JobSuccess || j.State == catalog.JobWarning:
			// A node killed after the servers committed its session, before
			// it could log so or confirm to the agent, leaves a complete
			// backup (restoreAll reads it back) with a killed session in the
			// node's log and a failure in the agent's.
			diedAfterCommit := committed == 0 && len(nr) > 0 && nr[len(nr)-1].outcome == "killed"
			if diedAfterCommit {
				c.t.Logf("job %d succeeded; its storage node %s was killed after the commit, before it said so", id, nr[len(nr)-1].proc)
			}
			if committed != 1 && !diedAfterCommit {
				c.t.Errorf("job %d succeeded, but the storage nodes committed %d sessions of it: %+v", id, committed, nr)
			}
			if len(ar) > 0 && ar[len(ar)-1].outcome == "failed" && !diedAfterCommit {
				c.t.Errorf("job %d succeeded, but its agent's last attempt says it failed: %+v", id, ar)
			}
		case committed != 0:
			c.t.Errorf("job %d is %s, but a storage node committed a session of it: %+v", id, j.State, nr)
		}
	}
	return outcomes
}

// checkAllEnded checks that every job in the catalog, whoever started it,
// reached a final state: none was lost between leaders.
func (c *clusterSys) checkAllEnded(d *catalogDump) {
	c.t.Helper()
	for _, j := range d.jobs {
		if !j.State.Done() {
			c.t.Errorf("job %d (%s of %s) never ended: %s at attempt %d (waiting %q)", j.ID, j.Type, j.Client, j.State, j.Attempt, j.Waiting)
		}
	}
}

// jobIDs lists the ids of jobs.
func jobIDs(js []wire.JobInfo) []uint64 {
	var ids []uint64
	for _, j := range js {
		ids = append(ids, j.ID)
	}
	return slices.Compact(ids)
}
