package server

import (
	"context"
	"encoding/json"
	"maps"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/internal/clock"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// What the server gives the orchestrator (package orchestrator), and the
// handlers that hand it requests: each decodes, calls and answers. The
// orchestrator's errors (and the catalog's, which it wraps) are domain
// errors; atEdge makes them the wire's on the way out of every handler.

// wireError is the answer to a request that failed with err: the code and
// hint of the orchestrator's *Error (or of a *wire.Error) outermost in its
// chain, the code's usual hint when it has none, and the whole chain's
// message. The error stays the cause, so errors.Is and errors.As on this
// side of the wire still see the domain error.
func wireError(err error) *wire.Error {
	if err == nil {
		return nil
	}
	if code, hint, ok := orchestrator.Describe(err); ok {
		return wire.Errorf(code, hint, "%w", err)
	}
	return wire.AsError(err)
}

// atEdge answers the errors of h in the wire's terms (wireError).
func atEdge(h wire.Handler) wire.Handler {
	return func(ctx context.Context, subject string, body json.RawMessage) (any, error) {
		res, err := h(ctx, subject, body)
		if err != nil {
			return res, wireError(err)
		}
		return res, nil
	}
}

func (s *Server) newOrchestrator() *orchestrator.Orchestrator {
	return orchestrator.New(orchestrator.Config{
		LivenessTimeout: s.cfg.LivenessTimeout, StallTimeout: s.cfg.StallTimeout, QueueTimeout: s.cfg.QueueTimeout,
		StartConfirmTimeout: s.cfg.StartConfirmTimeout, RequestIDTTL: s.cfg.RequestIDTTL, DefaultPool: s.cfg.DefaultPool,
		Limits: orchestrator.Limits{PerClient: s.cfg.MaxJobsPerClient, PerNode: s.cfg.MaxJobsPerNode, PerPool: poolJobLimits(s.cfg.PoolJobLimits),
			PerDrive: s.cfg.MaxJobsPerDrive},
	}, orchestrator.Deps{
		Store: s.store, Raft: s.raft, Member: member{s}, Roles: roles{s}, Liveness: heartbeats{s},
		// Read through s, so a test that swaps the server's clock before
		// Start swaps the orchestrator's too.
		Clock: serverClock{s}, Log: s.log,
	})
}

func poolJobLimits(ls []PoolJobLimit) map[string]int {
	m := map[string]int{}
	for _, l := range ls {
		m[l.Pool] = l.MaxJobs
	}
	return m
}

func (s *Server) startBackup(ctx context.Context, _ string, req wire.BackupStartReq) (wire.JobStarted, error) {
	return s.orch.StartBackup(ctx, orchestrator.BackupSpec{
		Client: req.Client, Paths: req.Paths, Excludes: req.Excludes, Level: req.Level, Pool: req.Pool, SkipNodump: req.SkipNodump, OneFileSystem: req.OneFileSystem,
		Application: req.Application, RequestID: req.RequestID, Retry: req.Retry,
	})
}

func (s *Server) startConsolidate(ctx context.Context, _ string, req wire.BackupConsolidateReq) (wire.JobStarted, error) {
	return s.orch.StartConsolidate(ctx, orchestrator.ConsolidateSpec{
		Client: req.Client, FileSet: req.FileSet, Pool: req.Pool, RequestID: req.RequestID, Retry: req.Retry,
	})
}

func (s *Server) startRestore(ctx context.Context, _ string, req wire.RestoreStartReq) (wire.JobStarted, error) {
	return s.orch.StartRestore(ctx, orchestrator.RestoreSpec{
		PointInTime: req.PointInTime, Paths: req.Paths, TargetClient: req.TargetClient, To: req.To, Force: req.Force, Devices: req.Devices,
		RequestID: req.RequestID, Retry: req.Retry,
	})
}

func (s *Server) cancelJob(ctx context.Context, _ string, req wire.JobCancelReq) (wire.JobInfo, error) {
	job, err := s.orch.Cancel(ctx, orchestrator.CancelSpec{ID: req.ID, By: req.By, Reason: req.Reason})
	if err != nil {
		return wire.JobInfo{}, err
	}
	return s.jobInfo(job, false), nil
}

// watch runs the leader's rounds (orchestrator.Round): every second of
// the server's clock, and at once when the orchestrator asks for one. It
// also acts on the agents' heartbeats that need the leader (afterSeen).
func (s *Server) watch(ctx context.Context) {
	t := s.clock.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		case <-s.orch.Wake():
		case ev := <-s.seen:
			if lctx, ok := s.leading(); ok {
				s.afterSeen(lctx, ev.name, ev.seen)
			}
			continue
		}
		lctx, ok := s.decide()
		if !ok {
			continue
		}
		// Under the term's context: a leadership lost in the middle of
		// a round stops it at its next catalog write.
		s.orch.Round(lctx)
	}
}

// sign signs a job ticket, valid for TicketTTL from now.
func (s *Server) sign(t ticket.Ticket) (string, error) {
	if g := s.group(); g != nil && !s.signsForGroup(g) {
		return "", wire.Errorf(wire.CodeKey, kekHint,
			"server %s signs job tickets with a key that is not its group's: storage nodes would refuse them", s.cfg.Name)
	}
	now := s.clock.Now().UTC()
	t.Issued = now
	t.Expires = now.Add(s.cfg.TicketTTL)
	return ticket.Sign(t, s.keys().signer)
}

// pageBytes is the page size for this server's NATS connection.
func (s *Server) pageBytes() int { return orchestrator.PageBytes(s.nc.MaxPayload()) }

// member is the server as the orchestrator sees it.
type member struct{ s *Server }

func (m member) Admit() error                         { return m.s.admit() }
func (m member) CatalogStopped() error                { return m.s.raft.FSM().Failed() }
func (m member) ApplyError(err error) error           { return m.s.applyError(err) }
func (m member) Sign(t ticket.Ticket) (string, error) { return m.s.sign(t) }
func (m member) JobEnded(j *catalog.Job)              { m.s.jobEnded(j) }

// roles reaches the storage nodes and agents on the server's NATS
// connection, naming the group, whose orders they take alone.
type roles struct{ s *Server }

func (r roles) Request(ctx context.Context, subject string, req, resp any) error {
	return wire.RequestIn(ctx, r.s.nc, r.s.groupName(), subject, req, resp)
}
func (r roles) Publish(ev wire.JobEvent) { r.s.publishEvent(ev) }
func (r roles) PageBytes() int           { return r.s.pageBytes() }

type serverClock struct{ s *Server }

func (c serverClock) Now() time.Time                         { return c.s.clock.Now() }
func (c serverClock) Since(t time.Time) time.Duration        { return c.s.clock.Since(t) }
func (c serverClock) NewTicker(d time.Duration) clock.Ticker { return c.s.clock.NewTicker(d) }

// heartbeats is the server's liveness table (server.go, liveness) as the
// orchestrator reads it.
type heartbeats struct{ s *Server }

func (h heartbeats) Node(id string) orchestrator.NodeState {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.nodes[id]
	if l == nil {
		return orchestrator.NodeState{}
	}
	return orchestrator.NodeState{
		Online: s.alive(l), LastSeen: l.lastSeen, Draining: l.draining, Suspect: l.suspect,
		Site: l.site, Usage: maps.Clone(l.usage), Streams: l.streams,
	}
}

func (h heartbeats) Agent(client string) orchestrator.AgentState {
	dup := h.s.duplicate(client)
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.agents[client]
	if l == nil {
		return orchestrator.AgentState{Duplicate: dup}
	}
	a := orchestrator.AgentState{
		Online: s.alive(l), LastSeen: l.lastSeen, Stopping: l.draining,
		Duplicate: dup, Running: maps.Clone(l.running),
	}
	if !l.lost.IsZero() && !l.lastSeen.After(l.lost) {
		a.LostSince = l.lost
	}
	return a
}

func (h heartbeats) AgentLost(client string) {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.agents[client]; l != nil {
		l.lost = s.clock.Now()
	}
}

func (h heartbeats) Suspect(node string) { h.s.suspect(node) }

func (h heartbeats) AgentStopped(client string) {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.agents[client]; l != nil {
		l.draining = true
	}
}

// nodeDraining reports whether a storage node said it is stopping.
func (s *Server) nodeDraining(node string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.nodes[node]
	return l != nil && l.draining
}

// suspect keeps a storage node out of the choice until it registers again
// (orchestrator.Liveness).
func (s *Server) suspect(node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.nodes[node]; l != nil {
		l.suspect = s.clock.Now()
	}
}
