package server

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/wire"
)

func (s *Server) routeAgents(r *wire.Router) {
	r.Handle(wire.OpAgentRegister, wire.Typed(s.agentRegister))
	r.Handle(wire.OpBaseTree, wire.Typed(s.baseTree))
	r.Handle(wire.OpJobDone, wire.Typed(s.jobDone))
	r.Handle(wire.OpJobAlive, wire.Typed(s.jobAlive))
}

// jobAlive tells an agent whether its job still runs at the attempt it
// runs: one whose restore was held up asks before it writes on, since the
// job may have failed meanwhile and the cancel order not reached it.
func (s *Server) jobAlive(_ context.Context, subject string, req wire.JobAliveReq) (wire.Empty, error) {
	job, err := s.store.Job(req.JobID)
	if err != nil || job.Client != sender(subject) {
		return wire.Empty{}, wire.Errorf(wire.CodeNotFound, "", "job %d is not a job of client %s", req.JobID, sender(subject))
	}
	hint := fmt.Sprintf("stop the job; 'cairn job show %d' says why it ended", job.ID)
	if job.State != catalog.JobRunning {
		return wire.Empty{}, wire.Errorf(wire.CodeAborted, hint, "job %d is %s", job.ID, job.State)
	}
	if req.Attempt != 0 && req.Attempt != job.Attempt {
		return wire.Empty{}, wire.Errorf(wire.CodeAborted, hint, "attempt %d of job %d does not run; attempt %d does", req.Attempt, job.ID, job.Attempt)
	}
	s.orch.Activity(job.ID)
	return wire.Empty{}, nil
}

func (s *Server) agentRegister(ctx context.Context, subject string, req wire.AgentRegisterReq) (wire.AgentRegisterResp, error) {
	name := sender(subject)
	if req.Name != name {
		return wire.AgentRegisterResp{}, wire.Errorf(wire.CodeInvalidArgument, "", "agent %q registered on the subject of %q", req.Name, name)
	}
	if err := wire.ValidateName("client", name); err != nil {
		return wire.AgentRegisterResp{}, err
	}
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{
		Name: name, Hostname: req.Hostname, OS: req.OS, Arch: req.Arch, Version: req.Version, Site: req.Site, Labels: req.Labels,
		LabelsReported: req.ReportsLabels,
	}}); err != nil {
		return wire.AgentRegisterResp{}, err
	}
	s.touch(s.agents, name)
	s.log.Info("agent registered", "client", name, "hostname", req.Hostname, "pid", req.PID, "instance", req.Instance)
	resp := wire.AgentRegisterResp{Group: s.groupName()}
	s.mu.Lock()
	s.agents[name].draining = false // a stopping agent does not register
	s.mu.Unlock()
	if req.Instance != "" {
		seen := s.seeInstance(name, wire.AgentInstance{ID: req.Instance, Hostname: req.Hostname, PID: req.PID}, req.Running)
		s.afterSeen(ctx, name, seen)
		resp.Duplicate = seen.duplicate
	}
	return resp, nil
}

// agentBeat records an agent's heartbeat; every server hears them.
func (s *Server) agentBeat(name string, hb wire.AgentHeartbeat) {
	l := s.touch(s.agents, name)
	s.mu.Lock()
	l.running = map[uint64]bool{}
	for _, id := range hb.Running {
		l.running[id] = true
	}
	l.draining = hb.Stopping
	s.mu.Unlock()
	if hb.Instance == "" {
		return // an older agent
	}
	seen := s.seeInstance(name, wire.AgentInstance{ID: hb.Instance, Hostname: hb.Hostname, PID: hb.PID}, hb.Running)
	if (seen.restartOf != nil || seen.duplicate != nil) && s.deciding() {
		// Off the NATS callback: what follows writes to the catalog. The
		// leader's watch loop takes it; one dropped when it lags is seen
		// again at the next heartbeat (a duplicate) or by the watchdog (a
		// restart).
		select {
		case s.seen <- seenEvent{name: name, seen: seen}:
		default:
		}
	}
}

// seenEvent is an agent's heartbeat the leader must act on (afterSeen).
type seenEvent struct {
	name string
	seen instanceSeen
}

// instanceSeen is what one registration or heartbeat of an agent process
// tells: that it replaced another process of the name (restartOf, the
// process before it), and that another one runs at the same time
// (duplicate).
type instanceSeen struct {
	self      wire.AgentInstance
	restartOf *wire.AgentInstance
	duplicate *wire.AgentDuplicate
	running   []uint64
}

// seeInstance records that an agent process of name was heard from now.
// Two processes are alive at once when each was heard from after the other
// was first heard from: a restarted agent, whose old process fell silent
// before the new one started, is not a duplicate. Processes silent for the
// liveness timeout are forgotten.
func (s *Server) seeInstance(name string, in wire.AgentInstance, running []uint64) instanceSeen {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.agents[name]
	if l == nil {
		l = &liveness{lastSeen: now, usage: map[string]wire.PoolUsage{}}
		s.agents[name] = l
	}
	if l.instances == nil {
		l.instances = map[string]*wire.AgentInstance{}
	}
	for id, o := range l.instances {
		if now.Sub(o.LastSeen) > s.cfg.LivenessTimeout && id != in.ID {
			delete(l.instances, id)
		}
	}
	seen := instanceSeen{running: running}
	cur := l.instances[in.ID]
	if cur == nil {
		cur = &wire.AgentInstance{ID: in.ID, FirstSeen: now}
		for _, o := range l.instances {
			if seen.restartOf == nil || o.LastSeen.After(seen.restartOf.LastSeen) {
				prev := *o
				seen.restartOf = &prev
			}
		}
		l.instances[in.ID] = cur
	}
	cur.Hostname, cur.PID, cur.LastSeen = in.Hostname, in.PID, now
	seen.self = *cur
	if dup := duplicateOf(name, l.instances); dup != nil {
		seen.duplicate = dup
		seen.restartOf = nil // not a restart: both run
	}
	return seen
}

// duplicateOf describes the processes of a client name that are alive at
// once, nil when there are none.
func duplicateOf(name string, instances map[string]*wire.AgentInstance) *wire.AgentDuplicate {
	var alive []wire.AgentInstance
	for _, a := range instances {
		for _, b := range instances {
			if a.ID != b.ID && a.LastSeen.After(b.FirstSeen) && b.LastSeen.After(a.FirstSeen) {
				alive = append(alive, *a)
				break
			}
		}
	}
	if len(alive) < 2 {
		return nil
	}
	sort.Slice(alive, func(i, j int) bool { return alive[i].FirstSeen.Before(alive[j].FirstSeen) })
	var hosts []string
	for _, a := range alive {
		hosts = append(hosts, fmt.Sprintf("host %s (pid %d)", a.Hostname, a.PID))
	}
	return &wire.AgentDuplicate{
		Client: name, Instances: alive, Hint: wire.HintFor(wire.CodeDuplicateAgent),
		Message: fmt.Sprintf("%d agents run as client %s at once: on %s; every order for %s reaches each of them, and all but one have their ticket refused ('ticket already used')",
			len(alive), name, strings.Join(hosts, " and "), name),
	}
}

// duplicate is the duplicate agents of a client name, nil when it has one
// agent process (or none).
func (s *Server) duplicate(name string) *wire.AgentDuplicate {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.agents[name]
	if l == nil {
		return nil
	}
	live := map[string]*wire.AgentInstance{}
	for id, in := range l.instances {
		if s.clock.Since(in.LastSeen) < s.cfg.LivenessTimeout {
			live[id] = in
		}
	}
	return duplicateOf(name, live)
}

// afterSeen acts, on the leader, on what an agent's registration or
// heartbeat told: a duplicate is logged and told to the agents, and fails
// the client's running jobs, which cannot succeed (duplicateAgents); a
// restarted agent's jobs are taken back from the process that died with
// them (agentRestarted).
func (s *Server) afterSeen(ctx context.Context, name string, seen instanceSeen) {
	if !s.deciding() {
		return
	}
	switch {
	case seen.duplicate != nil:
		s.duplicateAgents(ctx, seen.duplicate)
	case seen.restartOf != nil:
		s.agentRestarted(ctx, name, seen)
	}
}

// duplicateAgents tells every agent process of the name that another runs
// (each logs an error), at most every few seconds, and fails the client's
// running jobs with the reason.
func (s *Server) duplicateAgents(ctx context.Context, dup *wire.AgentDuplicate) {
	s.mu.Lock()
	l := s.agents[dup.Client]
	tell := l != nil && s.clock.Since(l.dupSaid) >= duplicateNotice
	if tell {
		l.dupSaid = s.clock.Now()
	}
	s.mu.Unlock()
	jobs := s.orch.RunsOf(dup.Client)
	if tell {
		s.log.Error("duplicate agents", "client", dup.Client, "msg", dup.Message, "hint", dup.Hint)
		if err := wire.PublishIn(s.nc, s.groupName(), wire.AgentSubject(dup.Client, wire.OpAgentDuplicate), *dup); err != nil {
			s.log.Warn("could not tell the agents of their duplicate", "client", dup.Client, "err", err)
		}
	}
	for _, id := range jobs {
		s.orch.Fail(ctx, id, wire.Errorf(wire.CodeDuplicateAgent, "", "%s", dup.Message))
	}
}

// duplicateNotice is how often the agents of a duplicated name are told.
const duplicateNotice = 10 * time.Second

// agentRestarted takes back the jobs a restarted agent's old process was
// running: that process is gone, and its stream with it, so a backup goes
// on with its next attempt at once (not after a watchdog's timeout, and
// not as a failure of the client), and a restore fails saying why, since
// its target holds what the old process wrote. Jobs that a storage node
// already sent back to the queue get a line saying the agent restarted.
func (s *Server) agentRestarted(ctx context.Context, name string, seen instanceSeen) {
	old, now := seen.restartOf, seen.self
	what := fmt.Sprintf("the agent of client %s restarted (host %s, pid %d; it was pid %d on %s)", name, now.Hostname, now.PID, old.PID, old.Hostname)
	s.log.Info("agent restarted", "client", name, "hostname", now.Hostname, "pid", now.PID, "was", old.PID)
	s.orch.AgentRestarted(ctx, name, what, seen.running)
}

// agentJob returns a running job the sending agent takes part in.
func (s *Server) agentJob(subject string, id uint64) (*catalog.Job, error) {
	job, err := s.store.Job(id)
	if err != nil || job.Client != sender(subject) {
		return nil, wire.Errorf(wire.CodeNotFound, "", "job %d is not a job of client %s", id, sender(subject))
	}
	if job.State.Done() {
		return nil, wire.Errorf(wire.CodeAborted, "", "job %d already ended (%s)", id, job.State)
	}
	return job, nil
}

func (s *Server) baseTree(_ context.Context, subject string, req wire.BaseTreeReq) (wire.BaseTreeResp, error) {
	job, err := s.agentJob(subject, req.JobID)
	if err != nil {
		return wire.BaseTreeResp{}, err
	}
	if job.Type != catalog.JobBackup {
		return wire.BaseTreeResp{}, wire.Errorf(wire.CodeInvalidArgument, "", "job %d is not a backup", job.ID)
	}
	seg, done, err := s.orch.BaseTree(job, string(req.After))
	if err != nil {
		return wire.BaseTreeResp{}, err
	}
	return wire.BaseTreeResp{Segment: seg, Done: done}, nil
}

// restorePlan hands the storage node that runs a restore the pages of its
// plan: where the data lies on its volumes is the node's business, not the
// agent's. Only the node the job runs on gets it, at the attempt its ticket
// names, and only for volumes of pools it serves.
func (s *Server) restorePlan(_ context.Context, subject string, req wire.RestorePlanReq) (wire.RestorePlanResp, error) {
	node := sender(subject)
	job, err := s.runningJobOf(node, req.JobID)
	if err != nil {
		return wire.RestorePlanResp{}, err
	}
	if !orchestrator.ReadsPlan(job) {
		return wire.RestorePlanResp{}, wire.Errorf(wire.CodeInvalidArgument, "", "job %d is not a restore", job.ID)
	}
	if job.State != catalog.JobRunning || req.Attempt != job.Attempt {
		return wire.RestorePlanResp{}, wire.Errorf(wire.CodeAborted, fmt.Sprintf("'cairn job show %d' says what runs", job.ID),
			"attempt %d of job %d does not run on storage node %s (the job is %s at attempt %d)", req.Attempt, job.ID, node, job.State, job.Attempt)
	}
	page, err := s.orch.PlanPage(job, req.Cursor)
	if err != nil {
		return wire.RestorePlanResp{}, err
	}
	n, err := s.store.Node(node)
	if err != nil {
		return wire.RestorePlanResp{}, catalogError(err)
	}
	for _, rr := range page.Reads {
		for _, p := range rr.Parts {
			if !slices.ContainsFunc(n.Pools, func(np catalog.NodePool) bool { return np.Name == p.Pool }) {
				return wire.RestorePlanResp{}, wire.Errorf(wire.CodeInvalidArgument, "restore from a storage node that serves the pool",
					"volume %s of job %d lies in pool %s, which storage node %s does not serve", p.Volume, job.ID, p.Pool, node)
			}
		}
	}
	if req.Packed >= 1 {
		packed, err := wire.PackReads(page.Reads, min(req.Packed, wire.PackedVersion))
		if err != nil {
			return wire.RestorePlanResp{}, err
		}
		// The page was cut to fit one message in JSON. Packed, its bytes
		// go as base64, a third more: a page of long paths, whose packed
		// form is hardly smaller, would outgrow the message, and goes in
		// JSON.
		if base64.StdEncoding.EncodedLen(len(packed)) <= s.pageBytes() {
			page.Reads, page.Packed = nil, packed
		}
	}
	return page, nil
}

func (s *Server) jobDone(ctx context.Context, subject string, req wire.JobDoneReq) (wire.Empty, error) {
	job, err := s.store.Job(req.JobID)
	if err != nil || job.Client != sender(subject) {
		return wire.Empty{}, wire.Errorf(wire.CodeNotFound, "", "job %d is not a job of client %s", req.JobID, sender(subject))
	}
	return wire.Empty{}, s.orch.AgentDone(ctx, job, req)
}
