package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// readOn sends an API request to server s alone, as the NATS queue group
// would hand it to that member, and returns where its answer comes.
func readOn(t *testing.T, ctx context.Context, nc *nats.Conn, s *Server, op string, req any) <-chan error {
	t.Helper()
	subject := "test.on." + s.cfg.Name + "." + op
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		m.Subject = wire.APISubject(op)
		s.serveOrForward(ctx, m)
	})
	if err != nil {
		t.Fatal(err)
	}
	answered := make(chan error, 1)
	go func() {
		defer sub.Unsubscribe()
		var p wire.Policy
		err := wire.Request(ctx, nc, subject, req, &p)
		if err == nil && p.Name != req.(wire.PolicyNameReq).Name {
			err = fmt.Errorf("answered with policy %q", p.Name)
		}
		answered <- err
	}()
	return answered
}

// registerWeb registers storage node sn1, with pool Default, and client
// web, as they would themselves: what a policy of web needs.
func registerWeb(t testing.TB, ctx context.Context, nc *nats.Conn) {
	t.Helper()
	var reg wire.NodeRegisterResp
	if err := wire.Request(ctx, nc, wire.FromNodeSubject("sn1", wire.OpNodeRegister), wire.NodeRegisterReq{
		ID: "sn1", DataAddr: "127.0.0.1:1", CertSHA256: strings.Repeat("ab", 32),
		Pools: []wire.NodePool{{Name: "Default", Type: "disk", Dir: "/srv/pool", MaxVolumeBytes: 64 << 20}},
	}, &reg); err != nil {
		t.Fatal(err)
	}
	if err := wire.Request(ctx, nc, wire.FromAgentSubject("web", wire.OpAgentRegister), wire.AgentRegisterReq{Name: "web", Hostname: "web.example"}, nil); err != nil {
		t.Fatal(err)
	}
}

// holdApplies makes s's catalog take no command until the returned
// function is called, and reports through held once one waits.
func holdApplies(t *testing.T, s *Server) (held func() bool, release func()) {
	gate := make(chan struct{})
	var mu sync.Mutex
	waiting := false
	s.raft.FSM().SetBeforeApply(func(uint64) {
		mu.Lock()
		waiting = true
		mu.Unlock()
		<-gate
	})
	var once sync.Once
	release = func() {
		once.Do(func() {
			s.raft.FSM().SetBeforeApply(nil)
			close(gate)
		})
	}
	t.Cleanup(release)
	return func() bool { mu.Lock(); defer mu.Unlock(); return waiting }, release
}

// readIndexSetup connects to the group's NATS, registers what a policy of
// client web needs, and gives create (a policy named so, through any
// member) and heldUntil (a wait until a held follower was handed a write).
func readIndexSetup(t *testing.T, srvs []*Server) (context.Context, *nats.Conn, func(name string), func(held func() bool)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	nc, err := nats.Connect(srvs[0].cfg.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	registerWeb(t, ctx, nc)
	create := func(name string) {
		t.Helper()
		p := testWirePolicy()
		p.Name = name
		if err := wire.Request(ctx, nc, wire.APISubject(wire.OpPolicyCreate), wire.PolicyPutReq{Policy: p}, nil); err != nil {
			t.Fatalf("create policy %s: %v", name, err)
		}
	}
	heldUntil := func(held func() bool) {
		t.Helper()
		poll.Until(t, 30*time.Second, func() error {
			if !held() {
				return errors.New("the follower has not been handed the write yet")
			}
			return nil
		})
	}
	return ctx, nc, create, heldUntil
}

// TestFollowerReadsSeeAcknowledgedWrites holds one follower's catalog
// behind the group's and reads on it what was just written through the
// leader, as a script does with 'cairn backup --wait' and then 'cairn
// backup list', whichever member each request reaches:
//   - a follower that catches up in time waits for the write, then
//     answers from its own catalog;
//   - one that does not leaves the read to the leader;
//   - with no leader to ask, a follower answers from its catalog at once.
func TestFollowerReadsSeeAcknowledgedWrites(t *testing.T) {
	srvs, _ := newGroupOfThree(t)
	ctx, nc, create, heldUntil := readIndexSetup(t, srvs)
	follower := srvs[1]
	var err error

	// Caught up in time: the read waits for the write, then shows it.
	held, release := holdApplies(t, follower)
	create("web")
	heldUntil(held)
	answered := readOn(t, ctx, nc, follower, wire.OpPolicyShow, wire.PolicyNameReq{Name: "web"})
	poll.Holds(t, 300*time.Millisecond, func() error {
		select {
		case err := <-answered:
			return fmt.Errorf("the follower answered before it held the write: %v", err)
		default:
			return nil
		}
	})
	release()
	if err := <-answered; err != nil {
		t.Fatalf("read on the follower once it caught up: %v", err)
	}

	// Too far behind: the leader answers.
	held, release = holdApplies(t, follower)
	create("mail")
	heldUntil(held)
	before := follower.raft.FSM().Applied()
	if err := <-readOn(t, ctx, nc, follower, wire.OpPolicyShow, wire.PolicyNameReq{Name: "mail"}); err != nil {
		t.Fatalf("read on a follower that stays behind: %v", err)
	}
	if got := follower.raft.FSM().Applied(); got != before {
		t.Fatalf("the follower applied %d to %d while held", before, got)
	}
	release()

	// No leader: the follower answers from what it holds, without waiting
	// out the question to a leader.
	poll.Until(t, 30*time.Second, func() error {
		if err := <-readOn(t, ctx, nc, follower, wire.OpPolicyShow, wire.PolicyNameReq{Name: "mail"}); err != nil {
			return fmt.Errorf("the follower has not caught up again: %w", err)
		}
		return nil
	})
	for _, s := range []*Server{srvs[0], srvs[2]} {
		s.Close()
	}
	// Until NATS has let go of the closed members' subscriptions, a
	// question to the leader still finds a taker that never answers, and
	// a follower rightly waits it out: a loaded make test timed that.
	poll.Until(t, 30*time.Second, func() error {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := nc.RequestWithContext(rctx, wire.LeaderSubject(follower.groupName(), wire.ReadIndexSubject), nil)
		if errors.Is(err, nats.ErrNoResponders) {
			return nil
		}
		return fmt.Errorf("the leader's read index still has a taker: %v", err)
	})
	start := time.Now()
	err = <-readOn(t, ctx, nc, follower, wire.OpPolicyShow, wire.PolicyNameReq{Name: "mail"})
	if err != nil {
		t.Fatalf("read on a follower with no leader: %v", err)
	}
	if took := time.Since(start); took >= readIndexTimeout {
		t.Fatalf("the read with no leader took %s, as long as a question to a leader may", took)
	}
}

// TestFarBehindFollowerForwardsAtOnce: a follower further behind the
// leader than farBehind (0 here, so one command is too many) forwards a
// read at once rather than wait catchUpTimeout for its catalog, as one
// installing a snapshot would make every page of a listing wait.
func TestFarBehindFollowerForwardsAtOnce(t *testing.T) {
	srvs, _ := newGroupOfThree(t, func(s *Server) { s.farBehind = 0 })
	ctx, nc, create, heldUntil := readIndexSetup(t, srvs)
	follower := srvs[1]
	held, release := holdApplies(t, follower)
	defer release()
	create("web")
	heldUntil(held)
	before := follower.raft.FSM().Applied()
	start := time.Now()
	if err := <-readOn(t, ctx, nc, follower, wire.OpPolicyShow, wire.PolicyNameReq{Name: "web"}); err != nil {
		t.Fatalf("read on a follower far behind: %v", err)
	}
	if took := time.Since(start); took >= catchUpTimeout {
		t.Fatalf("the read took %s: it waited for the catalog (%s) before it was forwarded", took, catchUpTimeout)
	}
	if got := follower.raft.FSM().Applied(); got != before {
		t.Fatalf("the follower applied %d to %d while held", before, got)
	}
}

// BenchmarkLocalReads is what a follower's wait for the leader's applied
// index costs a read: the same read (a policy) answered by the leader,
// from its catalog at once, and by a follower, which asks the leader
// first; side by side in one run, a group of three on one NATS server.
func BenchmarkLocalReads(b *testing.B) {
	srvs, _ := newGroupOfThree(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	nc, err := nats.Connect(srvs[0].cfg.NATSURL)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	registerWeb(b, ctx, nc)
	if err := wire.Request(ctx, nc, wire.APISubject(wire.OpPolicyCreate), wire.PolicyPutReq{Policy: testWirePolicy()}, nil); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		s    *Server
	}{{"leader", srvs[0]}, {"follower", srvs[1]}} {
		subject := "bench.on." + c.s.cfg.Name
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
			m.Subject = wire.APISubject(wire.OpPolicyShow)
			c.s.serveOrForward(ctx, m)
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				var p wire.Policy
				if err := wire.Request(ctx, nc, subject, wire.PolicyNameReq{Name: "web"}, &p); err != nil || p.Name != "web" {
					b.Fatalf("read on the %s: %+v, %v", c.name, p, err)
				}
			}
		})
		sub.Unsubscribe()
	}
}
