package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/wire"
)

// endpoint is how an agent reaches a storage node's data port.
func (o *Orchestrator) endpoint(nodeID string) (wire.DataEndpoint, error) {
	n, err := o.store.Node(nodeID)
	if err != nil {
		return wire.DataEndpoint{}, CatalogError(err)
	}
	if l := o.live.Node(nodeID); !l.Online {
		return wire.DataEndpoint{}, errorf(ErrUnavailable, fmt.Sprintf("start 'cairn storagenode' for node %s", nodeID),
			"storage node %s is offline (%s)", nodeID, LastSeen(l.LastSeen))
	}
	return wire.DataEndpoint{Node: n.ID, Addr: n.DataAddr, CertSHA256: n.CertSHA256}, nil
}

func LastSeen(t time.Time) string {
	if t.IsZero() {
		return "not seen since this server started"
	}
	return "last seen " + t.UTC().Format(time.RFC3339)
}

// knownClient checks that a client has registered. Its agent may be
// offline: the job then waits for it in the queue.
func (o *Orchestrator) knownClient(name string) (*catalog.Client, error) {
	if err := wire.ValidateName("client", name); err != nil {
		return nil, relay(err)
	}
	c, err := o.store.Client(name)
	if err != nil {
		return nil, errorf(ErrUnknownClient, "",
			"client %q is not known: no agent of that name has registered", name)
	}
	return c, nil
}

func cleanPaths(kind string, paths []fileindex.Path) ([]string, error) {
	var out []string
	for _, p := range paths {
		if !filepath.IsAbs(string(p)) {
			return nil, errorf(ErrInvalidArgument, "give absolute paths, as they are on the client", "%s \"%s\" is not an absolute path", kind, fileindex.Escape(string(p)))
		}
		out = append(out, filepath.Clean(string(p)))
	}
	return out, nil
}

// BackupSpec is a backup to start: what 'cairn backup' asks for, and
// what a schedule will.
type BackupSpec struct {
	Client     string
	Paths      []fileindex.Path
	Excludes   []fileindex.Path
	Level      string // full, incremental (the default) or differential
	Pool       string // empty: the client's default pool, else the server's
	SkipNodump bool
	// OneFileSystem keeps the walk on the filesystem of each path.
	OneFileSystem bool
	// Application: the commands the backup runs on its client (steps and
	// command sources), carried to every order of the job.
	Application wire.Application
	// RequestID names the start: a repeat under the same id answers the
	// same job and never starts a second one. Empty: a fresh id, and the
	// start cannot be repeated.
	RequestID string
	// Retry says this may repeat a start whose answer was lost.
	Retry bool
	// Policy, Scheduled and Priority are a scheduled run's: its policy,
	// its scheduled time and the policy's priority, which orders the
	// queue (catalog.Job).
	Policy    string
	Scheduled time.Time
	Priority  int
}

// request is the start as the wire carries it, without its id: what its
// request digest is taken of, the same for a start from any caller.
func (b BackupSpec) request() wire.BackupStartReq {
	return wire.BackupStartReq{Client: b.Client, Paths: b.Paths, Excludes: b.Excludes, Level: b.Level, Pool: b.Pool, SkipNodump: b.SkipNodump, OneFileSystem: b.OneFileSystem,
		Application: b.Application}
}

// StartBackup checks a backup and starts its job: recorded under its
// request id, accepted, and dispatched at once when its agent and a
// storage node of its pool can take it (else it waits in the queue, and
// the answer says why). Bad input makes no job. The errors are wire
// errors, whose codes say whether the start may have taken effect
// (outcome_unknown) or certainly did not.
func (o *Orchestrator) StartBackup(ctx context.Context, spec BackupSpec) (wire.JobStarted, error) {
	digest := RequestDigest(wire.OpBackupStart, spec.request())
	what := fmt.Sprintf("the backup of %s", spec.Client)
	return o.startJobOnce(ctx, what, wire.Start{RequestID: spec.RequestID, Retry: spec.Retry}, digest, func() (*catalog.Job, func(uint64), error) {
		return o.backupJob(ctx, spec)
	})
}

// backupJob checks a backup request and makes its job.
func (o *Orchestrator) backupJob(ctx context.Context, req BackupSpec) (*catalog.Job, func(uint64), error) {
	client, err := o.knownClient(req.Client)
	if err != nil {
		return nil, nil, err
	}
	if catalog.Level(req.Level) == catalog.LevelSyntheticFull {
		return o.policyConsolidateJob(client, req)
	}
	if len(req.Paths) == 0 {
		return nil, nil, errorf(ErrInvalidArgument, "pass --path DIR (repeat it for several)", "nothing to back up: no path given")
	}
	paths, err := cleanPaths("path", req.Paths)
	if err != nil {
		return nil, nil, err
	}
	for _, ex := range req.Excludes {
		// As the agent's walk parses it: a pattern it would refuse
		// fails the request, not a job.
		if _, err := fileindex.ParseExclude(string(ex)); err != nil {
			return nil, nil, errorf(ErrInvalidArgument, "see 'cairn backup --help' for the patterns --exclude takes", "%w", err)
		}
	}
	level := catalog.Level(req.Level)
	switch level {
	case "":
		level = catalog.LevelIncremental
	case catalog.LevelFull, catalog.LevelIncremental, catalog.LevelDifferential:
	default:
		return nil, nil, errorf(ErrInvalidArgument, "use full, incremental or differential", "backup level %q is not known", req.Level)
	}
	poolName := req.Pool
	if poolName == "" {
		poolName = client.DefaultPool
	}
	if poolName == "" {
		poolName = o.cfg.DefaultPool
	}
	pool, err := o.store.Pool(poolName)
	if err != nil {
		return nil, nil, errorf(ErrNotFound, "list pools with 'cairn pool list'", "pool %q does not exist", poolName)
	}
	if len(pool.Nodes) == 0 {
		return nil, nil, errorf(ErrUnavailable, "start a storage node that serves it", "no storage node serves pool %s", pool.Name)
	}
	if err := checkApplication(req.Application, paths); err != nil {
		return nil, nil, err
	}
	if err := o.checkOrder(ctx, client.Name, wire.OpCheckBackup, wire.CheckBackup{Paths: fileindex.Paths(paths)}); err != nil {
		return nil, nil, err
	}
	return &catalog.Job{
		Type: catalog.JobBackup, Client: client.Name, Level: level,
		Pool: pool.Name, Paths: fileindex.Paths(paths), Excludes: req.Excludes, SkipNodump: req.SkipNodump, OneFileSystem: req.OneFileSystem,
		Application: catalogApplication(req.Application),
		Policy:      req.Policy, Scheduled: req.Scheduled, Priority: req.Priority,
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
func (o *Orchestrator) checkOrder(ctx context.Context, client, op string, req any) error {
	if a := o.live.Agent(client); !a.Online || a.Stopping || a.Duplicate != nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, orderCheckTimeout)
	defer cancel()
	err := o.roles.Request(cctx, wire.AgentSubject(client, op), req, nil)
	switch code := wire.CodeOf(err); {
	case err == nil:
	case code == wire.CodeInvalidArgument, code == wire.CodeTargetNotEmpty:
		return relay(err)
	default:
		o.log.Debug("agent did not answer whether it would take an order; making the job", "client", client, "op", op, "err", err)
	}
	return nil
}

// orderCheckTimeout bounds checkOrder: an agent answers from a stat of
// its paths, and a start must not wait long on a busy one.
const orderCheckTimeout = 5 * time.Second

// estimate guesses a backup's size from the last complete backup of the same
// file set and level, for the progress ETA.
func (o *Orchestrator) estimate(b *catalog.Backup) (files, bytes int64) {
	prev, err := o.store.Backups(catalog.BackupFilter{Client: b.Client, FileSet: b.FileSet, States: []catalog.BackupState{catalog.BackupComplete}})
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

// FileSetInfo is a backup's file set as the wire carries it.
func FileSetInfo(b *catalog.Backup) *wire.FileSetInfo {
	return &wire.FileSetInfo{ID: b.FileSet, Paths: b.Paths, Excludes: b.Excludes}
}

// ResolveBackup finds the backup a point in time names for the paths
// asked for (absolute and clean; none: the whole backup): by id, or the
// last complete one (at or before a time) of the file set that holds every
// path (of pit.FileSet, when given); tree.list reads with it too. A path
// that no backup holds is refused with the client's file sets listed.
func (o *Orchestrator) ResolveBackup(pit wire.PointInTime, paths []string) (*catalog.Backup, error) {
	if pit.Client == "" {
		return nil, errorf(ErrInvalidArgument, "pass --client NAME", "no client given")
	}
	if _, err := o.store.Client(pit.Client); err != nil {
		return nil, errorf(ErrUnknownClient, "", "client %q is not known: no agent of that name has registered", pit.Client)
	}
	switch {
	case pit.BackupID != 0:
		b, err := o.store.Backup(pit.BackupID)
		if err != nil || b.Client != pit.Client {
			return nil, errorf(ErrNotFound, "list backups with 'cairn backup list --client "+pit.Client+"'",
				"client %s has no backup %d", pit.Client, pit.BackupID)
		}
		if b.State != catalog.BackupComplete {
			return nil, errorf(ErrNotFound, "choose a complete backup", "backup %d is %s, not complete", b.ID, b.State)
		}
		return b, nil
	}
	b, err := o.store.LatestBackup(catalog.BackupQuery{Client: pit.Client, At: pit.At, FileSet: pit.FileSet, Paths: paths})
	var uncovered *catalog.UncoveredError
	switch {
	case err == nil:
		return b, nil
	case errors.As(err, &uncovered):
		hint := "ask for a path one of them holds, or pass --fileset ID; back up the path first if none does"
		if uncovered.UnknownFileSet {
			hint = "pass --fileset one of the ids listed (a prefix will do), or leave it out"
		}
		return nil, errorf(ErrNotFound, hint, "%w", err)
	case !errors.Is(err, catalog.ErrNotFound):
		return nil, CatalogError(err)
	case !pit.At.IsZero():
		return nil, errorf(ErrNotFound, "list backups with 'cairn backup list --client "+pit.Client+"'",
			"client %s has no complete backup at or before %s", pit.Client, pit.At.Format(time.RFC3339))
	}
	return nil, errorf(ErrNotFound, "run a backup first", "client %s has no complete backup", pit.Client)
}

// RestoreSpec is a restore to start: which backup (the latest complete
// one of Client, one by id, or the one at a time), which paths of it (none:
// everything), to which client and directory.
type RestoreSpec struct {
	wire.PointInTime
	Paths        []fileindex.Path
	TargetClient string // empty: the backup's own client
	To           string // an absolute directory on the target client
	Force        bool   // restore over what is in To
	Devices      bool   // make device nodes
	RequestID    string // as BackupSpec's
	Retry        bool
}

func (r RestoreSpec) request() wire.RestoreStartReq {
	return wire.RestoreStartReq{PointInTime: r.PointInTime, Paths: r.Paths, TargetClient: r.TargetClient, To: r.To, Force: r.Force, Devices: r.Devices}
}

// StartRestore checks a restore and starts its job, as StartBackup does.
func (o *Orchestrator) StartRestore(ctx context.Context, spec RestoreSpec) (wire.JobStarted, error) {
	digest := RequestDigest(wire.OpRestoreStart, spec.request())
	what := fmt.Sprintf("the restore of %s to %s", spec.Client, spec.To)
	return o.startJobOnce(ctx, what, wire.Start{RequestID: spec.RequestID, Retry: spec.Retry}, digest, func() (*catalog.Job, func(uint64), error) {
		return o.restoreJob(ctx, spec)
	})
}

// restoreJob checks a restore request and makes its job, and the note its
// log starts with.
func (o *Orchestrator) restoreJob(ctx context.Context, req RestoreSpec) (*catalog.Job, func(uint64), error) {
	roots, err := cleanPaths("restore path", req.Paths)
	if err != nil {
		return nil, nil, err
	}
	backup, err := o.ResolveBackup(req.PointInTime, roots)
	if err != nil {
		return nil, nil, err
	}
	target := req.TargetClient
	if target == "" {
		target = req.Client
	}
	if _, err := o.knownClient(target); err != nil {
		return nil, nil, err
	}
	if !filepath.IsAbs(req.To) {
		return nil, nil, errorf(ErrInvalidArgument, "pass --to with an absolute directory on the target client",
			"restore target %q is not an absolute path", req.To)
	}
	chain, err := o.store.Chain(backup.ID)
	if err != nil {
		return nil, nil, CatalogError(err)
	}
	for _, b := range chain {
		if b.Node != backup.Node {
			return nil, nil, errorf(ErrUnavailable, "",
				"backup %d's chain spans storage nodes %s and %s, which a restore cannot read yet", backup.ID, b.Node, backup.Node)
		}
	}
	// Only whether it holds anything: its totals are counted beside the
	// running restore (countRestore), not on the way to its start.
	empty, err := newPlanner(o.store, chain, roots, o.roles.PageBytes()).empty()
	if err != nil {
		return nil, nil, err
	}
	if empty {
		if len(roots) > 0 {
			return nil, nil, errorf(ErrNotFound, fmt.Sprintf("browse the backup with 'cairn ls --client %s --backup %d'", backup.Client, backup.ID),
				"backup %d of %s holds nothing at %s", backup.ID, backup.Client, escapedList(roots))
		}
		return nil, nil, errorf(ErrNotFound, "", "backup %d is empty", backup.ID)
	}
	if err := o.checkOrder(ctx, target, wire.OpCheckRestore, wire.CheckRestore{To: filepath.Clean(req.To), Force: req.Force}); err != nil {
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
			o.jobLog(ctx, id, "info", "restore of %s from backup %d of %s, file set %s to %s:%s",
				what, backup.ID, backup.Client, catalog.DescribeFileSet(backup.FileSet, backup.Paths, backup.Excludes),
				target, filepath.Clean(req.To))
		}, nil
}

// countRestore totals the entries and bytes a restore brings back, beside
// it: its progress shows them, and its log. A walk of the whole chain's
// index, it took 124 ms of a 3 s restore of the bench tree (50,000 files)
// from a catalog not in the page cache, when it ran before the job started
// (and again before its order went to the agent).
//
// ctx ends it when the run ends, the leadership is lost or the server
// stops; a count that did not finish leaves the totals to the next
// order's.
func (o *Orchestrator) countRestore(ctx context.Context, run *jobRun, job catalog.Job, chain []catalog.Backup) {
	files, bytes, err := newPlanner(o.store, chain, fileindex.Strings(job.Paths), o.roles.PageBytes()).count(ctx)
	o.mu.Lock()
	current := o.runs[job.ID] == run && ctx.Err() == nil
	if current {
		defer run.stopCount() // its context's resources, once it is logged
		run.stopCount = nil
		if err == nil {
			if run.progress == nil {
				run.progress = &wire.Progress{JobID: job.ID}
			}
			if run.progress.TotalFiles == 0 {
				run.progress.TotalFiles, run.progress.TotalBytes = files, bytes
			}
		}
	}
	o.mu.Unlock()
	switch {
	case !current:
	case err != nil:
		o.log.Warn("restore not counted: its progress shows no totals", "job", job.ID, "err", err)
	default:
		o.jobLog(ctx, job.ID, "info", "restore plan: %d entries, %s", files, HumanBytes(bytes))
	}
}

// failJob ends a job as failed, once: later reports of the same failure
// (the node's and the agent's) find it ended and change nothing. A backup's
// uncommitted index is dropped with it.
func (o *Orchestrator) failJob(ctx context.Context, id uint64, e error) {
	job, err := o.store.Job(id)
	if err != nil || job.State.Done() {
		return
	}
	code, msg, hint := failure(e)
	o.jobLog(ctx, id, "error", "%s", msg)
	if hint != "" {
		o.jobLog(ctx, id, "info", "hint: %s", hint)
	}
	// A running job fails at the attempt seen here: if it went back to the
	// queue and on to another attempt before this applies, the catalog
	// refuses, and the failure of the old attempt ends nothing.
	attempt := 0
	if job.State == catalog.JobRunning {
		attempt = job.Attempt
	}
	if job.Type == catalog.JobBackup {
		if _, err := o.apply(ctx, &catalog.Command{Op: catalog.OpAbortBackup, Abort: &catalog.BackupAbort{
			BackupID: job.BackupID, Code: code, Msg: msg, Attempt: attempt,
		}}); err != nil {
			o.log.Warn("abort backup", "job", id, "err", err)
		}
	}
	running := job.State == catalog.JobRunning
	if job, err = o.store.Job(id); err == nil && !job.State.Done() {
		_, err = o.apply(ctx, &catalog.Command{Op: catalog.OpUpdateJob, JobUpdate: &catalog.JobUpdate{
			ID: id, State: catalog.JobFailed, ErrorCode: code, Error: msg, Ended: o.clock.Now().UTC(), Attempt: attempt,
		}})
		if err != nil {
			o.log.Warn("fail job", "job", id, "err", err)
		}
	}
	if running && err == nil {
		// What the caller is told failed must not go on: the storage node
		// gives its drive back, the agent writes nothing more.
		o.stopJob(job, attempt, msg)
	}
	o.finishRun(id)
	state := catalog.JobFailed
	if job, err := o.store.Job(id); err == nil {
		o.mem.JobEnded(job)
		state = job.State // canceled, when the failure came of a cancel
	}
	o.publishEvent(wire.JobEvent{JobID: id, State: string(state), Message: msg})
}

// stopJob orders the storage node and the agent of a job's attempt to
// stop it at once (wire.CancelJob). The orders go out in the background:
// the role that does not answer is often why the job ended, and must not
// hold up the leader. An agent that misses its order (its process was
// stopped) asks before it writes on after such a pause (RunRestore's
// Recheck).
func (o *Orchestrator) stopJob(job *catalog.Job, attempt int, reason string) {
	stop := wire.CancelJob{JobID: job.ID, Attempt: attempt, Reason: reason}
	var subjects []string
	if job.Node != "" {
		subjects = append(subjects, wire.NodeSubject(job.Node, wire.OpCancel))
	}
	subjects = append(subjects, wire.AgentSubject(job.Client, wire.OpCancel))
	for _, subject := range subjects {
		select {
		case o.stops <- stopOrder{subject: subject, order: stop}:
		default:
			o.log.Warn("too many cancel orders under way; this one is not sent", "job", job.ID, "to", subject)
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
func (o *Orchestrator) stopLoop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var so stopOrder
		select {
		case <-ctx.Done():
			return
		case so = <-o.stops:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, cancelTimeout)
			defer cancel()
			var res wire.CancelResult
			if err := o.roles.Request(rctx, so.subject, so.order, &res); err != nil {
				o.log.Info("cancel order not taken", "job", so.order.JobID, "attempt", so.order.Attempt, "to", so.subject, "err", err)
				return
			}
			o.log.Info("cancel order taken", "job", so.order.JobID, "attempt", so.order.Attempt, "to", so.subject, "was_running", res.Running)
		}()
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
