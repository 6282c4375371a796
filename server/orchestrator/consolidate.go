package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/wire"
)

// A synthetic full (a consolidation) is a backup job of level
// catalog.LevelSyntheticFull: the catalog makes its backup a full at the
// point in time of the chain it folds (catalog.Backup.Consolidates), and it
// runs, commits and rolls back as a backup does. What differs is who feeds
// the session: no agent, but the storage node that holds the chain, which
// reads it with the plan a restore of everything at that point in time
// would get (with the full's reads last, see consolidationPlan) and writes
// what it reads to the target pool. So the job is dispatched to that node
// (the chain's), its order goes to the node, and nothing waits for an
// agent.

// ConsolidateSpec is a synthetic full to start: 'cairn backup consolidate'.
type ConsolidateSpec struct {
	Client string
	// FileSet chooses the chain when the client has several file sets (an
	// id or a prefix of one); empty: the client's only one.
	FileSet string
	// Pool is where the new full goes; empty: the pool of the chain's full.
	Pool      string
	RequestID string
	Retry     bool
}

func (c ConsolidateSpec) request() wire.BackupConsolidateReq {
	return wire.BackupConsolidateReq{Client: c.Client, FileSet: c.FileSet, Pool: c.Pool}
}

// StartConsolidate checks a consolidation and starts its job, as
// StartBackup does a backup. A client with no chain to fold, an unknown
// pool or file set, or a pool the chain's storage node does not serve is
// refused and makes no job.
func (o *Orchestrator) StartConsolidate(ctx context.Context, spec ConsolidateSpec) (wire.JobStarted, error) {
	digest := RequestDigest(wire.OpBackupConsolidate, spec.request())
	what := fmt.Sprintf("the synthetic full of %s", spec.Client)
	return o.startJobOnce(ctx, what, wire.Start{RequestID: spec.RequestID, Retry: spec.Retry}, digest, func() (*catalog.Job, func(uint64), error) {
		return o.consolidateJob(spec)
	})
}

func (o *Orchestrator) consolidateJob(spec ConsolidateSpec) (*catalog.Job, func(uint64), error) {
	client, err := o.knownClient(spec.Client)
	if err != nil {
		return nil, nil, err
	}
	if spec.Pool != "" {
		if _, err := o.store.Pool(spec.Pool); err != nil {
			return nil, nil, errorf(ErrNotFound, "list pools with 'cairn pool list'", "pool %q does not exist", spec.Pool)
		}
	}
	tip, err := o.chainTip(client.Name, spec.FileSet)
	if err != nil {
		return nil, nil, err
	}
	return &catalog.Job{Type: catalog.JobBackup, Client: client.Name, Level: catalog.LevelSyntheticFull, Pool: spec.Pool, BackupID: tip.ID}, nil, nil
}

// chainTip is the newest complete backup of the client's file set (of its
// only one when fileSet is empty): the end of the chain a synthetic full
// folds.
func (o *Orchestrator) chainTip(client, fileSet string) (*catalog.Backup, error) {
	backups, err := o.store.Backups(catalog.BackupFilter{Client: client, States: []catalog.BackupState{catalog.BackupComplete}})
	if err != nil {
		return nil, CatalogError(err)
	}
	var sets []string
	var tip *catalog.Backup
	for i := range backups {
		b := &backups[i]
		if !slices.Contains(sets, b.FileSet) {
			sets = append(sets, b.FileSet)
		}
		if fileSet != "" && !strings.HasPrefix(b.FileSet, fileSet) {
			continue
		}
		if tip == nil || b.StartTime.After(tip.StartTime) || (b.StartTime.Equal(tip.StartTime) && b.ID > tip.ID) {
			tip = b
		}
	}
	switch {
	case len(sets) == 0:
		return nil, errorf(ErrNotFound, fmt.Sprintf("run a full backup of %s first ('cairn backup --client %s --level full --path ...')", client, client),
			"client %s has no complete backup to consolidate", client)
	case tip == nil:
		return nil, errorf(ErrNotFound, "list the client's file sets with 'cairn backup list --client "+client+"'",
			"client %s has no backup of file set %q", client, fileSet)
	case fileSet == "" && len(sets) > 1:
		return nil, errorf(ErrInvalidArgument, "choose one with --fileset",
			"client %s has backups of %d file sets (%s)", client, len(sets), strings.Join(sets, ", "))
	}
	return tip, nil
}

// isConsolidation tells a synthetic full's job, which runs on its storage
// node alone.
func isConsolidation(job *catalog.Job) bool {
	return job.Type == catalog.JobBackup && job.Level == catalog.LevelSyntheticFull
}

// consolidationChain is the chain a synthetic full's job reads.
func (o *Orchestrator) consolidationChain(job *catalog.Job) ([]catalog.Backup, error) {
	b, err := o.store.Backup(job.BackupID)
	if err != nil {
		return nil, CatalogError(err)
	}
	chain, err := o.store.Chain(b.Consolidates)
	if err != nil {
		return nil, errorf(ErrWrongState, "take a new full backup of the client", "the chain of backup %d cannot be read: %w", b.Consolidates, err)
	}
	return chain, nil
}

// consolidationPlan is the plan of everything in the chain at its point in
// time, with the full's reads last: the node stages the other backups'
// entries and merges them into the full's as it reads those, so only the
// changes go through its disk twice.
func (o *Orchestrator) consolidationPlan(chain []catalog.Backup) *planner {
	p := newPlanner(o.store, chain, nil, o.roles.PageBytes())
	if i := slices.Index(p.order, 0); i >= 0 {
		p.order = append(append(slices.Clone(p.order[:i]), p.order[i+1:]...), 0)
	}
	return p
}

// orderConsolidation sends a running synthetic full's order to its storage
// node, and logs what it folds in.
func (o *Orchestrator) orderConsolidation(ctx context.Context, run *jobRun, job *catalog.Job) (string, any, error) {
	chain, err := o.consolidationChain(job)
	if err != nil {
		return "", nil, err
	}
	pool, err := o.store.Pool(job.Pool)
	if err != nil {
		return "", nil, CatalogError(err)
	}
	order := wire.RunConsolidate{JobID: job.ID, Attempt: job.Attempt, Client: job.Client, Pool: pool.Name, BackupID: job.BackupID,
		KeyID: pool.KeyID, Stream: chain[0].SessionID}
	var names []string
	for _, b := range chain {
		order.Sessions = append(order.Sessions, b.SessionID)
		names = append(names, fmt.Sprintf("%d (%s, %s)", b.ID, b.Level, b.StartTime.UTC().Format("2006-01-02 15:04:05")))
	}
	o.mu.Lock()
	if run.plan == nil {
		run.plan = o.consolidationPlan(chain)
	}
	o.mu.Unlock()
	if job.Attempt <= 1 {
		o.jobLog(ctx, job.ID, "info", "synthetic full of %d backups on storage node %s to pool %s, as of %s: folds in %s",
			len(chain), job.Node, pool.Name, chain[len(chain)-1].StartTime.UTC().Format("2006-01-02 15:04:05"), strings.Join(names, ", "))
	}
	return wire.NodeSubject(job.Node, wire.OpRunConsolidate), order, nil
}

// ReadsKey says whether job may be handed data key keyID to read its
// sources: a restore's chain, or the chain a synthetic full folds.
func (o *Orchestrator) ReadsKey(job *catalog.Job, keyID string) bool {
	var chain []catalog.Backup
	var err error
	switch {
	case job.Type == catalog.JobRestore:
		chain, err = o.store.Chain(job.BackupID)
	case isConsolidation(job):
		chain, err = o.consolidationChain(job)
	}
	if err != nil {
		return false
	}
	return slices.ContainsFunc(chain, func(b catalog.Backup) bool { return b.KeyID == keyID })
}

// ReadsPlan says whether a job reads by a plan of the servers: a restore,
// and a synthetic full.
func ReadsPlan(job *catalog.Job) bool {
	return job.Type == catalog.JobRestore || isConsolidation(job)
}

// dispatchConsolidation starts a queued synthetic full on the storage node
// that holds its chain, the only one that reads it, when that node is up.
func (o *Orchestrator) dispatchConsolidation(ctx context.Context, job *catalog.Job, ld *load) error {
	node, err := o.consolidationNode(job)
	if errors.Is(err, ErrWrongState) {
		// The chain went (deleted, expired) while the job waited: it
		// cannot run, now or later.
		o.failJob(ctx, job.ID, err)
		return err
	}
	if err != nil {
		return err
	}
	if why := o.nodeDown(node, "the chain"); why != "" {
		o.setWaiting(ctx, job, why)
		return nil
	}
	if why := o.nodeFull(ld, node); why != "" {
		o.setWaiting(ctx, job, "storage node "+why)
		return nil
	}
	return o.dispatchTo(ctx, job, node, ld)
}

// consolidationNode is the storage node that holds a synthetic full's
// chain: the job's own, recorded when it was made, until the job goes back
// to the queue (a node that stopped answering), where the catalog clears
// it as for any backup; then the chain's.
func (o *Orchestrator) consolidationNode(job *catalog.Job) (string, error) {
	if job.Node != "" {
		return job.Node, nil
	}
	chain, err := o.consolidationChain(job)
	if err != nil {
		return "", err
	}
	return chain[len(chain)-1].Node, nil
}

// SourceVolumes are the volumes a synthetic full's job reads, none for
// any other job.
func (o *Orchestrator) SourceVolumes(job *catalog.Job) []uuid.UUID {
	if !isConsolidation(job) {
		return nil
	}
	chain, err := o.consolidationChain(job)
	if err != nil {
		return nil
	}
	var out []uuid.UUID
	for _, b := range chain {
		for _, p := range b.Parts {
			if !slices.Contains(out, p.VolumeID) {
				out = append(out, p.VolumeID)
			}
		}
	}
	return out
}

// policyConsolidateJob makes the job of a synthetic full a policy asks for
// (a run of level synthetic-full, or a chain over its maximum length): the
// catalog finds the chain of the policy's file set in its pools.
func (o *Orchestrator) policyConsolidateJob(client *catalog.Client, req BackupSpec) (*catalog.Job, func(uint64), error) {
	if len(req.Paths) == 0 {
		return nil, nil, errorf(ErrInvalidArgument, "give the paths of the file set whose chain to fold", "a synthetic full of %s names no paths", client.Name)
	}
	if req.Pool != "" {
		if _, err := o.store.Pool(req.Pool); err != nil {
			return nil, nil, errorf(ErrNotFound, "list pools with 'cairn pool list'", "pool %q does not exist", req.Pool)
		}
	}
	return &catalog.Job{
		Type: catalog.JobBackup, Client: client.Name, Level: catalog.LevelSyntheticFull, Pool: req.Pool,
		Paths: req.Paths, Excludes: req.Excludes, Policy: req.Policy, Scheduled: req.Scheduled, Priority: req.Priority,
	}, nil, nil
}
