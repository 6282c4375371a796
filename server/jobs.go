package server

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// jobRun is the leader's live view of a running job; the catalog holds the
// rest. It is rebuilt from the catalog when a server becomes leader.
type jobRun struct {
	id           uint64
	typ          catalog.JobType
	node, client string
	started      time.Time
	lastActivity time.Time
	ordered      time.Time // when the agent last answered the job's order (or the order gave up)
	ordering     bool      // an order is on its way to the agent
	confirmed    time.Time // when the agent's heartbeat last listed the job
	progress     *wire.Progress
	waiting      string     // what the job waits for on its storage node ("insert tape X")
	base         *treePager // backup: the tree it is compared against
	plan         *planner   // restore: which blocks to read
}

// agentOrderTimeout bounds how long an agent may take to accept an order.
const agentOrderTimeout = 15 * time.Second

func (s *Server) startRun(job *catalog.Job) *jobRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &jobRun{id: job.ID, typ: job.Type, node: job.Node, client: job.Client, started: s.clock.Now(), lastActivity: s.clock.Now(),
		waiting: job.Waiting}
	s.runs[job.ID] = r
	return r
}

func (s *Server) run(id uint64) *jobRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs[id]
}

func (s *Server) noteActivity(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.runs[id]; r != nil {
		r.lastActivity = s.clock.Now()
	}
}

func (s *Server) finishRun(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.runs, id)
}

func (s *Server) sign(t ticket.Ticket) (string, error) {
	if g := s.group(); g != nil && !s.signsForGroup(g) {
		return "", wire.Errorf(wire.CodeKey, kekHint,
			"server %s signs job tickets with a key that is not its group's: storage nodes would refuse them", s.cfg.Name)
	}
	now := s.clock.Now().UTC()
	t.Issued = now
	t.Expires = now.Add(s.cfg.TicketTTL)
	return ticket.Sign(t, s.keys().signer)
}

// endpoint is how an agent reaches a storage node's data port.
func (s *Server) endpoint(nodeID string) (wire.DataEndpoint, error) {
	n, err := s.store.Node(nodeID)
	if err != nil {
		return wire.DataEndpoint{}, catalogError(err)
	}
	if ok, seen := s.online(s.nodes, nodeID); !ok {
		return wire.DataEndpoint{}, wire.Errorf(wire.CodeUnavailable, fmt.Sprintf("start 'cairn storagenode' for node %s", nodeID),
			"storage node %s is offline (%s)", nodeID, lastSeen(seen))
	}
	return wire.DataEndpoint{Node: n.ID, Addr: n.DataAddr, CertSHA256: n.CertSHA256}, nil
}

func lastSeen(t time.Time) string {
	if t.IsZero() {
		return "not seen since this server started"
	}
	return "last seen " + t.UTC().Format(time.RFC3339)
}

// knownClient checks that a client has registered. Its agent may be
// offline: the job then waits for it in the queue.
func (s *Server) knownClient(name string) (*catalog.Client, error) {
	if err := wire.ValidateName("client", name); err != nil {
		return nil, err
	}
	c, err := s.store.Client(name)
	if err != nil {
		return nil, wire.Errorf(wire.CodeUnknownClient, "",
			"client %q is not known: no agent of that name has registered", name)
	}
	return c, nil
}

func cleanPaths(kind string, paths []fileindex.Path) ([]string, error) {
	var out []string
	for _, p := range paths {
		if !filepath.IsAbs(string(p)) {
			return nil, wire.Errorf(wire.CodeInvalidArgument, "give absolute paths, as they are on the client", "%s \"%s\" is not an absolute path", kind, fileindex.Escape(string(p)))
		}
		out = append(out, filepath.Clean(string(p)))
	}
	return out, nil
}

func (s *Server) startBackup(ctx context.Context, _ string, req wire.BackupStartReq) (wire.JobStarted, error) {
	digestReq := req
	digestReq.Start = wire.Start{}
	digest := requestDigest(wire.OpBackupStart, digestReq)
	what := fmt.Sprintf("the backup of %s", req.Client)
	return s.startJobOnce(ctx, what, req.Start, digest, func() (*catalog.Job, func(uint64), error) {
		return s.backupJob(ctx, req)
	})
}

// backupJob checks a backup request and makes its job.
func (s *Server) backupJob(ctx context.Context, req wire.BackupStartReq) (*catalog.Job, func(uint64), error) {
	client, err := s.knownClient(req.Client)
	if err != nil {
		return nil, nil, err
	}
	if len(req.Paths) == 0 {
		return nil, nil, wire.Errorf(wire.CodeInvalidArgument, "pass --path DIR (repeat it for several)", "nothing to back up: no path given")
	}
	paths, err := cleanPaths("path", req.Paths)
	if err != nil {
		return nil, nil, err
	}
	for _, ex := range req.Excludes {
		// As the agent's walk parses it: a pattern it would refuse
		// fails the request, not a job.
		if _, err := fileindex.ParseExclude(string(ex)); err != nil {
			return nil, nil, wire.Errorf(wire.CodeInvalidArgument, "see 'cairn backup --help' for the patterns --exclude takes", "%v", err)
		}
	}
	level := catalog.Level(req.Level)
	switch level {
	case "":
		level = catalog.LevelIncremental
	case catalog.LevelFull, catalog.LevelIncremental, catalog.LevelDifferential:
	default:
		return nil, nil, wire.Errorf(wire.CodeInvalidArgument, "use full, incremental or differential", "backup level %q is not known", req.Level)
	}
	poolName := req.Pool
	if poolName == "" {
		poolName = client.DefaultPool
	}
	if poolName == "" {
		poolName = s.cfg.DefaultPool
	}
	pool, err := s.store.Pool(poolName)
	if err != nil {
		return nil, nil, wire.Errorf(wire.CodeNotFound, "list pools with 'cairn pool list'", "pool %q does not exist", poolName)
	}
	if len(pool.Nodes) == 0 {
		return nil, nil, wire.Errorf(wire.CodeUnavailable, "start a storage node that serves it", "no storage node serves pool %s", pool.Name)
	}
	if err := s.checkOrder(ctx, client.Name, wire.OpCheckBackup, wire.CheckBackup{Paths: fileindex.Paths(paths)}); err != nil {
		return nil, nil, err
	}
	return &catalog.Job{
		Type: catalog.JobBackup, Client: client.Name, Level: level,
		Pool: pool.Name, Paths: fileindex.Paths(paths), Excludes: req.Excludes, SkipNodump: req.SkipNodump,
	}, nil, nil
}

// checkOrder asks a client's agent whether it would take an order (op,
// req) before a job is made for it. A request the agent refuses as bad
// input (a path that does not exist, a restore target that is not empty)
// is refused here and leaves no job behind, as one the servers refuse
// themselves does: no failed job in the list, none in the failed-jobs
// metric. An agent that is offline, stopping or twice, that does not
// answer in time, or that is too old to know the question, is not taken
// at its word: the job is made, and waits or runs, and the order itself
// checks again.
func (s *Server) checkOrder(ctx context.Context, client, op string, req any) error {
	if ok, _ := s.online(s.agents, client); !ok || s.agentStopping(client) || s.duplicate(client) != nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, orderCheckTimeout)
	defer cancel()
	err := wire.RequestIn(cctx, s.nc, s.groupName(), wire.AgentSubject(client, op), req, nil)
	switch code := wire.CodeOf(err); {
	case err == nil:
	case code == wire.CodeInvalidArgument, code == wire.CodeTargetNotEmpty:
		return err
	default:
		s.log.Debug("agent did not answer whether it would take an order; making the job", "client", client, "op", op, "err", err)
	}
	return nil
}

// orderCheckTimeout bounds checkOrder: an agent answers from a stat of
// its paths, and a start must not wait long on a busy one.
const orderCheckTimeout = 5 * time.Second

// estimate guesses a backup's size from the last complete backup of the same
// file set and level, for the progress ETA.
func (s *Server) estimate(b *catalog.Backup) (files, bytes int64) {
	prev, err := s.store.Backups(catalog.BackupFilter{Client: b.Client, FileSet: b.FileSet, States: []catalog.BackupState{catalog.BackupComplete}})
	if err != nil {
		return 0, 0
	}
	for _, p := range prev {
		if p.Level == b.Level {
			return p.Files, p.Bytes
		}
	}
	return 0, 0
}

// resolveBackup finds the backup a point in time names.
func (s *Server) resolveBackup(pit wire.PointInTime) (*catalog.Backup, error) {
	if pit.Client == "" {
		return nil, wire.Errorf(wire.CodeInvalidArgument, "pass --client NAME", "no client given")
	}
	if _, err := s.store.Client(pit.Client); err != nil {
		return nil, wire.Errorf(wire.CodeUnknownClient, "", "client %q is not known: no agent of that name has registered", pit.Client)
	}
	switch {
	case pit.BackupID != 0:
		b, err := s.store.Backup(pit.BackupID)
		if err != nil || b.Client != pit.Client {
			return nil, wire.Errorf(wire.CodeNotFound, "list backups with 'cairn backup list --client "+pit.Client+"'",
				"client %s has no backup %d", pit.Client, pit.BackupID)
		}
		if b.State != catalog.BackupComplete {
			return nil, wire.Errorf(wire.CodeNotFound, "choose a complete backup", "backup %d is %s, not complete", b.ID, b.State)
		}
		return b, nil
	case !pit.At.IsZero():
		b, err := s.store.BackupAt(pit.Client, pit.At)
		if err != nil {
			return nil, wire.Errorf(wire.CodeNotFound, "list backups with 'cairn backup list --client "+pit.Client+"'",
				"client %s has no complete backup at or before %s", pit.Client, pit.At.Format(time.RFC3339))
		}
		return b, nil
	}
	bs, err := s.store.Backups(catalog.BackupFilter{Client: pit.Client, States: []catalog.BackupState{catalog.BackupComplete}})
	if err != nil || len(bs) == 0 {
		return nil, wire.Errorf(wire.CodeNotFound, "run a backup first", "client %s has no complete backup", pit.Client)
	}
	return &bs[0], nil
}

func (s *Server) startRestore(ctx context.Context, _ string, req wire.RestoreStartReq) (wire.JobStarted, error) {
	digestReq := req
	digestReq.Start = wire.Start{}
	digest := requestDigest(wire.OpRestoreStart, digestReq)
	start := fmt.Sprintf("the restore of %s to %s", req.Client, req.To)
	return s.startJobOnce(ctx, start, req.Start, digest, func() (*catalog.Job, func(uint64), error) {
		return s.restoreJob(ctx, req)
	})
}

// restoreJob checks a restore request and makes its job, and the note its
// log starts with.
func (s *Server) restoreJob(ctx context.Context, req wire.RestoreStartReq) (*catalog.Job, func(uint64), error) {
	backup, err := s.resolveBackup(req.PointInTime)
	if err != nil {
		return nil, nil, err
	}
	target := req.TargetClient
	if target == "" {
		target = req.Client
	}
	if _, err := s.knownClient(target); err != nil {
		return nil, nil, err
	}
	if !filepath.IsAbs(req.To) {
		return nil, nil, wire.Errorf(wire.CodeInvalidArgument, "pass --to with an absolute directory on the target client",
			"restore target %q is not an absolute path", req.To)
	}
	roots, err := cleanPaths("restore path", req.Paths)
	if err != nil {
		return nil, nil, err
	}
	chain, err := s.store.Chain(backup.ID)
	if err != nil {
		return nil, nil, catalogError(err)
	}
	for _, b := range chain {
		if b.Node != backup.Node {
			return nil, nil, wire.Errorf(wire.CodeUnavailable, "",
				"backup %d's chain spans storage nodes %s and %s, which a restore cannot read yet", backup.ID, b.Node, backup.Node)
		}
	}
	plan := newPlanner(s.store, chain, roots, s.pageBytes())
	files, bytes, err := plan.count()
	if err != nil {
		return nil, nil, err
	}
	if files == 0 {
		if len(roots) > 0 {
			return nil, nil, wire.Errorf(wire.CodeNotFound, fmt.Sprintf("browse the backup with 'cairn ls --client %s --backup %d'", backup.Client, backup.ID),
				"backup %d of %s holds nothing at %s", backup.ID, backup.Client, escapedList(roots))
		}
		return nil, nil, wire.Errorf(wire.CodeNotFound, "", "backup %d is empty", backup.ID)
	}
	if err := s.checkOrder(ctx, target, wire.OpCheckRestore, wire.CheckRestore{To: filepath.Clean(req.To), Force: req.Force}); err != nil {
		return nil, nil, err
	}
	what := "everything"
	if len(roots) > 0 {
		what = escapedList(roots)
	}
	return &catalog.Job{
			Type: catalog.JobRestore, Client: target, Node: backup.Node, Pool: backup.Pool,
			Paths: fileindex.Paths(roots), BackupID: backup.ID, Target: filepath.Clean(req.To), Force: req.Force, Devices: req.Devices,
		}, func(id uint64) {
			s.jobLog(ctx, id, "info", "restore of %s from backup %d of %s (%d entries, %s) to %s:%s",
				what, backup.ID, backup.Client, files, humanBytes(bytes), target, filepath.Clean(req.To))
		}, nil
}

// failJob ends a job as failed, once: later reports of the same failure
// (the node's and the agent's) find it ended and change nothing. A backup's
// uncommitted index is dropped with it.
func (s *Server) failJob(ctx context.Context, id uint64, e *wire.Error) {
	job, err := s.store.Job(id)
	if err != nil || job.State.Done() {
		return
	}
	if e.Hint == "" {
		e.Hint = wire.HintFor(e.Code)
	}
	s.jobLog(ctx, id, "error", "%s", e.Message)
	if e.Hint != "" {
		s.jobLog(ctx, id, "info", "hint: %s", e.Hint)
	}
	// A running job fails at the attempt seen here: if it went back to the
	// queue and on to another attempt before this applies, the catalog
	// refuses, and the failure of the old attempt ends nothing.
	attempt := 0
	if job.State == catalog.JobRunning {
		attempt = job.Attempt
	}
	if job.Type == catalog.JobBackup {
		if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpAbortBackup, Abort: &catalog.BackupAbort{
			BackupID: job.BackupID, Code: e.Code, Msg: e.Message, Attempt: attempt,
		}}); err != nil {
			s.log.Warn("abort backup", "job", id, "err", err)
		}
	}
	running := job.State == catalog.JobRunning
	if job, err = s.store.Job(id); err == nil && !job.State.Done() {
		_, err = s.apply(ctx, &catalog.Command{Op: catalog.OpUpdateJob, JobUpdate: &catalog.JobUpdate{
			ID: id, State: catalog.JobFailed, ErrorCode: e.Code, Error: e.Message, Ended: s.clock.Now().UTC(), Attempt: attempt,
		}})
		if err != nil {
			s.log.Warn("fail job", "job", id, "err", err)
		}
	}
	if running && err == nil {
		// What the caller is told failed must not go on: the storage node
		// gives its drive back, the agent writes nothing more.
		s.stopJob(job, attempt, e.Message)
	}
	s.finishRun(id)
	state := catalog.JobFailed
	if job, err := s.store.Job(id); err == nil {
		s.metrics.jobEnded(job)
		state = job.State // canceled, when the failure came of a cancel
	}
	s.publishEvent(wire.JobEvent{JobID: id, State: string(state), Message: e.Message})
}

// stopJob orders the storage node and the agent of a job's attempt to
// stop it at once (wire.CancelJob). The orders go out in the background:
// the role that does not answer is often why the job ended, and must not
// hold up the leader. An agent that misses its order (its process was
// stopped) asks before it writes on after such a pause (RunRestore's
// Recheck).
func (s *Server) stopJob(job *catalog.Job, attempt int, reason string) {
	o := wire.CancelJob{JobID: job.ID, Attempt: attempt, Reason: reason}
	var subjects []string
	if job.Node != "" {
		subjects = append(subjects, wire.NodeSubject(job.Node, wire.OpCancel))
	}
	subjects = append(subjects, wire.AgentSubject(job.Client, wire.OpCancel))
	for _, subject := range subjects {
		select {
		case s.stops <- stopOrder{subject: subject, order: o}:
		default:
			s.log.Warn("too many cancel orders under way; this one is not sent", "job", job.ID, "to", subject)
		}
	}
}

// stopOrder is a cancel order on its way.
type stopOrder struct {
	subject string
	order   wire.CancelJob
}

// cancelTimeout bounds the wait for a node or an agent to take a cancel
// order.
const cancelTimeout = 10 * time.Second

// stopLoop sends the cancel orders stopJob queues, each on its own
// goroutine, which it owns.
func (s *Server) stopLoop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var so stopOrder
		select {
		case <-ctx.Done():
			return
		case so = <-s.stops:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, cancelTimeout)
			defer cancel()
			var res wire.CancelResult
			if err := wire.RequestIn(rctx, s.nc, s.groupName(), so.subject, so.order, &res); err != nil {
				s.log.Info("cancel order not taken", "job", so.order.JobID, "attempt", so.order.Attempt, "to", so.subject, "err", err)
				return
			}
			s.log.Info("cancel order taken", "job", so.order.JobID, "attempt", so.order.Attempt, "to", so.subject, "was_running", res.Running)
		}()
	}
}

// watch runs the leader's loops: dispatching queued jobs and watching
// running ones.
func (s *Server) watch(ctx context.Context) {
	t := s.clock.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		case <-s.wake:
		case ev := <-s.seen:
			if lctx, ok := s.leading(); ok {
				s.afterSeen(lctx, ev.name, ev.seen)
			}
			continue
		}
		lctx, ok := s.decide()
		if !ok {
			continue
		}
		// Under the term's context: a leadership lost in the middle of
		// a round stops it at its next catalog write.
		s.carryOutCancels(lctx)
		s.watchRunning(lctx)
		s.dispatchQueued(lctx)
		s.sweepStarts(lctx)
	}
}

// escapedList writes paths for a message or a log line, each as
// fileindex.Escape writes it.
func escapedList(paths []string) string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = fileindex.Escape(p)
	}
	return strings.Join(out, ", ")
}
