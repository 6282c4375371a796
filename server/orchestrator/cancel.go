package orchestrator

import (
	"context"
	"errors"
	"sync"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/wire"
)

// CancelSpec is a cancel of job ID, by whom and why (the job's log and
// error say it).
type CancelSpec struct {
	ID     uint64
	By     string
	Reason string
}

// Cancel takes an administrator's cancel (job.cancel) and returns the job
// as it is after it. The cancel is
// recorded in the catalog before anything is stopped: a queued job ends
// there and then; a running one keeps the cancel as a fact that the
// leader's loop carries out (carryOutCancels), this leader or the next one
// if this one dies before the job is stopped.
func (o *Orchestrator) Cancel(ctx context.Context, req CancelSpec) (*catalog.Job, error) {
	if req.ID == 0 {
		return nil, errorf(ErrInvalidArgument, "list jobs with 'cairn job list'", "no job id given")
	}
	before, err := o.store.Job(req.ID)
	if err != nil {
		return nil, errorf(ErrNotFound, "list jobs with 'cairn job list'", "job %d does not exist", req.ID)
	}
	if _, err := o.apply(ctx, &catalog.Command{Op: catalog.OpCancelJob, Cancel: &catalog.JobCancel{
		JobID: req.ID, By: req.By, Reason: req.Reason,
	}}); err != nil {
		return nil, err
	}
	job, err := o.store.Job(req.ID)
	if err != nil {
		return nil, err
	}
	o.log.Info("job cancel asked", "job", job.ID, "by", req.By, "reason", req.Reason, "state", job.State)
	switch {
	case job.State == catalog.JobCanceled && before.State != catalog.JobCanceled:
		o.Ended(job)
	case job.State == catalog.JobRunning:
		o.kick()
	}
	return job, nil
}

// carryOutCancels stops every running job whose cancel the catalog holds,
// each on a goroutine the orchestrator's group owns (Wait). It runs in the
// leader's round: a cancel taken by a leader that died before it took
// effect is carried out by the next one.
func (o *Orchestrator) carryOutCancels(ctx context.Context) {
	jobs, err := o.store.Jobs(catalog.JobFilter{States: []catalog.JobState{catalog.JobRunning}})
	if err != nil {
		return
	}
	for i := range jobs {
		j := jobs[i]
		if j.Cancel == nil {
			continue
		}
		if _, busy := o.cancels.LoadOrStore(j.ID, struct{}{}); busy {
			continue
		}
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			defer o.cancels.Delete(j.ID)
			o.stopCanceled(ctx, &j)
		}()
	}
}

// stopCanceled orders the storage node and the agent of a canceled job's
// attempt to stop it, waits for their answers (a role that does not
// answer in cancelTimeout is given up on: it is often why the job was
// canceled), then ends the job as canceled. Ending it drops a backup's
// uncommitted index and releases its volumes; the node rolls its session
// back and gives its drive back when its stream stops. If the node's own
// report of the stop gets in first, the job is canceled by it, and this
// end is refused as already done.
func (o *Orchestrator) stopCanceled(ctx context.Context, job *catalog.Job) {
	reason := job.Cancel.Message()
	stop := wire.CancelJob{JobID: job.ID, Attempt: job.Attempt, Reason: reason}
	subjects := []string{wire.AgentSubject(job.Client, wire.OpCancel)}
	if job.Node != "" {
		subjects = append(subjects, wire.NodeSubject(job.Node, wire.OpCancel))
	}
	o.log.Info("carrying out the cancel of a job", "job", job.ID, "attempt", job.Attempt, "by", job.Cancel.By)
	var wg sync.WaitGroup
	for _, subject := range subjects {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, cancelTimeout)
			defer cancel()
			var res wire.CancelResult
			if err := o.roles.Request(rctx, subject, stop, &res); err != nil {
				o.log.Info("cancel order not taken", "job", job.ID, "attempt", job.Attempt, "to", subject, "err", err)
				return
			}
			o.log.Info("cancel order taken", "job", job.ID, "attempt", job.Attempt, "to", subject, "was_running", res.Running)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	_, err := o.apply(ctx, &catalog.Command{Op: catalog.OpUpdateJob, JobUpdate: &catalog.JobUpdate{
		ID: job.ID, State: catalog.JobCanceled, Ended: o.clock.Now().UTC(), Attempt: job.Attempt,
	}})
	switch {
	case err == nil:
		if j, err := o.store.Job(job.ID); err == nil {
			o.Ended(j)
		}
	case errors.Is(err, ErrWrongState):
		// It ended meanwhile: its node's or agent's report of the stop
		// canceled it, or a commit that got in first.
		o.finishRun(job.ID)
	default:
		o.log.Warn("cancel of a job not ended; the leader tries again", "job", job.ID, "err", err)
	}
}
