package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/wire"
)

// Groups on one NATS. Every server of every group subscribes the
// role-facing subjects in one queue group, so NATS hands a request to any
// server on the NATS, of whichever group. What decides is the group the
// request names (wire.GroupHeader):
//
//   - this server's group: answered (here, or by the leader);
//   - another group: handed on to that group's servers on
//     wire.GroupSubject, and their answer relayed, so a request of group A
//     is only ever answered from group A's catalog; when no server of A
//     answers there, refused with wrong_group naming both groups (or
//     unavailable, while a member of A was heard lately: it is restarting);
//   - none (a storage node or agent before its first registration, a
//     command without --group): answered while no member of another group
//     is heard on the NATS, refused with wrong_group naming every group
//     otherwise, since either group could have taken it.
//
// Servers hear each other's beats (membership.go); one that hears a server
// for the first time announces itself at once, so a group that starts
// learns of the others within a round trip, not a beat interval.

// groupsHeard lists the groups other than this server's whose members were
// heard lately, each with its servers' names, sorted.
func (s *Server) groupsHeard() map[string][]string {
	mine := s.groupName()
	out := map[string][]string{}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, o := range s.others {
		if !o.beat.Member || o.beat.Group == "" || o.beat.Group == mine || time.Since(o.lastSeen) > otherSeenFor {
			continue
		}
		out[o.beat.Group] = append(out[o.beat.Group], name)
	}
	for _, names := range out {
		sort.Strings(names)
	}
	return out
}

// ownGroupRequest reports whether this server answers m itself; when not,
// it has handed m on to its group or refused it.
func (s *Server) ownGroupRequest(ctx context.Context, m *nats.Msg) bool {
	mine := s.groupName()
	want := m.Header.Get(wire.GroupHeader)
	switch {
	case want == mine:
		return true
	case want == "":
		others := s.groupsHeard()
		if len(others) == 0 {
			return true
		}
		wire.Respond(m, wire.MarshalError(s.noGroupError(m.Subject, others)), s.log)
		return false
	}
	if m.Reply == "" {
		return false // another group's report that nobody waits for
	}
	fctx, cancel := context.WithTimeout(ctx, forwardTimeoutOf(m.Subject))
	defer cancel()
	reply, err := s.nc.RequestMsgWithContext(fctx, &nats.Msg{Subject: wire.GroupSubject(want, m.Subject), Data: m.Data, Header: m.Header})
	if err == nil {
		wire.Respond(m, reply.Data, s.log)
		return false
	}
	var e *wire.Error
	if errors.Is(err, nats.ErrNoResponders) {
		e = s.otherGroupError(m.Subject, want)
	} else {
		e = s.forwardError(ctx, m.Subject, err)
	}
	wire.Respond(m, wire.MarshalError(e), s.log)
	return false
}

// otherGroupError refuses a request of group want that no server of want
// answers on this NATS.
func (s *Server) otherGroupError(subject, want string) *wire.Error {
	mine := s.groupName()
	if names := s.groupsHeard()[want]; len(names) > 0 {
		return wire.Errorf(wire.CodeUnavailable, "retry in a few seconds; 'cairn cluster status --group "+want+"' shows that group",
			"no server of group %s answers %s right now (%s was heard lately)", want, wire.Describe(subject), strings.Join(names, ", "))
	}
	return wire.Errorf(wire.CodeWrongGroup,
		fmt.Sprintf("point it at the NATS of group %s's servers; or, if it belongs to group %s, set its group to %s (--group, CAIRN_GROUP, group in its config file) and restart it", want, mine, mine),
		"this request is for group %s, and no server of group %s answers on this NATS: it reached server %s of group %s, which does not answer for another group",
		want, want, s.cfg.Name, mine)
}

// noGroupError refuses a request that names no group while servers of
// other groups share the NATS.
func (s *Server) noGroupError(subject string, others map[string][]string) *wire.Error {
	mine := s.groupName()
	groups := []string{fmt.Sprintf("group %s (server %s, which received it)", mine, s.cfg.Name)}
	ids := []string{mine}
	for g := range others {
		ids = append(ids, g)
	}
	slices.Sort(ids[1:])
	for _, g := range ids[1:] {
		groups = append(groups, fmt.Sprintf("group %s (servers %s)", g, strings.Join(others[g], ", ")))
	}
	return wire.Errorf(wire.CodeWrongGroup,
		"tell it which of the groups named it belongs to: --group ID or CAIRN_GROUP for a command, --group (group in the config file) for a storage node or agent",
		"%s names no group, and servers of %d groups share this NATS: %s; either could have answered it",
		wire.Describe(subject), len(ids), strings.Join(groups, " and "))
}

// serveGroupSubject answers requests that servers of other groups hand on
// to this server's group.
func (s *Server) serveGroupSubject(ctx context.Context, group string) (*nats.Subscription, error) {
	return s.nc.QueueSubscribe(wire.GroupWildcard(group), wire.ServerQueue, func(m *nats.Msg) {
		orig, ok := wire.TrimGroup(group, m.Subject)
		if !ok || s.handlerFor(orig) == nil {
			wire.Respond(m, wire.MarshalError(wire.Errorf(wire.CodeUnknownOperation, "", "nothing answers %s", m.Subject)), s.log)
			return
		}
		m.Subject = orig
		if !s.requests.Go(func() { s.serveOrForward(ctx, m) }) {
			s.requests.Refuse(m, s.log)
		}
	})
}

// ofMyGroup reports whether a heartbeat or progress report that says it is
// of group is this server's: a storage node or agent of another group by
// the same name is not alive here. One that names no group (before its
// first registration) is counted, as a request that names none is
// answered; so is every one on a server that does not know its group yet,
// which answers nothing.
func (s *Server) ofMyGroup(group string) bool {
	mine := s.groupName()
	return group == "" || mine == "" || group == mine
}
