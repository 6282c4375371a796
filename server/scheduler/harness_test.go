package scheduler

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/alert"
	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/clock"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// world is the scheduler on a real catalog and a real orchestrator, with
// no Raft, NATS or server around them: the catalog applies commands in the
// order proposed (what a group of one does), every agent and the storage
// node are alive and take every order, and the clock moves only when the
// test moves it. It is what a leader's scheduler sees, minus the network.
type world struct {
	t     testing.TB
	store *catalog.Store
	clock *clock.Fake
	orch  *orchestrator.Orchestrator
	sched *Scheduler

	mu     sync.Mutex
	index  uint64
	raised int

	refusePath string // set before the scheduler runs
}

var testOrchestratorConfig = orchestrator.Config{LivenessTimeout: time.Minute, StallTimeout: time.Hour, QueueTimeout: 24 * time.Hour,
	StartConfirmTimeout: time.Minute, RequestIDTTL: 7 * 24 * time.Hour, DefaultPool: "Default", Limits: orchestrator.Limits{PerClient: 1}}

func newWorld(t testing.TB, start time.Time, clients ...string) *world {
	t.Helper()
	w := newWorldIn(t, t.TempDir(), start, clients...)
	t.Cleanup(func() { w.store.Close() })
	return w
}

// newWorldIn is newWorld with its catalog in dir, which the caller
// closes (w.store).
func newWorldIn(t testing.TB, dir string, start time.Time, clients ...string) *world {
	t.Helper()
	w := openWorld(t, filepath.Join(dir, "catalog.db"), start)
	cmds := []*catalog.Command{
		{Op: catalog.OpPutKey, Key: &catalog.Key{ID: "k1", Pool: "Default", Wrapped: []byte("wrapped")}},
		{Op: catalog.OpCreatePool, Pool: &catalog.Pool{Name: "Default", Nodes: []string{"sn1"}, KeyID: "k1", BlockSize: 1 << 16, BlockRawSize: 1 << 20}},
		{Op: catalog.OpRegisterNode, Node: &catalog.StorageNode{ID: "sn1", DataAddr: "127.0.0.1:7020", Pools: []catalog.NodePool{{Name: "Default", Dir: "/srv/pool"}}}},
	}
	for _, c := range clients {
		cmds = append(cmds, &catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: c, Hostname: c + ".example"}})
	}
	for _, c := range cmds {
		if _, err := w.orch.Apply(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	w.orch.Adopt(context.Background())
	return w
}

// openWorld is a scheduler on the catalog at path as it is.
func openWorld(t testing.TB, path string, start time.Time) *world {
	t.Helper()
	store, err := catalog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, store: store, clock: clock.NewFake(start)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	w.orch = orchestrator.New(testOrchestratorConfig, orchestrator.Deps{Store: store, Raft: w, Member: w, Roles: w, Liveness: w, Clock: w.clock, Log: log})
	w.sched = New(Config{Tick: time.Minute}, Deps{Store: store, Policies: w, Raft: w.orch, Jobs: w.orch, Alerts: w, Clock: w.clock, Log: log})
	return w
}

// setPolicies stores policies in the catalog, as 'cairn policy' does, at
// the clock's time (their Created).
func (w *world) setPolicies(ps ...catalog.Policy) {
	w.t.Helper()
	for _, p := range ps {
		if p.Retention.All.Last == 0 {
			p.Retention.All.Last = 30
		}
		if _, err := w.orch.Apply(context.Background(), &catalog.Command{Op: catalog.OpPutPolicy,
			PolicyPut: &catalog.PolicyPut{Policy: p, Mode: catalog.PutCreate}}); err != nil {
			w.t.Fatal(err)
		}
	}
}

// Policies: the catalog's.
func (w *world) Policies() ([]catalog.Policy, error) { return w.store.Policies() }

// Alerts: the catalog holds them; raised counts the scheduler's word.
func (w *world) Raised() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.raised++
}

// alerts are the alerts the catalog owes, in the order they were raised.
func (w *world) alerts() []alert.Event {
	w.t.Helper()
	als, err := w.store.Alerts()
	if err != nil {
		w.t.Fatal(err)
	}
	slices.SortFunc(als, func(a, b catalog.Alert) int { return cmp.Compare(a.Seq, b.Seq) })
	out := make([]alert.Event, len(als))
	for i, al := range als {
		if err := json.Unmarshal(al.Event, &out[i]); err != nil {
			w.t.Fatal(err)
		}
	}
	return out
}

// Raft: the catalog itself, in proposal order, one command at a time as
// Raft's log applies them (an index applied after a higher one would be
// skipped as applied).
func (w *world) Apply(_ context.Context, c *catalog.Command) (catalog.ApplyResult, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.index++
	return w.store.Apply(w.index, c), nil
}
func (w *world) Barrier(context.Context) error { return nil }

// Member.
func (w *world) Admit() error          { return nil }
func (w *world) CatalogStopped() error { return nil }
func (w *world) ApplyError(err error) error {
	return wire.Errorf(wire.CodeUnavailable, "", "%v", err)
}
func (w *world) Sign(ticket.Ticket) (string, error) { return "ticket", nil }
func (w *world) JobEnded(*catalog.Job)              {}

// Roles: every agent takes every order, but refuses a backup of a path
// that does not exist (refusePath), as an agent checks one before its job
// is made.
func (w *world) Request(_ context.Context, _ string, req, _ any) error {
	if cb, ok := req.(wire.CheckBackup); ok && w.refusePath != "" && slices.Contains(cb.Paths, fileindex.Path(w.refusePath)) {
		return wire.Errorf(wire.CodeInvalidArgument, "", "%s does not exist on the client", w.refusePath)
	}
	return nil
}
func (w *world) Publish(wire.JobEvent) {}
func (w *world) PageBytes() int        { return orchestrator.PageBytes(0) }

// Liveness: everything heard from just now.
func (w *world) Node(string) orchestrator.NodeState {
	return orchestrator.NodeState{Online: true, LastSeen: w.clock.Now(),
		Usage: map[string]wire.PoolUsage{"Default": {Name: "Default", FreeBytes: 1 << 40, TotalBytes: 2 << 40}}}
}
func (w *world) Agent(string) orchestrator.AgentState {
	return orchestrator.AgentState{Online: true, LastSeen: w.clock.Now()}
}
func (w *world) AgentLost(string)    {}
func (w *world) Suspect(string)      {}
func (w *world) AgentStopped(string) {}

// finishRunning commits every running backup, as its storage node would.
func (w *world) finishRunning() {
	w.t.Helper()
	ctx := context.Background()
	jobs, err := w.store.Jobs(catalog.JobFilter{States: []catalog.JobState{catalog.JobRunning}})
	if err != nil {
		w.t.Fatal(err)
	}
	for _, j := range jobs {
		vol := uuid.New()
		bs := int64(catalog.DefaultBlockSize)
		for _, c := range []*catalog.Command{
			{Op: catalog.OpCreateVolume, Volume: &catalog.Volume{ID: vol, Pool: j.Pool, WriterJob: j.ID}},
			{Op: catalog.OpUpdateVolume, VolumeUpdate: &catalog.VolumeUpdate{ID: vol, State: catalog.VolumeAppend, Bytes: &bs}},
			{Op: catalog.OpCommitBackup, Commit: &catalog.BackupCommit{BackupID: j.ID, SessionID: uuid.New(),
				Parts: []catalog.Part{{VolumeID: vol, Part: 1, VolumeStart: bs, DataStart: bs + 4096, End: bs + 1<<20, Final: true}}}},
		} {
			if _, err := w.orch.Apply(ctx, c); err != nil {
				w.t.Fatal(err)
			}
		}
		done, err := w.store.Job(j.ID)
		if err != nil {
			w.t.Fatal(err)
		}
		w.orch.Ended(done)
	}
}

// runs lists every run of policy, oldest first, one a line: scheduled
// time, client, the level asked and run, the state and the job.
func (w *world) runs(policy string) string {
	w.t.Helper()
	runs, err := w.store.Runs(catalog.RunFilter{Policy: policy})
	if err != nil {
		w.t.Fatal(err)
	}
	var b strings.Builder
	for i := len(runs) - 1; i >= 0; i-- {
		r := runs[i]
		level := string(r.Asked)
		if r.Level != r.Asked && r.State == catalog.RunDispatched {
			level += "->" + string(r.Level)
		}
		fmt.Fprintf(&b, "%s %s %s %s", r.Scheduled.UTC().Format("Mon 01-02 15:04"), r.Client, level, r.State)
		if r.JobID != 0 {
			fmt.Fprintf(&b, " job %d", r.JobID)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// jobCount counts the backup jobs of the catalog.
func (w *world) jobCount() int {
	w.t.Helper()
	jobs, err := w.store.Jobs(catalog.JobFilter{Type: catalog.JobBackup})
	if err != nil {
		w.t.Fatal(err)
	}
	return len(jobs)
}
