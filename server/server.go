package server

import (
	"context"
	"errors"
	"fmt"
	"github.com/cairnbackup/cairn/alert"
	"github.com/cairnbackup/cairn/internal/configfile"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/internal/buildinfo"
	"github.com/cairnbackup/cairn/internal/clock"
	"github.com/cairnbackup/cairn/internal/datadir"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/pki"
	"github.com/cairnbackup/cairn/server/cluster"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/server/scheduler"
	"github.com/cairnbackup/cairn/wire"
)

// Version is reported by the status operation and registered with peers:
// the binary's, stamped at link time.
var Version = buildinfo.Version()

// Server is one backup server.
type Server struct {
	cfg Config
	log *slog.Logger
	// clock is what liveness, stalls, queue waits and the catalog's times
	// are read from; tests of those timeouts move a fake one.
	clock     clock.Clock
	lock      *datadir.Lock // the data directory, held until Close
	store     *catalog.Store
	raft      *cluster.Node
	kekPath   string // where the KEK was read from, for telling the operator
	kekSource string // what chose kekPath (Config.KEKPath)
	kekState  kekCheck
	// secrets are the KEK and ticket signing key in use; next, those a
	// rotation prepared, adopted once the group has rotated to them
	// (keys, secrets.go).
	secrets atomic.Pointer[groupSecrets]
	next    atomic.Pointer[groupSecrets]
	prev    atomic.Pointer[groupSecrets] // the secrets a rotation replaced
	adoptMu sync.Mutex
	metrics *metrics
	alerts  *alert.Dispatcher // a job that failed, to webhooks and commands
	outbox  *alertOutbox      // the alerts the catalog owes, while leading (alerts.go)
	// alertDrain bounds how long Close waits for alerts still queued
	// (alertDrain, the constant, but in tests).
	alertDrain time.Duration
	raftCert   *pki.KeyPair // nil without Raft TLS

	nc       *nats.Conn
	subs     []*nats.Subscription
	dispatch map[string]wire.Handler // by the wildcard subject it serves
	seen     chan seenEvent          // agents' heartbeats for the leader to act on
	cancel   context.CancelFunc
	// orch starts and runs the jobs (package orchestrator); the server's
	// handlers and leader loop call it.
	orch *orchestrator.Orchestrator
	// sched turns policies into runs while this server leads; schedWG is
	// its goroutine, one per term (scheduling.go).
	sched   *scheduler.Scheduler
	schedWG sync.WaitGroup
	// afterRunStart, set by tests before Start, runs in the scheduler
	// after each start of a run's job, before the run is marked
	// dispatched.
	afterRunStart func(ctx context.Context)
	wg            sync.WaitGroup // the server's loops
	// requests owns the goroutines answering requests: Close waits for
	// them before Raft and the catalog they use are closed.
	requests wire.Requests

	// The leadership loop's term (leadership.go); nil while this server
	// does not decide.
	termMu sync.Mutex
	term   *leaderTerm
	// leaderTrace, set by tests before Start, hears "barrier", "decide"
	// and "lost" in the order they happen.
	leaderTrace func(event string)
	// beforeHandle, set by tests before Start, runs first in every request
	// a member answers or forwards.
	beforeHandle func(ctx context.Context, m *nats.Msg)
	// farBehind is how far a follower's catalog may lag the leader's
	// before it forwards a read at once; tests change it before Start.
	farBehind uint64

	// grants serialise volume selection per pool (per library for tape), so
	// two jobs never get the same volume for appending.
	grants grantLocks

	// groupID is the group's identity as the catalog last held it; member
	// is whether this server answers roles now (membership.go).
	groupID atomic.Pointer[cachedGroup]
	member  atomic.Bool
	serving atomic.Bool // the role subjects are subscribed and flushed to NATS
	// Owned by the leader loop.
	roleSubs    []*nats.Subscription
	seenLeader  bool
	waitLogged  bool
	keysChecked bool

	// expiryMu runs one expiry pass at a time (expiry.go): the scheduled
	// one and 'cairn prune'. The hooks are for tests, set under expiryMu:
	// retentionsHook stands in for the policies, expiryTrace hears every
	// scheduled pass, afterVolumeDelete runs between a node's deletion of
	// a volume file and the catalog's forgetting it, expiryCommands hears
	// the size of every expiry command as it goes out (the test's clock
	// moved in it makes the command look slow), and expirySizing stands
	// in for defaultExpirySizing.
	expiryMu          sync.Mutex
	retentionsHook    func() (*retentions, error)
	expiryTrace       func(wire.PruneResp, error)
	afterVolumeDelete func(volume string) error
	expiryCommands    func(backups int)
	expirySizing      *expirySizing
	// volumeDeleteWait, when set by a test, replaces volumeDeleteTimeout.
	volumeDeleteWait time.Duration
	// relock queues the orders that set volumes' object locks (objectlock.go).
	relock relocks

	mu       sync.Mutex
	others   map[string]*otherServer // servers heard that are not members
	nodes    map[string]*liveness
	agents   map[string]*liveness
	labeling map[string]bool // library/barcode of the tapes being labeled
}

// liveness is what the servers know of a node or agent from its heartbeats.
type liveness struct {
	lastSeen time.Time
	site     string
	usage    map[string]wire.PoolUsage // storage nodes: pool usage by name
	streams  int
	running  map[uint64]bool // agents: the jobs they say they work on
	suspect  time.Time       // storage nodes: when an agent lost its stream to it
	// agents: when a storage node said the agent's stream broke off. Until
	// the agent is heard from after that, it gets no order: one sent to a
	// process that died would only spend an attempt.
	lost     time.Time
	draining bool // storage nodes and agents: stopping, taking no new job
	// agents: the processes seen under the name, by instance id, while
	// they heartbeat (and a liveness timeout after).
	instances map[string]*wire.AgentInstance
	dupSaid   time.Time // agents: when the leader last told them of a duplicate
}

// New opens the catalog and joins (or bootstraps) the Raft group. Start
// connects it to NATS.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	logger = logger.With("component", "server", "server", cfg.Name)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("server data directory: %w", err)
	}
	// Before anything in it is opened: a second server on the directory
	// is told which process holds it, rather than waiting out the
	// catalog's lock.
	lock, err := datadir.Acquire(cfg.DataDir, "server")
	if err != nil {
		return nil, err
	}
	held := false
	defer func() {
		if !held {
			lock.Release()
		}
	}()
	warnInsecureRaft(cfg, logger)
	kekPath, kekSource := cfg.KEKPath()
	ticketPath := filepath.Join(cfg.DataDir, "ticket.key")
	// An existing catalog first: whether a secrets file is this group's
	// current one, an old one, or another group's, its group record says.
	// A new one is made only once the keys are in place, so a first start
	// that fails leaves no catalog that a KEK would have to match.
	catalogPath := filepath.Join(cfg.DataDir, "catalog.db")
	catalogExisted := fileExists(catalogPath)
	var store *catalog.Store
	if catalogExisted {
		if store, err = catalog.Open(catalogPath); err != nil {
			return nil, err
		}
	}
	fail := func(err error) (*Server, error) {
		if store != nil {
			store.Close()
		}
		return nil, err
	}
	if cfg.SecretsFile != "" {
		if err := installSecrets(cfg, store, kekPath, ticketPath, logger); err != nil {
			return fail(err)
		}
	}
	kek, err := loadKEK(cfg, kekPath, kekSource, catalogExisted, logger)
	if err != nil {
		return fail(err)
	}
	signer, err := keyring.LoadOrCreateSigningKey(ticketPath)
	if err != nil {
		return fail(err)
	}
	if store == nil {
		if store, err = catalog.Open(catalogPath); err != nil {
			return nil, err
		}
	}
	rc := cluster.DefaultConfig()
	rc.ID = cfg.Name
	rc.Dir = filepath.Join(cfg.DataDir, "raft")
	rc.BindAddr = cfg.RaftAddr
	rc.Bootstrap = cfg.Bootstrap
	rc.SnapshotThreshold = cfg.RaftSnapshotThreshold
	rc.TrailingLogs = cfg.RaftTrailingLogs
	rc.CatalogFloor = cfg.CatalogFloorBytes
	if cfg.RaftSnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.RaftSnapshotInterval
	}
	var raftCert *pki.KeyPair
	if !cfg.RaftTLS.Empty() {
		if rc.TLS, raftCert, err = pki.MutualTLSReloadable(cfg.RaftTLS); err != nil {
			return fail(fmt.Errorf("raft TLS: %w", err))
		}
	}
	node, err := cluster.Open(rc, store, logger)
	if err != nil {
		return fail(err)
	}
	s := &Server{
		cfg: cfg, log: logger, clock: clock.Real(), store: store, raft: node, kekPath: kekPath, kekSource: kekSource, raftCert: raftCert,
		farBehind: farBehind,
		nodes:     map[string]*liveness{}, agents: map[string]*liveness{}, others: map[string]*otherServer{},
		seen:   make(chan seenEvent, 64),
		relock: relocks{kick: make(chan struct{}, 1)},
		outbox: newAlertOutbox(), alertDrain: alertDrain,
	}
	s.orch = s.newOrchestrator()
	s.sched = s.newScheduler()
	s.secrets.Store(newGroupSecrets(kek, signer))
	s.metrics = newMetrics(s, reg)
	// Read now, as its CA and token files are: a bad one stops the start,
	// not the first alert.
	if s.alerts, err = alert.New(cfg.Alerts, alert.Options{Logger: logger.With("component", "alert")}); err != nil {
		return fail(fmt.Errorf("server config: %w", configfile.In("alerts", err)))
	}
	if reg != nil {
		if err := s.alerts.Register(reg); err != nil {
			s.alerts.Close(context.Background())
			return fail(fmt.Errorf("alert metrics: %w", err))
		}
	}
	_ = s.checkKEK() // logs a KEK that does not open the catalog's keys
	s.lock, held = lock, true
	return s, nil
}

// Start connects to NATS, answers requests and runs the orchestrator's loops.
func (s *Server) Start(ctx context.Context) error {
	nc, err := wire.Connect(s.cfg.NATSURL, "cairn-server-"+s.cfg.Name, s.cfg.NATSAuth, wire.Inbox(wire.KindServer, s.cfg.Name), s.log)
	if err != nil {
		return err
	}
	s.nc = nc
	s.metrics.nats.Set(nc)
	ctx, s.cancel = context.WithCancel(ctx)

	if err := s.subscribe(ctx); err != nil {
		s.Close()
		return err
	}
	if err := wire.Flush(nc); err != nil {
		s.Close()
		return fmt.Errorf("subscribe on NATS: %w", err)
	}
	// Taken before the first check: a change after it is not missed.
	events := s.raft.LeaderCh()
	if s.raft.IsLeader() {
		// A group of one (cairn dev) answers as soon as Start returns.
		if err := s.beginTerm(ctx); err != nil {
			s.log.Warn("new leader: barrier failed; trying again", "err", err)
		}
		s.serveRoles(ctx)
	}
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		s.leadership(ctx, events)
	}()
	go func() {
		defer s.wg.Done()
		s.leaderLoop(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.watch(ctx)
	}()
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		s.kekLoop(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.orch.RunStops(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.diskLoop(ctx)
	}()
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.expiryLoop(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.relockLoop(ctx)
	}()
	s.log.Info("server started", "nats", s.cfg.NATSURL, "raft", s.RaftAddr())
	return nil
}

// RaftAddr is the address the Raft transport listens on: the port it bound
// when the configuration gave port 0.
func (s *Server) RaftAddr() string { return s.raft.Addr() }

// WaitLeader blocks until the Raft group has a leader.
func (s *Server) WaitLeader(ctx context.Context) error { return s.raft.WaitLeader(ctx) }

// Serving reports whether the server answers storage nodes, agents and
// admins: a member whose subscriptions the NATS server has.
func (s *Server) Serving() bool { return s.serving.Load() }

// Close stops the server: NATS first so no new work arrives, then the
// requests being answered end (their context is cancelled), then Raft and
// the catalog.
func (s *Server) Close() error {
	if s.cancel != nil {
		s.cancel()
	}
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
	s.wg.Wait()
	s.schedWG.Wait()
	s.orch.Wait()
	s.requests.Close()
	if s.alerts != nil {
		// What the leader decided to tell goes out, within a bound.
		actx, cancel := context.WithTimeout(context.Background(), s.alertDrain)
		_ = s.alerts.Close(actx)
		cancel()
	}
	if s.nc != nil {
		s.nc.Close()
	}
	var errs []error
	if err := s.raft.Shutdown(); err != nil {
		errs = append(errs, err)
	}
	if err := s.store.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := s.lock.Release(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// alertDrain bounds how long Close waits for alerts still queued.
const alertDrain = 10 * time.Second

// apply proposes a catalog command and turns refusals and failures into
// wire errors.
func (s *Server) apply(ctx context.Context, c *catalog.Command) (catalog.ApplyResult, error) {
	return s.orch.Apply(ctx, c)
}

// applyError says why a catalog change did not apply here, and whether it
// may still: a full disk names this server and the directory.
func (s *Server) applyError(err error) *wire.Error {
	var nl *cluster.NotLeaderError
	var full *catalog.DiskFullError
	var we *wire.Error
	switch {
	case errors.As(err, &we):
		return we
	case errors.As(err, &full):
		what := "its catalog"
		if full.Dir == s.raftDir() {
			what = "its Raft log"
		}
		return wire.Errorf(wire.CodeDiskFull,
			fmt.Sprintf("free space in %s, or move the server's data directory to a larger filesystem; %s goes on by itself once there is room", full.Dir, s.cfg.Name),
			"server %s cannot write %s: %w", s.cfg.Name, what, full)
	case errors.Is(err, cluster.ErrOutcomeUnknown):
		return wire.Errorf(wire.CodeOutcomeUnknown, "check with 'cairn job list' or 'cairn cluster status' what happened, then retry",
			"catalog change of unknown outcome: %w", err)
	case errors.As(err, &nl) && !errors.Is(err, cluster.ErrCommittedNotApplied):
		return wire.Errorf(wire.CodeNotLeader, "", "this server is not the leader (leader: %s)", nl.Leader)
	case errors.Is(err, catalog.ErrFSMStopped):
		return wire.Errorf(wire.CodeUnavailable, fmt.Sprintf("see the log of server %s; its catalog goes on once the cause is fixed, or after a restart", s.cfg.Name),
			"server %s: %w", s.cfg.Name, err)
	}
	return wire.Errorf(wire.CodeUnavailable, "check that a majority of the servers is running ('cairn cluster status')",
		"catalog change not committed: %w", err)
}

func (s *Server) raftDir() string { return filepath.Join(s.cfg.DataDir, "raft") }

// catalogError maps a catalog refusal onto the wire's error catalog.
var catalogError = orchestrator.CatalogError

// publishEvent tells watchers of a job about a state change or progress.
func (s *Server) publishEvent(ev wire.JobEvent) {
	ev.Group = s.groupName()
	if err := wire.PublishIn(s.nc, ev.Group, wire.JobEventSubject(ev.JobID), ev); err != nil {
		s.log.Debug("publish job event", "job", ev.JobID, "err", err)
	}
}

func (s *Server) touch(m map[string]*liveness, name string) *liveness {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := m[name]
	if l == nil {
		l = &liveness{usage: map[string]wire.PoolUsage{}}
		m[name] = l
	}
	l.lastSeen = s.clock.Now()
	return l
}

// alive reports whether a node or agent heartbeated within the liveness
// timeout. The caller holds s.mu.
func (s *Server) alive(l *liveness) bool { return s.clock.Since(l.lastSeen) < s.cfg.LivenessTimeout }

// online reports whether name heartbeated recently, and when it was seen.
func (s *Server) online(m map[string]*liveness, name string) (bool, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := m[name]
	if l == nil {
		return false, time.Time{}
	}
	return s.alive(l), l.lastSeen
}

// Drain prepares a stop (SIGTERM): a leader hands the leadership to
// another voter first, so the group's jobs and requests wait for no
// election timeout.
func (s *Server) Drain(ctx context.Context) {
	if !s.raft.IsLeader() {
		return
	}
	voters := 0
	for _, p := range s.raft.Stats().Peers {
		if p.Voter {
			voters++
		}
	}
	if voters < 2 {
		return // a group of one: nobody to hand it to
	}
	s.log.Info("stopping: handing the leadership to another server first")
	if err := s.raft.TransferLeadership(ctx); err != nil {
		s.log.Warn("leadership transfer failed; the others elect a leader when this server is gone", "err", err)
		return
	}
	s.log.Info("leadership transferred", "leader", s.raft.LeaderID())
}

// LoadedCerts are the certificates the server presents and trusts now: its
// NATS client certificate and CA, and its Raft certificate and CA.
func (s *Server) LoadedCerts() []pki.LoadedCert {
	out := wire.LoadedCerts(s.nc)
	if s.raftCert != nil {
		out = append(out, s.raftCert.Loaded("raft")...)
	}
	return out
}

// Reload reads the certificates again (SIGHUP): the NATS client TLS files
// and the Raft certificate, which every handshake after it presents. It
// logs what it reloaded and what only a restart changes; a file that does
// not load leaves what was in use.
func (s *Server) Reload(context.Context) error {
	var errs []error
	said, err := wire.ReloadTLS(s.nc)
	if err != nil {
		errs = append(errs, err)
	}
	if s.raftCert != nil {
		if _, err := s.raftCert.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("raft TLS: %w (the certificate read before stays in use)", err))
		} else {
			said = append(said, "raft certificate "+s.raftCert.Describe())
		}
	}
	for _, what := range said {
		s.log.Info("reloaded", "what", what)
	}
	s.log.Info("the Raft CA, the secrets file and every other setting take effect at a restart")
	for _, err := range errs {
		s.log.Error("reload failed", "err", err)
	}
	return errors.Join(errs...)
}
