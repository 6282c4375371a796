package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// commitOrder commits the backup of an order the fake agent received, as
// its node would, with an index of entries; it returns the session.
func (h *harness) commitOrder(jobID uint64, entries []fileindex.Entry) uuid.UUID {
	h.t.Helper()
	return commitSession(h.t, h.node, jobID, entries)
}

// commitSession commits the session of running backup job jobID as
// storage node sn1 does, through node (its requests to the servers): a
// volume of pool Default, the index of entries, the commit.
func commitSession(t *testing.T, node func(op string, req, resp any) error, jobID uint64, entries []fileindex.Entry) uuid.UUID {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var g wire.VolumeGrant
	must(node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: jobID, Pool: "Default"}, &g))
	if g.New {
		must(node(wire.OpVolumeLabeled, wire.VolumeLabeled{JobID: jobID, VolumeID: g.ID}, nil))
	}
	b := fileindex.NewSegmentBuilder(0)
	for i := range entries {
		must(b.Add(&entries[i]))
	}
	seg := b.Flush()
	must(node(wire.OpSessionIndex, wire.SessionIndexReq{JobID: jobID, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}, nil))
	session := uuid.New()
	start := max(g.Bytes, 256<<10)
	must(node(wire.OpSessionCommit, wire.SessionCommitReq{
		JobID: jobID, SessionID: session, Segments: 1,
		Parts: []wire.SessionPart{{VolumeID: g.ID, VolumeStart: start, DataStart: start + 64, End: start + 256<<10, Final: true}},
		Stats: wire.SessionStats{Entries: int64(len(entries))},
	}, nil))
	return session
}

// srvPaths and srvEntries are the tree the consolidation tests back up:
// /srv with one file.
var srvPaths = []fileindex.Path{"/srv"}

func srvEntries() []fileindex.Entry {
	return []fileindex.Entry{{Path: "/srv", Type: fileindex.TypeDir}, {Path: "/srv/a", Type: fileindex.TypeFile, Size: 1, Loc: fileindex.Location{Seq: 1, EndSeq: 1}}}
}

// incrementalOfSrv commits an incremental of /srv, as the agent and the
// node would, on the full before it.
func (h *harness) incrementalOfSrv(orders chan *nats.Msg) {
	h.t.Helper()
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: srvPaths}, &started))
	<-orders
	h.commitOrder(started.JobID, srvEntries()[1:])
}

// fakeNodeOn answers, as storage node sn1 does, every order on subject
// with an empty reply, and hands each on.
func (h *harness) fakeNodeOn(subject string) <-chan *nats.Msg {
	h.t.Helper()
	got := make(chan *nats.Msg, 8)
	sub, err := h.nc.Subscribe(subject, func(m *nats.Msg) {
		got <- m
		data, _ := wire.Marshal(wire.Empty{})
		m.Respond(data)
	})
	h.must(err)
	h.t.Cleanup(func() { sub.Unsubscribe() })
	h.must(h.nc.Flush())
	return got
}

// consolidateSrv commits a full and an incremental of /srv and starts
// their synthetic full.
func (h *harness) consolidateSrv(orders chan *nats.Msg) wire.JobStarted {
	h.t.Helper()
	h.committedBackupOf(srvPaths, orders, srvEntries())
	h.incrementalOfSrv(orders)
	var st wire.JobStarted
	h.must(h.api(wire.OpBackupConsolidate, wire.BackupConsolidateReq{Client: "web"}, &st))
	return st
}

// jobInfo is job id as 'cairn job show' has it.
func (h *harness) jobInfo(id uint64) wire.JobInfo {
	h.t.Helper()
	var j wire.JobInfo
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: id}, &j))
	return j
}

// TestPolicyFoldsAChainAtItsMaximumLength runs a policy of hourly
// incrementals with a maximum chain of 3 on the fake clock: once a chain
// reaches 3 backups the scheduler starts a synthetic full (ordered to the
// storage node, no agent), whose plan reads every backup of the chain with
// the full's reads last and each path once; committed, it is a full at the
// point in time of the chain's newest backup, the next incremental builds
// on it, and no restore of the newest point ever reads more than 3
// sessions. A failed fold records nothing and is not retried on the same
// chain.
func TestPolicyFoldsAChainAtItsMaximumLength(t *testing.T) {
	// The clock goes by hours: heartbeats of an hour ago still count.
	h := newFakeClockHarness(t, func(c *Config) { c.LivenessTimeout, c.StallTimeout = 3*time.Hour, 3*time.Hour })
	_, orders := h.setup()
	consolidations := make(chan *nats.Msg, 4)
	sub, err := h.nc.Subscribe(wire.NodeSubject("sn1", wire.OpRunConsolidate), func(m *nats.Msg) {
		consolidations <- m
		data, _ := wire.Marshal(wire.Empty{})
		m.Respond(data)
	})
	h.must(err)
	t.Cleanup(func() { sub.Unsubscribe() })
	h.must(h.nc.Flush())
	_, err = h.srv.apply(h.ctx, &catalog.Command{Op: catalog.OpPutPolicy, PolicyPut: &catalog.PolicyPut{Mode: catalog.PutCreate, Policy: catalog.Policy{
		Name: "hourly", Clients: []string{"web"}, Paths: []string{"/srv"}, Schedule: "hourly incremental", Pool: "Default", MaxChain: 3,
		Retention: catalog.PolicyRetention{All: catalog.KeepRules{Last: 100}},
	}}})
	h.must(err)

	// Each hour's backup changes /srv/f<hour> and deletes the file of the
	// hour before.
	hour := 0
	runBackup := func() (uint64, uuid.UUID) {
		t.Helper()
		h.advance(time.Hour)
		order := h.backupOrder(orders)
		entries := []fileindex.Entry{{Path: "/srv", Type: fileindex.TypeDir}}
		if order.Level == "full" {
			for i := range 5 {
				entries = append(entries, fileindex.Entry{Path: fmt.Sprintf("/srv/f%d", i), Type: fileindex.TypeFile, Size: 10, Loc: fileindex.Location{Seq: uint64(i + 1), EndSeq: uint64(i + 1)}})
			}
		} else {
			entries = append(entries, fileindex.Entry{Path: fmt.Sprintf("/srv/f%d", hour%5), Type: fileindex.TypeFile, Size: 20, Loc: fileindex.Location{Seq: 1, EndSeq: 1}})
			entries = append(entries, fileindex.Entry{Path: fmt.Sprintf("/srv/f%d", (hour+4)%5), Type: fileindex.TypeDeleted})
			slices.SortFunc(entries, func(a, b fileindex.Entry) int { return fileindex.Compare(a.Path, b.Path) })
		}
		hour++
		return order.JobID, h.commitOrder(order.JobID, entries)
	}
	chainLen := func(id uint64) int {
		t.Helper()
		chain, err := h.srv.store.Chain(id)
		h.must(err)
		return len(chain)
	}

	full, fullSession := runBackup()
	if b, _ := h.srv.store.Backup(full); b.Level != catalog.LevelFull {
		t.Fatalf("the first run is %s, want a full", b.Level)
	}
	runBackup()
	tip, _ := runBackup()
	if n := chainLen(tip); n != 3 {
		t.Fatalf("chain of %d, want 3", n)
	}

	// The chain reached 3: the next tick folds it. The clock goes on in
	// steps meanwhile: the leader's rounds, which dispatch, go by it.
	var order wire.RunConsolidate
	h.must(json.Unmarshal(h.consolidationOrder(consolidations), &order))
	if len(order.Sessions) != 3 || order.Stream != fullSession || order.Pool != "Default" {
		t.Fatalf("consolidation order %+v: want the chain's 3 sessions, the full's streamed", order)
	}
	job, err := h.srv.store.Job(order.JobID)
	h.must(err)
	if job.Policy != "hourly" || job.Level != catalog.LevelSyntheticFull || job.State != catalog.JobRunning {
		t.Fatalf("the fold's job: %+v", job)
	}
	// The plan: every path of the point in time once, the deleted ones
	// not, the full's reads last.
	var reads []wire.ReadRequest
	for cursor := 0; ; {
		var page wire.RestorePlanResp
		h.must(h.node(wire.OpRestorePlan, wire.RestorePlanReq{JobID: order.JobID, Attempt: job.Attempt, Cursor: cursor}, &page))
		reads = append(reads, page.Reads...)
		if page.Done {
			break
		}
		cursor = page.Cursor
	}
	if len(reads) == 0 || reads[len(reads)-1].SessionID != fullSession {
		t.Fatalf("the plan does not read the full last: %+v", reads)
	}
	seen := map[fileindex.Path]bool{}
	for _, rr := range reads {
		for _, l := range rr.Locs {
			if seen[l.Path] {
				t.Fatalf("the plan reads %s twice", l.Path)
			}
			seen[l.Path] = true
		}
	}
	// Hour 1 changed f1 and deleted f0, hour 2 changed f2 and deleted f1.
	want := []fileindex.Path{"/srv", "/srv/f2", "/srv/f3", "/srv/f4"}
	if len(seen) != len(want) {
		t.Fatalf("the plan reads %v, want %v", seen, want)
	}
	for _, p := range want {
		if !seen[p] {
			t.Fatalf("the plan reads %v, want %v", seen, want)
		}
	}
	tipBackup, err := h.srv.store.Backup(tip)
	h.must(err)
	synth := h.commitOrder(order.JobID, []fileindex.Entry{
		{Path: "/srv", Type: fileindex.TypeDir}, {Path: "/srv/f1", Type: fileindex.TypeFile, Size: 20, Loc: fileindex.Location{Seq: 1, EndSeq: 1}},
	})
	b, err := h.srv.store.Backup(order.BackupID)
	h.must(err)
	if b.State != catalog.BackupComplete || b.Level != catalog.LevelFull || b.Parent != 0 || b.Consolidates != tip || !b.StartTime.Equal(tipBackup.StartTime) || b.SessionID != synth {
		t.Fatalf("the synthetic full %+v: want a complete full at the point in time of backup %d (%s)", b, tip, tipBackup.StartTime)
	}
	if n := chainLen(b.ID); n != 1 {
		t.Fatalf("a restore of the synthetic full reads %d sessions", n)
	}
	job, err = h.srv.store.Job(order.JobID)
	h.must(err)
	if job.State != catalog.JobSuccess || !logHas(job, "the chain is 3 backups long, the policy's maximum is 3") || !logHas(job, fmt.Sprintf("folds in %d (full", full)) {
		t.Fatalf("the fold's job %s, log:\n%v", job.State, job.Log)
	}

	// The next incremental builds on it, and the chain never passes 3:
	// each backup is followed by a scheduler tick before the next run.
	next, _ := runBackup()
	if nb, _ := h.srv.store.Backup(next); nb.Parent != b.ID || nb.Level != catalog.LevelIncremental {
		t.Fatalf("the incremental after the fold: %+v, want it on backup %d", nb, b.ID)
	}
	h.advance(30 * time.Second)
	if id := newOrder(consolidations, order.JobID); id != 0 {
		t.Fatalf("a chain of 2 was folded (job %d)", id)
	}
	third, _ := runBackup()
	if n := chainLen(third); n != 3 {
		t.Fatalf("chain of %d, want 3", n)
	}
	var o wire.RunConsolidate
	for o.JobID == 0 || o.JobID == order.JobID {
		h.must(json.Unmarshal(h.consolidationOrder(consolidations), &o))
	}
	// The node fails it: nothing of it is recorded, and the same chain
	// is not folded again at every tick.
	j, err := h.srv.store.Job(o.JobID)
	h.must(err)
	h.must(h.node(wire.OpSessionAbort, wire.SessionAbortReq{JobID: o.JobID, Attempt: j.Attempt,
		Error: *wire.Errorf(wire.CodeIO, "bring back the volume", "volume Default-0001 is missing")}, nil))
	fb, err := h.srv.store.Backup(o.BackupID)
	h.must(err)
	if fb.State != catalog.BackupAborted {
		t.Fatalf("a failed fold left backup %+v", fb)
	}
	h.advance(30 * time.Second)
	h.advance(30 * time.Second)
	if id := newOrder(consolidations, o.JobID); id != 0 {
		t.Fatalf("a failed fold was tried again on the same chain (job %d)", id)
	}
}

// consolidationOrder is the body of the next synthetic full ordered to the
// node, the clock going on a second at a time until it comes.
func (h *harness) consolidationOrder(orders chan *nats.Msg) []byte {
	h.t.Helper()
	var body []byte
	poll.Until(h.t, 20*time.Second, func() error {
		select {
		case m := <-orders:
			var err error
			body, err = wire.Unmarshal(m.Data)
			return err
		default:
			// The fold waits for the scheduler's next minute: a second a
			// poll took up to 15 s of real time, over the deadline on a
			// loaded machine.
			h.advance(10 * time.Second)
			return errors.New("no synthetic full was ordered of a chain at the policy's maximum")
		}
	})
	return body
}

// newOrder is the job of an order waiting in orders other than a repeat of
// job's (an order may be sent more than once; the node runs it once), 0
// for none.
func newOrder(orders chan *nats.Msg, job uint64) uint64 {
	for {
		select {
		case m := <-orders:
			body, _ := wire.Unmarshal(m.Data)
			var o wire.RunConsolidate
			if json.Unmarshal(body, &o) == nil && o.JobID == job {
				continue
			}
			return o.JobID
		default:
			return 0
		}
	}
}

func logHas(j *catalog.Job, what string) bool {
	for _, l := range j.Log {
		if strings.Contains(l.Msg, what) {
			return true
		}
	}
	return false
}

// TestConsolidationRefusalsAndCancel: 'backup consolidate' of a client with
// nothing to fold, of a full alone, to an unknown pool, or to a pool its
// chain's node does not serve is refused with a hint and makes no job; a
// running one that an admin cancels is ordered stopped at its node and ends
// canceled, its backup dropped.
func TestConsolidationRefusalsAndCancel(t *testing.T) {
	h := newHarness(t)
	_, orders := h.setup()
	nodeOrders := make(chan string, 8)
	sub, err := h.nc.Subscribe(wire.NodeSubject("sn1", ">"), func(m *nats.Msg) {
		nodeOrders <- m.Subject
		data, _ := wire.Marshal(wire.CancelResult{Running: true})
		m.Respond(data)
	})
	h.must(err)
	t.Cleanup(func() { sub.Unsubscribe() })
	h.must(h.nc.Flush())
	start := func(req wire.BackupConsolidateReq) (wire.JobStarted, error) {
		var st wire.JobStarted
		err := h.api(wire.OpBackupConsolidate, req, &st)
		return st, err
	}
	noJobs := func() {
		t.Helper()
		jobs, err := h.srv.store.Jobs(catalog.JobFilter{Type: catalog.JobBackup})
		h.must(err)
		for _, j := range jobs {
			if j.Level == catalog.LevelSyntheticFull {
				t.Fatalf("a refused consolidation made job %+v", j)
			}
		}
	}
	_, err = start(wire.BackupConsolidateReq{Client: "web"})
	wantCode(t, err, wire.CodeNotFound)
	_, err = start(wire.BackupConsolidateReq{Client: "nobody"})
	wantCode(t, err, wire.CodeUnknownClient)
	h.committedBackupOf(srvPaths, orders, srvEntries())
	_, err = start(wire.BackupConsolidateReq{Client: "web"})
	wantCode(t, err, wire.CodeWrongState)
	h.incrementalOfSrv(orders)
	_, err = start(wire.BackupConsolidateReq{Client: "web", Pool: "Nowhere"})
	wantCode(t, err, wire.CodeNotFound)
	_, err = start(wire.BackupConsolidateReq{Client: "web", FileSet: "ffff"})
	wantCode(t, err, wire.CodeNotFound)
	noJobs()

	st, err := start(wire.BackupConsolidateReq{Client: "web"})
	h.must(err)
	if got := <-nodeOrders; got != wire.NodeSubject("sn1", wire.OpRunConsolidate) {
		t.Fatalf("the node got %s, want the consolidation's order", got)
	}
	var info wire.JobInfo
	h.must(h.api(wire.OpJobCancel, wire.JobCancelReq{ID: st.JobID, By: "alice", Reason: "wrong pool"}, &info))
	poll.Until(t, 20*time.Second, func() error {
		j, err := h.srv.store.Job(st.JobID)
		if err != nil {
			return err
		}
		if j.State != catalog.JobCanceled {
			return fmt.Errorf("the canceled consolidation is %s", j.State)
		}
		return nil
	})
	if got := <-nodeOrders; got != wire.NodeSubject("sn1", wire.OpCancel) {
		t.Fatalf("the node got %s, want the cancel", got)
	}
	b, err := h.srv.store.Backup(st.JobID)
	h.must(err)
	if b.State != catalog.BackupAborted {
		t.Fatalf("a canceled consolidation left backup %+v", b)
	}
}

// TestConsolidationAcrossALeaderChange: a group of three runs a synthetic
// full; its leader is stopped while the node reads the plan. The next
// leader adopts the job, sends the node its order again (the node runs the
// attempt once), replays the plan from the page the node asks for, and
// takes the commit: the job succeeds at its first attempt, as a backup
// does across a leader change.
func TestConsolidationAcrossALeaderChange(t *testing.T) {
	srvs, _ := newGroupOfThree(t)
	nc, err := nats.Connect(srvs[0].cfg.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := t.Context()
	req := func(subject string, in, out any) error { return wire.Request(ctx, nc, subject, in, out) }
	node := func(op string, in, out any) error { return req(wire.FromNodeSubject("sn1", op), in, out) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(node(wire.OpNodeRegister, wire.NodeRegisterReq{ID: "sn1", DataAddr: "127.0.0.1:1", CertSHA256: strings.Repeat("ab", 32),
		Pools: []wire.NodePool{{Name: "Default", Type: "disk", Dir: "/srv/pool", MaxVolumeBytes: 64 << 20}}}, nil))
	must(req(wire.FromAgentSubject("web", wire.OpAgentRegister), wire.AgentRegisterReq{Name: "web", Hostname: "web.example"}, nil))
	agentOrders := make(chan uint64, 8)
	nodeOrders := make(chan wire.RunConsolidate, 8)
	respond := func(m *nats.Msg) {
		data, _ := wire.Marshal(wire.Empty{})
		m.Respond(data)
	}
	for _, s := range []struct {
		subject string
		fn      nats.MsgHandler
	}{
		{wire.AgentSubject("web", ">"), func(m *nats.Msg) {
			if strings.HasSuffix(m.Subject, "."+wire.OpRunBackup) {
				body, _ := wire.Unmarshal(m.Data)
				var o wire.RunBackup
				json.Unmarshal(body, &o)
				agentOrders <- o.JobID
			}
			respond(m)
		}},
		{wire.NodeSubject("sn1", wire.OpRunConsolidate), func(m *nats.Msg) {
			body, _ := wire.Unmarshal(m.Data)
			var o wire.RunConsolidate
			json.Unmarshal(body, &o)
			nodeOrders <- o
			respond(m)
		}},
	} {
		sub, err := nc.Subscribe(s.subject, s.fn)
		must(err)
		t.Cleanup(func() { sub.Unsubscribe() })
	}
	must(nc.Flush())
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		for {
			wire.Publish(nc, wire.NodeBeatSubject("sn1"), wire.NodeHeartbeat{ID: "sn1", Pools: []wire.PoolUsage{{Name: "Default", FreeBytes: 1 << 40, TotalBytes: 2 << 40}}})
			wire.Publish(nc, wire.AgentBeatSubject("web"), wire.AgentHeartbeat{})
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	commit := func(jobID uint64, entries []fileindex.Entry) { commitSession(t, node, jobID, entries) }
	backup := func(level string, entries []fileindex.Entry) {
		t.Helper()
		var st wire.JobStarted
		must(req(wire.APISubject(wire.OpBackupStart), wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv"}, Level: level}, &st))
		select {
		case id := <-agentOrders:
			if id != st.JobID {
				t.Fatalf("the agent got job %d, want %d", id, st.JobID)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the agent got no backup order")
		}
		commit(st.JobID, entries)
	}
	backup("full", []fileindex.Entry{{Path: "/srv", Type: fileindex.TypeDir}, {Path: "/srv/a", Type: fileindex.TypeFile, Size: 1, Loc: fileindex.Location{Seq: 1, EndSeq: 1}}})
	backup("incremental", []fileindex.Entry{{Path: "/srv/b", Type: fileindex.TypeFile, Size: 2, Loc: fileindex.Location{Seq: 1, EndSeq: 1}}})

	var st wire.JobStarted
	must(req(wire.APISubject(wire.OpBackupConsolidate), wire.BackupConsolidateReq{Client: "web"}, &st))
	var order wire.RunConsolidate
	select {
	case order = <-nodeOrders:
	case <-time.After(20 * time.Second):
		t.Fatal("the node got no consolidation order")
	}
	var page wire.RestorePlanResp
	must(node(wire.OpRestorePlan, wire.RestorePlanReq{JobID: order.JobID, Attempt: order.Attempt}, &page))

	old, err := leaderOf(srvs)
	must(err)
	must(srvs[old].Close())
	// What the old leader sent is in before the flush's answer: an order
	// after it comes from the new leader.
	must(nc.Flush())
	for len(nodeOrders) > 0 {
		<-nodeOrders
	}
	var again wire.RunConsolidate
	select {
	case again = <-nodeOrders:
	case <-time.After(30 * time.Second):
		t.Fatal("the new leader did not send the running consolidation's order again")
	}
	if again.JobID != order.JobID || again.Attempt != order.Attempt || again.Stream != order.Stream {
		t.Fatalf("the order again: %+v, first %+v", again, order)
	}
	var replay wire.RestorePlanResp
	poll.Until(t, 30*time.Second, func() error {
		return node(wire.OpRestorePlan, wire.RestorePlanReq{JobID: order.JobID, Attempt: order.Attempt}, &replay)
	})
	if len(replay.Reads) != len(page.Reads) || replay.Done != page.Done {
		t.Fatalf("the new leader's plan %+v, the old one's %+v", replay, page)
	}
	commit(order.JobID, []fileindex.Entry{{Path: "/srv", Type: fileindex.TypeDir}, {Path: "/srv/a", Type: fileindex.TypeFile, Size: 1, Loc: fileindex.Location{Seq: 1, EndSeq: 1}},
		{Path: "/srv/b", Type: fileindex.TypeFile, Size: 2, Loc: fileindex.Location{Seq: 2, EndSeq: 2}}})
	var info wire.JobInfo
	must(req(wire.APISubject(wire.OpJobShow), wire.JobShowReq{ID: order.JobID}, &info))
	if info.State != "success" || info.Attempt != 1 {
		t.Fatalf("the consolidation across the leader change: %s at attempt %d (%s)", info.State, info.Attempt, info.Error)
	}
}

// TestConsolidationProgressKeepsItFromStalling: a synthetic full whose
// node reads its chain for longer than the stall timeout, with no request
// to the servers but its progress reports, runs on (job show has the
// report), and fails as stalled only once the reports stop.
func TestConsolidationProgressKeepsItFromStalling(t *testing.T) {
	h := newFakeClockHarness(t, func(c *Config) { c.LivenessTimeout, c.StallTimeout = 10*time.Minute, 10*time.Minute })
	_, orders := h.setup()
	nodeOrders := h.fakeNodeOn(wire.NodeSubject("sn1", ">"))
	st := h.consolidateSrv(orders)
	if got := (<-nodeOrders).Subject; got != wire.NodeSubject("sn1", wire.OpRunConsolidate) {
		t.Fatalf("the node got %s, want the consolidation's order", got)
	}
	job := func() wire.JobInfo { return h.jobInfo(st.JobID) }
	// Five steps of 4 minutes, 20 in all against a stall timeout of 10,
	// each after a report of what the node read.
	for i := range int64(5) {
		read := (i + 1) << 30
		h.must(wire.Publish(h.nc, wire.NodeProgressSubject("sn1"), wire.Progress{JobID: st.JobID, Group: h.srv.groupName(), Phase: "reading the chain", Bytes: read}))
		poll.Until(t, 10*time.Second, func() error {
			if p := h.srv.orch.Progress(st.JobID); p == nil || p.Bytes != read {
				return fmt.Errorf("the server has the report %+v, want %d bytes read", p, read)
			}
			return nil
		})
		h.advance(4 * time.Minute)
	}
	if j := job(); j.State != string(catalog.JobRunning) || j.Progress == nil || j.Progress.Bytes != 5<<30 {
		t.Fatalf("after 20 minutes of reports the job is %s (%s), progress %+v", j.State, j.Error, j.Progress)
	}
	// A report from another node does not count for it.
	h.must(wire.Publish(h.nc, wire.NodeProgressSubject("sn2"), wire.Progress{JobID: st.JobID, Group: h.srv.groupName(), Bytes: 6 << 30}))
	// In steps shorter than the liveness timeout: the node stays online.
	h.advance(6 * time.Minute)
	h.advance(6 * time.Minute)
	poll.Until(t, 20*time.Second, func() error {
		if j := job(); j.State != string(catalog.JobFailed) || !strings.Contains(j.Error, "made no progress") {
			return fmt.Errorf("once the reports stopped the job is %s (%s)", j.State, j.Error)
		}
		return nil
	})
}

// TestConsolidationRequeuedRunsAgainOnItsNode: the storage node of a
// running synthetic full stops answering; the job goes back to the queue
// and waits for that node, the one that holds the chain, by name; once the
// node is heard again, the job is ordered to it again (attempt 2). The
// catalog clears a requeued backup's node, and a synthetic full cannot go
// to any other: it waited for a node with no name, for ever.
func TestConsolidationRequeuedRunsAgainOnItsNode(t *testing.T) {
	h := newFakeClockHarness(t, func(c *Config) { c.LivenessTimeout, c.StallTimeout = time.Minute, time.Hour })
	_, orders := h.setup()
	orderMsgs := h.fakeNodeOn(wire.NodeSubject("sn1", wire.OpRunConsolidate))
	order := func(m *nats.Msg) wire.RunConsolidate {
		var o wire.RunConsolidate
		if body, err := wire.Unmarshal(m.Data); err == nil {
			json.Unmarshal(body, &o)
		}
		return o
	}
	st := h.consolidateSrv(orders)
	if o := order(<-orderMsgs); o.JobID != st.JobID || o.Attempt != 1 {
		t.Fatalf("the node's first order: %+v", o)
	}
	job := func() wire.JobInfo { return h.jobInfo(st.JobID) }

	h.mu.Lock()
	h.nodeSilent = true
	h.mu.Unlock()
	h.advance(2 * time.Minute)
	poll.Until(t, 20*time.Second, func() error {
		if j := job(); j.State != string(catalog.JobQueued) || !strings.Contains(j.Waiting, "storage node sn1, which holds the chain, is offline") {
			return fmt.Errorf("with its node silent the job is %s, waiting %q", j.State, j.Waiting)
		}
		return nil
	})

	h.mu.Lock()
	h.nodeSilent = false
	h.mu.Unlock()
	// The dispatcher's rounds go by the server's clock.
	poll.Until(t, 30*time.Second, func() error {
		h.advance(10 * time.Second)
		select {
		case m := <-orderMsgs:
			if o := order(m); o.JobID != st.JobID || o.Attempt != 2 {
				t.Fatalf("the node's order once it is back: %+v", o)
			}
			return nil
		default:
			j := job()
			return fmt.Errorf("the node is back and the job was not ordered again: %s, waiting %q", j.State, j.Waiting)
		}
	})
	if j := job(); j.State != string(catalog.JobRunning) || j.Node != "sn1" || j.Attempt != 2 {
		t.Fatalf("the job once ordered again: %s on %q, attempt %d", j.State, j.Node, j.Attempt)
	}
}
