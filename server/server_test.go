package server

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnbackup/cairn/alert"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/clock"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// harness runs a real server on an embedded NATS server; the test plays the
// storage node and the agent by sending their messages itself.
type harness struct {
	t   *testing.T
	srv *Server
	nc  *nats.Conn
	ctx context.Context

	mu          sync.Mutex
	running     []uint64 // jobs the fake agent was ordered to run
	agentSilent bool
	// nodeSilent stops the fake node's heartbeats, as a node that died.
	nodeSilent bool
	// nodeDraining makes the fake node's heartbeats say it is stopping.
	nodeDraining bool
	// orderHold, when set, keeps the fake agent from answering an order
	// until it is closed, as a busy agent or a slow network would.
	orderHold chan struct{}
	// missing is a path the fake agent's client does not have: it refuses
	// a backup of it, as the real agent does, asked before the job is
	// made (backup.check) or ordered to run it.
	missing string
	// reg holds the server's metrics.
	reg *prometheus.Registry
	// fake is the server's clock, nil when it runs on the real one.
	fake *clock.Fake
	// poolFree is what the fake node reports free in its pool; 0 is 1 TiB.
	poolFree int64
}

func newHarness(t *testing.T, tune ...func(*Config)) *harness {
	t.Helper()
	return newHarnessOn(t, natsd.Config{Anonymous: true}, tune...)
}

// newHarnessOn is newHarness with an embedded NATS server configured so.
func newHarnessOn(t *testing.T, ncfg natsd.Config, tune ...func(*Config)) *harness {
	t.Helper()
	return startHarness(t, ncfg, nil, tune...)
}

// newFakeClockHarness is newHarness with a server whose clock moves only
// when the test advances it (h.advance): timeouts of minutes are tested in
// the milliseconds the server takes to act on them.
func newFakeClockHarness(t *testing.T, tune ...func(*Config)) *harness {
	t.Helper()
	return startHarness(t, natsd.Config{Anonymous: true}, clock.NewFake(time.Now()), tune...)
}

func startHarness(t *testing.T, ncfg natsd.Config, fake *clock.Fake, tune ...func(*Config)) *harness {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ns, err := natsd.Start(ncfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	cfg := DefaultConfig()
	cfg.Name = "s1"
	cfg.Bootstrap = true
	cfg.DataDir = t.TempDir()
	cfg.NATSURL = ns.URL()
	cfg.RaftAddr = "127.0.0.1:0" // Raft advertises the port it bound
	cfg.LivenessTimeout = 2 * time.Second
	cfg.StallTimeout = time.Minute
	for _, f := range tune {
		f(&cfg)
	}
	reg := prometheus.NewRegistry()
	s, err := New(cfg, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	if fake != nil {
		s.clock = fake
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	if err := s.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// Leading is not answering yet: the role subjects are subscribed on
	// the leader loop's next turn.
	poll.Until(t, 30*time.Second, func() error {
		if !s.Serving() {
			return errors.New("the server does not answer roles yet")
		}
		return nil
	})
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return &harness{t: t, srv: s, nc: nc, ctx: ctx, reg: reg, fake: fake}
}

// advance moves the fake clock by d, then waits until the server has
// heard the heartbeats the fake node and agent (unless silent) send after
// it: a step shorter than the liveness timeout keeps them online, however
// far the clock goes in steps.
func (h *harness) advance(d time.Duration) {
	h.t.Helper()
	h.fake.Advance(d)
	now := h.fake.Now()
	poll.Until(h.t, 10*time.Second, func() error {
		h.mu.Lock()
		silent, nodeSilent := h.agentSilent, h.nodeSilent
		h.mu.Unlock()
		h.srv.mu.Lock()
		defer h.srv.mu.Unlock()
		if l := h.srv.nodes["sn1"]; !nodeSilent && (l == nil || l.lastSeen.Before(now)) {
			return errors.New("no heartbeat of the node since the clock moved")
		}
		if l := h.srv.agents["web"]; !silent && (l == nil || l.lastSeen.Before(now)) {
			return errors.New("no heartbeat of the agent since the clock moved")
		}
		return nil
	})
}

func (h *harness) api(op string, req, resp any) error {
	return wire.Request(h.ctx, h.nc, wire.APISubject(op), req, resp)
}

func (h *harness) node(op string, req, resp any) error {
	return wire.Request(h.ctx, h.nc, wire.FromNodeSubject("sn1", op), req, resp)
}

func (h *harness) agent(op string, req, resp any) error {
	return wire.Request(h.ctx, h.nc, wire.FromAgentSubject("web", op), req, resp)
}

func (h *harness) must(err error) {
	h.t.Helper()
	if err != nil {
		h.t.Fatal(err)
	}
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if wire.CodeOf(err) != code {
		t.Fatalf("err = %v (code %q), want code %s", err, wire.CodeOf(err), code)
	}
	var we *wire.Error
	if errors.As(err, &we) && we.Hint == "" {
		t.Fatalf("error %q has no hint", we.Message)
	}
}

// setup registers a storage node with one pool and an agent whose orders
// land on orders.
// backupOrder is the next backup order the fake agent received.
func (h *harness) backupOrder(orders chan *nats.Msg) wire.RunBackup {
	h.t.Helper()
	var order wire.RunBackup
	select {
	case m := <-orders:
		body, err := wire.Unmarshal(m.Data)
		h.must(err)
		h.must(json.Unmarshal(body, &order))
	case <-time.After(20 * time.Second):
		h.t.Fatal("agent got no backup order")
	}
	return order
}

func (h *harness) setup() (ticketKey ed25519.PublicKey, orders chan *nats.Msg) {
	var reg wire.NodeRegisterResp
	h.must(h.node(wire.OpNodeRegister, wire.NodeRegisterReq{
		ID: "sn1", DataAddr: "127.0.0.1:1", CertSHA256: strings.Repeat("ab", 32),
		Pools: []wire.NodePool{{Name: "Default", Type: "disk", Dir: "/srv/pool", MaxVolumeBytes: 64 << 20}},
	}, &reg))
	h.must(h.agent(wire.OpAgentRegister, wire.AgentRegisterReq{Name: "web", Hostname: "web.example"}, nil))
	orders = make(chan *nats.Msg, 10)
	sub, err := h.nc.Subscribe(wire.AgentSubject("web", ">"), func(m *nats.Msg) {
		h.mu.Lock()
		hold, missing := h.orderHold, h.missing
		h.mu.Unlock()
		isCheck := strings.HasSuffix(m.Subject, "."+wire.OpCheckBackup) || strings.HasSuffix(m.Subject, "."+wire.OpCheckRestore)
		if missing != "" && (strings.HasSuffix(m.Subject, "."+wire.OpCheckBackup) || strings.HasSuffix(m.Subject, "."+wire.OpRunBackup)) {
			if body, err := wire.Unmarshal(m.Data); err == nil {
				var o struct {
					Paths []string `json:"paths"`
				}
				json.Unmarshal(body, &o)
				if missing != "" && slices.Contains(o.Paths, missing) {
					m.Respond(wire.MarshalError(wire.Errorf(wire.CodeInvalidArgument, "check the path on the client; give absolute paths",
						"path %s does not exist on client web", missing)))
					return
				}
			}
		}
		if isCheck {
			// A question before a job is made, not an order.
			data, _ := wire.Marshal(wire.Empty{})
			m.Respond(data)
			return
		}
		if hold != nil {
			<-hold
		}
		if body, err := wire.Unmarshal(m.Data); err == nil {
			var o struct {
				JobID uint64 `json:"job_id"`
			}
			json.Unmarshal(body, &o)
			h.mu.Lock()
			h.running = append(h.running, o.JobID)
			h.mu.Unlock()
		}
		orders <- m
		data, _ := wire.Marshal(wire.Empty{})
		m.Respond(data)
	})
	h.must(err)
	h.t.Cleanup(func() { sub.Unsubscribe() })
	h.must(h.nc.Flush())
	// Heartbeat as the node and the agent would.
	stop := make(chan struct{})
	h.t.Cleanup(func() { close(stop) })
	go func() {
		for {
			h.mu.Lock()
			draining, free, nodeSilent := h.nodeDraining, h.poolFree, h.nodeSilent
			h.mu.Unlock()
			if free == 0 {
				free = 1 << 40
			}
			if !nodeSilent {
				wire.Publish(h.nc, wire.NodeBeatSubject("sn1"), wire.NodeHeartbeat{ID: "sn1", Pools: []wire.PoolUsage{{Name: "Default", FreeBytes: free, TotalBytes: 2 << 40}}, Draining: draining})
			}
			h.mu.Lock()
			if !h.agentSilent {
				wire.Publish(h.nc, wire.AgentBeatSubject("web"), wire.AgentHeartbeat{Running: h.running})
			}
			h.mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return ed25519.PublicKey(reg.TicketKey), orders
}

func TestAdminErrorsNameTheProblem(t *testing.T) {
	h := newHarness(t)
	h.setup()
	wantCode(t, h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "nosuch", Paths: []fileindex.Path{"/x"}}, nil), wire.CodeUnknownClient)
	wantCode(t, h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "bad.name", Paths: []fileindex.Path{"/x"}}, nil), wire.CodeInvalidArgument)
	wantCode(t, h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web"}, nil), wire.CodeInvalidArgument)
	wantCode(t, h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"relative/path"}}, nil), wire.CodeInvalidArgument)
	wantCode(t, h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/x"}, Level: "weekly"}, nil), wire.CodeInvalidArgument)
	// Exclude patterns the agent's walk would refuse: refused here, not
	// a failed job later.
	for _, bad := range []fileindex.Path{"[z-", "", "var//cache", "src/[x/*"} {
		wantCode(t, h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/x"}, Excludes: []fileindex.Path{bad}}, nil), wire.CodeInvalidArgument)
	}
	wantCode(t, h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/x"}, Pool: "Nope"}, nil), wire.CodeNotFound)
	wantCode(t, h.api(wire.OpJobShow, wire.JobShowReq{ID: 999}, nil), wire.CodeNotFound)
	wantCode(t, h.api(wire.OpRestoreStart, wire.RestoreStartReq{PointInTime: wire.PointInTime{Client: "web"}, To: "/r"}, nil), wire.CodeNotFound)
	wantCode(t, h.api(wire.OpTreeList, wire.TreeListReq{PointInTime: wire.PointInTime{Client: "ghost"}}, nil), wire.CodeUnknownClient)
	wantCode(t, h.api("no.such.op", wire.Empty{}, nil), wire.CodeUnknownOperation)

	// Malformed bytes on every subject family get an error reply.
	for _, subj := range []string{wire.APISubject(wire.OpJobList), wire.FromNodeSubject("sn1", wire.OpVolumeAcquire), wire.FromAgentSubject("web", wire.OpJobDone)} {
		m, err := h.nc.Request(subj, []byte("\x00garbage"), 5*time.Second)
		h.must(err)
		_, err = wire.Unmarshal(m.Data)
		wantCode(t, err, wire.CodeBadRequest)
	}
	// A node cannot register under another node's subject.
	err := wire.Request(h.ctx, h.nc, wire.FromNodeSubject("sn2", wire.OpNodeRegister), wire.NodeRegisterReq{ID: "sn1"}, nil)
	wantCode(t, err, wire.CodeInvalidArgument)
	// The server still answers.
	var st wire.StatusResp
	h.must(h.api(wire.OpStatus, wire.Empty{}, &st))
	if !st.IsLeader {
		t.Fatalf("status %+v", st)
	}
}

func TestBackupProtocolCommitAndRestorePlan(t *testing.T) {
	h := newHarness(t)
	tkKey, orders := h.setup()

	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv/www"}, Level: "incremental"}, &started))
	if started.Level != "full" {
		t.Fatalf("first incremental ran as %q, want full", started.Level)
	}
	order := h.backupOrder(orders)
	tk, err := ticket.Verify(order.Ticket, tkKey, time.Now(), time.Second)
	h.must(err)
	if tk.JobID != started.JobID || tk.Node != "sn1" || tk.Client != "web" || tk.Op != ticket.OpBackup || tk.KeyID == "" {
		t.Fatalf("ticket %+v", tk)
	}

	// The node labels a new volume, gets the key, sends the index and commits.
	var g wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: tk.JobID, Pool: "Default"}, &g))
	if !g.New || g.Name != "Default-0001" {
		t.Fatalf("grant %+v", g)
	}
	h.must(h.node(wire.OpVolumeLabeled, wire.VolumeLabeled{JobID: tk.JobID, VolumeID: g.ID}, nil))
	var key wire.KeyGetResp
	h.must(h.node(wire.OpKeyGet, wire.KeyGetReq{JobID: tk.JobID, KeyID: tk.KeyID}, &key))
	if len(key.Key) != 32 {
		t.Fatalf("key %d bytes", len(key.Key))
	}
	wantCode(t, h.node(wire.OpKeyGet, wire.KeyGetReq{JobID: tk.JobID, KeyID: "other"}, nil), wire.CodeKey)

	b := fileindex.NewSegmentBuilder(0)
	entries := []fileindex.Entry{
		{Path: "/srv/www", Type: fileindex.TypeDir, Mode: 0o755},
		{Path: "/srv/www/index.html", Type: fileindex.TypeFile, Size: 100, Loc: fileindex.Location{Seq: 0, InBlock: 40}},
		{Path: "/srv/www/logo.png", Type: fileindex.TypeFile, Size: 5000, Loc: fileindex.Location{Seq: 0, InBlock: 300}},
	}
	for i := range entries {
		h.must(b.Add(&entries[i]))
	}
	seg := b.Flush()
	h.must(h.node(wire.OpSessionIndex, wire.SessionIndexReq{JobID: tk.JobID, No: 0, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}, nil))
	session := uuid.New()
	h.must(h.node(wire.OpSessionCommit, wire.SessionCommitReq{
		JobID: tk.JobID, SessionID: session, Segments: 1,
		Parts: []wire.SessionPart{{VolumeID: g.ID, VolumeStart: 256 << 10, DataStart: 256<<10 + 64, End: 512 << 10, Final: true}},
		Stats: wire.SessionStats{Entries: 3, Files: 2, ContentBytes: 5100, StreamBytes: 5300, StoredBytes: 2000},
	}, nil))
	var job wire.JobInfo
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: tk.JobID}, &job))
	if job.State != "success" || job.Files != 2 || len(job.Volumes) != 1 || len(job.Log) == 0 {
		t.Fatalf("job after commit: %+v", job)
	}
	// The node resends a commit whose answer it lost (the leader died
	// after recording it): done already, not a failure. Another session
	// is refused.
	commit := wire.SessionCommitReq{
		JobID: tk.JobID, SessionID: session, Segments: 1,
		Parts: []wire.SessionPart{{VolumeID: g.ID, VolumeStart: 256 << 10, DataStart: 256<<10 + 64, End: 512 << 10, Final: true}},
		Stats: wire.SessionStats{Entries: 3, Files: 2, ContentBytes: 5100, StreamBytes: 5300, StoredBytes: 2000},
	}
	h.must(h.node(wire.OpSessionCommit, commit, nil))
	commit.SessionID = uuid.New()
	if err := h.node(wire.OpSessionCommit, commit, nil); wire.CodeOf(err) != wire.CodeAborted {
		t.Fatalf("a commit of another session of an ended job: %v", err)
	}
	// Reports after the end change nothing.
	h.must(h.agent(wire.OpJobDone, wire.JobDoneReq{JobID: tk.JobID, Error: &wire.Error{Code: wire.CodeIO, Message: "late"}}, nil))
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: tk.JobID}, &job))
	if job.State != "success" {
		t.Fatalf("late failure report changed the job to %s", job.State)
	}
	var vols wire.VolumeListResp
	h.must(h.api(wire.OpVolumeList, wire.VolumeListReq{}, &vols))
	if len(vols.Volumes) != 1 || vols.Volumes[0].Bytes != 512<<10 || vols.Volumes[0].State != "append" {
		t.Fatalf("volumes %+v", vols.Volumes)
	}

	// Browse.
	var ls wire.TreeListResp
	h.must(h.api(wire.OpTreeList, wire.TreeListReq{PointInTime: wire.PointInTime{Client: "web"}, Path: "/srv/www"}, &ls))
	if len(ls.Entries) != 2 || ls.Entries[0].Path != "/srv/www/index.html" {
		t.Fatalf("ls %+v", ls.Entries)
	}
	wantCode(t, h.api(wire.OpTreeList, wire.TreeListReq{PointInTime: wire.PointInTime{Client: "web"}, Path: "/etc"}, nil), wire.CodeNotFound)

	// Restore one file: the plan names the session, its volume, the
	// directory above the file (an ancestor, for its metadata) and the file.
	wantCode(t, h.api(wire.OpRestoreStart, wire.RestoreStartReq{PointInTime: wire.PointInTime{Client: "web"}, To: "rel"}, nil), wire.CodeInvalidArgument)
	wantCode(t, h.api(wire.OpRestoreStart, wire.RestoreStartReq{PointInTime: wire.PointInTime{Client: "web"}, To: "/r", Paths: []fileindex.Path{"/nope"}}, nil), wire.CodeNotFound)
	var rs wire.JobStarted
	h.must(h.api(wire.OpRestoreStart, wire.RestoreStartReq{PointInTime: wire.PointInTime{Client: "web"}, To: "/r", Paths: []fileindex.Path{"/srv/www/logo.png"}}, &rs))
	var ro wire.RunRestore
	body, err := wire.Unmarshal((<-orders).Data)
	h.must(err)
	h.must(json.Unmarshal(body, &ro))
	var plan wire.RestorePlanResp
	h.must(h.node(wire.OpRestorePlan, wire.RestorePlanReq{JobID: rs.JobID, Attempt: ro.Attempt}, &plan))
	if !plan.Done || len(plan.Reads) != 1 || len(plan.Reads[0].Locs) != 2 ||
		plan.Reads[0].Locs[0] != (wire.ReadLoc{Path: "/srv/www", Ancestor: true}) || plan.Reads[0].Locs[1].Path != "/srv/www/logo.png" || plan.Reads[0].Locs[1].Ancestor ||
		plan.Reads[0].SessionID != session || plan.Reads[0].Parts[0].Volume != "Default-0001" {
		t.Fatalf("plan %+v", plan)
	}
	// The restore's totals are counted beside it, not before its order:
	// its progress shows them, and its log.
	poll.Until(t, 20*time.Second, func() error {
		var j wire.JobInfo
		if err := h.api(wire.OpJobShow, wire.JobShowReq{ID: rs.JobID}, &j); err != nil {
			return err
		}
		if j.Progress == nil || j.Progress.TotalFiles != 1 || j.Progress.TotalBytes != 5000 {
			return fmt.Errorf("progress %+v, want 1 file and 5000 bytes in all", j.Progress)
		}
		for _, l := range j.Log {
			if strings.HasPrefix(l.Msg, "restore plan: 1 entries, ") {
				return nil
			}
		}
		return fmt.Errorf("no line of the restore's totals in its log: %+v", j.Log)
	})
	h.must(h.agent(wire.OpJobDone, wire.JobDoneReq{JobID: rs.JobID, Files: 1, Bytes: 5000, Damaged: []string{"/srv/www/logo.png: block 0 damaged"}}, nil))
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: rs.JobID}, &job))
	if job.State != "failed" || job.ErrorCode != wire.CodeCorrupt {
		t.Fatalf("restore with damage: %+v", job)
	}
}

func TestAbortReleasesVolumeAndFailsJob(t *testing.T) {
	h := newHarness(t)
	_, orders := h.setup()
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/data"}, Level: "full"}, &started))
	<-orders
	var g wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: started.JobID, Pool: "Default"}, &g))
	h.must(h.node(wire.OpVolumeLabeled, wire.VolumeLabeled{JobID: started.JobID, VolumeID: g.ID}, nil))
	h.must(h.node(wire.OpSessionAbort, wire.SessionAbortReq{JobID: started.JobID, Error: wire.Error{Code: wire.CodePoolFull, Message: "disk pool Default is full"}}, nil))
	var job wire.JobInfo
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &job))
	if job.State != "failed" || job.ErrorCode != wire.CodePoolFull || job.Hint == "" {
		t.Fatalf("job %+v", job)
	}
	// The next job gets the same volume back, at its committed end.
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/data"}, Level: "full"}, &started))
	<-orders
	var g2 wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: started.JobID, Pool: "Default"}, &g2))
	if g2.ID != g.ID || g2.New || g2.Bytes != int64(g.BlockSize) {
		t.Fatalf("second grant %+v, first %+v", g2, g)
	}
}

// TestWatchdogRequeuesBackupWhenAgentGoesSilent: a backup whose agent
// stops heartbeating goes back to the queue to wait for the agent (a
// restart, a reboot), saying why, instead of failing as if the client
// were at fault; the queue timeout ends the wait.
func TestWatchdogRequeuesBackupWhenAgentGoesSilent(t *testing.T) {
	h := newFakeClockHarness(t, func(c *Config) { c.LivenessTimeout = time.Minute })
	_, orders := h.setup()
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/data"}}, &started))
	<-orders
	// The node keeps heartbeating; the agent says nothing more, for
	// longer than the liveness timeout, on the server's clock.
	h.mu.Lock()
	h.agentSilent = true
	h.mu.Unlock()
	for range 4 {
		h.advance(20 * time.Second)
	}
	poll.Until(t, 20*time.Second, func() error {
		var job wire.JobInfo
		h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &job))
		if job.State != "queued" || !strings.Contains(job.Waiting, "agent of client web is offline") {
			return fmt.Errorf("job is %s (waiting %q) after its agent went silent", job.State, job.Waiting)
		}
		log := ""
		for _, l := range job.Log {
			log += l.Msg + "\n"
		}
		if !strings.Contains(log, "agent of client web stopped answering") {
			t.Fatalf("the job log does not say why the backup went back to the queue:\n%s", log)
		}
		return nil
	})
}

// An agent that takes its time to accept an order has not lost it: the
// watchdog must not requeue the backup while the order is still on its way
// (it once did within 15 ms of the dispatch, since the time of the order was
// only noted once the agent had answered).
func TestWatchdogWaitsForAnOrderInFlight(t *testing.T) {
	h := newFakeClockHarness(t, func(c *Config) { c.LivenessTimeout = time.Minute })
	_, orders := h.setup()
	hold := make(chan struct{})
	h.mu.Lock()
	h.orderHold = hold
	h.mu.Unlock()
	done := make(chan error, 1)
	var started wire.JobStarted
	go func() {
		done <- h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/data"}}, &started)
	}()
	notRequeued := func() error {
		var jl wire.JobListResp
		if err := h.api(wire.OpJobList, wire.JobListReq{}, &jl); err != nil {
			return err
		}
		for _, j := range jl.Jobs {
			var job wire.JobInfo
			if err := h.api(wire.OpJobShow, wire.JobShowReq{ID: j.ID}, &job); err != nil {
				return err
			}
			for _, l := range job.Log {
				if strings.Contains(l.Msg, "back in the queue") {
					return fmt.Errorf("job %d was requeued while its order was on its way: %s", job.ID, l.Msg)
				}
			}
			if job.Attempt > 1 {
				return fmt.Errorf("job %d is at attempt %d", job.ID, job.Attempt)
			}
		}
		return nil
	}
	// Twice the liveness timeout, in steps that keep the agent online,
	// checked after each round of the watchdog; the order hangs all along.
	poll.Until(t, 10*time.Second, func() error {
		var jl wire.JobListResp
		if err := h.api(wire.OpJobList, wire.JobListReq{}, &jl); err != nil {
			return err
		}
		if len(jl.Jobs) != 1 || jl.Jobs[0].State != "running" {
			return fmt.Errorf("jobs %+v: want one, dispatched, its order on its way", jl.Jobs)
		}
		return nil
	})
	for range 6 {
		h.advance(20 * time.Second)
		poll.Holds(t, 100*time.Millisecond, notRequeued)
	}
	close(hold)
	h.must(<-done)
	<-orders
	for range 4 {
		h.advance(20 * time.Second)
		poll.Holds(t, 100*time.Millisecond, notRequeued)
	}
}

func TestJobWaitsForItsAgentThenTimesOut(t *testing.T) {
	h := newFakeClockHarness(t, func(c *Config) { c.LivenessTimeout = time.Minute; c.QueueTimeout = time.Hour })
	h.setup()
	h.mu.Lock()
	h.agentSilent = true
	h.mu.Unlock()
	for range 4 {
		h.advance(20 * time.Second)
	}
	var cl wire.ClientListResp
	h.must(h.api(wire.OpClientList, wire.Empty{}, &cl))
	if len(cl.Clients) != 1 || cl.Clients[0].Online {
		t.Fatalf("the agent silent for 80 s is not offline: %+v", cl.Clients)
	}
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/data"}}, &started))
	if !strings.Contains(started.Waiting, "agent of client web is offline") {
		t.Fatalf("waiting %q", started.Waiting)
	}
	// Just short of the queue timeout it waits on; past it, it failed.
	h.advance(time.Hour - time.Second)
	h.srv.orch.Kick()
	var job wire.JobInfo
	poll.Holds(t, 300*time.Millisecond, func() error {
		job = wire.JobInfo{}
		h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &job))
		if job.State != "queued" {
			return fmt.Errorf("the job %d is %s before the queue timeout", job.ID, job.State)
		}
		return nil
	})
	h.advance(2 * time.Second)
	poll.Until(t, 20*time.Second, func() error {
		job = wire.JobInfo{}
		h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: started.JobID}, &job))
		if job.State != "failed" {
			return fmt.Errorf("the queued job %d is %s", job.ID, job.State)
		}
		return nil
	})
	if job.ErrorCode != wire.CodeTimeout || !strings.Contains(job.Error, "in the queue") || !strings.Contains(job.Error, "offline") {
		t.Fatalf("job %+v", job)
	}
}

// Commits of one job from several sessions at once (a node whose session
// outlived its attempt, a retry racing a slow reply) all pass the server's
// "job still running" check before any of them applies; the catalog, in
// the Raft log, takes exactly one and refuses the others, and the backup
// names the session that won.
func TestConcurrentCommitsOfOneBackupOneWins(t *testing.T) {
	h := newHarness(t)
	_, orders := h.setup()
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv"}, Level: "full"}, &started))
	select {
	case <-orders:
	case <-time.After(10 * time.Second):
		t.Fatal("agent got no order")
	}
	var g wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: started.JobID, Pool: "Default"}, &g))
	h.must(h.node(wire.OpVolumeLabeled, wire.VolumeLabeled{JobID: started.JobID, VolumeID: g.ID}, nil))
	b := fileindex.NewSegmentBuilder(0)
	h.must(b.Add(&fileindex.Entry{Path: "/srv", Type: fileindex.TypeDir, Mode: 0o755}))
	seg := b.Flush()
	h.must(h.node(wire.OpSessionIndex, wire.SessionIndexReq{JobID: started.JobID, No: 0, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}, nil))

	const sessions = 8
	ids := make([]uuid.UUID, sessions)
	errs := make([]error, sessions)
	var wg sync.WaitGroup
	for i := range sessions {
		ids[i] = uuid.New()
		wg.Go(func() {
			errs[i] = h.node(wire.OpSessionCommit, wire.SessionCommitReq{
				JobID: started.JobID, SessionID: ids[i], Segments: 1,
				Parts: []wire.SessionPart{{VolumeID: g.ID, VolumeStart: 256 << 10, DataStart: 256<<10 + 64, End: int64(512+i) << 10, Final: true}},
				Stats: wire.SessionStats{Entries: 1, Files: int64(i)},
			}, nil)
		})
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		if err == nil {
			if won >= 0 {
				t.Fatalf("the commits of sessions %d and %d were both taken", won, i)
			}
			won = i
			continue
		}
		// Refused by the server (the job ended) or by the catalog (the
		// backup is complete): either way the node is told not to retry.
		if c := wire.CodeOf(err); c != wire.CodeAborted && c != wire.CodeWrongState {
			t.Fatalf("commit of session %d: %v (code %s)", i, err, c)
		}
	}
	if won < 0 {
		t.Fatalf("no commit taken: %v", errs)
	}
	job, err := h.srv.store.Job(started.JobID)
	h.must(err)
	bk, err := h.srv.store.Backup(job.BackupID)
	h.must(err)
	if bk.SessionID != ids[won] || bk.Files != int64(won) || bk.Parts[0].End != int64(512+won)<<10 {
		t.Fatalf("backup %+v, want the session that won (%d, %s)", bk, won, ids[won])
	}
}

// TestRefusedRequestIsNoJob: a backup of a path its client does not have
// is refused as bad input before a job is made, since the servers ask the
// agent first: the request fails with the agent's error and hint, and no
// job is recorded, so none counts as failed in the job list or in
// cairn_jobs_total. Before, the job was made, ordered, refused by the
// agent and failed. A request the agent would take makes its job.
func TestRefusedRequestIsNoJob(t *testing.T) {
	h := newHarness(t)
	_, orders := h.setup()
	h.mu.Lock()
	h.missing = "/no/such"
	h.mu.Unlock()

	err := h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv", "/no/such"}, Level: "full"}, nil)
	wantCode(t, err, wire.CodeInvalidArgument)
	if !strings.Contains(err.Error(), "/no/such does not exist on client web") {
		t.Errorf("the refusal does not say the agent's reason: %v", err)
	}
	var jobs wire.JobListResp
	h.must(h.api(wire.OpJobList, wire.JobListReq{}, &jobs))
	if len(jobs.Jobs) != 0 {
		t.Errorf("a refused request left jobs: %+v", jobs.Jobs)
	}
	if n := jobsEnded(t, h.reg, "failed"); n != 0 {
		t.Errorf("cairn_jobs_total{state=\"failed\"} is %v after a refused request, want 0", n)
	}
	select {
	case m := <-orders:
		t.Errorf("a refused request sent the agent an order on %s", m.Subject)
	default:
	}

	var st wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv"}, Level: "full"}, &st))
	if m := <-orders; !strings.HasSuffix(m.Subject, "."+wire.OpRunBackup) {
		t.Errorf("the agent got %s, want the backup order", m.Subject)
	}
	var after wire.JobListResp
	h.must(h.api(wire.OpJobList, wire.JobListReq{}, &after))
	if len(after.Jobs) != 1 || after.Jobs[0].ID != st.JobID || after.Jobs[0].State != "running" {
		t.Errorf("a request the agent takes: jobs %+v", after.Jobs)
	}
}

// jobsEnded is cairn_jobs_total summed over the jobs that ended in state.
func jobsEnded(t *testing.T, reg *prometheus.Registry, state string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, f := range families {
		if f.GetName() != "cairn_jobs_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "state" && l.GetValue() == state {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// A job that fails is told to the administrator's webhook once, by the
// server that ended it, with what failed and why.
func TestFailedJobIsAlerted(t *testing.T) {
	bodies := make(chan alert.Event, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e alert.Event
		if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		bodies <- e
	}))
	t.Cleanup(hook.Close)
	h := newHarness(t, func(c *Config) {
		c.Alerts.Webhooks = []alert.WebhookConfig{{Name: "ops", URL: hook.URL}}
	})
	_, orders := h.setup()
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/data"}, Level: "full"}, &started))
	<-orders
	h.must(h.node(wire.OpSessionAbort, wire.SessionAbortReq{JobID: started.JobID, Error: wire.Error{Code: wire.CodePoolFull, Message: "disk pool Default is full"}}, nil))
	select {
	case e := <-bodies:
		if e.Kind != alert.JobFailed || e.Job != started.JobID || e.Client != "web" || e.Level != "full" || !strings.Contains(e.Error, "disk pool Default is full") {
			t.Fatalf("alert %+v", e)
		}
		t.Logf("alert: %s", e.Summary)
	case <-time.After(20 * time.Second):
		t.Fatal("no alert of the failed job")
	}
}

// 'cairn status' names the storage nodes and counts the agents as the
// server hears them: an agent that stops heartbeating is offline, by name.
func TestStatusShowsNodesAndAgents(t *testing.T) {
	h := newFakeClockHarness(t, func(c *Config) { c.LivenessTimeout = time.Minute })
	h.setup()
	h.must(h.agent(wire.OpAgentRegister, wire.AgentRegisterReq{Name: "web", Hostname: "web.example"}, nil))
	var st wire.StatusResp
	h.must(h.api(wire.OpStatus, wire.Empty{}, &st))
	if len(st.Nodes) != 1 || st.Nodes[0].ID != "sn1" || !st.Nodes[0].Online || st.Agents == nil || st.Agents.Online != 1 || st.Agents.Offline != 0 {
		t.Fatalf("status with node and agent heartbeating: nodes %+v, agents %+v", st.Nodes, st.Agents)
	}
	h.mu.Lock()
	h.agentSilent = true
	h.mu.Unlock()
	for range 4 {
		h.advance(20 * time.Second)
	}
	h.must(h.api(wire.OpStatus, wire.Empty{}, &st))
	if !st.Nodes[0].Online || st.Agents.Online != 0 || st.Agents.Offline != 1 || !slices.Equal(st.Agents.Named, []string{"web"}) {
		t.Fatalf("status once the agent went silent: nodes %+v, agents %+v", st.Nodes, st.Agents)
	}
}
