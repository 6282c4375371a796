package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// maxAttempts bounds how often a backup is dispatched: a storage node that
// dies mid-backup sends it back to the queue, for another node of its pool.
const maxAttempts = 3

// suspectFor keeps a storage node out of the choice after an agent lost its
// stream to it, unless it registers again (it restarted) sooner. Its
// heartbeats do not clear it: one sent just before it died may arrive after.
const suspectFor = time.Minute

// candidates ranks the online nodes that can take a backup for pool p:
// same site as the client first, then the most free space for the pool,
// then the fewest streams running.
func (o *Orchestrator) candidates(p *catalog.Pool, client *catalog.Client, ld *load) (ranked []string, why string) {
	type cand struct {
		id      string
		near    bool
		free    int64
		streams int
	}
	var cs []cand
	var down []string
	// A node's heartbeat tells its streams a moment late: jobs dispatched
	// together would all see the same idle node. The jobs this leader sent
	// there count too.
	assigned := map[string]int{}
	o.mu.Lock()
	for _, r := range o.runs {
		assigned[r.node]++
	}
	o.mu.Unlock()
	for _, id := range p.Nodes {
		l := o.live.Node(id)
		switch {
		case !l.Online:
			down = append(down, id+" (offline)")
			continue
		case l.Draining:
			down = append(down, id+" (stopping: it finishes its running sessions and takes no new one)")
			continue
		case o.clock.Since(l.Suspect) < suspectFor:
			down = append(down, id+" (an agent lost its stream to it; waiting for it to restart, or a minute)")
			continue
		}
		if full := o.nodeFull(ld, id); full != "" {
			down = append(down, full)
			continue
		}
		u := l.Usage[p.Name]
		if u.TotalBytes > 0 && u.FreeBytes < int64(p.BlockRawSize)*8 {
			down = append(down, fmt.Sprintf("%s (pool full: %d bytes free)", id, u.FreeBytes))
			continue
		}
		cs = append(cs, cand{id: id, near: client != nil && client.Site != "" && client.Site == l.Site, free: u.FreeBytes, streams: max(l.Streams, assigned[id])})
	}
	sort.SliceStable(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		if a.near != b.near {
			return a.near
		}
		// Free space decides only when it differs a lot; otherwise load.
		if a.free > 2*b.free || b.free > 2*a.free {
			return a.free > b.free
		}
		return a.streams < b.streams
	})
	for _, c := range cs {
		ranked = append(ranked, c.id)
	}
	if len(ranked) == 0 {
		if len(p.Nodes) == 0 {
			return nil, fmt.Sprintf("no storage node serves pool %s", p.Name)
		}
		why = fmt.Sprintf("no storage node of pool %s can take it: %s", p.Name, strings.Join(down, ", "))
	}
	return ranked, why
}

// chainNode is the storage node of the backup a backup job builds on, ""
// for a full.
func (o *Orchestrator) chainNode(job *catalog.Job) (string, error) {
	b, err := o.store.Backup(job.BackupID)
	if err != nil {
		return "", CatalogError(err)
	}
	if b == nil || b.Parent == 0 {
		return "", nil
	}
	parent, err := o.store.Backup(b.Parent)
	if err != nil {
		return "", CatalogError(err)
	}
	if parent == nil {
		return "", nil
	}
	return parent.Node, nil
}

// setWaiting records why a queued job waits, when the reason changed.
func (o *Orchestrator) setWaiting(ctx context.Context, job *catalog.Job, why string) {
	if job.Waiting == why {
		return
	}
	if _, err := o.apply(ctx, &catalog.Command{Op: catalog.OpUpdateJob, JobUpdate: &catalog.JobUpdate{ID: job.ID, Waiting: &why}}); err != nil {
		o.log.Debug("record waiting reason", "job", job.ID, "err", err)
		return
	}
	o.jobLog(ctx, job.ID, "info", "waiting: %s", why)
	job.Waiting = why
}

// tryDispatch starts a queued job if no limit holds it, its storage node
// and agent are available, or records why not. It returns the agent's
// refusal of the order, if any, which has already failed the job. ld is
// the load the round counted (nil: counted now); a job dispatched is added
// to it.
func (o *Orchestrator) tryDispatch(ctx context.Context, job *catalog.Job, ld *load) error {
	if ld == nil {
		// A job just started: the queue is served in its order, so it
		// goes ahead at once only when no backup waits before it.
		if ahead := o.queuedAhead(job); ahead > 0 {
			o.setWaiting(ctx, job, fmt.Sprintf("%d queued backups come before it (higher priority, or scheduled earlier)", ahead))
			o.kick()
			return nil
		}
		var err error
		if ld, err = o.currentLoad(); err != nil {
			return CatalogError(err)
		}
	}
	if why := o.limited(ld, job); why != "" {
		o.setWaiting(ctx, job, why)
		return nil
	}
	if isConsolidation(job) {
		return o.dispatchConsolidation(ctx, job, ld)
	}
	agent := o.live.Agent(job.Client)
	if dup := agent.Duplicate; dup != nil {
		// Both agents would take the order; the one whose ticket comes
		// second fails with "ticket already used", which says nothing
		// of the cause.
		e := errorf(ErrDuplicateAgent, "", "%s", dup.Message)
		o.failJob(ctx, job.ID, e)
		return e
	}
	if !agent.Online {
		o.setWaiting(ctx, job, fmt.Sprintf("the agent of client %s is offline (%s)", job.Client, LastSeen(agent.LastSeen)))
		return nil
	}
	if agent.Stopping {
		o.setWaiting(ctx, job, fmt.Sprintf("the agent of client %s is stopping", job.Client))
		return nil
	}
	if lost := agent.LostSince; !lost.IsZero() {
		o.setWaiting(ctx, job, fmt.Sprintf("the agent of client %s lost its stream at %s and has not been heard from since", job.Client, lost.UTC().Format(time.RFC3339)))
		return nil
	}
	var node string
	switch job.Type {
	case catalog.JobBackup:
		pool, err := o.store.Pool(job.Pool)
		if err != nil {
			return err
		}
		client, _ := o.store.Client(job.Client)
		ranked, why := o.candidates(pool, client, ld)
		if len(ranked) == 0 {
			o.setWaiting(ctx, job, why)
			return nil
		}
		node = ranked[0]
		// An incremental or differential is written where the backups it
		// builds on are: a restore reads a chain from one storage node.
		chainNode, err := o.chainNode(job)
		if err != nil {
			return err
		}
		if chainNode != "" && chainNode != node {
			if !slices.Contains(ranked, chainNode) {
				o.setWaiting(ctx, job, fmt.Sprintf("storage node %s, which holds the backups this %s backup builds on, cannot take it now", chainNode, job.Level))
				return nil
			}
			node = chainNode
		}
	case catalog.JobRestore:
		node = job.Node
		if why := o.nodeDown(node, fmt.Sprintf("the volumes of backup %d", job.BackupID)); why != "" {
			o.setWaiting(ctx, job, why)
			return nil
		}
	}
	return o.dispatchTo(ctx, job, node, ld)
}

// nodeDown says why the storage node that alone holds what a job reads
// (holds) cannot take it now, "" when it can.
func (o *Orchestrator) nodeDown(node, holds string) string {
	n := o.live.Node(node)
	if !n.Online {
		return fmt.Sprintf("storage node %s, which holds %s, is offline (%s)", node, holds, LastSeen(n.LastSeen))
	}
	if n.Draining {
		return fmt.Sprintf("storage node %s, which holds %s, is stopping", node, holds)
	}
	return ""
}

// dispatchTo records a job running on node and sends its order.
func (o *Orchestrator) dispatchTo(ctx context.Context, job *catalog.Job, node string, ld *load) error {
	if _, err := o.apply(ctx, &catalog.Command{Op: catalog.OpDispatchJob, Dispatch: &catalog.JobDispatch{JobID: job.ID, Node: node}}); err != nil {
		return err
	}
	job, err := o.store.Job(job.ID)
	if err != nil {
		return CatalogError(err)
	}
	run := o.startRun(job)
	o.count(ld, job)
	o.publishEvent(wire.JobEvent{JobID: job.ID, State: string(job.State)})
	return o.order(ctx, run, job)
}

// order sends a running job's order to its agent, with a fresh ticket. An
// agent that already runs (or ran) the job acknowledges without starting it
// again, so an order may be sent more than once.
func (o *Orchestrator) order(ctx context.Context, run *jobRun, job *catalog.Job) error {
	ep, err := o.endpoint(job.Node)
	if err != nil {
		return err
	}
	var subject string
	var body any
	switch {
	case isConsolidation(job):
		if subject, body, err = o.orderConsolidation(ctx, run, job); err != nil {
			o.failJob(ctx, job.ID, err)
			return err
		}
	case job.Type == catalog.JobBackup:
		backup, err := o.store.Backup(job.BackupID)
		if err != nil {
			return CatalogError(err)
		}
		pool, err := o.store.Pool(job.Pool)
		if err != nil {
			return CatalogError(err)
		}
		tk, err := o.mem.Sign(ticket.Ticket{
			JobID: job.ID, Client: job.Client, Node: job.Node, Op: ticket.OpBackup,
			Pool: pool.Name, BackupID: backup.ID, Parent: backup.Parent, Chain: o.chainParts(backup.Parent),
			Level: string(job.Level), KeyID: pool.KeyID, Attempt: job.Attempt,
		})
		if err != nil {
			return err
		}
		rb := wire.RunBackup{JobID: job.ID, Attempt: job.Attempt, Level: string(job.Level), Paths: job.Paths, Excludes: job.Excludes,
			SkipNodump: job.SkipNodump, OneFileSystem: job.OneFileSystem, Base: backup.Parent, Node: ep, Ticket: tk, Application: wireApplication(job.Application)}
		rb.EstimateFiles, rb.EstimateBytes = o.estimate(backup)
		subject, body = wire.AgentSubject(job.Client, wire.OpRunBackup), rb
	case job.Type == catalog.JobRestore:
		chain, err := o.store.Chain(job.BackupID)
		if err != nil {
			return CatalogError(err)
		}
		var sessions []string
		for _, b := range chain {
			sessions = append(sessions, b.SessionID.String())
		}
		tk, err := o.mem.Sign(ticket.Ticket{JobID: job.ID, Client: job.Client, Node: job.Node, Op: ticket.OpRestore, BackupID: job.BackupID, Sessions: sessions, Attempt: job.Attempt})
		if err != nil {
			return err
		}
		o.mu.Lock()
		if run.plan == nil {
			run.plan = newPlanner(o.store, chain, fileindex.Strings(job.Paths), o.roles.PageBytes())
		}
		// The totals the restore's progress shows, when counted already;
		// else the agent starts without them and they come to its
		// progress from the count (countRestore).
		var files, bytes int64
		if run.progress != nil {
			files, bytes = run.progress.TotalFiles, run.progress.TotalBytes
		}
		var cctx context.Context
		if files == 0 && run.stopCount == nil {
			// It outlives the request that may have started the job,
			// not the run, the leadership or the server (Wait).
			cctx, run.stopCount = context.WithCancel(context.WithoutCancel(ctx))
			o.wg.Add(1)
			go func(job catalog.Job) {
				defer o.wg.Done()
				o.countRestore(cctx, run, job, chain)
			}(*job)
		}
		o.mu.Unlock()
		subject, body = wire.AgentSubject(job.Client, wire.OpRunRestore), wire.RunRestore{
			JobID: job.ID, Attempt: job.Attempt, To: job.Target, Force: job.Force, Devices: job.Devices, Node: ep, Ticket: tk, Files: files, Bytes: bytes,
			// An agent silent for the liveness timeout has its jobs failed:
			// one held up for half of it asks before it writes on.
			Recheck: o.cfg.LivenessTimeout / 2,
		}
	}
	octx, cancel := context.WithTimeout(ctx, agentOrderTimeout)
	defer cancel()
	// An order still waiting for the agent's answer is not lost, however
	// long a busy agent takes: the watchdog counts the liveness timeout
	// from the answer (or from giving up on it).
	o.mu.Lock()
	run.ordering = true
	o.mu.Unlock()
	err = o.roles.Request(octx, subject, body, nil)
	o.mu.Lock()
	run.ordering = false
	run.ordered = o.clock.Now()
	o.mu.Unlock()
	if err == nil {
		return nil
	}
	switch wire.CodeOf(err) {
	case wire.CodeUnavailable, wire.CodeTimeout:
		// Maybe the agent got it, maybe not: its heartbeats will tell, and
		// the watchdog orders again if it did not.
		o.log.Warn("order not confirmed by the agent", "job", job.ID, "err", err)
		return nil
	}
	err = relay(err)
	o.failJob(ctx, job.ID, err)
	return err
}

// requeueOrFail sends a backup whose storage node failed back to the queue,
// or fails it when it had its attempts; any other job fails.
func (o *Orchestrator) requeueOrFail(ctx context.Context, id uint64, e error) {
	job, err := o.store.Job(id)
	if err != nil || job.State != catalog.JobRunning {
		return
	}
	if code, _, _ := Describe(e); code == wire.CodeAgentLost {
		o.live.AgentLost(job.Client)
	}
	if job.Type != catalog.JobBackup || job.Attempt >= maxAttempts {
		if job.Type == catalog.JobBackup {
			code, msg, hint := failure(e)
			e = &Error{Code: code, Msg: fmt.Sprintf("%s (attempt %d of %d)", msg, job.Attempt, maxAttempts), Hint: hint, Err: e}
		}
		o.failJob(ctx, id, e)
		return
	}
	if _, err := o.apply(ctx, &catalog.Command{Op: catalog.OpRequeueJob, Requeue: &catalog.JobRequeue{JobID: id, Reason: e.Error(), Attempt: job.Attempt}}); err != nil {
		o.log.Warn("requeue job", "job", id, "err", err)
		return
	}
	if j, err := o.store.Job(id); err == nil && j.State == catalog.JobCanceled {
		// A job with a cancel recorded ends canceled, not back in the
		// queue: it is counted and announced as such.
		o.Ended(j)
		return
	}
	// The attempt is over: its session, if its node still has it open,
	// goes, and with it the drive or volume it holds.
	o.stopJob(job, job.Attempt, e.Error())
	o.finishRun(id)
	o.publishEvent(wire.JobEvent{JobID: id, State: string(catalog.JobQueued), Message: e.Error()})
	o.kick()
}

// kick asks the leader for a round now (Wake).
func (o *Orchestrator) kick() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// dispatchQueued tries every queued job in the queue's order (queueOrder),
// against the load of the running jobs.
func (o *Orchestrator) dispatchQueued(ctx context.Context) {
	jobs, err := o.store.Jobs(catalog.JobFilter{States: []catalog.JobState{catalog.JobQueued}})
	if err != nil || len(jobs) == 0 {
		return
	}
	ld, err := o.currentLoad()
	if err != nil {
		o.log.Warn("count the running jobs", "err", err)
		return
	}
	queueOrder(jobs)
	for i := range jobs {
		j := &jobs[i]
		// A job a limit holds waits its turn, however long: the queue
		// timeout is for a job nothing can run (its agent or every node
		// of its pool gone), not for the night's runs behind a limit.
		if why := o.limited(ld, j); why != "" {
			o.setWaiting(ctx, j, why)
			continue
		}
		if waited := o.clock.Since(j.Created); waited > o.cfg.QueueTimeout {
			why := j.Waiting
			if why == "" {
				why = "it could not be dispatched"
			}
			o.failJob(ctx, j.ID, errorf(ErrTimeout, "bring the agent or a storage node of the pool back, then rerun the job",
				"job waited %s in the queue: %s", waited.Round(time.Second), why))
			continue
		}
		if err := o.tryDispatch(ctx, j, ld); err != nil && errors.Is(err, ErrNotLeader) {
			return
		}
	}
}

// watchRunning fails, requeues or re-orders running jobs whose storage node
// or agent went silent, whose agent does not know them, or that stalled.
func (o *Orchestrator) watchRunning(ctx context.Context) {
	o.mu.Lock()
	runs := make([]*jobRun, 0, len(o.runs))
	for _, r := range o.runs {
		runs = append(runs, r)
	}
	leading := o.clock.Since(o.leaderSince)
	o.mu.Unlock()
	if leading < o.cfg.LivenessTimeout {
		return // heartbeats of a few seconds ago are not in yet
	}
	for _, r := range runs {
		if n := o.live.Node(r.node); !n.Online {
			o.requeueOrFail(ctx, r.id, errorf(ErrUnavailable, "check the storage node; restart it",
				"storage node %s stopped answering (%s)", r.node, LastSeen(n.LastSeen)))
			continue
		}
		if r.nodeOnly {
			// A synthetic full has no agent: its node's requests are its
			// activity.
			o.mu.Lock()
			idle := o.clock.Since(r.lastActivity)
			waiting := r.waiting != ""
			o.mu.Unlock()
			if idle > o.cfg.StallTimeout && !waiting {
				o.failJob(ctx, r.id, errorf(ErrTimeout, "check the storage node's log",
					"job made no progress for %s", idle.Round(time.Second)))
			}
			continue
		}
		agent := o.live.Agent(r.client)
		if !agent.Online {
			// A backup waits in the queue for the agent to come back
			// (up to the queue timeout); a restore fails.
			o.requeueOrFail(ctx, r.id, errorf(ErrAgentLost, "check the agent; restart it",
				"the agent of client %s stopped answering (%s)", r.client, LastSeen(agent.LastSeen)))
			continue
		}
		o.mu.Lock()
		idle := o.clock.Since(r.lastActivity)
		knows := agent.Running[r.id]
		if knows {
			r.confirmed = o.clock.Now()
		}
		lost := !knows && !r.ordering && o.clock.Since(r.ordered) > o.cfg.LivenessTimeout && o.clock.Since(r.confirmed) > o.cfg.LivenessTimeout
		o.mu.Unlock()
		if lost && r.typ == catalog.JobBackup {
			// The agent does not run the backup: the order was lost (say,
			// with the previous leader) or the agent restarted, and with
			// it what it knew of the attempt, whose session may still be
			// open on the storage node. The same attempt must not run
			// again: the job goes on with the next one.
			o.requeueOrFail(ctx, r.id, errorf(ErrUnavailable, "check the agent's log",
				"the agent of client %s does not run the job (it restarted, or the order was lost with a leader)", r.client))
			continue
		}
		if lost {
			// The agent does not run the restore: order it again; the agent
			// knows the jobs it finished and does not run them twice.
			job, err := o.store.Job(r.id)
			if err == nil && job.State == catalog.JobRunning {
				o.log.Info("the agent does not report a running job; ordering it again", "job", r.id)
				_ = o.order(ctx, r, job)
			}
			continue
		}
		o.mu.Lock()
		waiting := r.waiting != ""
		o.mu.Unlock()
		// A job that waits for an operator (a tape to insert) is not stalled.
		if idle > o.cfg.StallTimeout && !waiting {
			o.failJob(ctx, r.id, errorf(ErrTimeout, "check the agent's and storage node's logs",
				"job made no progress for %s", idle.Round(time.Second)))
		}
	}
}

// becameLeader adopts the jobs the catalog says are running.
func (o *Orchestrator) becameLeader(ctx context.Context) {
	o.mu.Lock()
	o.leaderSince = o.clock.Now()
	o.mu.Unlock()
	jobs, err := o.store.Jobs(catalog.JobFilter{States: []catalog.JobState{catalog.JobRunning}})
	if err != nil {
		o.log.Warn("list running jobs", "err", err)
		return
	}
	for i := range jobs {
		if o.run(jobs[i].ID) == nil {
			r := o.startRun(&jobs[i])
			// Its order was sent by a previous leader: give the agent's
			// heartbeats the time to confirm it.
			r.ordered = o.clock.Now()
			o.log.Info("adopted a running job", "job", jobs[i].ID, "node", jobs[i].Node, "client", jobs[i].Client)
			if r.nodeOnly {
				// No agent's heartbeat tells whether the node has the
				// order: it is sent again, and a node that runs the
				// attempt answers without starting it twice.
				job := jobs[i]
				o.wg.Add(1)
				go func() {
					defer o.wg.Done()
					_ = o.order(ctx, r, &job)
				}()
			}
		}
	}
	o.kick()
}

func (o *Orchestrator) lostLeadership() {
	o.mu.Lock()
	defer o.mu.Unlock()
	// Paged plans are rebuilt by whoever leads next, and the totals of
	// restores counted again.
	for _, r := range o.runs {
		r.plan, r.base = nil, nil
		r.stopCounting()
	}
}

// chainParts is where the sessions of the chain ending in backup parent
// lie, for the backup's part headers (ticket.Ticket.Chain; the writer
// keeps the newest volume.MaxChainParts). It is a reader's hint, so a chain the
// catalog cannot follow, or a volume it no longer knows, leaves out what
// it cannot say.
func (o *Orchestrator) chainParts(parent uint64) []ticket.ChainPart {
	if parent == 0 {
		return nil
	}
	chain, err := o.store.Chain(parent)
	if err != nil {
		return nil
	}
	var out []ticket.ChainPart
	for _, b := range chain {
		for _, p := range b.Parts {
			cp := ticket.ChainPart{Session: b.SessionID.String(), Backup: b.ID, Volume: p.VolumeID.String()}
			if v, err := o.store.Volume(p.VolumeID); err == nil {
				cp.Name = v.Name
			}
			out = append(out, cp)
		}
	}
	return out
}
