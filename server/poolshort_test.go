package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/alert"
	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/wire"
)

// completeOrder answers the agent's next backup order as the node would:
// a volume, the index, the commit of size bytes.
func (h *harness) completeOrder(orders chan *nats.Msg, size int64) uint64 {
	h.t.Helper()
	o := h.backupOrder(orders)
	var g wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: o.JobID, Pool: "Default"}, &g))
	if g.New {
		h.must(h.node(wire.OpVolumeLabeled, wire.VolumeLabeled{JobID: o.JobID, VolumeID: g.ID}, nil))
	}
	b := fileindex.NewSegmentBuilder(0)
	h.must(b.Add(&fileindex.Entry{Path: "/srv", Type: fileindex.TypeDir, Mode: 0o755}))
	seg := b.Flush()
	h.must(h.node(wire.OpSessionIndex, wire.SessionIndexReq{JobID: o.JobID, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}, nil))
	start := max(g.Bytes, 256<<10)
	h.must(h.node(wire.OpSessionCommit, wire.SessionCommitReq{
		JobID: o.JobID, SessionID: uuid.New(), Segments: 1,
		Parts: []wire.SessionPart{{VolumeID: g.ID, VolumeStart: start, DataStart: start + 64, End: start + size, Final: true}},
		Stats: wire.SessionStats{Entries: 1, StoredBytes: size},
	}, nil))
	return o.JobID
}

// TestPoolShortIsAlertedBeforeTheRun: a policy's nightly full is judged
// against its pool when the scheduler records it: with the node reporting
// more free bytes than the last full stored, nothing is said; with fewer,
// a pool_short alert reaches the webhook, naming the pool, the policy,
// the run and both sizes, and the run's job log says it.
func TestPoolShortIsAlertedBeforeTheRun(t *testing.T) {
	alerts := make(chan alert.Event, 8)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e alert.Event
		if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		alerts <- e
	}))
	t.Cleanup(hook.Close)
	h := newFakeClockHarness(t, func(c *Config) {
		c.Alerts.Webhooks = []alert.WebhookConfig{{Name: "ops", URL: hook.URL}}
		// The node and agent stay online across the clock's steps.
		c.LivenessTimeout, c.StallTimeout = 5*time.Hour, 5*time.Hour
	})
	_, orders := h.setup()
	const size = 8 << 20
	h.completeOrderOfStart(orders, size)

	due := h.fake.Now().Add(time.Hour).UTC()
	policy := catalog.Policy{Name: "nightly", Clients: []string{"web"}, Paths: []string{"/srv"}, Pool: "Default", TimeZone: "UTC",
		Schedule: fmt.Sprintf("daily %02d:%02d full", due.Hour(), due.Minute()), Retention: catalog.PolicyRetention{All: catalog.KeepRules{Last: 7}}}
	_, err := h.srv.orch.Apply(h.ctx, &catalog.Command{Op: catalog.OpPutPolicy, PolicyPut: &catalog.PolicyPut{Policy: policy, Mode: catalog.PutCreate}})
	h.must(err)

	jobLog := func(id uint64) string {
		var job wire.JobInfo
		h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: id}, &job))
		var lines []string
		for _, l := range job.Log {
			lines = append(lines, l.Level+": "+l.Msg)
		}
		return strings.Join(lines, "\n")
	}
	// Room enough: the run starts, and nothing is said.
	h.advance(time.Hour)
	h.completeOrder(orders, size)
	// The run names its job once the start returned, which can be after
	// the order was sent and done.
	var first *catalog.Run
	poll.Until(t, 10*time.Second, func() error {
		run, err := h.srv.store.LastRun("nightly", "web")
		if err == nil && run.JobID == 0 {
			err = fmt.Errorf("run %s names no job yet", run.Key())
		}
		if err == nil {
			first = run
		}
		return err
	})
	if log := jobLog(first.JobID); strings.Contains(log, "pool_short") {
		t.Fatalf("a pool with room was found short:\n%s", log)
	}
	// A day later the node reports less free than the last full stored.
	h.mu.Lock()
	h.poolFree = 1 << 20
	h.mu.Unlock()
	for range 6 {
		h.advance(4 * time.Hour)
	}
	// The run is marked dispatched once its start returned, after the
	// alert was queued.
	var run *catalog.Run
	poll.Until(t, 20*time.Second, func() (err error) {
		if run, err = h.srv.store.LastRun("nightly", "web"); err == nil && (run == nil || run.State != catalog.RunDispatched) {
			err = fmt.Errorf("the last run: %+v", run)
		}
		return err
	})
	select {
	case e := <-alerts:
		if e.Kind != alert.PoolShort || e.Pool != "Default" || e.Policy != "nightly" || e.Scheduled == nil || !e.Scheduled.Equal(run.Scheduled) || run.Scheduled.Sub(first.Scheduled) != 24*time.Hour ||
			e.FreeBytes != 1<<20 || e.NeedBytes < size {
			t.Fatalf("alert %+v", e)
		}
		t.Logf("alert: %s", e.Summary)
	case <-time.After(20 * time.Second):
		t.Fatal("no pool_short alert")
	}
	if log := jobLog(run.JobID); !strings.Contains(log, "warning: pool_short: pool Default cannot take the run of policy nightly") {
		t.Fatalf("the run's job log does not say the pool is short:\n%s", log)
	}
	// 'cairn job runs' shows it on the run, and only on that run.
	var runs wire.RunListResp
	h.must(h.api(wire.OpRunList, wire.RunListReq{Policy: "nightly"}, &runs))
	if len(runs.Runs) != 2 || !strings.Contains(runs.Runs[0].Warning, "needs about 8.0 MiB and has 1.0 MiB free") || runs.Runs[1].Warning != "" {
		t.Fatalf("runs %+v", runs.Runs)
	}
	select {
	case e := <-alerts:
		t.Fatalf("another alert: %+v", e)
	default:
	}
}

// completeOrderOfStart starts a full of /srv by hand and completes it,
// size bytes stored: the size the policy's next full is judged by.
func (h *harness) completeOrderOfStart(orders chan *nats.Msg, size int64) {
	h.t.Helper()
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv"}, Level: "full"}, &started))
	if id := h.completeOrder(orders, size); id != started.JobID {
		h.t.Fatalf("ordered job %d, started %d", id, started.JobID)
	}
}

// A tape pool is short when the run needs more than the room left on its
// appendable tapes, a tape holding what the fullest full tape of the pool
// held.
func TestPoolShortOfATapePool(t *testing.T) {
	h := newHarness(t)
	_, orders := h.tapeSetup()
	const bs = defaultBlockSize
	h.must(h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 1, Pool: "Weekly"}, nil))
	h.must(h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 2, Pool: catalog.ScratchPool, Overwrite: true}, nil))
	start := func(level string) uint64 {
		var started wire.JobStarted
		h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv"}, Level: level, Pool: "Weekly"}, &started))
		<-orders
		return started.JobID
	}
	full := orchestrator.BackupSpec{Client: "web", Paths: []fileindex.Path{"/srv"}, Level: "full", Pool: "Weekly", Policy: "weekly"}

	// A full of 200 blocks stored, its part on CRN001L9 ending at block 10.
	job := start("full")
	var g1 wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: job, Pool: "Weekly"}, &g1))
	b := fileindex.NewSegmentBuilder(0)
	h.must(b.Add(&fileindex.Entry{Path: "/srv", Type: fileindex.TypeDir, Mode: 0o755}))
	seg := b.Flush()
	h.must(h.node(wire.OpSessionIndex, wire.SessionIndexReq{JobID: job, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}, nil))
	h.must(h.node(wire.OpSessionCommit, wire.SessionCommitReq{
		JobID: job, SessionID: uuid.New(), Segments: 1,
		Parts: []wire.SessionPart{{VolumeID: g1.ID, VolumeStart: bs, DataStart: bs + 64, End: 10 * bs, Final: true}},
		Stats: wire.SessionStats{Entries: 1, StoredBytes: 200 * bs},
	}, nil))
	// No tape of the pool filled yet: how much one holds is not known.
	if short, err := h.srv.shortage(full); err != nil || short != nil {
		t.Fatalf("shortage before a tape filled: %+v, %v", short, err)
	}
	// The next backup fills CRN001L9 at 10 blocks and takes the scratch
	// tape CRN002L9, whose label block it holds.
	next := start("incremental")
	var g2 wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: next, Pool: "Weekly", Full: g1.ID, Used: []uuid.UUID{g1.ID}}, &g2))
	if g2.Barcode != "CRN002L9" || g2.Bytes != bs {
		t.Fatalf("grant %+v", g2)
	}
	short, err := h.srv.shortage(full)
	h.must(err)
	if short == nil || short.need != 200*bs || short.free != 9*bs || !strings.HasSuffix(short.reason, "scratch tapes: 1") {
		t.Fatalf("shortage %+v", short)
	}
	// An incremental has no incremental before it to be judged by; the
	// disk pool has room for the full.
	incr := full
	incr.Level = "incremental"
	onDisk := full
	onDisk.Pool = "Default"
	for _, spec := range []orchestrator.BackupSpec{incr, onDisk} {
		if short, err := h.srv.shortage(spec); err != nil || short != nil {
			t.Fatalf("%+v: shortage %+v, %v", spec, short, err)
		}
	}
}
