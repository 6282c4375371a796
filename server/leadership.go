package server

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/wire"
)

// leaderTerm is one stretch of this server's leadership, from the barrier
// that follows its election to the moment Raft says it lost it. Every
// decision of the leader (adopting running jobs, dispatching, the
// watchdog) runs under ctx, which ends at once with the term.
type leaderTerm struct {
	ctx      context.Context
	cancel   context.CancelFunc
	raftTerm uint64
	sub      *nats.Subscription // the group's leader subject, forwarded requests
}

// barrierTimeout bounds a new leader's barrier; one that does not
// complete in it is tried again while Raft still says this server leads.
const barrierTimeout = 10 * time.Second

// leading returns the context of the current leader term, and false when
// this server does not lead or has not passed its barrier yet: nothing is
// decided then.
func (s *Server) leading() (context.Context, bool) {
	s.termMu.Lock()
	defer s.termMu.Unlock()
	if s.term == nil {
		return nil, false
	}
	return s.term.ctx, true
}

// decide is leading for the dispatcher and watchdog: it also tells a test,
// under the same lock as the end of a term, so a trace never shows a
// decision after "lost".
func (s *Server) decide() (context.Context, bool) {
	s.termMu.Lock()
	defer s.termMu.Unlock()
	if s.term == nil {
		return nil, false
	}
	s.traceLeader("decide")
	return s.term.ctx, true
}

// deciding reports whether this server leads and has read the catalog
// after a barrier.
func (s *Server) deciding() bool {
	_, ok := s.leading()
	return ok
}

// traceLeader tells a test what the leadership loop just did.
func (s *Server) traceLeader(event string) {
	if s.leaderTrace != nil {
		s.leaderTrace(event)
	}
}

// leadership follows Raft's leadership notifications: on winning an
// election it runs a barrier, so its reads of the catalog see every write
// of the leaders before it, and only then begins deciding; on losing it,
// it ends the term's context at once, which stops the dispatcher and
// watchdog where they are, without waiting for a poll.
func (s *Server) leadership(ctx context.Context, events <-chan bool) {
	defer s.endTerm()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry:
			retry = nil
		case <-events:
		}
		// The event is a hint: Raft's state now is what counts, and a
		// reader that lagged may have missed a loss and a new election.
		if !s.raft.IsLeader() {
			if s.endTerm() {
				s.log.Info("no longer leading")
			}
			continue
		}
		if s.raft.Term() == s.termOf() {
			continue // still the same term, already deciding
		}
		s.endTerm()
		if err := s.beginTerm(ctx); err != nil {
			s.log.Warn("new leader: barrier failed; trying again", "err", err)
			retry = time.After(time.Second)
		}
	}
}

// termOf is the Raft term this server decides in, 0 when none.
func (s *Server) termOf() uint64 {
	s.termMu.Lock()
	defer s.termMu.Unlock()
	if s.term == nil {
		return 0
	}
	return s.term.raftTerm
}

// beginTerm runs the barrier of a new leader and starts deciding.
func (s *Server) beginTerm(ctx context.Context) error {
	raftTerm := s.raft.Term()
	bctx, cancel := context.WithTimeout(ctx, barrierTimeout)
	err := s.raft.Barrier(bctx)
	cancel()
	if err != nil {
		return err
	}
	s.traceLeader("barrier")
	s.initGroup(ctx)
	group := s.groupName()
	if group == "" {
		return errors.New("the group's identity is not recorded yet")
	}
	tctx, tcancel := context.WithCancel(ctx)
	t := &leaderTerm{ctx: tctx, cancel: tcancel, raftTerm: raftTerm}
	{
		sub, err := s.nc.Subscribe(wire.LeaderWildcard(group), func(m *nats.Msg) {
			if tctx.Err() != nil {
				// The term is over and the subscription about to go: the
				// request is the new leader's to answer (it may already
				// be subscribed), not a former leader's, which would
				// carry it out as if it still led.
				return
			}
			orig, ok := wire.TrimLeader(group, m.Subject)
			if ok && orig == wire.ReadIndexSubject {
				s.requests.Handle(ctx, m, s.log, s.readIndex)
				return
			}
			h := s.handlerFor(orig)
			if !ok || h == nil {
				wire.Respond(m, wire.MarshalError(wire.Errorf(wire.CodeUnknownOperation, "", "nothing answers %s", m.Subject)), s.log)
				return
			}
			m.Subject = orig
			// The server's context, not the term's: a forwarded request
			// is not cut when this leadership ends; its writes fail as
			// not-leader by themselves, which is what its caller is told.
			s.requests.Handle(ctx, m, s.log, h)
		})
		if err != nil {
			tcancel()
			return err
		}
		t.sub = sub
	}
	s.termMu.Lock()
	s.term = t
	s.termMu.Unlock()
	s.log.Info("leading the group: serving writes and dispatching jobs", "group", group, "term", raftTerm)
	if lctx, ok := s.decide(); ok && lctx == tctx {
		s.orch.Adopt(tctx)
		s.startScheduler(tctx)
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.watchRPO(tctx)
	}()
	go func() {
		defer s.wg.Done()
		s.sendAlertsOwed(tctx)
	}()
	return nil
}

// endTerm stops deciding, first of all, and reports whether this server
// was.
func (s *Server) endTerm() bool {
	s.termMu.Lock()
	t := s.term
	s.term = nil
	if t != nil {
		t.cancel()
		s.traceLeader("lost")
	}
	s.termMu.Unlock()
	if t == nil {
		return false
	}
	if t.sub != nil {
		_ = t.sub.Unsubscribe()
	}
	s.orch.Lost()
	return true
}
