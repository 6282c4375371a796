package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/internal/buildinfo"
	"github.com/cairnbackup/cairn/internal/configfile"
	"github.com/cairnbackup/cairn/pki"
	"github.com/cairnbackup/cairn/wire"
)

// Version is what the agent registers with: the binary's, stamped at
// link time.
var Version = buildinfo.Version()

// Config of an agent. Flags and the config file fill the same struct: a
// field's name in the file is its flag's (package internal/configfile).
type Config struct {
	// Name is the client's name in the catalog and in NATS subjects:
	// letters, digits, '-' and '_'.
	Name string `json:"name" config:"default=the host name"`
	// NATSURL is the NATS server (or servers, separated by commas) where
	// the agent reaches the servers; it connects out, so a client needs no
	// inbound port.
	NATSURL string `json:"nats" config:"alias=nats_url"`
	// NATSAuth is the NATS connection's TLS and credential (empty: plain,
	// as to the embedded server of cairn dev).
	NATSAuth wire.NATSAuth `json:"nats_auth" config:"inline=nats_"`
	// Site places the client: backups prefer a storage node of the same site.
	Site string `json:"site"`
	// Labels describe the client as KEY=VALUE ("role=db", "env=prod"),
	// reported at every registration: a policy that selects clients by
	// label covers this one, even one defined before the agent first
	// started. An agent that reports none keeps the labels it had.
	Labels []string `json:"labels" config:"flag=label"`
	// Group is the id of the group of servers the agent belongs to
	// ('cairn cluster status' shows it). Empty: the agent learns it from
	// its first registration and keeps it until it stops; set it where
	// servers of several groups share the NATS, since a request that
	// names no group is refused there.
	Group string `json:"group"`
	// HeartbeatInterval is how often the agent tells the servers it lives.
	HeartbeatInterval time.Duration `json:"heartbeat_interval"`
	// ProgressInterval is how often a running job reports progress.
	ProgressInterval time.Duration `json:"progress_interval"`
	// MaxBytesPerSecond caps the rate a backup streams at, in bytes per
	// second ("20M"), so that a backup in working hours leaves the
	// client's uplink usable; 0 is no cap.
	MaxBytesPerSecond int64 `json:"max_bytes_per_second" config:"size"`
	// DataTimeout bounds every wait on a storage node's data port: a
	// write the node does not take and a read that gets nothing fail
	// after it, so a dead or unreachable node fails the job instead of
	// holding it. A node that works without sending (mounting a tape,
	// waiting for one) sends keepalives, which count.
	DataTimeout time.Duration `json:"data_timeout"`
	// AllowedCommandDirs are the directories whose programs a backup may
	// run on this client (application steps, command sources) with any
	// arguments: a command's program must be an absolute path directly in
	// one of them. The servers ask for commands; the agent, which runs
	// them as root, runs only those its own configuration allows, so a
	// compromised server cannot run what it likes on every client. Empty,
	// with allowed_commands empty too: no command runs.
	AllowedCommandDirs []string `json:"allowed_command_dirs"`
	// AllowedCommands are exact command lines a backup may run, compared
	// argument by argument ("/usr/bin/pg_dump -Fc mydb").
	AllowedCommands []string `json:"allowed_commands"`
	// AllowShellCommands runs a command that allowed_commands lists
	// verbatim with /bin/sh -c, so it may use pipes, redirections and
	// variables. Otherwise no command runs through a shell: its line is
	// split into arguments (single and double quotes, backslash) and one
	// with a character only a shell gives meaning to is refused.
	AllowShellCommands bool `json:"allow_shell_commands"`
	// SpoolDir holds the output of a command source while its command
	// runs, in a file with no name that goes when the backup ends: the
	// stream states a file's size before its content, so the output is
	// sent once the command has ended, and the directory needs room for
	// the largest dump. Empty: $TMPDIR, or /tmp.
	SpoolDir string `json:"spool_dir"`
	// ConfigFile is the file this configuration was read from, if any,
	// for the hint of a refused command.
	ConfigFile string `json:"-"`
}

// CommandPolicy is the policy the configuration gives the commands of
// application steps and command sources.
func (c *Config) CommandPolicy() CommandPolicy {
	return CommandPolicy{Dirs: c.AllowedCommandDirs, Commands: c.AllowedCommands, AllowShell: c.AllowShellCommands}
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Name:              host,
		NATSURL:           "nats://127.0.0.1:4222",
		HeartbeatInterval: 5 * time.Second,
		ProgressInterval:  time.Second,
		DataTimeout:       5 * time.Minute,
	}
}

// Validate names the first bad field, as its flag and config file field
// are named (configfile.FieldError), and how to fix it.
func (c *Config) Validate() error {
	if err := wire.ValidateName("client", c.Name); err != nil {
		return configfile.Fieldf("name", "%w: set --name", err)
	}
	if _, err := wire.ParseLabels(c.Labels); err != nil {
		return configfile.Fieldf("labels", "%v", err)
	}
	if c.NATSURL == "" {
		return configfile.Fieldf("nats", "the NATS URL is empty: set --nats")
	}
	if err := c.NATSAuth.Validate(); err != nil {
		return err
	}
	if c.HeartbeatInterval <= 0 {
		return configfile.Fieldf("heartbeat_interval", "must be positive: give a duration, like 5s")
	}
	if c.ProgressInterval <= 0 {
		return configfile.Fieldf("progress_interval", "must be positive: give a duration, like 1s")
	}
	if c.DataTimeout < 3*dataplane.KeepaliveInterval {
		return configfile.Fieldf("data_timeout", "%s is too short: a storage node sends a keepalive every %s while it works; use at least %s",
			c.DataTimeout, dataplane.KeepaliveInterval, 3*dataplane.KeepaliveInterval)
	}
	if err := c.CommandPolicy().Validate(); err != nil {
		return err
	}
	if c.SpoolDir != "" && !filepath.IsAbs(c.SpoolDir) {
		return configfile.Fieldf("spool_dir", "%q is not an absolute path: give the directory's full path, or leave it empty for $TMPDIR", c.SpoolDir)
	}
	if c.MaxBytesPerSecond < 0 {
		return configfile.Fieldf("max_bytes_per_second", "negative: set it to 0 for no cap, or a rate in bytes per second (\"20M\")")
	}
	return nil
}

// Agent is the client role: it takes job orders over NATS and streams to and
// from storage nodes.
type Agent struct {
	cfg Config
	// killGrace is how long a command that must stop has between
	// SIGTERM and SIGKILL.
	killGrace time.Duration
	// keepaliveEvery is how often the data connection gets a keepalive
	// while commands run and nothing is sent.
	keepaliveEvery time.Duration
	log            *slog.Logger
	metrics        *metrics
	nc             *nats.Conn
	sub            *nats.Subscription

	// instance names this process to the servers, with its host and pid:
	// a restarted agent is a new instance, and two alive at once under
	// one name are a clone (AgentRegisterReq).
	instance string
	hostname string
	pid      int
	// group is the group the agent belongs to: Config.Group, or what its
	// first registration answered. Every request names it.
	group *wire.Group

	mu         sync.Mutex
	registered bool
	// stopping: Drain runs; no order is taken, and the jobs that end are
	// handed back. idle is closed when the last job ends after that.
	stopping bool
	idle     chan struct{}
	jobs     map[uint64]*runningJob
	// finished keeps the reports of recent jobs: an order for a job the
	// agent already ran (a new leader not sure it was sent) gets its report
	// again instead of a second run.
	finished      map[uint64]wire.JobDoneReq
	finishedOrder []uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the heartbeat loop, jobs and their reports
	// requests owns the goroutines answering the servers' orders: Close
	// waits for them before it waits for the jobs they may start.
	requests wire.Requests
}

// New prepares an agent.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	host, _ := os.Hostname()
	instance := uuid.NewString()
	return &Agent{
		cfg: cfg, killGrace: killGrace, keepaliveEvery: dataplane.KeepaliveInterval, log: logger.With("component", "agent", "client", cfg.Name, "instance", instance[:8]),
		instance: instance, hostname: host, pid: os.Getpid(), group: wire.NewGroup(cfg.Group),
		metrics: newMetrics(reg), jobs: map[uint64]*runningJob{}, finished: map[uint64]wire.JobDoneReq{},
	}, nil
}

// Start connects to NATS, takes orders and registers with the servers
// (retried in the background until one answers).
func (a *Agent) Start(ctx context.Context) error {
	nc, err := wire.Connect(a.cfg.NATSURL, "cairn-agent-"+a.cfg.Name, a.cfg.NATSAuth, wire.Inbox(wire.KindAgent, a.cfg.Name), a.log)
	if err != nil {
		return err
	}
	a.nc = nc
	a.metrics.nats.Set(nc)
	a.ctx, a.cancel = context.WithCancel(ctx)
	r := wire.NewRouter()
	r.Handle(wire.OpRunBackup, wire.Typed(a.onBackup))
	r.Handle(wire.OpRunRestore, wire.Typed(a.onRestore))
	r.Handle(wire.OpCancel, wire.Typed(a.onCancel))
	r.Handle(wire.OpCheckBackup, wire.Typed(a.onCheckBackup))
	r.Handle(wire.OpCheckRestore, wire.Typed(a.onCheckRestore))
	r.Handle(wire.OpPing, wire.Typed(func(context.Context, string, wire.Empty) (wire.Empty, error) { return wire.Empty{}, nil }))
	r.Handle(wire.OpAgentDuplicate, wire.Typed(func(_ context.Context, _ string, d wire.AgentDuplicate) (wire.Empty, error) {
		a.noteDuplicate(&d)
		return wire.Empty{}, nil
	}))
	prefix := wire.AgentSubject(a.cfg.Name, "")
	sub, err := wire.ServeOrders(a.ctx, nc, prefix+">", "agent", a.cfg.Name, a.log, &a.requests, a.group.ID, r.Dispatch(func(subject string) (string, bool) {
		if len(subject) > len(prefix) {
			return subject[len(prefix):], true
		}
		return "", false
	}))
	if err != nil {
		nc.Close()
		return err
	}
	a.sub = sub
	if err := wire.Flush(nc); err != nil {
		nc.Close()
		return fmt.Errorf("subscribe on NATS: %w", err)
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.heartbeatLoop(a.ctx)
	}()
	a.log.Info("agent started", "nats", a.cfg.NATSURL)
	return nil
}

// Registered reports whether a server accepted the agent's registration.
func (a *Agent) Registered() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.registered
}

// Close cancels running jobs and disconnects; the jobs it cuts off are
// reported handed back, as by Drain, which waits for them.
func (a *Agent) Close() error {
	a.mu.Lock()
	a.stopping = true
	a.mu.Unlock()
	if a.cancel != nil {
		a.cancel()
	}
	if a.sub != nil {
		_ = a.sub.Unsubscribe()
	}
	a.requests.Close()
	a.wg.Wait()
	if a.nc != nil {
		a.nc.Close()
	}
	return nil
}

func (a *Agent) heartbeatLoop(ctx context.Context) {
	wire.KeepRegistered(ctx, a.log, a.cfg.HeartbeatInterval, a.Registered, a.register, a.beat)
}

// register registers the agent with the servers: its host, its labels, its instance
// and the jobs it runs.
func (a *Agent) register(ctx context.Context) error {
	labels, _ := wire.ParseLabels(a.cfg.Labels) // Validate refused bad ones
	req := wire.AgentRegisterReq{Name: a.cfg.Name, Hostname: a.hostname, OS: runtime.GOOS, Arch: runtime.GOARCH, Version: Version, Site: a.cfg.Site, Labels: labels, ReportsLabels: true,
		Instance: a.instance, PID: a.pid, Running: a.running()}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var resp wire.AgentRegisterResp
	if err := wire.RequestIn(rctx, a.nc, a.group.ID(), wire.FromAgentSubject(a.cfg.Name, wire.OpAgentRegister), req, &resp); err != nil {
		return err
	}
	learned := a.group.Learn(resp.Group)
	if !a.Registered() {
		a.log.Info("registered with the servers", "hostname", a.hostname, "pid", a.pid, "group", a.group.ID())
	}
	if learned {
		a.log.Info("the servers' group is learned from the registration: every request names it from now on, until the agent stops", "group", resp.Group)
	}
	a.noteDuplicate(resp.Duplicate)
	a.mu.Lock()
	a.registered = true
	a.mu.Unlock()
	return nil
}

// beat tells the servers the agent lives, what it runs and whether it
// stops.
func (a *Agent) beat() {
	_ = wire.Publish(a.nc, wire.AgentBeatSubject(a.cfg.Name), wire.AgentHeartbeat{
		Running: a.running(), Instance: a.instance, Hostname: a.hostname, PID: a.pid, Stopping: a.isStopping(), Group: a.group.ID(),
	})
}

// noteDuplicate logs that another agent runs under this client's name, as
// the servers said (nil: none). An error, every time the servers say so:
// until one of the two stops, the jobs of this client cannot run.
func (a *Agent) noteDuplicate(d *wire.AgentDuplicate) {
	if d == nil {
		return
	}
	var others []string
	for _, in := range d.Instances {
		if in.ID != a.instance {
			others = append(others, fmt.Sprintf("host %s, pid %d, instance %.8s", in.Hostname, in.PID, in.ID))
		}
	}
	if len(others) == 0 {
		return
	}
	a.log.Error("another agent runs as this client: the servers refuse this client's jobs until one of them stops",
		"client", a.cfg.Name, "other", strings.Join(others, "; "), "this", fmt.Sprintf("host %s, pid %d", a.hostname, a.pid), "hint", d.Hint)
}

// request sends a request to the servers, riding out a leader election.
func (a *Agent) request(ctx context.Context, op string, req, resp any) error {
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return wire.RequestRetryIn(rctx, a.nc, a.group.ID(), wire.FromAgentSubject(a.cfg.Name, op), req, resp, 10*time.Second)
}

// report tells the servers how a job ended. It is retried for a while: a
// lost report leaves the job to the server's watchdog.
func (a *Agent) report(done wire.JobDoneReq) {
	done.Fit(a.nc.MaxPayload())
	a.mu.Lock()
	a.rememberLocked(done)
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		err := a.request(ctx, wire.OpJobDone, done, nil)
		if err == nil || wire.CodeOf(err) == wire.CodeNotFound || ctx.Err() != nil {
			if err != nil {
				a.log.Warn("job report not delivered", "job", done.JobID, "err", err)
			}
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// rememberLocked keeps a job's report, so that an order for that attempt
// again gets the report instead of a second run. The caller holds a.mu.
func (a *Agent) rememberLocked(done wire.JobDoneReq) {
	if _, ok := a.finished[done.JobID]; !ok {
		a.finishedOrder = append(a.finishedOrder, done.JobID)
		if len(a.finishedOrder) > maxFinished {
			delete(a.finished, a.finishedOrder[0])
			a.finishedOrder = a.finishedOrder[1:]
		}
	}
	a.finished[done.JobID] = done
}

// maxFinished is how many finished jobs' reports the agent keeps.
const maxFinished = 512

// runningJob is a job the agent claimed: its attempt, and its context,
// which a cancel order ends with the servers' reason.
type runningJob struct {
	attempt int
	ctx     context.Context
	cancel  context.CancelCauseFunc
	done    chan struct{} // closed once the job has let go of its id
}

// earlierAttemptWait bounds how long an order of a later attempt waits for
// the earlier attempt still ending here (its failure on its way to the
// servers) to let go.
const earlierAttemptWait = 5 * time.Second

// endEarlierAttempt stops an earlier attempt of job id that is still
// ending here before attempt is claimed: the servers have moved on, and an
// order taken but not run would cost them an attempt and a liveness
// timeout. It refuses the order, to be sent again, if the earlier attempt
// does not let go in time.
func (a *Agent) endEarlierAttempt(id uint64, attempt int) error {
	a.mu.Lock()
	j := a.jobs[id]
	a.mu.Unlock()
	if j == nil || j.attempt >= attempt {
		return nil
	}
	j.cancel(fmt.Errorf("attempt %d of job %d is over: the servers ordered attempt %d", j.attempt, id, attempt))
	t := time.NewTimer(earlierAttemptWait)
	defer t.Stop()
	select {
	case <-j.done:
		return nil
	case <-t.C:
		return wire.Errorf(wire.CodeUnavailable, "", "attempt %d of job %d is still ending on client %s; attempt %d can start once it has", j.attempt, id, a.cfg.Name, attempt)
	}
}

// claim takes attempt of job id for this agent unless it runs the job or
// ran that attempt already; for an attempt it ran, the report is sent again,
// since the server asking again means it lost it. A later attempt (the
// server sent the job to another storage node) runs, once an earlier one
// still ending here has let go (endEarlierAttempt). A claimed job must be
// started with track or let go with unclaim.
func (a *Agent) claim(id uint64, attempt int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopping {
		return false
	}
	if _, running := a.jobs[id]; running {
		return false
	}
	if done, finished := a.finished[id]; finished && done.Attempt >= attempt {
		// Under a.mu with stopping false: Close, which sets it under
		// a.mu, waits for this report.
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.report(done)
		}()
		return false
	}
	ctx, cancel := context.WithCancelCause(a.ctx)
	a.jobs[id] = &runningJob{attempt: attempt, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	return true
}

// onCancel stops a job at once on the servers' order: its context ends
// with their reason, which closes its data connection and stops its
// restore before the next record, so nothing more is written to the
// target. An order about another attempt than the one running, or a job
// not running, changes nothing; one that comes before the job's order
// keeps that attempt from starting.
func (a *Agent) onCancel(_ context.Context, _ string, o wire.CancelJob) (wire.CancelResult, error) {
	cause := wire.Errorf(wire.CodeAborted, "", "job %d was stopped by the servers: %s", o.JobID, o.Reason)
	a.mu.Lock()
	defer a.mu.Unlock()
	if j := a.jobs[o.JobID]; j != nil {
		if o.Attempt != 0 && j.attempt != 0 && o.Attempt != j.attempt {
			return wire.CancelResult{}, nil
		}
		if done, ok := a.finished[o.JobID]; ok && done.Attempt == j.attempt {
			// Reported already, and only winding down: the servers
			// heard its end, so it is not running for them.
			return wire.CancelResult{}, nil
		}
		a.log.Warn("stopping a job on the servers' order", "job", o.JobID, "attempt", j.attempt, "reason", o.Reason)
		j.cancel(cause)
		return wire.CancelResult{Running: true}, nil
	}
	if done, ok := a.finished[o.JobID]; !ok || done.Attempt < o.Attempt {
		a.rememberLocked(wire.JobDoneReq{JobID: o.JobID, Attempt: o.Attempt, Error: cause})
	}
	return wire.CancelResult{}, nil
}

func (a *Agent) unclaim(id uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if j := a.jobs[id]; j != nil {
		j.cancel(nil)
		close(j.done)
	}
	delete(a.jobs, id)
}

// Drain winds the agent down before it stops (SIGTERM): it takes no new
// order, and hands its running jobs back to the servers: each is cut off
// and reported as handed back (wire.CodeHandedBack), so a backup starts
// over with its next attempt when the agent is back, instead of failing as
// a fault of the client. It returns when the reports are sent, or when ctx
// ends.
func (a *Agent) Drain(ctx context.Context) {
	a.mu.Lock()
	if a.stopping {
		a.mu.Unlock()
		return
	}
	a.stopping = true
	a.idle = make(chan struct{})
	cancels := make([]context.CancelCauseFunc, 0, len(a.jobs))
	ids := make([]uint64, 0, len(a.jobs))
	for id, j := range a.jobs {
		cancels = append(cancels, j.cancel)
		ids = append(ids, id)
	}
	if len(a.jobs) == 0 {
		close(a.idle)
	}
	idle := a.idle
	a.mu.Unlock()
	if a.sub != nil {
		_ = a.sub.Unsubscribe()
	}
	if a.nc != nil {
		// The servers send no order to a stopping agent, and queue what
		// it hands back until it is back.
		a.beat()
		_ = a.nc.FlushTimeout(5 * time.Second)
	}
	if len(ids) == 0 {
		return
	}
	a.log.Info("stopping: handing the running jobs back to the servers", "jobs", ids)
	for _, cancel := range cancels {
		cancel(nil)
	}
	select {
	case <-idle:
		a.log.Info("every running job was handed back")
	case <-ctx.Done():
		a.log.Warn("stopping before every job was handed back; the servers' watchdog requeues the rest")
	}
}

// isStopping reports whether Drain runs.
func (a *Agent) isStopping() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stopping
}

// handedBack is the report of a job that a stopping agent cut off, or nil
// when the job ended for another reason (err).
func (a *Agent) handedBack(ctx context.Context, kind string, err error, files int64, to string) *wire.Error {
	if ctx.Err() == nil || !a.isStopping() {
		return nil
	}
	if kind == "restore" {
		// Not started over by itself: the entries restored so far are
		// in the target, and whoever asked should decide whether to
		// restore over them.
		return wire.Errorf(wire.CodeHandedBack, fmt.Sprintf("rerun the restore once the agent is back; pass --force to restore over what is in %s", to),
			"the agent of client %s stopped during the restore (%d files were restored to %s)", a.cfg.Name, files, to)
	}
	return wire.Errorf(wire.CodeHandedBack, "", "the agent of client %s stopped during the %s and handed it back (%w)", a.cfg.Name, kind, err)
}

// running lists the jobs in progress, for the heartbeat.
func (a *Agent) running() []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]uint64, 0, len(a.jobs))
	for id := range a.jobs {
		ids = append(ids, id)
	}
	return ids
}

// track runs a claimed job in the background, cancellable when the agent
// stops or the servers order it stopped.
func (a *Agent) track(id uint64, run func(ctx context.Context)) {
	a.mu.Lock()
	j := a.jobs[id]
	a.mu.Unlock()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer func() {
			a.mu.Lock()
			if a.jobs[id] == j {
				delete(a.jobs, id)
			}
			close(j.done)
			if a.idle != nil && len(a.jobs) == 0 {
				select {
				case <-a.idle:
				default:
					close(a.idle)
				}
			}
			a.mu.Unlock()
			j.cancel(nil)
		}()
		run(j.ctx)
	}()
}

// progressWhile reports a job's progress until the returned stop is
// called, which waits for the reporting to end: nothing of a job outlives
// it.
func (a *Agent) progressWhile(f func() wire.Progress) (stop func()) {
	done, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		a.progressLoop(done, f)
	}()
	return func() {
		close(done)
		<-ended
	}
}

// progressLoop publishes p() every ProgressInterval until stop is closed.
func (a *Agent) progressLoop(stop <-chan struct{}, p func() wire.Progress) {
	t := time.NewTicker(a.cfg.ProgressInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			progress := p()
			progress.Group = a.group.ID()
			_ = wire.Publish(a.nc, wire.AgentProgressSubject(a.cfg.Name), progress)
		}
	}
}

// LoadedCerts are the certificates the agent presents and trusts now: its
// NATS client certificate and CA.
func (a *Agent) LoadedCerts() []pki.LoadedCert { return wire.LoadedCerts(a.nc) }

// Reload reads the NATS TLS files again (SIGHUP), logging what it reloaded;
// a file that does not load leaves what was in use.
func (a *Agent) Reload(context.Context) error {
	said, err := wire.ReloadTLS(a.nc)
	for _, what := range said {
		a.log.Info("reloaded", "what", what)
	}
	a.log.Info("every other setting takes effect at a restart")
	if err != nil {
		a.log.Error("reload failed", "err", err)
	}
	return err
}
