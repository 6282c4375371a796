package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/cairnbackup/cairn/internal/poll"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
)

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// server is one test server: a catalog and its Raft node in dir.
type server struct {
	t      testing.TB
	dir    string
	cfg    Config
	store  *catalog.Store
	node   *Node
	logger *slog.Logger // nil: the test's log
}

func testConfig(id, dir string, bootstrap bool) Config {
	cfg := DefaultConfig()
	cfg.ID = id
	cfg.Dir = filepath.Join(dir, "raft")
	cfg.BindAddr = "127.0.0.1:0"
	cfg.Bootstrap = bootstrap
	// Loopback needs no multi-second timeouts, but a leader under -race on
	// a loaded two-core machine, fsyncing its log, can miss a 200ms
	// heartbeat and start an election no test asked for: a second keeps
	// leaders steady at the price of a second per election.
	cfg.HeartbeatTimeout = time.Second
	cfg.ElectionTimeout = time.Second
	cfg.LeaderLeaseTimeout = 500 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	cfg.SnapshotInterval = time.Hour // tests snapshot explicitly
	return cfg
}

func startServer(t testing.TB, id, dir string, bootstrap bool) *server {
	t.Helper()
	s := &server{t: t, dir: dir, cfg: testConfig(id, dir, bootstrap)}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) start() {
	s.t.Helper()
	store, err := catalog.Open(filepath.Join(s.dir, "catalog.db"))
	if err != nil {
		s.t.Fatal(err)
	}
	logger := s.logger
	if logger == nil {
		logger = testLogger(s.t).With("server", s.cfg.ID)
	}
	node, err := Open(s.cfg, store, logger)
	if err != nil {
		store.Close()
		s.t.Fatal(err)
	}
	s.store, s.node = store, node
	// A restarted server listens on a new port; keep it stable so peers
	// that know the old address still reach it.
	s.cfg.BindAddr = node.Addr()
}

func (s *server) stop() {
	if s.node != nil {
		if err := s.node.Shutdown(); err != nil {
			s.t.Error(err)
		}
		s.node = nil
	}
	if s.store != nil {
		s.store.Close()
		s.store = nil
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (s *server) apply(c *catalog.Command) catalog.ApplyResult {
	s.t.Helper()
	res, err := s.node.Apply(ctxT(s.t), c)
	if err != nil {
		s.t.Fatalf("apply %s: %v", c.Op, err)
	}
	if res.Err != nil {
		s.t.Fatalf("apply %s refused: %v", c.Op, res.Err)
	}
	return res
}

func (s *server) waitLeader() {
	s.t.Helper()
	if err := s.node.WaitLeader(ctxT(s.t)); err != nil {
		s.t.Fatal(err)
	}
	poll.Until(s.t, 10*time.Second, func() error {
		if !s.node.IsLeader() {
			return fmt.Errorf("%s is %s", s.cfg.ID, s.node.State())
		}
		return nil
	})
}

// dump reads what the catalog answers, for comparing.
func dump(t testing.TB, s *catalog.Store) string {
	t.Helper()
	var b strings.Builder
	add := func(v any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%+v\n", v)
	}
	add(s.Clients())
	add(s.Nodes())
	add(s.Pools())
	add(s.Keys())
	add(s.Volumes(catalog.VolumeFilter{}))
	jobs, err := s.Jobs(catalog.JobFilter{})
	add(jobs, err)
	for _, j := range jobs {
		add(s.Job(j.ID))
	}
	backups, err := s.Backups(catalog.BackupFilter{})
	add(backups, err)
	for _, bk := range backups {
		add(fileindex.Collect(s.Index(bk.ID)))
	}
	counts, err := s.Counts()
	add(counts, err)
	return b.String()
}

// populate applies a small history: a client, a pool, a backup with an index
// and a job log that grows one line per command.
func populate(s *server, logLines int) uint64 {
	s.t.Helper()
	s.apply(&catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "web1"}})
	s.apply(&catalog.Command{Op: catalog.OpRegisterNode, Node: &catalog.StorageNode{ID: "sn1", Pools: []catalog.NodePool{{Name: "disk1", Dir: "/d"}}}})
	res := s.apply(&catalog.Command{Op: catalog.OpCreateJob, Job: &catalog.Job{Type: catalog.JobBackup, Client: "web1", Level: catalog.LevelFull, Pool: "disk1", Paths: []fileindex.Path{"/srv"}}})
	job := res.JobID
	s.apply(&catalog.Command{Op: catalog.OpUpdateJob, JobUpdate: &catalog.JobUpdate{ID: job, State: catalog.JobRunning}})
	sb := fileindex.NewSegmentBuilder(0)
	for _, p := range []string{"/srv", "/srv/a", "/srv/b"} {
		if err := sb.Add(&fileindex.Entry{Path: p, Type: fileindex.TypeFile}); err != nil {
			s.t.Fatal(err)
		}
	}
	seg := sb.Flush()
	s.apply(&catalog.Command{Op: catalog.OpAddIndexSegment, Segment: &catalog.IndexSegment{BackupID: job, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}})
	for i := 0; i < logLines; i++ {
		s.apply(&catalog.Command{Op: catalog.OpAppendJobLog, JobLog: &catalog.JobLog{JobID: job, Lines: []catalog.LogLine{{Level: "info", Msg: fmt.Sprintf("line %d", i)}}}})
	}
	return job
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err == nil || !strings.Contains(err.Error(), "raft ID is empty") || !strings.Contains(err.Error(), "BindAddr is empty") {
		t.Fatalf("empty config: %v", err)
	}
	cfg := testConfig("s1", t.TempDir(), true)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.BindAddr = "0.0.0.0:7010"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "AdvertiseAddr") {
		t.Fatalf("unspecified bind address without an advertised one: %v", err)
	}
	cfg.AdvertiseAddr = "10.0.0.1:7010"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.ElectionTimeout = time.Millisecond * 50
	cfg.LeaderLeaseTimeout = 2 * cfg.HeartbeatTimeout
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "ElectionTimeout") || !strings.Contains(err.Error(), "LeaderLeaseTimeout") {
		t.Fatalf("bad timeouts: %v", err)
	}
	if _, err := Open(cfg, nil, testLogger(t)); err == nil {
		t.Fatal("Open took an invalid config")
	}
}

func TestOneVoterRestartAppliesNothingTwice(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, "s1", dir, true)
	s.waitLeader()
	job := populate(s, 40)
	if err := s.node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := 40; i < 70; i++ {
		s.apply(&catalog.Command{Op: catalog.OpAppendJobLog, JobLog: &catalog.JobLog{JobID: job, Lines: []catalog.LogLine{{Msg: fmt.Sprintf("line %d", i)}}}})
	}
	want := dump(t, s.store)
	before := s.node.Stats()
	if before.LastSnapshotIndex == 0 || before.CatalogIndex <= before.LastSnapshotIndex {
		t.Fatalf("stats before restart: %+v", before)
	}

	s.stop()
	s.start() // Bootstrap is still set: it must see the state and not bootstrap again
	s.waitLeader()
	if err := s.node.Barrier(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, s.store); got != want {
		t.Fatalf("catalog after restart differs:\n%s\n---\n%s", got, want)
	}
	j, err := s.store.Job(job)
	if err != nil {
		t.Fatal(err)
	}
	if j.LogLines != 70 || len(j.Log) != 70 {
		t.Fatalf("job log has %d lines (%d kept) after restart, want 70: the log was replayed twice", j.LogLines, len(j.Log))
	}
	// The 30 commands after the snapshot were replayed, and skipped.
	if n := s.node.FSM().Skipped(); n != 30 {
		t.Fatalf("%d replayed commands skipped, want 30", n)
	}
	after := s.node.Stats()
	if after.CatalogIndex != before.CatalogIndex || after.Term <= before.Term || after.FSMError != "" {
		t.Fatalf("stats after restart: %+v (before %+v)", after, before)
	}
	s.apply(&catalog.Command{Op: catalog.OpAppendJobLog, JobLog: &catalog.JobLog{JobID: job, Lines: []catalog.LogLine{{Msg: "after restart"}}}})
	if j, _ := s.store.Job(job); j.LogLines != 71 {
		t.Fatalf("%d lines after one more", j.LogLines)
	}
}

func TestLostCatalogIsRebuiltFromSnapshotAndLog(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, "s1", dir, true)
	s.waitLeader()
	job := populate(s, 10)
	if err := s.node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := 10; i < 15; i++ {
		s.apply(&catalog.Command{Op: catalog.OpAppendJobLog, JobLog: &catalog.JobLog{JobID: job, Lines: []catalog.LogLine{{Msg: fmt.Sprintf("line %d", i)}}}})
	}
	want := dump(t, s.store)
	s.stop()
	if err := os.Remove(filepath.Join(dir, "catalog.db")); err != nil {
		t.Fatal(err)
	}
	s.start()
	s.waitLeader()
	if err := s.node.Barrier(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, s.store); got != want {
		t.Fatalf("rebuilt catalog differs:\n%s\n---\n%s", got, want)
	}
}

func TestCatalogOfAnotherLogIsRefused(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, "s1", dir, true)
	s.waitLeader()
	populate(s, 3)
	s.stop()
	if err := os.RemoveAll(filepath.Join(dir, "raft")); err != nil {
		t.Fatal(err)
	}
	store, err := catalog.Open(filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	node, err := Open(testConfig("s1", dir, true), store, testLogger(t))
	if err == nil {
		node.Shutdown()
		t.Fatal("a catalog ahead of an empty Raft log was accepted")
	}
	if !strings.Contains(err.Error(), "applied Raft index") {
		t.Fatalf("error does not say what is wrong: %v", err)
	}
}

func TestThreeVoters(t *testing.T) {
	servers := []*server{
		startServer(t, "s1", t.TempDir(), true),
		startServer(t, "s2", t.TempDir(), false),
		startServer(t, "s3", t.TempDir(), false),
	}
	s1 := servers[0]
	s1.waitLeader()
	ctx := ctxT(t)
	for _, s := range servers[1:] {
		join(t, s1, s)
	}
	if err := servers[1].node.AddVoter(ctx, "s9", "127.0.0.1:1"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("AddVoter on a follower: %v", err)
	}
	job := populate(s1, 5)
	for _, s := range servers {
		poll.Until(t, 10*time.Second, func() error {
			if j, err := s.store.Job(job); err != nil || j.LogLines != 5 {
				return fmt.Errorf("%s: job %+v, %v", s.cfg.ID, j, err)
			}
			return nil
		})
	}
	want := dump(t, s1.store)
	for _, s := range servers[1:] {
		if got := dump(t, s.store); got != want {
			t.Fatalf("%s's catalog differs from the leader's", s.cfg.ID)
		}
		_, err := s.node.Apply(ctx, &catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "x"}})
		var nl *NotLeaderError
		if !errors.As(err, &nl) || !errors.Is(err, ErrNotLeader) || nl.Leader != s1.node.Addr() || nl.LeaderID != "s1" {
			t.Fatalf("Apply on follower %s: %v", s.cfg.ID, err)
		}
		if err := s.node.Barrier(ctx); !errors.Is(err, ErrNotLeader) {
			t.Fatalf("Barrier on a follower: %v", err)
		}
		if st := s.node.Stats(); st.State != "Follower" || st.Leader != s1.node.Addr() || len(st.Peers) != 3 {
			t.Fatalf("follower stats %+v", st)
		}
	}

	// The leader goes away; the others elect one and lose nothing.
	s1.stop()
	var leader *server
	poll.Until(t, 15*time.Second, func() error {
		for _, s := range servers[1:] {
			if s.node.IsLeader() {
				leader = s
				return nil
			}
		}
		return errors.New("no new leader")
	})
	leader.apply(&catalog.Command{Op: catalog.OpAppendJobLog, JobLog: &catalog.JobLog{JobID: job, Lines: []catalog.LogLine{{Msg: "new leader"}}}})
	if err := leader.node.RemoveServer(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	for _, s := range servers[1:] {
		poll.Until(t, 10*time.Second, func() error {
			if j, _ := s.store.Job(job); j == nil || j.LogLines != 6 {
				return fmt.Errorf("%s has not applied the new leader's command", s.cfg.ID)
			}
			if st := s.node.Stats(); len(st.Peers) != 2 {
				return fmt.Errorf("%s peers %+v", s.cfg.ID, st.Peers)
			}
			return nil
		})
	}
}

func TestApplyRefusalAndContext(t *testing.T) {
	s := startServer(t, "s1", t.TempDir(), true)
	s.waitLeader()
	res, err := s.node.Apply(ctxT(t), &catalog.Command{Op: catalog.OpCreateVolume, Volume: &catalog.Volume{ID: uuid.New(), Pool: "nope"}})
	if err != nil || !errors.Is(res.Err, catalog.ErrNotFound) {
		t.Fatalf("refusal: res %+v err %v", res, err)
	}
	c := &catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "c1"}}
	s.apply(c)
	if c.Time.IsZero() {
		t.Fatal("Apply did not set the command's time")
	}
	if cl, _ := s.store.Client("c1"); !cl.Registered.Equal(c.Time) {
		t.Fatalf("client registered %v, command time %v", cl.Registered, c.Time)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// A caller that gave up before Apply gets its context's error, and
	// nothing is proposed: the command is not applied later behind its back.
	if _, err := s.node.Apply(ctx, &catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "c2"}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("apply with a canceled context: %v, want context.Canceled", err)
	}
	if err := s.node.Barrier(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.Client("c2"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("a command given a canceled context was applied: %v", err)
	}
	if _, err := s.node.Apply(ctxT(t), &catalog.Command{Op: "bogus"}); !errors.Is(err, catalog.ErrBadCommand) {
		t.Fatalf("bogus op: %v", err)
	}
}

// A member whose catalog stopped says a command it proposed is committed
// but not applied, proposes nothing more, and applies what it missed once
// it resumes.
func TestApplyOnAStoppedCatalog(t *testing.T) {
	s := startServer(t, "s1", t.TempDir(), true)
	s.waitLeader()
	populate(s, 1)
	// A floor no disk meets stops the catalog at the next command.
	s.node.FSM().SetSpaceFloor(1 << 62)
	_, err := s.node.Apply(ctxT(t), &catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "c1"}})
	var full *catalog.DiskFullError
	if !errors.Is(err, ErrCommittedNotApplied) || !errors.Is(err, catalog.ErrFSMStopped) || !errors.As(err, &full) {
		t.Fatalf("apply as the catalog stops: %v", err)
	}
	last := s.node.Stats().LastIndex
	_, err = s.node.Apply(ctxT(t), &catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "c2"}})
	if errors.Is(err, ErrCommittedNotApplied) || !errors.Is(err, catalog.ErrFSMStopped) || !errors.As(err, &full) {
		t.Fatalf("apply on a stopped catalog: %v", err)
	}
	if st := s.node.Stats(); st.LastIndex != last || st.FSMError == "" || st.CatalogBehind != 1 {
		t.Fatalf("a stopped catalog's member proposed, or does not say it stopped: %+v (last index was %d)", st, last)
	}
	if err := s.node.ResumeCatalog(); !errors.As(err, &full) {
		t.Fatalf("resume below the floor: %v", err)
	}
	s.node.FSM().SetSpaceFloor(0)
	if err := s.node.ResumeCatalog(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.Client("c1"); err != nil {
		t.Fatalf("the command committed while stopped was not applied on resuming: %v", err)
	}
	if _, err := s.store.Client("c2"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("a command that was not proposed is in the catalog: %v", err)
	}
	s.apply(&catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "c3"}})
	if st := s.node.Stats(); st.FSMError != "" || st.CatalogIndex != st.LastIndex && st.CatalogIndex+1 != st.LastIndex {
		t.Fatalf("stats after resuming: %+v", st)
	}
}

// A leader that cannot write its Raft log for lack of space says so,
// naming the directory, and the command is not committed.
func TestRaftLogOutOfSpace(t *testing.T) {
	dir := t.TempDir()
	raftDir := filepath.Join(dir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, raftDir, "8m")
	s := startServer(t, "s1", dir, true)
	s.waitLeader()
	job := populate(s, 0)
	filler := fillDir(t, raftDir)
	var err error
	var before uint64
	for no := 1; no < 64; no++ {
		before, _ = s.store.AppliedIndex()
		data := bytes.Repeat([]byte{byte(no)}, 256<<10)
		_, err = s.node.Apply(ctxT(t), &catalog.Command{Op: catalog.OpAddIndexSegment, Segment: &catalog.IndexSegment{
			BackupID: job, No: no, First: fileindex.Path(fmt.Sprintf("/srv/%03d/a", no)), Last: fileindex.Path(fmt.Sprintf("/srv/%03d/z", no)), Count: 1, Data: data}})
		if err != nil {
			break
		}
	}
	// Room again at once: a Raft that cannot store its term panics.
	if rerr := os.Remove(filler); rerr != nil {
		t.Fatal(rerr)
	}
	var full *catalog.DiskFullError
	if !errors.As(err, &full) || full.Dir != raftDir || errors.Is(err, ErrCommittedNotApplied) || errors.Is(err, ErrOutcomeUnknown) ||
		!strings.Contains(err.Error(), "the disk is full: free space in "+raftDir) {
		t.Fatalf("apply with a full Raft log: %v", err)
	}
	// It stepped down when the write failed; once it leads again, its
	// catalog holds everything committed.
	poll.Until(t, 30*time.Second, func() error {
		s.waitLeader()
		return s.node.Barrier(ctxT(t))
	})
	if idx, _ := s.store.AppliedIndex(); idx > before+1 {
		t.Fatalf("the catalog applied index %d, past %d+1: the refused entry was committed", idx, before)
	}
}

func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		msg := fmt.Sprintf("this test mounts a %s tmpfs to run out of space, which needs root: %v: %s", size, err, out)
		if os.Getenv("CAIRN_CI") != "" {
			t.Fatal(msg)
		}
		t.Skip("SKIPPED (it fails instead under CAIRN_CI=1): " + msg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// fillDir writes a file in dir until the filesystem refuses more.
func fillDir(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 16<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if catalog.IsNoSpace(err) {
				return path
			}
			t.Fatal(err)
		}
	}
}
