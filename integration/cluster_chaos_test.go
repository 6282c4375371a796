package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// TestClusterChaos runs backups without pause on three agents, fulls and
// incrementals of trees that change between them, while it kills with
// SIGKILL and restarts, one at a time and round after round, the leader, a
// follower, a storage node, a NATS server and an agent. Then every backup
// the catalog calls complete must restore byte for byte as the tree was
// when it was taken, every job must have ended, no attempt may have run
// twice or overlapped another (from the agents' and storage nodes' logs),
// and the three members' catalogs must be identical.
//
// CAIRN_CHAOS_ROUNDS raises the number of rounds (3 by default) for a
// longer run by hand. The figures are on one line starting "chaos:".
func TestClusterChaos(t *testing.T) {
	rounds := 3
	if s := os.Getenv("CAIRN_CHAOS_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("CAIRN_CHAOS_ROUNDS=%q: want a number of rounds, at least 1", s)
		}
		rounds = n
	}
	clients := []string{"web01", "web02", "web03"}
	// 2 MiB/s: a full of a chaos tree streams for about two seconds, so a
	// kill often lands in the middle of one.
	c := newClusterSys(t, clusterOpts{nodes: 2, agents: clients, agentRate: 2 << 20})
	t0 := time.Now()

	w := &chaosWorkers{c: c, stop: make(chan struct{}), trees: map[uint64]treeAt{}}
	w.openLog(filepath.Join(c.dir, "chaos-workers.log"))
	for i, cl := range clients {
		src := filepath.Join(t.TempDir(), cl)
		spec := sample.Spec{TextFiles: 24, RandomFiles: 6, MaxFileSize: 32 << 10, Seed: uint64(70 + i)}
		if err := sample.Generate(src, spec); err != nil {
			t.Fatal(err)
		}
		w.wg.Add(1)
		go w.run(cl, src, uint64(80+i))
	}
	// Should the test fail half-way, the workers stop before the processes.
	t.Cleanup(w.halt)

	var kills, failovers int
	var elections []time.Duration
	lastLeader := c.waitLeader(30*time.Second, nil)
	noteLeader := func() {
		c.waitSettled()
		if l := c.leader(); l != nil && l != lastLeader {
			failovers++
			lastLeader = l
		}
	}
	// An outage lasts 1.5 s while the backups go on against it: a length
	// of the simulated fault, not a wait for a condition (each recovery
	// below waits for its condition).
	pause := func() {
		outage := time.NewTimer(1500 * time.Millisecond)
		<-outage.C
	}
	for r := 0; r < rounds; r++ {
		// The leader.
		l := c.waitLeader(30*time.Second, nil)
		kill(l.proc)
		kills++
		killed := time.Now()
		nl := c.waitLeader(30*time.Second, l)
		elections = append(elections, time.Since(killed))
		failovers++
		lastLeader = nl
		pause()
		l.proc.start()
		noteLeader()

		// A follower.
		l = c.waitLeader(30*time.Second, nil)
		var f *member
		for _, m := range c.servers {
			if m != l {
				f = m
				break
			}
		}
		kill(f.proc)
		kills++
		pause()
		f.proc.start()
		noteLeader()

		// A storage node: the one a backup streams to, if any.
		n := c.nodes[r%len(c.nodes)]
		if name := w.streamingNode(); name != "" {
			n = c.node(name)
		}
		kill(n.proc)
		kills++
		pause()
		n.proc.start()
		c.waitReady()

		// A NATS server.
		i := r % len(c.nats.servers)
		kill(c.nats.servers[i].proc)
		kills++
		pause()
		c.nats.start(i)
		c.waitReady()

		// An agent.
		a := c.agents[r%len(c.agents)]
		kill(a.proc)
		kills++
		pause()
		a.proc.start()
		c.waitReady()
		noteLeader()
		t.Logf("round %d of %d done after %s: %d jobs started", r+1, rounds, time.Since(t0).Round(time.Second), w.count())
	}
	w.halt()
	for _, e := range w.errs {
		t.Error(e)
	}

	c.waitReady()
	restored := c.restoreAll(w.trees)
	d := c.compareCatalogs()
	if !slices.Equal(d.complete(), restored) {
		t.Errorf("the catalog's complete backups %v are not those restored, %v", d.complete(), restored)
	}
	outcomes := c.checkJobs(d, w.started)
	c.checkAllEnded(d)
	retried := 0
	for _, j := range d.jobs {
		if j.Type != catalog.JobBackup {
			continue
		}
		if j.Attempt > 1 {
			retried++
			for _, l := range j.Log {
				if strings.Contains(l.Msg, "back in the queue") {
					t.Logf("backup job %d of %s: %s", j.ID, j.Client, l.Msg)
				}
			}
		}
		if j.State == catalog.JobFailed {
			t.Logf("backup job %d of %s failed at attempt %d: %s", j.ID, j.Client, j.Attempt, j.Error)
		}
	}
	slices.Sort(elections)
	var median, max time.Duration
	if n := len(elections); n > 0 {
		median, max = (elections[(n-1)/2]+elections[n/2])/2, elections[n-1]
	}
	t.Logf("chaos: rounds=%d kills=%d jobs=%d complete=%d failed=%d retried=%d failovers=%d new-leader median=%s max=%s took=%s",
		rounds, kills, len(w.started), len(restored), outcomes[catalog.JobFailed], retried, failovers,
		median.Round(time.Millisecond), max.Round(time.Millisecond), time.Since(t0).Round(time.Second))
	if len(restored) < 3*rounds {
		t.Errorf("only %d backups completed in %d rounds: the system did not keep working under the faults", len(restored), rounds)
	}
}

// chaosWorkers are the backup loops of the clients, one goroutine each.
// They must not fail the test from their goroutines: what goes wrong is
// collected in errs, for the test to report.
type chaosWorkers struct {
	c    *clusterSys
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu      sync.Mutex
	trees   map[uint64]treeAt // by backup (= job) id
	started []uint64
	running map[string]string // client -> storage node of its running backup
	errs    []string

	// log is what the workers did: each command that failed or was slow,
	// each job started and ended, for reading a run in which little got
	// done. It is printed and kept with the roles' logs.
	logMu sync.Mutex
	log   *os.File
}

func (w *chaosWorkers) openLog(path string) {
	f, err := os.Create(path)
	if err != nil {
		w.c.t.Fatal(err)
	}
	w.log = f
	w.c.logs.add(path)
	w.c.t.Cleanup(func() { f.Close() })
}

// logf notes one thing a worker did in the workers' log.
func (w *chaosWorkers) logf(client, format string, args ...any) {
	w.logMu.Lock()
	defer w.logMu.Unlock()
	fmt.Fprintf(w.log, "time=%s worker=%s %s\n", time.Now().UTC().Format(time.RFC3339Nano), client, fmt.Sprintf(format, args...))
}

// cli runs an admin command for client's worker and notes it in the
// workers' log when it failed or took more than a second.
func (w *chaosWorkers) cli(client string, v any, args ...string) error {
	t0 := time.Now()
	err := chaosJSON(w.c.url, v, args...)
	if took := time.Since(t0); err != nil || took > time.Second {
		w.logf(client, "cairn %s: took %s: %v", strings.Join(args, " "), took.Round(time.Millisecond), err)
	}
	return err
}

func (w *chaosWorkers) halt() {
	w.once.Do(func() { close(w.stop) })
	w.wg.Wait()
}

func (w *chaosWorkers) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

func (w *chaosWorkers) fail(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, fmt.Sprintf(format, args...))
}

func (w *chaosWorkers) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.started)
}

// streamingNode is the storage node of a backup running now, if any.
func (w *chaosWorkers) streamingNode() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range w.running {
		if n != "" {
			return n
		}
	}
	return ""
}

// run backs up src for client again and again until stopped: a full every
// fourth time, incrementals between, the tree changed before each. It
// changes the tree only once the backup before has ended, so each backup
// reads the tree its snapshot shows.
func (w *chaosWorkers) run(client, src string, seed uint64) {
	defer w.wg.Done()
	r := rand.New(rand.NewPCG(seed, seed))
	for k := 0; !w.stopped(); k++ {
		if k > 0 {
			if err := changeTree(src, k, r); err != nil {
				w.fail("change the tree of %s: %v", client, err)
				return
			}
		}
		snap, err := sample.Snapshot(src)
		if err != nil {
			w.fail("snapshot the tree of %s: %v", client, err)
			return
		}
		level := "incremental"
		if k%4 == 0 {
			level = "full"
		}
		ids := w.start(client, level, src)
		if len(ids) == 0 {
			return // stopped before a start succeeded
		}
		w.mu.Lock()
		for _, id := range ids {
			w.trees[id] = treeAt{client, src, snap}
			w.started = append(w.started, id)
		}
		w.mu.Unlock()
		for _, id := range ids {
			w.wait(client, id)
		}
	}
}

// start starts a backup under a request id of its own, trying again with
// that id until the servers answer with its job. A start whose answer was
// lost (the leader died after it committed the job) is looked up by its
// request id, never counted as not started: the servers make at most one
// job per request id, so the job found is the one, and a repeat of the
// start answers it too. Once the test stops the workers a start that may
// have made a job is still resolved, so every job the catalog holds is one
// the test knows.
func (w *chaosWorkers) start(client, level, src string) []uint64 {
	rid := uuid.NewString()
	sent := false
	var ids []uint64
	err := poll.Wait(5*time.Minute, func() error {
		if w.stopped() && !sent {
			return nil
		}
		var st wire.JobStarted
		err := w.cli(client, &st, "backup", "--client", client, "--level", level, "--path", src, "--request-id", rid, "--retry-for", "20s")
		sent = true
		if err == nil {
			w.logf(client, "request %s started job %d", rid, st.JobID)
			ids = []uint64{st.JobID}
			return nil
		}
		var js []wire.JobInfo
		if lerr := w.cli(client, &js, "job", "list", "--request-id", rid); lerr == nil && len(js) == 1 {
			w.logf(client, "request %s made job %d, %s", rid, js[0].ID, js[0].State)
			switch js[0].State {
			case "pending":
				// Made, not yet accepted: the next try accepts it.
			case "void":
				// Nobody confirmed it in time: it never ran, and never
				// will. The backup is still to do, under a new id.
				rid, sent = uuid.NewString(), false
			default:
				ids = []uint64{js[0].ID}
				return nil
			}
		}
		return err
	})
	if err != nil {
		w.fail("backup of %s, request %s: no answer in 5 minutes: %v", client, rid, err)
	}
	return ids
}

// wait polls a job until it ends; the test's halt does not cut it short,
// so every job started is seen to its end.
func (w *chaosWorkers) wait(client string, id uint64) {
	var j wire.JobInfo
	t0 := time.Now()
	defer func() {
		w.logf(client, "job %d ended %s after %s", id, j.State, time.Since(t0).Round(time.Millisecond))
	}()
	err := poll.Wait(3*time.Minute, func() error {
		if err := w.cli(client, &j, "job", "show", strconv.FormatUint(id, 10)); err != nil {
			return err
		}
		w.mu.Lock()
		if w.running == nil {
			w.running = map[string]string{}
		}
		w.running[client] = ""
		if j.State == "running" {
			w.running[client] = j.Node
		}
		w.mu.Unlock()
		if j.State == "queued" || j.State == "running" {
			return fmt.Errorf("job %d is %s", id, j.State)
		}
		return nil
	})
	if err != nil {
		w.fail("backup job %d of %s did not end within 3 minutes: %+v (last error: %v)", id, client, j, err)
	}
}

// changeTree is a client's work between two backups: a log grows, a file
// is added, one added before is deleted, and one is renamed.
func changeTree(src string, k int, r *rand.Rand) error {
	logs, err := filepath.Glob(filepath.Join(src, "logs", "*", "*.log"))
	if err != nil || len(logs) == 0 {
		return fmt.Errorf("no logs in %s: %v", src, err)
	}
	f, err := os.OpenFile(logs[r.IntN(len(logs))], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(sample.LogText(r, 2000+r.IntN(8000)))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	dir := filepath.Join(src, "chaos")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	name := func(i int) string { return filepath.Join(dir, fmt.Sprintf("new-%03d.bin", i)) }
	if err := os.WriteFile(name(k), sample.RandomBytes(r, 16<<10+r.IntN(240<<10)), 0o644); err != nil {
		return err
	}
	if k > 2 {
		if err := os.Remove(name(k-2) + ".renamed"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if k > 1 {
		if err := os.Rename(name(k-1), name(k-1)+".renamed"); err != nil {
			return err
		}
	}
	return nil
}

// chaosJSON runs an admin command with --json from a worker's goroutine,
// where the test must not be failed: an error is returned instead.
func chaosJSON(url string, v any, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	full := append([]string{"--nats", url}, append(args, "--json")...)
	cmd := exec.CommandContext(ctx, cairnBin, full...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cairn %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return json.Unmarshal(out.Bytes(), v)
}
