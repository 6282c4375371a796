package orchestrator

import (
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
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
	plan         *planner   // restore, synthetic full: which blocks to read
	stopCount    func()     // restore: stops the count of its totals under way (countRestore)
	nodeOnly     bool       // a synthetic full: no agent takes part
}

// agentOrderTimeout bounds how long an agent may take to accept an order.
const agentOrderTimeout = 15 * time.Second

func (o *Orchestrator) startRun(job *catalog.Job) *jobRun {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := &jobRun{id: job.ID, typ: job.Type, node: job.Node, client: job.Client, started: o.clock.Now(), lastActivity: o.clock.Now(),
		waiting: job.Waiting, nodeOnly: isConsolidation(job)}
	o.runs[job.ID] = r
	return r
}

func (o *Orchestrator) run(id uint64) *jobRun {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.runs[id]
}

func (o *Orchestrator) noteActivity(id uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r := o.runs[id]; r != nil {
		r.lastActivity = o.clock.Now()
	}
}

func (o *Orchestrator) finishRun(id uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r := o.runs[id]; r != nil {
		r.stopCounting()
	}
	delete(o.runs, id)
}

// stopCounting stops the count of a restore's totals under way, if any.
// The caller holds o.mu.
func (r *jobRun) stopCounting() {
	if r.stopCount != nil {
		r.stopCount()
		r.stopCount = nil
	}
}

// Activity notes that a running job did something (a node's request, an
// agent's question): the watchdog counts a stall from the last activity.
func (o *Orchestrator) Activity(id uint64) { o.noteActivity(id) }

// Finish drops a job's run once the job ended.
func (o *Orchestrator) Finish(id uint64) { o.finishRun(id) }

// Waiting records what a running job waits for on its storage node (a
// tape to insert), "" when it no longer waits: the watchdog leaves a
// waiting job alone however long an operator takes.
func (o *Orchestrator) Waiting(id uint64, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r := o.runs[id]; r != nil {
		r.waiting = reason
		r.lastActivity = o.clock.Now()
	}
}

// Progress is a running job's last progress report, nil when none.
func (o *Orchestrator) Progress(id uint64) *wire.Progress {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r := o.runs[id]; r != nil && r.progress != nil {
		p := *r.progress
		return &p
	}
	return nil
}

// Progressed records an agent's progress report, if the job is a run of
// that client's, filling in the totals the leader knows. It reports
// whether it was.
func (o *Orchestrator) Progressed(client string, p *wire.Progress) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.runs[p.JobID]
	if r == nil || r.client != client {
		return false
	}
	if r.progress != nil {
		if p.TotalFiles == 0 {
			p.TotalFiles = r.progress.TotalFiles
		}
		if p.TotalBytes == 0 {
			p.TotalBytes = r.progress.TotalBytes
		}
	}
	c := *p
	r.progress = &c
	r.lastActivity = o.clock.Now()
	return true
}

// NodeProgressed records a storage node's progress report of a job it
// runs without an agent (a synthetic full), if the job is such a run of
// that node's, and counts it as the job's activity. It reports whether it
// was.
func (o *Orchestrator) NodeProgressed(node string, p *wire.Progress) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.runs[p.JobID]
	if r == nil || !r.nodeOnly || r.node != node {
		return false
	}
	c := *p
	r.progress = &c
	r.lastActivity = o.clock.Now()
	return true
}

// RunsOf lists the running jobs of a client.
func (o *Orchestrator) RunsOf(client string) []uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ids []uint64
	for id, r := range o.runs {
		if r.client == client {
			ids = append(ids, id)
		}
	}
	return ids
}

// Running counts the running jobs by type.
func (o *Orchestrator) Running() map[catalog.JobType]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := map[catalog.JobType]int{}
	for _, r := range o.runs {
		n[r.typ]++
	}
	return n
}

// attach returns the run of a job an agent asks about, making it for a
// leader that has not adopted it yet, and notes the activity.
func (o *Orchestrator) attach(job *catalog.Job) *jobRun {
	r := o.run(job.ID)
	if r == nil {
		r = o.startRun(job)
	}
	o.noteActivity(job.ID)
	return r
}

// BaseTree is a page of the tree a running backup is compared against,
// after the path after; done when there is no more (or no base).
//
// The pager is the run's, made when the order went out; a server that
// became leader since (or lost and regained it, which drops the pagers)
// makes it again from the catalog: the agent's next page must continue
// the parent's tree, never end it. An early end would make the agent take
// every path it had not compared yet for new, and mark none of the
// parent's deleted, so a restore of the backup would bring back files
// deleted before it.
func (o *Orchestrator) BaseTree(job *catalog.Job, after string) (segment []byte, done bool, err error) {
	r := o.attach(job)
	o.mu.Lock()
	pager := r.base
	o.mu.Unlock()
	if pager == nil {
		backup, err := o.store.Backup(job.BackupID)
		if err != nil {
			return nil, false, CatalogError(err)
		}
		if backup.Parent == 0 {
			return nil, true, nil
		}
		o.mu.Lock()
		if r.base == nil {
			r.base = &treePager{store: o.store, backup: backup.Parent, bytes: o.roles.PageBytes()}
		}
		pager = r.base
		o.mu.Unlock()
	}
	return pager.page(after)
}

// PlanPage is page cursor of a running restore's plan. A server that
// became leader mid-restore rebuilds the plan: its pages come out the
// same.
func (o *Orchestrator) PlanPage(job *catalog.Job, cursor int) (wire.RestorePlanResp, error) {
	r := o.attach(job)
	o.mu.Lock()
	if r.plan == nil && isConsolidation(job) {
		o.mu.Unlock()
		chain, err := o.consolidationChain(job)
		if err != nil {
			return wire.RestorePlanResp{}, err
		}
		plan := o.consolidationPlan(chain)
		o.mu.Lock()
		if r.plan == nil {
			r.plan = plan
		}
	}
	if r.plan == nil {
		chain, err := o.store.Chain(job.BackupID)
		if err != nil {
			o.mu.Unlock()
			return wire.RestorePlanResp{}, CatalogError(err)
		}
		r.plan = newPlanner(o.store, chain, fileindex.Strings(job.Paths), o.roles.PageBytes())
	}
	plan := r.plan
	o.mu.Unlock()
	return plan.page(cursor)
}
