package orchestrator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/clock"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// world is an orchestrator on a real catalog, with no Raft, NATS or
// server around it: the catalog applies commands in the order proposed
// (what a group of one does), the test plays the heartbeats and answers
// the orders, and the clock moves only when the test moves it. Each round
// is called by the test, so what a round decides is seen at once.
type world struct {
	t     *testing.T
	o     *Orchestrator
	store *catalog.Store
	clock *clock.Fake

	mu     sync.Mutex
	index  uint64
	nodes  map[string]*NodeState
	agents map[string]*AgentState
	orders []string // subjects of the orders and questions sent
	ended  []catalog.JobState
	// applyErr, when set, is what Raft answers every command with
	// instead of applying it: a leader lost under it, say.
	applyErr error
}

func newWorld(t *testing.T, cfg Config) *world {
	t.Helper()
	store, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	w := &world{t: t, store: store, clock: clock.NewFake(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)),
		nodes: map[string]*NodeState{}, agents: map[string]*AgentState{}}
	w.o = New(cfg, Deps{Store: store, Raft: w, Member: w, Roles: w, Liveness: w, Clock: w.clock,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx := context.Background()
	for _, c := range []*catalog.Command{
		{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "web", Hostname: "web.example"}},
		{Op: catalog.OpPutKey, Key: &catalog.Key{ID: "k1", Pool: "Default", Wrapped: []byte("wrapped")}},
		{Op: catalog.OpCreatePool, Pool: &catalog.Pool{Name: "Default", Nodes: []string{"sn1"}, KeyID: "k1", BlockSize: 1 << 16, BlockRawSize: 1 << 20}},
		{Op: catalog.OpRegisterNode, Node: &catalog.StorageNode{ID: "sn1", DataAddr: "127.0.0.1:7020", Pools: []catalog.NodePool{{Name: "Default", Dir: "/srv/pool"}}}},
	} {
		if _, err := w.o.Apply(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	w.beat()
	w.o.Adopt(ctx)
	return w
}

// beat is a heartbeat of the node and of the agent (unless silent) now,
// the agent listing the jobs it was ordered to run.
func (w *world) beat() {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.clock.Now()
	w.nodes["sn1"] = &NodeState{LastSeen: now, Usage: map[string]wire.PoolUsage{"Default": {Name: "Default", FreeBytes: 1 << 40, TotalBytes: 2 << 40}}}
	if a := w.agents["web"]; a != nil {
		a.LastSeen = now
	} else {
		w.agents["web"] = &AgentState{LastSeen: now, Running: map[uint64]bool{}}
	}
}

// advance moves the clock, with the heartbeats (but the silent agent's)
// that came meanwhile, and runs a round.
func (w *world) advance(d time.Duration, silentAgent bool) {
	w.clock.Advance(d)
	w.mu.Lock()
	agentSeen := w.agents["web"].LastSeen
	w.mu.Unlock()
	w.beat()
	if silentAgent {
		w.mu.Lock()
		w.agents["web"].LastSeen = agentSeen
		w.mu.Unlock()
	}
	w.o.Round(context.Background())
}

func (w *world) job(id uint64) *catalog.Job {
	w.t.Helper()
	j, err := w.store.Job(id)
	if err != nil {
		w.t.Fatal(err)
	}
	return j
}

// Raft: the catalog itself, in proposal order.
func (w *world) Apply(_ context.Context, c *catalog.Command) (catalog.ApplyResult, error) {
	w.mu.Lock()
	if w.applyErr != nil {
		err := w.applyErr
		w.mu.Unlock()
		return catalog.ApplyResult{}, err
	}
	w.index++
	i := w.index
	w.mu.Unlock()
	return w.store.Apply(i, c), nil
}
func (w *world) Barrier(context.Context) error { return nil }

// Member.
func (w *world) Admit() error          { return nil }
func (w *world) CatalogStopped() error { return nil }
func (w *world) ApplyError(err error) error {
	return wire.Errorf(wire.CodeUnavailable, "", "%v", err)
}
func (w *world) Sign(t ticket.Ticket) (string, error) { return "ticket", nil }
func (w *world) JobEnded(j *catalog.Job) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended = append(w.ended, j.State)
}

// Roles: the agent takes every order, and runs what it is ordered to.
func (w *world) Request(_ context.Context, subject string, req, _ any) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.orders = append(w.orders, subject)
	if rb, ok := req.(wire.RunBackup); ok {
		w.agents["web"].Running[rb.JobID] = true
	}
	return nil
}
func (w *world) Publish(wire.JobEvent) {}
func (w *world) PageBytes() int        { return PageBytes(0) }

// Liveness.
func (w *world) Node(id string) NodeState {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.nodes[id]
	if n == nil {
		return NodeState{}
	}
	s := *n
	s.Online = w.clock.Since(s.LastSeen) < w.o.cfg.LivenessTimeout
	return s
}
func (w *world) Agent(client string) AgentState {
	w.mu.Lock()
	defer w.mu.Unlock()
	a := w.agents[client]
	if a == nil {
		return AgentState{}
	}
	s := *a
	s.Online = w.clock.Since(s.LastSeen) < w.o.cfg.LivenessTimeout
	return s
}
func (w *world) AgentLost(string)    {}
func (w *world) Suspect(string)      {}
func (w *world) AgentStopped(string) {}

func (w *world) ordersTo(op string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, s := range w.orders {
		if strings.HasSuffix(s, "."+op) {
			n++
		}
	}
	return n
}

var testConfig = Config{LivenessTimeout: time.Minute, StallTimeout: time.Hour, QueueTimeout: 24 * time.Hour,
	StartConfirmTimeout: time.Minute, RequestIDTTL: 24 * time.Hour, DefaultPool: "Default"}

// A backup started through the Go API, as a scheduler will start one, is
// recorded, accepted and ordered at once; its repeat under the same
// request id answers the same job; one whose agent then falls silent goes
// back to the queue exactly when the liveness timeout has passed on the
// orchestrator's clock, and not a round before.
func TestStartBackupAndTheLivenessTimeout(t *testing.T) {
	w := newWorld(t, testConfig)
	ctx := context.Background()
	spec := BackupSpec{Client: "web", Paths: []fileindex.Path{"/data"}, RequestID: "nightly-web-1"}
	started, err := w.o.StartBackup(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if started.State != string(catalog.JobRunning) || started.Level != string(catalog.LevelFull) || w.ordersTo(wire.OpRunBackup) != 1 {
		t.Fatalf("started %+v, %d orders", started, w.ordersTo(wire.OpRunBackup))
	}
	spec.Retry = true
	again, err := w.o.StartBackup(ctx, spec)
	if err != nil || again.JobID != started.JobID || !again.Repeated || w.ordersTo(wire.OpRunBackup) != 1 {
		t.Fatalf("repeat: %+v, %v, %d orders", again, err, w.ordersTo(wire.OpRunBackup))
	}
	spec.Paths = []fileindex.Path{"/other"}
	if _, err := w.o.StartBackup(ctx, spec); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("the same request id for another backup: %v", err)
	}

	// The agent falls silent; the node goes on. Rounds every 20 s.
	for range 2 {
		w.advance(20*time.Second, true)
		if j := w.job(started.JobID); j.State != catalog.JobRunning {
			t.Fatalf("at %v of silence the job is %s", w.clock.Since(w.job(started.JobID).Started), j.State)
		}
	}
	w.advance(19*time.Second, true) // 59 s of silence
	if j := w.job(started.JobID); j.State != catalog.JobRunning {
		t.Fatalf("the job is %s before the liveness timeout", j.State)
	}
	w.advance(time.Second, true)
	j := w.job(started.JobID)
	if j.State != catalog.JobQueued || !strings.Contains(j.Waiting, "agent of client web is offline") {
		t.Fatalf("a minute of silence: job %s, waiting %q", j.State, j.Waiting)
	}
	// Its attempt is stopped at the node and the agent.
	if n := len(w.o.stops); n != 2 {
		t.Fatalf("%d stop orders queued, want the node's and the agent's", n)
	}
}

// A job that reports nothing for the stall timeout fails, a waiting one
// does not: hours of the orchestrator's clock in a few rounds.
func TestStallOnTheClock(t *testing.T) {
	w := newWorld(t, testConfig)
	ctx := context.Background()
	started, err := w.o.StartBackup(ctx, BackupSpec{Client: "web", Paths: []fileindex.Path{"/data"}})
	if err != nil {
		t.Fatal(err)
	}
	w.o.Waiting(started.JobID, "insert tape CRN007L9 into library lib1")
	for range 6 {
		w.advance(30*time.Second, false)
	}
	for range 5 {
		for range 2 {
			w.advance(30*time.Second, false) // heartbeats within the liveness timeout
		}
		w.clock.Advance(time.Hour)
		w.beat()
		w.o.Round(ctx)
		if j := w.job(started.JobID); j.State != catalog.JobRunning {
			t.Fatalf("a job waiting for a tape is %s", j.State)
		}
	}
	w.o.Waiting(started.JobID, "")
	w.advance(30*time.Second, false)
	if j := w.job(started.JobID); j.State != catalog.JobRunning {
		t.Fatalf("a job that just stopped waiting is %s", j.State)
	}
	w.clock.Advance(time.Hour)
	w.beat()
	w.o.Round(ctx)
	j := w.job(started.JobID)
	if j.State != catalog.JobFailed || j.ErrorCode != wire.CodeTimeout || !strings.Contains(j.Error, "no progress") {
		t.Fatalf("a silent job after the stall timeout: %s %s %q", j.State, j.ErrorCode, j.Error)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.ended) != 1 || w.ended[0] != catalog.JobFailed {
		t.Fatalf("jobs counted as ended: %v", w.ended)
	}
}

// The request digest of a start from the Go API is the one the servers
// recorded for the same start from the wire before the API existed: a
// repeat across an upgrade is still a repeat.
func TestRequestDigestOfASpecIsTheWires(t *testing.T) {
	req := wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/a", "/b"}, Excludes: []fileindex.Path{"*.tmp"}, Level: "full", Pool: "Weekly", SkipNodump: true}
	spec := BackupSpec{Client: "web", Paths: req.Paths, Excludes: req.Excludes, Level: "full", Pool: "Weekly", SkipNodump: true, RequestID: "r1", Retry: true}
	// sha256("backup.start\x00" + the JSON the wire carries, without the
	// request id), as the servers recorded it before the Go API.
	const before = "66be93a62b7344fc95e97cf9c185b96e"
	if got := RequestDigest(wire.OpBackupStart, spec.request()); got != RequestDigest(wire.OpBackupStart, req) || got != before {
		t.Fatalf("digest %s, wire's %s, recorded %s", got, RequestDigest(wire.OpBackupStart, req), before)
	}
}
