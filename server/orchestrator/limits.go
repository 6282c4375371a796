package orchestrator

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cairnbackup/cairn/catalog"
)

// load is what runs now, counted against the Limits: the running jobs by
// client, storage node, pool and tape library. A round counts it once
// and adds each job it dispatches, so the queue behind sees it.
type load struct {
	client  map[string][]uint64
	node    map[string]int
	pool    map[string]int
	library map[string]int
	drives  map[string]int // the drives of each library, from its owner's registration
}

// currentLoad counts the running jobs the catalog holds.
func (o *Orchestrator) currentLoad() (*load, error) {
	running, err := o.store.Jobs(catalog.JobFilter{States: []catalog.JobState{catalog.JobRunning}})
	if err != nil {
		return nil, err
	}
	ld := &load{client: map[string][]uint64{}, node: map[string]int{}, pool: map[string]int{}, library: map[string]int{}, drives: map[string]int{}}
	nodes, err := o.store.Nodes()
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		for _, l := range n.Libraries {
			ld.drives[l.Name] += l.Drives
		}
	}
	// Newest first from the catalog: the oldest is named first in a reason.
	for i := len(running) - 1; i >= 0; i-- {
		o.count(ld, &running[i])
	}
	return ld, nil
}

// count adds a running job to the load.
func (o *Orchestrator) count(ld *load, j *catalog.Job) {
	ld.client[j.Client] = append(ld.client[j.Client], j.ID)
	ld.node[j.Node]++
	if j.Type == catalog.JobBackup && j.Pool != "" {
		ld.pool[j.Pool]++
		if lib := o.libraryOf(j.Pool); lib != "" {
			ld.library[lib]++
		}
	}
}

func (o *Orchestrator) libraryOf(pool string) string {
	p, err := o.store.Pool(pool)
	if err != nil {
		return ""
	}
	return p.Library
}

// limited says which limit holds a backup in the queue, "" when none does.
// The node's limit is checked among the candidates (nodeFull), since the
// job may go to another node of its pool.
func (o *Orchestrator) limited(ld *load, j *catalog.Job) string {
	if j.Type != catalog.JobBackup {
		return ""
	}
	lim := o.cfg.Limits
	if ids := ld.client[j.Client]; lim.PerClient > 0 && len(ids) >= lim.PerClient {
		names := make([]string, len(ids))
		for i, id := range ids {
			names[i] = strconv.FormatUint(id, 10)
		}
		if len(ids) == 1 {
			return fmt.Sprintf("client %s runs job %s", j.Client, names[0])
		}
		return fmt.Sprintf("client %s runs jobs %s (its limit is %d at once)", j.Client, strings.Join(names, ", "), lim.PerClient)
	}
	if n := lim.PerPool[j.Pool]; n > 0 && ld.pool[j.Pool] >= n {
		return fmt.Sprintf("pool %s: %d of %d jobs running (the pool's limit)", j.Pool, ld.pool[j.Pool], n)
	}
	if lim.PerDrive > 0 {
		if lib := o.libraryOf(j.Pool); lib != "" {
			if d := ld.drives[lib]; d > 0 && ld.library[lib] >= d*lim.PerDrive {
				if lim.PerDrive == 1 {
					return fmt.Sprintf("pool %s: %d of %d drives busy", j.Pool, ld.library[lib], d)
				}
				return fmt.Sprintf("pool %s: %d jobs on %d drives, %d a drive", j.Pool, ld.library[lib], d, lim.PerDrive)
			}
		}
	}
	return ""
}

// nodeFull says why a storage node takes no more jobs, "" when it may.
func (o *Orchestrator) nodeFull(ld *load, node string) string {
	if n := o.cfg.Limits.PerNode; n > 0 && ld != nil && ld.node[node] >= n {
		return fmt.Sprintf("%s (%d of %d jobs running, the node's limit)", node, ld.node[node], n)
	}
	return ""
}

// queueOrder sorts queued jobs as they are served: the higher priority
// first, then the earlier scheduled (a job started by hand counts from its
// creation), then the lower id.
func queueOrder(jobs []catalog.Job) {
	when := func(j *catalog.Job) time.Time {
		if !j.Scheduled.IsZero() {
			return j.Scheduled
		}
		return j.Created
	}
	slices.SortStableFunc(jobs, func(a, b catalog.Job) int {
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		if c := when(&a).Compare(when(&b)); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
}

// queuedAhead counts the queued backups the queue serves before job that
// a limit could make it wait behind: of the same client, of the same pool,
// or any when the storage nodes have a limit. With no limit, none is.
func (o *Orchestrator) queuedAhead(job *catalog.Job) int {
	if job.Type != catalog.JobBackup {
		return 0
	}
	lim := o.cfg.Limits
	sharesLimit := func(j *catalog.Job) bool {
		switch {
		case lim.PerNode > 0:
			return true
		case lim.PerClient > 0 && j.Client == job.Client:
			return true
		case j.Pool == job.Pool && (lim.PerPool[j.Pool] > 0 || (lim.PerDrive > 0 && o.libraryOf(j.Pool) != "")):
			return true
		}
		return false
	}
	queued, err := o.store.Jobs(catalog.JobFilter{Type: catalog.JobBackup, States: []catalog.JobState{catalog.JobQueued}})
	if err != nil {
		return 0
	}
	queued = slices.DeleteFunc(queued, func(j catalog.Job) bool { return j.ID != job.ID && !sharesLimit(&j) })
	if !slices.ContainsFunc(queued, func(j catalog.Job) bool { return j.ID == job.ID }) {
		queued = append(queued, *job)
	}
	queueOrder(queued)
	return slices.IndexFunc(queued, func(j catalog.Job) bool { return j.ID == job.ID })
}
