package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/wire"
)

// localOps are the admin reads any member answers from its own catalog,
// once it holds every write the leader had applied when asked (caughtUp).
// Everything else — writes, job state and progress, volume selection, and
// the paged plans whose place the leader keeps — goes to the leader.
var localOps = map[string]bool{
	wire.OpStatus:        true,
	wire.OpClientList:    true,
	wire.OpPoolList:      true,
	wire.OpVolumeList:    true,
	wire.OpVolumeShow:    true,
	wire.OpBackupList:    true,
	wire.OpTreeList:      true,
	wire.OpClusterStatus: true,
	wire.OpPolicyShow:    true,
	wire.OpPolicyList:    true,
	wire.OpPolicyPreview: true,
	wire.OpRunList:       true,
}

// needsLeader reports whether a request on subject must be answered by the leader.
func needsLeader(subject string) bool {
	if op, ok := wire.TrimAPI(subject); ok {
		return !localOps[op]
	}
	return true // every storage node and agent request changes or pages something
}

// answersLocally reports whether this server answers a request on subject
// from its own catalog. One whose catalog stopped applying the log (a full
// disk) holds an old copy: it leaves the reads to the leader, except those
// that report its own state.
func (s *Server) answersLocally(subject string) bool {
	if needsLeader(subject) {
		return false
	}
	op, _ := wire.TrimAPI(subject)
	return s.raft.FSM().Failed() == nil || op == wire.OpStatus || op == wire.OpClusterStatus
}

// readIndexTimeout bounds a follower's question to the leader before a
// read of its own catalog, and catchUpTimeout its wait for its catalog to
// reach the leader's answer: a follower that does not get there in time
// forwards the read instead.
const (
	readIndexTimeout = 2 * time.Second
	catchUpTimeout   = 2 * time.Second
)

// farBehind is how many commands a follower's catalog may lag the
// leader's and still wait to catch up before it answers a read; further
// behind (installing a snapshot, or joining) it forwards the read at once,
// instead of making each read, each page of a listing, wait catchUpTimeout
// first. A follower in step lags by a few commands.
const farBehind = 256

// caughtUp reports whether this follower may answer a read on subject
// from its own catalog: once its catalog holds every command the leader
// had applied when asked, so a read sees every write acknowledged before
// it, whichever member the read reaches (a script's 'backup --wait' then
// 'backup list'). A follower with no leader to ask answers from its
// catalog as it is: reads go on while the group has no majority. One that
// does not catch up in time leaves the read to the leader. The requests
// that report a server's own state never wait.
func (s *Server) caughtUp(ctx context.Context, subject string) bool {
	if op, _ := wire.TrimAPI(subject); op == wire.OpStatus || op == wire.OpClusterStatus {
		return true
	}
	group := s.groupName()
	if group == "" {
		return true
	}
	rctx, cancel := context.WithTimeout(ctx, readIndexTimeout)
	defer cancel()
	var idx wire.ReadIndexResp
	if err := wire.Request(rctx, s.nc, wire.LeaderSubject(group, wire.ReadIndexSubject), nil, &idx); err != nil {
		s.log.Debug("no leader's index to wait for; answering from this catalog", "subject", subject, "err", err)
		return true
	}
	if own := s.raft.FSM().Applied(); idx.Applied > own+s.farBehind {
		s.log.Debug("catalog far behind the leader's; forwarding the read", "subject", subject, "applied", own, "leader_applied", idx.Applied)
		return false
	}
	wctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	if err := s.raft.FSM().WaitApplied(wctx, idx.Applied); err != nil {
		s.log.Info("catalog behind the leader's; forwarding the read", "subject", subject,
			"applied", s.raft.FSM().Applied(), "leader_applied", idx.Applied)
		return false
	}
	return true
}

// readIndex answers a follower's ReadIndexSubject: the leader's applied
// index, once a majority confirmed it still leads.
func (s *Server) readIndex(ctx context.Context, _ string, _ json.RawMessage) (any, error) {
	vctx, cancel := context.WithTimeout(ctx, readIndexTimeout)
	defer cancel()
	if err := s.raft.VerifyLeader(vctx); err != nil {
		return nil, err
	}
	return wire.ReadIndexResp{Applied: s.raft.FSM().Applied()}, nil
}

// forwardTimeout bounds a follower's wait for the leader's answer; the
// caller's own timeout is usually longer.
const forwardTimeout = 60 * time.Second

// slowOps are the API requests the leader answers only after a library
// has moved or written a cartridge: minutes on a real robot. A follower
// that gave up on them sooner would report a failure for a label that
// then lands.
var slowOps = map[string]time.Duration{
	wire.OpMediaLabel:    tapeLabelTimeout + libraryStatusTimeout + 10*time.Second,
	wire.OpLibraryMove:   libraryMoveTimeout + 10*time.Second,
	wire.OpLibraryStatus: libraryStatusTimeout + 10*time.Second,
	// A join waits for the new server to catch up.
	wire.OpClusterJoin: maxCatchUpTimeout + time.Minute,
}

// forwardTimeoutOf is how long a follower waits for the leader's answer to
// a request on subject.
func forwardTimeoutOf(subject string) time.Duration {
	if op, ok := wire.TrimAPI(subject); ok {
		if d, ok := slowOps[op]; ok {
			return d
		}
	}
	return forwardTimeout
}

// leaderWait bounds how long a follower keeps forwarding a request that
// nothing answers on the leader's subject while a majority of the group
// runs: an election takes a few seconds, and a new leader's subscription
// takes a moment to reach every server of a NATS cluster. A group without
// a majority is reported at once instead.
const leaderWait = 5 * time.Second

// subscribe serves the role-facing subjects: answered here when this server
// may, forwarded to the leader otherwise.
func (s *Server) subscribe(ctx context.Context) error {
	api, fromNode, fromAgent := wire.NewRouter(), wire.NewRouter(), wire.NewRouter()
	s.routeAPI(api)
	s.routeNodes(fromNode)
	s.routeAgents(fromAgent)
	splitOp := func(subject string) (string, bool) {
		_, op, ok := wire.SplitFrom(subject)
		return op, ok
	}
	s.dispatch = map[string]wire.Handler{
		wire.APIWildcard:       atEdge(api.Dispatch(wire.TrimAPI)),
		wire.EscrowWildcard:    atEdge(api.Dispatch(wire.TrimAPI)),
		wire.FromNodeWildcard:  atEdge(fromNode.Dispatch(splitOp)),
		wire.FromAgentWildcard: atEdge(fromAgent.Dispatch(splitOp)),
	}
	// The role-facing subjects are subscribed by serveRoles, while this
	// server is a member of its group.
	beats, err := s.nc.Subscribe(wire.BeatWildcard, func(m *nats.Msg) { s.beat(m) })
	if err != nil {
		return fmt.Errorf("subscribe heartbeats: %w", err)
	}
	s.subs = append(s.subs, beats)
	mine := wire.NewRouter()
	mine.Handle(wire.OpServerStatus, wire.Typed(s.serverStatus))
	mine.Handle(wire.OpServerPrepareSecrets, wire.Typed(s.prepareSecrets))
	prefix := wire.ServerSubject(s.cfg.Name, "")
	sub, err := wire.ServeIn(ctx, s.nc, prefix+">", "", s.log, &s.requests, atEdge(mine.Dispatch(func(subject string) (string, bool) {
		return strings.TrimPrefix(subject, prefix), strings.HasPrefix(subject, prefix)
	})))
	if err != nil {
		return err
	}
	s.subs = append(s.subs, sub)
	return nil
}

// handlerFor finds the router of a subject.
func (s *Server) handlerFor(subject string) wire.Handler {
	switch {
	case wire.IsAPISubject(subject):
		return s.dispatch[wire.APIWildcard]
	case strings.HasPrefix(subject, "cairn.srv.node."):
		return s.dispatch[wire.FromNodeWildcard]
	case strings.HasPrefix(subject, "cairn.srv.agent."):
		return s.dispatch[wire.FromAgentWildcard]
	}
	return nil
}

func (s *Server) serveOrForward(ctx context.Context, m *nats.Msg) {
	if s.beforeHandle != nil {
		s.beforeHandle(ctx, m)
	}
	if ctx.Err() != nil {
		// Stopping: said plainly, rather than as a leader that did not
		// answer.
		s.requests.Refuse(m, s.log)
		return
	}
	if m.Reply != "" && !strings.HasPrefix(m.Reply, "_INBOX.") {
		// Every role takes its replies on an inbox. A reply subject
		// elsewhere would have this server publish, with its own
		// authority, wherever the sender names: another agent's orders,
		// the API, the leader's subject.
		s.log.Warn("dropped a request whose reply subject is not an inbox", "subject", m.Subject, "reply", m.Reply)
		return
	}
	if !s.ownGroupRequest(ctx, m) {
		return
	}
	if s.deciding() || (s.answersLocally(m.Subject) && s.caughtUp(ctx, m.Subject)) {
		wire.HandleMsg(ctx, m, s.log, s.handlerFor(m.Subject))
		return
	}
	if m.Reply == "" {
		return // a request nobody waits for is not worth a hop
	}
	fctx, cancel := context.WithTimeout(ctx, forwardTimeoutOf(m.Subject))
	defer cancel()
	deadline := time.Now().Add(leaderWait)
	pause := 50 * time.Millisecond
	checked := false
	for {
		reply, err := s.nc.RequestMsgWithContext(fctx, &nats.Msg{Subject: wire.LeaderSubject(s.groupName(), m.Subject), Data: m.Data, Header: m.Header})
		if err == nil {
			wire.Respond(m, reply.Data, s.log)
			return
		}
		if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
			wire.Respond(m, wire.MarshalError(s.forwardError(ctx, m.Subject, err)), s.log)
			return
		}
		if s.raft.LeaderID() == "" && !checked {
			// No leader known: an election may be running, or the group
			// lost its majority, which waiting does not cure.
			checked = true
			if down, ok := s.majority(ctx); !ok {
				e := noLeader(down)
				e.Code = wire.CodeNoQuorum
				wire.Respond(m, wire.MarshalError(e), s.log)
				return
			}
		}
		select {
		case <-fctx.Done():
			wire.Respond(m, wire.MarshalError(s.forwardError(ctx, m.Subject, err)), s.log)
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 500*time.Millisecond)
		if s.deciding() {
			// This server won the election meanwhile.
			wire.HandleMsg(ctx, m, s.log, s.handlerFor(m.Subject))
			return
		}
	}
}

// majority reports whether more than half of the group's voters answer on
// NATS, and which members do not.
func (s *Server) majority(ctx context.Context) (down []string, ok bool) {
	voters, up := 0, 0
	for _, m := range s.members(ctx) {
		if !m.Reachable {
			down = append(down, m.Name)
		}
		if m.Voter {
			voters++
			if m.Reachable {
				up++
			}
		}
	}
	return down, voters == 0 || 2*up > voters
}

// startOps are the requests that start something, each under a request id
// (wire.Start).
var startOps = map[string]bool{wire.OpBackupStart: true, wire.OpRestoreStart: true, wire.OpMediaLabel: true, wire.OpLibraryMove: true}

// forwardError explains why a forwarded request got no answer from the
// leader. A start that reached the leader and got no answer in time may
// have been carried out: its outcome is unknown, not failed.
func (s *Server) forwardError(ctx context.Context, subject string, err error) *wire.Error {
	op, _ := wire.TrimAPI(subject)
	if startOps[op] && !errors.Is(err, nats.ErrNoResponders) {
		return wire.Errorf(wire.CodeOutcomeUnknown, "run the same command again with the same --request-id (it never starts a second one)",
			"the leader did not answer in time; the request may have been carried out: %w", err)
	}
	return s.noLeaderError(ctx, err)
}

// noLeaderError explains why a request could not reach the leader.
func (s *Server) noLeaderError(ctx context.Context, err error) *wire.Error {
	if errors.Is(err, nats.ErrNoResponders) {
		return noLeader(s.unreachable(ctx))
	}
	return wire.Errorf(wire.CodeUnavailable, "retry; 'cairn cluster status' shows the group", "the leader did not answer: %w", err)
}

// noLeader says that the group has no leader, naming the members down.
func noLeader(down []string) *wire.Error {
	if len(down) == 0 {
		return wire.Errorf(wire.CodeNotLeader, "retry in a few seconds", "no leader: the servers are electing one")
	}
	return wire.Errorf(wire.CodeNotLeader,
		"start the unreachable servers; writes resume as soon as a majority runs ('cairn cluster status' shows who answers)",
		"no leader: servers %s are unreachable, so the group may have no majority", strings.Join(down, ", "))
}

// unreachable lists the members of the group that do not answer.
func (s *Server) unreachable(ctx context.Context) []string {
	var down []string
	for _, m := range s.members(ctx) {
		if !m.Reachable {
			down = append(down, m.Name)
		}
	}
	return down
}

// leaderLoop answers roles while this server is a member (serveRoles),
// records the group's identity once it leads, and announces it. Leadership
// itself follows Raft's notifications (leadership.go).
func (s *Server) leaderLoop(ctx context.Context) {
	defer func() {
		s.serving.Store(false)
		for _, sub := range s.roleSubs {
			_ = sub.Unsubscribe()
		}
		s.roleSubs = nil
	}()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var announced time.Time
	for {
		if s.deciding() {
			s.initGroup(ctx)
		}
		s.checkOwnKeys()
		wasMember := s.member.Load()
		s.serveRoles(ctx)
		// A change of membership is announced at once: a server of
		// another group answers requests that name no group only while
		// it hears no member of another group (groups.go).
		if time.Since(announced) >= serverBeatInterval || s.member.Load() != wasMember {
			s.announce()
			announced = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// beat records a heartbeat or progress report; every server hears them.
func (s *Server) beat(m *nats.Msg) {
	kind, name, what, ok := wire.SplitBeat(m.Subject)
	if !ok {
		return
	}
	body, err := wire.Unmarshal(m.Data)
	if err != nil {
		s.log.Debug("malformed heartbeat", "subject", m.Subject, "err", err)
		return
	}
	switch {
	case kind == wire.KindServer && what == "alive":
		hb, err := wire.Decode[wire.ServerBeat](body)
		if err == nil && s.heardServer(name, hb) {
			s.announce()
		}
	case kind == "node" && what == "alive":
		hb, err := wire.Decode[wire.NodeHeartbeat](body)
		if err != nil || hb.ID != name || !s.ofMyGroup(hb.Group) {
			return
		}
		l := s.touch(s.nodes, name)
		s.mu.Lock()
		l.site = hb.Site
		for _, u := range hb.Pools {
			l.usage[u.Name] = u
		}
		l.streams = hb.Streams
		l.draining = hb.Draining
		s.mu.Unlock()
	case kind == "node" && what == "progress":
		p, err := wire.Decode[wire.Progress](body)
		if err != nil || !s.ofMyGroup(p.Group) {
			return
		}
		// Only the node that runs the job speaks for it; the report is
		// the job's activity, so a synthetic full that reads for long
		// between two requests is not taken for stalled.
		if s.orch.NodeProgressed(name, &p) && s.raft.IsLeader() {
			s.publishEvent(wire.JobEvent{JobID: p.JobID, State: string(catalog.JobRunning), Progress: &p})
		}
	case kind == "agent" && what == "alive":
		hb, err := wire.Decode[wire.AgentHeartbeat](body)
		if err != nil || !s.ofMyGroup(hb.Group) {
			return
		}
		s.agentBeat(name, hb)
	case kind == "agent" && what == "progress":
		p, err := wire.Decode[wire.Progress](body)
		if err != nil || !s.ofMyGroup(p.Group) {
			return
		}
		mine := s.orch.Progressed(name, &p)
		if !mine {
			// The report names its job: only that job's own client may
			// speak for it, or one agent could show false progress on
			// another client's job to whoever follows it.
			job, err := s.store.Job(p.JobID)
			if err != nil || job.Client != name || job.State.Done() {
				return
			}
		}
		if s.raft.IsLeader() {
			s.publishEvent(wire.JobEvent{JobID: p.JobID, State: string(catalog.JobRunning), Progress: &p})
		}
	}
}

func (s *Server) serverStatus(context.Context, string, wire.Empty) (wire.ServerStatus, error) {
	st := s.raft.Stats()
	var peers []string
	for _, p := range st.Peers {
		peers = append(peers, p.ID)
	}
	return wire.ServerStatus{
		Peers: peers, Name: s.cfg.Name, RaftAddr: st.Addr, State: st.State, Term: st.Term, LastIndex: st.LastIndex,
		CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, Leader: st.LeaderID, Version: Version,
		CatalogIndex: st.CatalogIndex, Group: s.groupName(), Member: s.member.Load(),
		KEKFingerprint: s.keys().kekFP, TicketKeyFingerprint: s.keys().ticketFP(),
		CatalogError: st.FSMError, CatalogBehind: st.CatalogBehind,
	}, nil
}

func (s *Server) clusterStatus(ctx context.Context, _ string, _ wire.Empty) (wire.ClusterStatusResp, error) {
	st := s.raft.Stats()
	resp := wire.ClusterStatusResp{Leader: st.LeaderID, Answered: s.cfg.Name, Members: s.members(ctx), Group: s.groupName()}
	resp.OtherGroups, resp.Waiting = s.otherServers()
	var leaderLast uint64
	for _, m := range resp.Members {
		if m.Name == resp.Leader && m.Reachable {
			leaderLast = m.LastIndex
		}
	}
	for i := range resp.Members {
		m := &resp.Members[i]
		if m.Reachable && leaderLast >= m.AppliedIndex {
			m.Lag = leaderLast - m.AppliedIndex
		}
		// Raft handed these over, and the stopped catalog did not take them.
		m.Lag += m.CatalogBehind
	}
	return resp, nil
}
