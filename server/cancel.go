package server

import (
	"context"
	"errors"
	"sync"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/wire"
)

// cancelJob takes an administrator's cancel (job.cancel). The cancel is
// recorded in the catalog before anything is stopped: a queued job ends
// there and then; a running one keeps the cancel as a fact that the
// leader's loop carries out (carryOutCancels), this leader or the next one
// if this one dies before the job is stopped.
func (s *Server) cancelJob(ctx context.Context, _ string, req wire.JobCancelReq) (wire.JobInfo, error) {
	if req.ID == 0 {
		return wire.JobInfo{}, wire.Errorf(wire.CodeInvalidArgument, "list jobs with 'cairn job list'", "no job id given")
	}
	before, err := s.store.Job(req.ID)
	if err != nil {
		return wire.JobInfo{}, wire.Errorf(wire.CodeNotFound, "list jobs with 'cairn job list'", "job %d does not exist", req.ID)
	}
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpCancelJob, Cancel: &catalog.JobCancel{
		JobID: req.ID, By: req.By, Reason: req.Reason,
	}}); err != nil {
		return wire.JobInfo{}, err
	}
	job, err := s.store.Job(req.ID)
	if err != nil {
		return wire.JobInfo{}, err
	}
	s.log.Info("job cancel asked", "job", job.ID, "by", req.By, "reason", req.Reason, "state", job.State)
	switch {
	case job.State == catalog.JobCanceled && before.State != catalog.JobCanceled:
		s.jobCanceled(job)
	case job.State == catalog.JobRunning:
		s.kick()
	}
	return s.jobInfo(job, false), nil
}

// carryOutCancels stops every running job whose cancel the catalog holds,
// each on a goroutine the server's group owns. It runs on the leader's
// loop: a cancel taken by a leader that died before it took effect is
// carried out by the next one.
func (s *Server) carryOutCancels(ctx context.Context) {
	jobs, err := s.store.Jobs(catalog.JobFilter{States: []catalog.JobState{catalog.JobRunning}})
	if err != nil {
		return
	}
	for i := range jobs {
		j := jobs[i]
		if j.Cancel == nil {
			continue
		}
		if _, busy := s.cancels.LoadOrStore(j.ID, struct{}{}); busy {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.cancels.Delete(j.ID)
			s.stopCanceled(ctx, &j)
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
func (s *Server) stopCanceled(ctx context.Context, job *catalog.Job) {
	reason := job.Cancel.Message()
	o := wire.CancelJob{JobID: job.ID, Attempt: job.Attempt, Reason: reason}
	subjects := []string{wire.AgentSubject(job.Client, wire.OpCancel)}
	if job.Node != "" {
		subjects = append(subjects, wire.NodeSubject(job.Node, wire.OpCancel))
	}
	s.log.Info("carrying out the cancel of a job", "job", job.ID, "attempt", job.Attempt, "by", job.Cancel.By)
	var wg sync.WaitGroup
	for _, subject := range subjects {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, cancelTimeout)
			defer cancel()
			var res wire.CancelResult
			if err := wire.RequestIn(rctx, s.nc, s.groupName(), subject, o, &res); err != nil {
				s.log.Info("cancel order not taken", "job", job.ID, "attempt", job.Attempt, "to", subject, "err", err)
				return
			}
			s.log.Info("cancel order taken", "job", job.ID, "attempt", job.Attempt, "to", subject, "was_running", res.Running)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	_, err := s.apply(ctx, &catalog.Command{Op: catalog.OpUpdateJob, JobUpdate: &catalog.JobUpdate{
		ID: job.ID, State: catalog.JobCanceled, Ended: s.clock.Now().UTC(), Attempt: job.Attempt,
	}})
	var we *wire.Error
	switch {
	case err == nil:
		if j, err := s.store.Job(job.ID); err == nil {
			s.jobCanceled(j)
		}
	case errors.As(err, &we) && we.Code == wire.CodeWrongState:
		// It ended meanwhile: its node's or agent's report of the stop
		// canceled it, or a commit that got in first.
		s.finishRun(job.ID)
	default:
		s.log.Warn("cancel of a job not ended; the leader tries again", "job", job.ID, "err", err)
	}
}

// jobCanceled tells what a job ended as canceled here ends: its run, its
// figures, its watchers.
func (s *Server) jobCanceled(job *catalog.Job) {
	s.finishRun(job.ID)
	s.metrics.jobEnded(job)
	s.publishEvent(wire.JobEvent{JobID: job.ID, State: string(catalog.JobCanceled), Message: job.Error})
}
