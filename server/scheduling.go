package server

import (
	"context"
	"strings"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/server/scheduler"
	"github.com/cairnbackup/cairn/wire"
)

// The scheduler (package server/scheduler) runs on the leader only: each
// term starts it after the term's barrier, under the term's context, on a
// goroutine the server owns (schedWG), and the end of the term stops it.
// A new term waits for the previous term's scheduler to be gone, and Close
// waits for it before Raft and the catalog close.

func (s *Server) newScheduler() *scheduler.Scheduler {
	return scheduler.New(scheduler.Config{Tick: s.cfg.ScheduleTick, RunHistory: s.cfg.RunHistory}, scheduler.Deps{
		Store: s.store, Policies: policySource{s}, Raft: s.orch, Jobs: schedulerJobs{s}, Alerts: alertSink{s},
		Clock: serverClock{s}, Log: s.log.With("component", "scheduler"),
	})
}

// startScheduler runs the scheduler for the term whose context is ctx.
func (s *Server) startScheduler(ctx context.Context) {
	s.schedWG.Wait() // the previous term's, which its end stopped
	s.schedWG.Go(func() { s.sched.Run(ctx) })
}

// policySource is the catalog's policies, as the scheduler reads them.
type policySource struct{ s *Server }

func (p policySource) Policies() ([]catalog.Policy, error) { return p.s.store.Policies() }

// schedulerJobs is the orchestrator as the scheduler starts jobs through
// it, with a test's hook after each start.
type schedulerJobs struct{ s *Server }

func (j schedulerJobs) StartBackup(ctx context.Context, spec orchestrator.BackupSpec) (wire.JobStarted, error) {
	short := j.s.checkPoolShort(spec) // before the run writes, so its job's log says it first
	st, err := j.s.orch.StartBackup(ctx, spec)
	if short != "" && err == nil && st.JobID != 0 && !st.Repeated { // a repeat: its first start logged it, unless that leader died first
		j.s.orch.JobLog(ctx, st.JobID, "warning", "%s%s", poolShortLog, short)
	}
	if h := j.s.afterRunStart; h != nil {
		h(ctx)
	}
	return st, err
}

func (j schedulerJobs) JobLog(ctx context.Context, id uint64, level string, format string, args ...any) {
	j.s.orch.JobLog(ctx, id, level, format, args...)
}

// alertSink is the server's outbox, told of the alerts the scheduler
// raised with its runs.
type alertSink struct{ s *Server }

func (a alertSink) Raised() { a.s.outbox.wake() }

// runList answers run.list from this member's catalog.
func (s *Server) runList(_ context.Context, _ string, req wire.RunListReq) (wire.RunListResp, error) {
	if req.Client != "" {
		if _, err := s.store.Client(req.Client); err != nil {
			return wire.RunListResp{}, wire.Errorf(wire.CodeUnknownClient, "list clients with 'cairn client list'", "client %q is not known", req.Client)
		}
	}
	if req.Policy != "" {
		if _, err := s.store.Policy(req.Policy); err != nil {
			return wire.RunListResp{}, wire.Errorf(wire.CodeNotFound, "list policies with 'cairn policy list'", "policy %q does not exist", req.Policy)
		}
	}
	limit := req.Limit
	if limit <= 0 {
		limit = 50
	}
	f := catalog.RunFilter{Policy: req.Policy, Client: req.Client, Limit: min(limit, listPageLimit) + 1}
	for _, st := range req.States {
		f.States = append(f.States, catalog.RunState(st))
	}
	runs, err := s.store.Runs(f)
	if err != nil {
		return wire.RunListResp{}, err
	}
	resp := wire.RunListResp{Runs: []wire.RunInfo{}}
	if len(runs) > f.Limit-1 {
		runs, resp.More = runs[:f.Limit-1], true
	}
	for _, r := range runs {
		info := wire.RunInfo{Policy: r.Policy, Client: r.Client, Scheduled: r.Scheduled, Asked: string(r.Asked), Level: string(r.Level),
			Promotion: r.Promotion, State: string(r.State), Reason: r.Reason, JobID: r.JobID, Recorded: r.Recorded}
		if r.JobID != 0 {
			if j, err := s.store.Job(r.JobID); err == nil {
				info.JobState = string(j.State)
				for _, l := range j.Log {
					if w, ok := strings.CutPrefix(l.Msg, poolShortLog); ok {
						info.Warning = w
					}
				}
			}
		}
		resp.Runs = append(resp.Runs, info)
	}
	return resp, nil
}
