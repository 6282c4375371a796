package server

import (
	"context"
	"fmt"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/wire"
)

func (s *Server) routeAgents(r *wire.Router) {
	r.Handle(wire.OpAgentRegister, wire.Typed(s.agentRegister))
	r.Handle(wire.OpBaseTree, wire.Typed(s.baseTree))
	r.Handle(wire.OpRestorePlan, wire.Typed(s.restorePlan))
	r.Handle(wire.OpJobDone, wire.Typed(s.jobDone))
}

func (s *Server) agentRegister(ctx context.Context, subject string, req wire.AgentRegisterReq) (wire.Empty, error) {
	name := sender(subject)
	if req.Name != name {
		return wire.Empty{}, wire.Errorf(wire.CodeInvalidArgument, "", "agent %q registered on the subject of %q", req.Name, name)
	}
	if err := wire.ValidateName("client", name); err != nil {
		return wire.Empty{}, err
	}
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{
		Name: name, Hostname: req.Hostname, OS: req.OS, Arch: req.Arch, Version: req.Version, Site: req.Site,
	}}); err != nil {
		return wire.Empty{}, err
	}
	s.touch(s.agents, name)
	s.log.Info("agent registered", "client", name, "hostname", req.Hostname)
	return wire.Empty{}, nil
}

// agentRun returns the live run of a job the sending agent takes part in.
func (s *Server) agentRun(subject string, id uint64) (*jobRun, *catalog.Job, error) {
	job, err := s.store.Job(id)
	if err != nil || job.Client != sender(subject) {
		return nil, nil, wire.Errorf(wire.CodeNotFound, "", "job %d is not a job of client %s", id, sender(subject))
	}
	if job.State.Done() {
		return nil, nil, wire.Errorf(wire.CodeAborted, "", "job %d already ended (%s)", id, job.State)
	}
	r := s.run(id)
	if r == nil {
		r = s.startRun(job)
	}
	s.noteActivity(id)
	return r, job, nil
}

func (s *Server) baseTree(_ context.Context, subject string, req wire.BaseTreeReq) (wire.BaseTreeResp, error) {
	r, job, err := s.agentRun(subject, req.JobID)
	if err != nil {
		return wire.BaseTreeResp{}, err
	}
	if job.Type != catalog.JobBackup {
		return wire.BaseTreeResp{}, wire.Errorf(wire.CodeInvalidArgument, "", "job %d is not a backup", job.ID)
	}
	s.mu.Lock()
	pager := r.base
	s.mu.Unlock()
	if pager == nil {
		return wire.BaseTreeResp{Done: true}, nil
	}
	seg, done, err := pager.page(req.After)
	if err != nil {
		return wire.BaseTreeResp{}, err
	}
	return wire.BaseTreeResp{Segment: seg, Done: done}, nil
}

func (s *Server) restorePlan(_ context.Context, subject string, req wire.RestorePlanReq) (wire.RestorePlanResp, error) {
	r, job, err := s.agentRun(subject, req.JobID)
	if err != nil {
		return wire.RestorePlanResp{}, err
	}
	if job.Type != catalog.JobRestore {
		return wire.RestorePlanResp{}, wire.Errorf(wire.CodeInvalidArgument, "", "job %d is not a restore", job.ID)
	}
	s.mu.Lock()
	if r.plan == nil {
		// A server that became leader mid-restore rebuilds the plan.
		chain, err := s.store.Chain(job.BackupID)
		if err != nil {
			s.mu.Unlock()
			return wire.RestorePlanResp{}, catalogError(err)
		}
		r.plan = newPlanner(s.store, chain, job.Paths, s.pageBytes())
	}
	plan := r.plan
	s.mu.Unlock()
	return plan.page(req.Cursor)
}

func (s *Server) jobDone(ctx context.Context, subject string, req wire.JobDoneReq) (wire.Empty, error) {
	job, err := s.store.Job(req.JobID)
	if err != nil || job.Client != sender(subject) {
		return wire.Empty{}, wire.Errorf(wire.CodeNotFound, "", "job %d is not a job of client %s", req.JobID, sender(subject))
	}
	if job.State.Done() {
		return wire.Empty{}, nil // the node's commit or abort ended it already
	}
	if req.Attempt != 0 && req.Attempt != job.Attempt {
		s.log.Info("ignoring the report of an earlier attempt", "job", job.ID, "attempt", req.Attempt, "current", job.Attempt)
		return wire.Empty{}, nil
	}
	if req.Error != nil {
		if req.Error.Code == wire.CodeNodeLost {
			// The storage node is gone or unreachable from the client: a
			// backup goes to another node of its pool.
			s.suspect(job.Node)
			s.requeueOrFail(ctx, job.ID, req.Error)
			return wire.Empty{}, nil
		}
		s.failJob(ctx, job.ID, req.Error)
		return wire.Empty{}, nil
	}
	if job.Type != catalog.JobRestore {
		// A backup ends when its storage node commits the session.
		return wire.Empty{}, nil
	}
	for _, w := range req.Warnings {
		s.jobLog(ctx, job.ID, "warning", "%s", w)
	}
	for _, d := range req.Damaged {
		s.jobLog(ctx, job.ID, "error", "not restored: %s", d)
	}
	upd := &catalog.JobUpdate{ID: job.ID, State: catalog.JobSuccess, Files: req.Files, Bytes: req.Bytes, Warnings: len(req.Warnings), Ended: time.Now().UTC()}
	switch {
	case len(req.Damaged) > 0:
		upd.State = catalog.JobFailed
		upd.ErrorCode = wire.CodeCorrupt
		upd.Error = fmt.Sprintf("%d entries could not be restored because their data is damaged; every other entry was restored", len(req.Damaged))
		s.jobLog(ctx, job.ID, "error", "%s", upd.Error)
	case req.Refused > 0:
		// Left out, not lost: the job fails so that the command that
		// waits for it exits non-zero, and says how many.
		upd.State = catalog.JobFailed
		upd.ErrorCode = wire.CodeRefused
		upd.Error = fmt.Sprintf("%d entries were not restored (refused, or the target would not take them); every other entry was restored, and the warnings name each and why", req.Refused)
		s.jobLog(ctx, job.ID, "error", "%s", upd.Error)
	case len(req.Warnings) > 0:
		upd.State = catalog.JobWarning
	}
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpUpdateJob, JobUpdate: upd}); err != nil {
		return wire.Empty{}, err
	}
	s.jobLog(ctx, job.ID, "info", "restore ended: %d files, %s", req.Files, humanBytes(req.Bytes))
	s.finishRun(job.ID)
	if done, err := s.store.Job(job.ID); err == nil {
		s.metrics.jobEnded(done)
	}
	s.publishEvent(wire.JobEvent{JobID: job.ID, State: string(upd.State), Message: upd.Error})
	return wire.Empty{}, nil
}
