package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/server/cluster"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/wire"
)

// Membership. With NATS queue groups any server on the NATS can receive any
// role's request, so a server answers roles only while it is a member of
// its group that can answer right: a voter of the configuration it knows,
// holding the group's identity, that has known a leader since it started
// (or leads), and whose catalog is not far behind what it knows committed.
// Until then, and again once removed, it does not subscribe to the
// role-facing subjects at all, and NATS hands their requests to the
// members. A follower of a group without a majority still answers reads:
// it was caught up when it last heard a leader.
//
// Server-to-server traffic carries the group's id: requests forwarded to
// the leader go to a subject that names it, server status says it, and
// cluster join compares it. Roles' requests name it too, and a server
// answers only its own group's (groups.go), so two groups on one NATS never
// answer for each other. Each server announces itself on
// ServerBeatSubject; one that hears a server of another group says so
// loudly in its log, in 'cairn status' and in 'cairn cluster status'.

// maxServingLag is how many committed entries a member's catalog may be
// behind before it stops answering roles until it has caught up: a
// restarted member replaying a long log, or installing a snapshot.
const maxServingLag = 1024

// serverBeatInterval is how often a server announces itself; otherSeenFor
// is how long one heard is reported.
const (
	serverBeatInterval = 2 * time.Second
	otherSeenFor       = 3 * serverBeatInterval
)

// DefaultCatchUpTimeout bounds how long a join waits for the new server to
// catch up with the leader when the request sets no limit.
const DefaultCatchUpTimeout = 60 * time.Second

// maxCatchUpTimeout bounds what a join request may ask for.
const maxCatchUpTimeout = 30 * time.Minute

// otherServer is a server heard on the NATS that is not a member of this
// server's group.
type otherServer struct {
	beat     wire.ServerBeat
	lastSeen time.Time
	warned   time.Time // when this server last logged it
}

// group is the group's identity from the catalog, nil until it holds one.
// It never changes once set, so the first one read is kept.
func (s *Server) group() *catalog.Group {
	v := s.store.GroupVersion()
	if c := s.groupID.Load(); c != nil && c.version == v {
		return c.group
	}
	g, err := s.store.Group()
	if err != nil || g == nil {
		return nil
	}
	s.groupID.Store(&cachedGroup{version: v, group: g})
	return g
}

// cachedGroup is the group as read at a version of the store's group
// (catalog.Store.GroupVersion): read again once a rotation changed it.
type cachedGroup struct {
	version uint64
	group   *catalog.Group
}

// groupName is the group's id, empty when none is known.
func (s *Server) groupName() string {
	if g := s.group(); g != nil {
		return g.ID
	}
	return ""
}

// ticketPublic is this server's ticket signing public key.
func (s *Server) ticketPublic() ed25519.PublicKey { return s.keys().ticketPublic() }

// initGroup writes the group's identity when this leader finds none: the
// first leader of a new group does at once, and so does the first leader of
// a group formed before groups had one.
func (s *Server) initGroup(ctx context.Context) {
	if s.group() != nil {
		return
	}
	g := &catalog.Group{ID: uuid.NewString(), KEKFingerprint: s.keys().kekFP, TicketKeys: [][]byte{s.ticketPublic()}}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.apply(actx, &catalog.Command{Op: catalog.OpInitGroup, Group: g}); err != nil && !errors.Is(err, orchestrator.ErrAlreadyExists) {
		s.log.Warn("record the group's identity", "err", err)
		return
	}
	if g := s.group(); g != nil {
		s.log.Info("the group's identity is recorded", "group", g.ID, "kek_fingerprint", g.KEKFingerprint)
	}
}

// checkOwnKeys logs, once, a server whose keys are not its group's: it
// cannot have joined with them (cluster join refuses), so it is a group
// formed before joins were checked, or a data directory whose keys were
// replaced.
func (s *Server) checkOwnKeys() {
	g := s.group()
	if g == nil || s.keysChecked {
		return
	}
	s.keysChecked = true
	if fp := s.keys().kekFP; fp != g.KEKFingerprint {
		s.log.Error("this server's key-encryption key is not its group's: backups and restores through it will fail",
			"kek_fingerprint", fp, "group_kek_fingerprint", g.KEKFingerprint, "hint", kekHint)
	}
	if !s.signsForGroup(g) {
		s.log.Error("this server's ticket signing key is not its group's: storage nodes will refuse the tickets it signs",
			"ticket_key_fingerprint", keyring.TicketKeyFingerprint(s.ticketPublic()), "hint", kekHint)
	}
}

// signsForGroup reports whether this server's ticket key is one of g's.
func (s *Server) signsForGroup(g *catalog.Group) bool {
	for _, k := range g.TicketKeys {
		if ed25519.PublicKey(k).Equal(s.ticketPublic()) {
			return true
		}
	}
	return false
}

// memberNow decides whether this server may answer roles now (see the
// comment at the top of this file).
func (s *Server) memberNow() bool {
	if s.group() == nil || !s.raft.IsVoter() {
		return false
	}
	st := s.raft.Stats()
	if st.LeaderID != "" {
		s.seenLeader = true
	}
	if !s.seenLeader {
		return false
	}
	return st.CommitIndex <= st.CatalogIndex+maxServingLag || s.raft.IsLeader()
}

// serveRoles subscribes to the role-facing subjects while this server is a
// member, and drops them when it stops being one. It runs on the leader
// loop only.
func (s *Server) serveRoles(ctx context.Context) {
	member := s.memberNow()
	s.member.Store(member)
	switch {
	case member && s.roleSubs != nil && !s.serving.Load():
		if err := s.nc.Flush(); err == nil {
			s.serving.Store(true)
		}
	case member && s.roleSubs == nil:
		var subs []*nats.Subscription
		for subject := range s.dispatch {
			sub, err := s.nc.QueueSubscribe(subject, wire.ServerQueue, func(m *nats.Msg) {
				if !s.requests.Go(func() { s.serveOrForward(ctx, m) }) {
					s.requests.Refuse(m, s.log)
				}
			})
			if err != nil {
				s.log.Error("subscribe", "subject", subject, "err", err)
				for _, sub := range subs {
					_ = sub.Unsubscribe()
				}
				return
			}
			subs = append(subs, sub)
		}
		sub, err := s.serveGroupSubject(ctx, s.groupName())
		if err != nil {
			s.log.Error("subscribe", "subject", wire.GroupWildcard(s.groupName()), "err", err)
			for _, sub := range subs {
				_ = sub.Unsubscribe()
			}
			return
		}
		subs = append(subs, sub)
		s.roleSubs = subs
		if err := s.nc.Flush(); err == nil {
			s.serving.Store(true)
		}
		s.log.Info("a member of the group: answering storage nodes, agents and admins", "group", s.groupName())
	case !member && s.roleSubs != nil:
		s.serving.Store(false)
		for _, sub := range s.roleSubs {
			_ = sub.Unsubscribe()
		}
		s.roleSubs = nil
		s.log.Warn("not a member of the group any more (removed, or far behind): no longer answering storage nodes, agents and admins",
			"group", s.groupName())
	case !member && !s.waitLogged && !s.raft.HasState():
		s.waitLogged = true
		s.log.Info("not a member of any group yet: waiting to be added",
			"hint", fmt.Sprintf("run 'cairn cluster join --name %s --raft-addr %s' against the group, or start the first server of a new group with --bootstrap", s.cfg.Name, s.raft.Addr()))
	}
}

// announce publishes this server's beat.
func (s *Server) announce() {
	hb := wire.ServerBeat{Name: s.cfg.Name, RaftAddr: s.raft.Addr(), Group: s.groupName(), Member: s.member.Load(), State: s.raft.State()}
	if err := wire.Publish(s.nc, wire.ServerBeatSubject(s.cfg.Name), hb); err != nil {
		s.log.Debug("announce", "err", err)
	}
}

// heardServer records another server's beat, and logs one of another
// group. It reports whether the server is one not heard before, or heard
// in another role (a member now, or of a group now): that server may not
// have heard this one yet (see groups.go).
func (s *Server) heardServer(name string, hb wire.ServerBeat) (news bool) {
	// A beat of this server's name from elsewhere is another server's: a
	// group of another administrator may well have an s1 too.
	if hb.Name != name || name == s.cfg.Name && hb.RaftAddr == s.raft.Addr() {
		return false
	}
	mine := s.groupName()
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.others[name]
	if o == nil {
		o = &otherServer{}
		s.others[name] = o
	}
	news = o.lastSeen.IsZero() || hb.Member != o.beat.Member || hb.Group != o.beat.Group
	o.beat, o.lastSeen = hb, s.clock.Now()
	if mine != "" && hb.Group != "" && hb.Group != mine && s.clock.Since(o.warned) > 10*time.Minute {
		o.warned = s.clock.Now()
		s.log.Error("a server of ANOTHER GROUP runs on this NATS: requests that name no group (a command without --group, a storage node or agent before its first registration) are refused while it runs",
			"other_server", name, "other_group", hb.Group, "other_raft_addr", hb.RaftAddr, "group", mine,
			"hint", "if that group is not wanted, stop that server; if it should be a member of this group, start it with this group's --secrets and a new --data directory, without --bootstrap, and run 'cairn cluster join'; if both groups are wanted, give every command --group (or CAIRN_GROUP) and every storage node and agent its group in its config")
	}
	return news
}

// otherServers lists the servers heard recently that are not members of
// this server's group: of other groups, and those of no group or of this
// one that are not in its configuration (waiting to be joined, or removed).
func (s *Server) otherServers() (otherGroups, waiting []wire.OtherServer) {
	mine := s.groupName()
	inConfig := map[string]bool{}
	if peers, _, err := s.raft.Configuration(); err == nil {
		for _, p := range peers {
			inConfig[p.ID] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, o := range s.others {
		if s.clock.Since(o.lastSeen) > otherSeenFor {
			continue
		}
		seen := wire.OtherServer{Name: name, RaftAddr: o.beat.RaftAddr, Group: o.beat.Group, LastSeen: o.lastSeen}
		switch {
		case mine != "" && o.beat.Group != "" && o.beat.Group != mine:
			otherGroups = append(otherGroups, seen)
		case !inConfig[name]:
			waiting = append(waiting, seen)
		}
	}
	byName := func(a, b wire.OtherServer) int { return strings.Compare(a.Name, b.Name) }
	slices.SortFunc(otherGroups, byName)
	slices.SortFunc(waiting, byName)
	return otherGroups, waiting
}

// askServer asks the server named name for its own status.
func (s *Server) askServer(ctx context.Context, name string, timeout time.Duration) (wire.ServerStatus, error) {
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var ss wire.ServerStatus
	err := wire.Request(qctx, s.nc, wire.ServerSubject(name, wire.OpServerStatus), wire.Empty{}, &ss)
	return ss, err
}

// joinError is a join refused before anything changed: which check failed
// and what to do.
func joinError(code, hint, format string, args ...any) error {
	return wire.Errorf(code, hint, "join refused, the group is unchanged: "+format, args...)
}

func (s *Server) clusterJoin(ctx context.Context, _ string, req wire.ClusterJoinReq) (wire.ClusterJoinResp, error) {
	var resp wire.ClusterJoinResp
	if req.Name == "" || req.RaftAddr == "" {
		return resp, wire.Errorf(wire.CodeInvalidArgument, "pass --name and --raft-addr of the new server", "a joining server needs a name and a Raft address")
	}
	wait := req.CatchUpTimeout
	if wait <= 0 {
		wait = DefaultCatchUpTimeout
	}
	wait = min(wait, maxCatchUpTimeout)
	g := s.group()
	if g == nil {
		return resp, wire.Errorf(wire.CodeUnavailable, "retry in a few seconds", "the group has not recorded its identity yet")
	}
	start := fmt.Sprintf("start it with 'cairn server --name %s --raft-addr %s --secrets FILE' (the group's secrets file, without --bootstrap) on the same NATS, then run this again", req.Name, req.RaftAddr)
	ss, err := s.askServer(ctx, req.Name, 5*time.Second)
	if err != nil {
		return resp, joinError(wire.CodeUnavailable, start, "server %s does not answer on NATS (%w)", req.Name, err)
	}
	if ss.Name != req.Name {
		return resp, joinError(wire.CodeInvalidArgument, "two servers may share no name on one NATS", "the server asked as %s says it is %q", req.Name, ss.Name)
	}
	if ss.RaftAddr != req.RaftAddr {
		return resp, joinError(wire.CodeInvalidArgument,
			fmt.Sprintf("pass --raft-addr %s, or restart %s with --raft-addr %s", ss.RaftAddr, req.Name, req.RaftAddr),
			"server %s listens for Raft at %s, not %s", req.Name, ss.RaftAddr, req.RaftAddr)
	}
	otherGroup := ss.Group != "" && ss.Group != g.ID
	// A server that formed a group of its own may not have recorded its
	// identity yet; its configuration then lists servers, and not this one
	// (a join that stopped half-way leaves one that does).
	formedOwn := ss.Group == "" && len(ss.Peers) > 0 && !slices.Contains(ss.Peers, s.cfg.Name)
	if otherGroup || formedOwn {
		what := "of another group, which it formed (started with --bootstrap)"
		if otherGroup {
			what = "of group " + ss.Group
		}
		return resp, joinError(wire.CodeInvalidArgument,
			fmt.Sprintf("a server belongs to one group for life: stop %s and start it with a new --data directory, without --bootstrap; or, if that group is wanted, leave it alone", req.Name),
			"server %s is a member %s, not of group %s", req.Name, what, g.ID)
	}
	secrets := fmt.Sprintf("stop %s, and start it with this group's secrets file (--secrets) and a new --data directory (its own keys are in the old one)", req.Name)
	if ss.KEKFingerprint != g.KEKFingerprint {
		return resp, joinError(wire.CodeKey, secrets,
			"server %s holds another key-encryption key than the group (fingerprint %s, the group's %s): it could not open a single data key",
			req.Name, orNone(ss.KEKFingerprint), g.KEKFingerprint)
	}
	var ticketFPs []string
	for _, k := range g.TicketKeys {
		ticketFPs = append(ticketFPs, keyring.TicketKeyFingerprint(k))
	}
	if !slices.Contains(ticketFPs, ss.TicketKeyFingerprint) {
		return resp, joinError(wire.CodeKey, secrets,
			"server %s holds another ticket signing key than the group (fingerprint %s, the group's %s): storage nodes would refuse its tickets",
			req.Name, orNone(ss.TicketKeyFingerprint), strings.Join(ticketFPs, ", "))
	}
	progress := func(ctx context.Context) (cluster.Progress, error) {
		ss, err := s.askServer(ctx, req.Name, 2*time.Second)
		if err != nil {
			return cluster.Progress{}, err
		}
		if ss.Name != req.Name || ss.Group != "" && ss.Group != g.ID {
			return cluster.Progress{}, fmt.Errorf("server %s answers as %q of group %q", req.Name, ss.Name, ss.Group)
		}
		return cluster.Progress{LastIndex: ss.LastIndex, CatalogIndex: ss.CatalogIndex}, nil
	}
	s.log.Info("adding a server: checked, now a non-voter until it caught up", "member", req.Name, "raft_addr", req.RaftAddr, "catch_up_timeout", wait)
	res, err := s.raft.Join(ctx, req.Name, req.RaftAddr, wait, progress)
	if err != nil {
		return resp, joinFailure(req, err)
	}
	return wire.ClusterJoinResp{Already: res.Already, CaughtUpIndex: res.Target, CaughtUpIn: res.CaughtUp}, nil
}

// joinFailure says which step of a join failed and what to do.
func joinFailure(req wire.ClusterJoinReq, err error) error {
	var je *cluster.JoinError
	if !errors.As(err, &je) {
		return wire.Errorf(wire.CodeUnavailable, "", "add %s: %w", req.Name, err)
	}
	var nl *cluster.NotLeaderError
	hint := ""
	switch {
	case errors.As(err, &nl):
		hint = "the leader changed during the join: run it again"
	case errors.Is(err, cluster.ErrAddressTaken):
		hint = fmt.Sprintf("remove it first with 'cairn cluster remove --name %s' to change its address", req.Name)
		return wire.Errorf(wire.CodeAlreadyExists, hint, "%w", err)
	case je.Step == cluster.StepCatchUp:
		hint = fmt.Sprintf("check that the leader reaches %s at %s (firewall, and --tls-ca/--tls-cert/--tls-key from the group's CA), "+
			"and its log; for a large catalog pass a longer --catch-up-timeout", req.Name, req.RaftAddr)
	}
	if !je.Undone && je.Step != cluster.StepAddNonvoter {
		hint = fmt.Sprintf("remove the non-voter with 'cairn cluster remove --name %s', then fix the cause and join again", req.Name)
	}
	return wire.Errorf(wire.CodeUnavailable, hint, "%w", err)
}

func (s *Server) clusterRemove(ctx context.Context, _ string, req wire.ClusterRemoveReq) (wire.ClusterRemoveResp, error) {
	var resp wire.ClusterRemoveResp
	if req.Name == "" {
		return resp, wire.Errorf(wire.CodeInvalidArgument, "pass --name of the server to remove", "no server named")
	}
	peers, _, err := s.raft.Configuration()
	if err != nil {
		return resp, wire.Errorf(wire.CodeUnavailable, "", "%w", err)
	}
	var target *cluster.Peer
	var voters []string
	for i, p := range peers {
		if p.ID == req.Name {
			target = &peers[i]
		}
		if p.Voter && p.ID != req.Name {
			voters = append(voters, p.ID)
		}
	}
	if target == nil {
		return resp, wire.Errorf(wire.CodeNotFound, "see 'cairn cluster status'", "server %s is not a member of the group", req.Name)
	}
	if target.Voter && len(voters) == 0 {
		return resp, wire.Errorf(wire.CodeInvalidArgument,
			"a group needs a voter: add another server with 'cairn cluster join' first, or stop this one if the group is to end",
			"server %s is the group's only voter", req.Name)
	}
	if target.Voter {
		// The voters left must still make a majority of themselves, or the
		// removal itself takes the group down.
		up := 0
		var down []string
		for _, m := range s.members(ctx) {
			if !m.Voter || m.Name == req.Name {
				continue
			}
			if m.Reachable {
				up++
			} else {
				down = append(down, m.Name)
			}
		}
		if 2*up <= len(voters) {
			return resp, wire.Errorf(wire.CodeWrongState,
				fmt.Sprintf("start %s first, or remove the unreachable ones first ('cairn cluster status' shows who answers)", strings.Join(down, ", ")),
				"removing %s would leave %d voters of which only %d answer: the group would have no majority", req.Name, len(voters), up)
		}
	}
	if req.Name == s.cfg.Name {
		// A leader that removes itself stops its own Raft: hand the
		// leadership over, and let the new leader remove this server.
		return s.removeSelf(ctx, req)
	}
	if err := s.raft.RemoveServer(ctx, req.Name); err != nil {
		return resp, wire.Errorf(wire.CodeUnavailable, "", "remove %s from the group: %w", req.Name, err)
	}
	s.log.Info("server removed from the group", "member", req.Name)
	resp.Voters = voters
	if len(voters) == 1 {
		resp.Warning = fmt.Sprintf("%s is now the only voter: the group survives no failure; add a server with 'cairn cluster join'", voters[0])
	} else if len(voters)%2 == 0 {
		resp.Warning = fmt.Sprintf("%d voters survive no more failures than %d: add a server with 'cairn cluster join' to make it odd", len(voters), len(voters)-1)
	}
	return resp, nil
}

// removeSelf hands leadership to another voter and has it remove this
// server.
func (s *Server) removeSelf(ctx context.Context, req wire.ClusterRemoveReq) (wire.ClusterRemoveResp, error) {
	var resp wire.ClusterRemoveResp
	if err := s.raft.TransferLeadership(ctx); err != nil && s.raft.IsLeader() {
		return resp, wire.Errorf(wire.CodeUnavailable, "retry; 'cairn cluster status' shows whether the other voters are caught up",
			"%s leads the group and could not hand the leadership over before its removal: %w", req.Name, err)
	}
	s.log.Info("handed the leadership over, to be removed from the group")
	// Until Raft's notification ends this server's term, it still answers
	// the leader's subject, and would take its own removal back to itself.
	for ended := time.Now().Add(10 * time.Second); s.deciding(); {
		if time.Now().After(ended) {
			return resp, wire.Errorf(wire.CodeUnavailable, "retry; 'cairn cluster status' shows the leader",
				"%s handed the leadership over but still acts as leader", req.Name)
		}
		select {
		case <-ctx.Done():
			return resp, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	group := s.groupName()
	deadline := time.Now().Add(15 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := wire.Request(rctx, s.nc, wire.LeaderSubject(group, wire.APISubject(wire.OpClusterRemove)), req, &resp)
		cancel()
		if err == nil {
			if resp.NewLeader == "" {
				resp.NewLeader = s.raft.LeaderID()
			}
			return resp, nil
		}
		// Nothing answers until the new leader subscribes as one.
		if wire.CodeOf(err) != wire.CodeUnavailable || time.Now().After(deadline) {
			return resp, err
		}
		select {
		case <-ctx.Done():
			return resp, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// members asks every member of the Raft configuration for its status. A
// member that does not answer, or whose answer comes from a server of
// another group by the same name, is unreachable.
func (s *Server) members(ctx context.Context) []wire.MemberStatus {
	peers, _, _ := s.raft.Configuration()
	mine := s.groupName()
	out := make([]wire.MemberStatus, 0, len(peers))
	for _, p := range peers {
		m := wire.MemberStatus{Name: p.ID, RaftAddr: p.Addr, Voter: p.Voter}
		var ss wire.ServerStatus
		var err error
		if p.ID == s.cfg.Name {
			ss, err = s.serverStatus(ctx, "", wire.Empty{})
		} else {
			ss, err = s.askServer(ctx, p.ID, time.Second)
		}
		switch {
		case err != nil:
			m.Error = err.Error()
		case ss.Group != "" && mine != "" && ss.Group != mine:
			m.Error = fmt.Sprintf("a server of another group (%s) answers by that name", ss.Group)
		default:
			m.Reachable, m.State, m.Term, m.LastIndex, m.AppliedIndex = true, ss.State, ss.Term, ss.LastIndex, ss.AppliedIndex
			m.CatalogError, m.CatalogBehind = ss.CatalogError, ss.CatalogBehind
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
