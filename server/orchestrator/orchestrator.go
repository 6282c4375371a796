package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/internal/clock"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// Config is what the orchestrator's decisions depend on; the server's
// Config documents each field.
type Config struct {
	LivenessTimeout     time.Duration
	StallTimeout        time.Duration
	QueueTimeout        time.Duration
	StartConfirmTimeout time.Duration
	RequestIDTTL        time.Duration
	DefaultPool         string
	Limits              Limits
}

// Limits bound how many jobs run at once; a backup past one waits in the
// queue, which is served by priority (catalog.Job.Priority, the higher
// first), then by scheduled time (a job started by hand: its creation),
// then by id. Zero is no limit. Restores are counted but never held back:
// an administrator who needs data back should not wait for the night's
// backups.
type Limits struct {
	PerClient int
	PerNode   int
	// PerPool holds a limit for some pools, by name.
	PerPool map[string]int
	// PerDrive, when not 0, holds a tape pool's backups past that many a
	// drive of its library in the queue. At 0 the storage node's own
	// rule stands: a drive writes one session at a time, and a backup
	// that finds them all busy runs "waiting for a drive" there (which a
	// spooled backup does while it spools).
	PerDrive int
}

// Raft is the replicated log the catalog changes go through
// (cluster.Node). Apply returns the cluster's error as it is, for the
// caller to tell what became of the command (outcomeOf).
type Raft interface {
	Apply(ctx context.Context, c *catalog.Command) (catalog.ApplyResult, error)
	Barrier(ctx context.Context) error
}

// Member is what the orchestrator asks of the server it runs in.
type Member interface {
	// Admit refuses new starts while this server's disk is nearly full.
	Admit() error
	// CatalogStopped is why this server's catalog stopped applying the
	// log (a full disk), nil while it applies it.
	CatalogStopped() error
	// ApplyError says why a catalog change did not apply here, as the
	// caller is told: a full disk names the server and the directory.
	ApplyError(err error) error
	// Sign signs a job ticket with the group's key.
	Sign(t ticket.Ticket) (string, error)
	// JobEnded counts a job that ended (metrics).
	JobEnded(j *catalog.Job)
}

// Roles reaches the storage nodes and agents, and whoever follows a job.
type Roles interface {
	// Request sends req on subject and decodes the answer into resp.
	Request(ctx context.Context, subject string, req, resp any) error
	// Publish tells watchers of a job about a state change or progress.
	Publish(ev wire.JobEvent)
	// PageBytes is what one page of a restore plan or base tree may fill.
	PageBytes() int
}

// Liveness is what the heartbeats of the storage nodes and agents say.
// Every server keeps it (it is not replicated); the orchestrator reads it
// on the leader.
type Liveness interface {
	Node(id string) NodeState
	Agent(client string) AgentState
	// AgentLost notes that an agent's stream broke off (its process may
	// have died): it gets no order until it is heard from again.
	AgentLost(client string)
	// Suspect keeps a storage node out of the choice after an agent lost
	// its stream to it, until it registers again or suspectFor passed.
	Suspect(node string)
	// AgentStopped notes that an agent stopped and handed its job back:
	// it gets no order until it registers again.
	AgentStopped(client string)
}

// NodeState is a storage node as its heartbeats describe it; the zero
// value is a node never heard from.
type NodeState struct {
	Online   bool
	LastSeen time.Time
	Draining bool      // stopping: it takes no new job
	Suspect  time.Time // when an agent lost its stream to it
	Site     string
	Usage    map[string]wire.PoolUsage // by pool name
	Streams  int
}

// AgentState is a client's agent as its heartbeats describe it.
type AgentState struct {
	Online   bool
	LastSeen time.Time
	Stopping bool
	// LostSince is when a storage node said the agent's stream broke
	// off, if the agent has not been heard from since; zero otherwise.
	LostSince time.Time
	// Duplicate is set while two processes run under the client's name.
	Duplicate *wire.AgentDuplicate
	Running   map[uint64]bool // the jobs it says it works on
}

// Deps are the orchestrator's collaborators.
type Deps struct {
	Store    *catalog.Store // this member's catalog, for reads
	Raft     Raft
	Member   Member
	Roles    Roles
	Liveness Liveness
	Clock    clock.Clock
	Log      *slog.Logger
}

// Orchestrator turns starts into jobs and runs them on the leader:
// dispatch, the watchdog, requeues, failures and cancels. See the
// package doc for who calls what, and server/DESIGN.md for the
// goroutines and locks.
type Orchestrator struct {
	cfg   Config
	store *catalog.Store
	raft  Raft
	mem   Member
	roles Roles
	live  Liveness
	clock clock.Clock
	log   *slog.Logger

	wake    chan struct{}  // kicks the leader's round
	stops   chan stopOrder // cancel orders for RunStops to send
	cancels sync.Map       // job ids whose cancel this leader carries out (cancel.go)
	wg      sync.WaitGroup // goroutines carrying out cancels

	mu          sync.Mutex
	runs        map[uint64]*jobRun
	leaderSince time.Time
	calls       map[string]*call // start requests in progress, by kind/request id (Shared)
}

// New returns an orchestrator; the server runs its loops (Round,
// RunStops) and calls the rest from its handlers.
func New(cfg Config, d Deps) *Orchestrator {
	if d.Clock == nil {
		d.Clock = clock.Real()
	}
	return &Orchestrator{
		cfg: cfg, store: d.Store, raft: d.Raft, mem: d.Member, roles: d.Roles, live: d.Liveness, clock: d.Clock, log: d.Log,
		wake: make(chan struct{}, 1), stops: make(chan stopOrder, 256), runs: map[uint64]*jobRun{},
	}
}

// Wake is signalled when a round should run now rather than at the next
// tick: a job was started, requeued or canceled, a node registered.
func (o *Orchestrator) Wake() <-chan struct{} { return o.wake }

// Kick asks for a round now.
func (o *Orchestrator) Kick() { o.kick() }

// Round is one turn of the leader: it carries out recorded cancels,
// watches the running jobs, dispatches the queued ones and voids the
// starts nobody confirmed. ctx is the leader term's: a leadership lost in
// the middle of a round stops it at its next catalog write.
func (o *Orchestrator) Round(ctx context.Context) {
	o.carryOutCancels(ctx)
	o.watchRunning(ctx)
	o.dispatchQueued(ctx)
	o.sweepStarts(ctx)
}

// Adopt takes on, for a new leader, the jobs the catalog says are running.
func (o *Orchestrator) Adopt(ctx context.Context) { o.becameLeader(ctx) }

// Lost drops what only the leader keeps, when the leadership is lost.
func (o *Orchestrator) Lost() { o.lostLeadership() }

// RunStops sends the cancel orders that ending an attempt queues, until
// ctx ends, and waits for those under way.
func (o *Orchestrator) RunStops(ctx context.Context) { o.stopLoop(ctx) }

// Wait stops the counts of restores' totals under way and waits for them
// and for the goroutines carrying out cancels; the server calls it once its
// loops have stopped, before Raft and the catalog close.
func (o *Orchestrator) Wait() {
	o.mu.Lock()
	for _, r := range o.runs {
		r.stopCounting()
	}
	o.mu.Unlock()
	o.wg.Wait()
}

// Fail ends a job as failed with e, once (later reports of the same
// failure change nothing), and stops its attempt at the node and agent.
func (o *Orchestrator) Fail(ctx context.Context, id uint64, e error) { o.failJob(ctx, id, e) }

// Requeue sends a backup whose attempt ended for a reason that is not its
// data's (its node or agent went away, handed it back) back to the queue,
// or fails it after its attempts; a restore fails.
func (o *Orchestrator) Requeue(ctx context.Context, id uint64, e error) {
	o.requeueOrFail(ctx, id, e)
}

// Ended tells what a job that ended by another way than Fail (a commit, an
// agent's report, a cancel) ends here: its run, its figures, its watchers.
func (o *Orchestrator) Ended(job *catalog.Job) {
	o.finishRun(job.ID)
	o.mem.JobEnded(job)
	o.roles.Publish(wire.JobEvent{JobID: job.ID, State: string(job.State), Message: job.Error})
}

// JobLog appends a line to a job's log, best effort: a log line lost to a
// leader change must not fail the job.
func (o *Orchestrator) JobLog(ctx context.Context, id uint64, level string, format string, args ...any) {
	o.jobLog(ctx, id, level, format, args...)
}

// apply proposes a catalog command and turns refusals and failures into
// the orchestrator's errors.
func (o *Orchestrator) apply(ctx context.Context, c *catalog.Command) (catalog.ApplyResult, error) {
	res, err := o.propose(ctx, c)
	if err != nil {
		return res, relay(o.mem.ApplyError(err))
	}
	if res.Err != nil {
		return res, CatalogError(res.Err)
	}
	return res, nil
}

// Apply proposes a catalog command through Raft, stamped with the
// leader's time, and says with an *Error why it did not apply: a catalog
// refusal (its code and hint, the *catalog.Error its cause), or what the
// server's ApplyError said. The
// server's handlers write the catalog through it too.
func (o *Orchestrator) Apply(ctx context.Context, c *catalog.Command) (catalog.ApplyResult, error) {
	return o.apply(ctx, c)
}

// Propose is Apply that returns the cluster's error as it is (OutcomeOf
// tells what became of the command).
func (o *Orchestrator) Propose(ctx context.Context, c *catalog.Command) (catalog.ApplyResult, error) {
	return o.propose(ctx, c)
}

// propose proposes a command as apply does, but returns the cluster's
// error as it is, for the caller to tell what became of the command. The
// leader decides the command's time, from its clock.
func (o *Orchestrator) propose(ctx context.Context, c *catalog.Command) (catalog.ApplyResult, error) {
	if c.Time.IsZero() {
		c.Time = o.clock.Now().UTC()
	}
	return o.raft.Apply(ctx, c)
}

func (o *Orchestrator) jobLog(ctx context.Context, id uint64, level string, format string, args ...any) {
	l := o.logLine(level, format, args...)
	o.logged(id, []catalog.LogLine{l})
	_, err := o.apply(ctx, &catalog.Command{Op: catalog.OpAppendJobLog, JobLog: &catalog.JobLog{
		JobID: id, Lines: []catalog.LogLine{l},
	}})
	if err != nil {
		o.log.Warn("job log not recorded", "job", id, "err", err)
	}
}

// logged writes a job's log lines to the server's log too.
func (o *Orchestrator) logged(id uint64, lines []catalog.LogLine) {
	for _, l := range lines {
		o.log.Info("job log", "job", id, "level", l.Level, "msg", l.Msg)
	}
}

// logLine makes a job log line for a command that changes the job itself
// (a commit, an end): in the same change, a reader that sees the job
// ended also sees the lines that say how.
func (o *Orchestrator) logLine(level string, format string, args ...any) catalog.LogLine {
	return catalog.LogLine{Time: o.clock.Now().UTC(), Level: level, Msg: fmt.Sprintf(format, args...)}
}

func (o *Orchestrator) publishEvent(ev wire.JobEvent) { o.roles.Publish(ev) }

// CatalogError makes a catalog refusal, or a read that found nothing, an
// *Error of the same code (the catalog's codes are the wire's), with the
// catalog's error as its cause.
func CatalogError(err error) error {
	var ce *catalog.Error
	if errors.As(err, &ce) {
		return &Error{Code: ce.Code, Msg: ce.Msg, Hint: ce.Hint, Err: err}
	}
	if errors.Is(err, catalog.ErrNotFound) {
		return errorf(ErrNotFound, "", "%w", err)
	}
	return err
}

// HumanBytes writes a size for a job log line.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// call is a start request in progress, whose answer a concurrent repeat
// waits for.
type call struct {
	done chan struct{}
	resp any
	err  error
}

// Shared runs fn once at a time per key: a repeat of a start while the
// first is still running gets the first one's answer. Tape labels and
// library moves share the table with the job starts.
func Shared[T any](o *Orchestrator, ctx context.Context, key string, fn func() (T, error)) (T, error) {
	o.mu.Lock()
	if o.calls == nil {
		o.calls = map[string]*call{}
	}
	if c := o.calls[key]; c != nil {
		o.mu.Unlock()
		select {
		case <-c.done:
			resp, _ := c.resp.(T)
			return resp, c.err
		case <-ctx.Done():
			var zero T
			return zero, errorf(ErrOutcomeUnknown, "", "request %s is still being carried out", key)
		}
	}
	c := &call{done: make(chan struct{})}
	o.calls[key] = c
	o.mu.Unlock()
	resp, err := fn()
	o.mu.Lock()
	c.resp, c.err = resp, err
	delete(o.calls, key)
	close(c.done)
	o.mu.Unlock()
	return resp, err
}
