package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/wire"
)

// trace records what a server's leadership loop did, in order.
type trace struct {
	mu     sync.Mutex
	events []string
}

func (tr *trace) add(ev string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.events = append(tr.events, ev)
}

func (tr *trace) get() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.events)
}

// checkTerms reports a decision made outside a term: before the first
// barrier, or after a "lost" and before the next barrier.
func checkTerms(events []string) error {
	inTerm := false
	for i, ev := range events {
		switch ev {
		case "barrier":
			inTerm = true
		case "lost":
			inTerm = false
		case "decide":
			if !inTerm {
				return fmt.Errorf("event %d: a decision outside a term (after no barrier): %v", i, events)
			}
		}
	}
	return nil
}

// newGroupOfThree starts three servers on one NATS server, s1 bootstrapped
// and the others added as voters, each with its leadership traced.
func newGroupOfThree(t testing.TB, tune ...func(*Server)) ([]*Server, []*trace) {
	t.Helper()
	return newGroupOfThreeWith(t, nil, tune...)
}

// newGroupOfThreeWith is newGroupOfThree with each server's config
// changed by configure first.
func newGroupOfThreeWith(t testing.TB, configure func(*Config), tune ...func(*Server)) ([]*Server, []*trace) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ns, err := natsd.Start(natsd.Config{Anonymous: true}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	var srvs []*Server
	var traces []*trace
	for i := range 3 {
		cfg := DefaultConfig()
		cfg.Name = fmt.Sprintf("s%d", i+1)
		cfg.Bootstrap = i == 0
		cfg.DataDir = t.TempDir()
		cfg.NATSURL = ns.URL()
		cfg.RaftAddr = "127.0.0.1:0"
		cfg.LivenessTimeout = 2 * time.Second
		if configure != nil {
			configure(&cfg)
		}
		s, err := New(cfg, logger, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		tr := &trace{}
		s.leaderTrace = tr.add
		for _, f := range tune {
			f(s)
		}
		if i == 0 {
			if err := s.WaitLeader(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		srvs, traces = append(srvs, s), append(traces, tr)
	}
	for _, s := range srvs[1:] {
		if err := srvs[0].raft.AddVoter(ctx, s.cfg.Name, s.raft.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, 30*time.Second, func() error {
		for _, s := range srvs[1:] {
			if s.raft.LeaderID() != "s1" {
				return fmt.Errorf("%s does not follow s1 yet", s.cfg.Name)
			}
		}
		return nil
	})
	return srvs, traces
}

func leaderOf(srvs []*Server) (int, error) {
	for i, s := range srvs {
		if s.deciding() {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no server decides")
}

// TestLeaderDecidesOnlyAfterItsBarrier hands the leadership around a
// group of three: every new leader runs its barrier before its first
// decision (adopting the running jobs, dispatching), and an old leader
// makes no decision once it lost the leadership, and has ended the
// context its dispatcher runs under.
func TestLeaderDecidesOnlyAfterItsBarrier(t *testing.T) {
	srvs, traces := newGroupOfThree(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for round := range 3 {
		var old int
		poll.Until(t, 30*time.Second, func() (err error) {
			old, err = leaderOf(srvs)
			return err
		})
		oldCtx, _ := srvs[old].leading()
		if err := srvs[old].raft.TransferLeadership(ctx); err != nil {
			t.Fatalf("round %d: transfer from %s: %v", round, srvs[old].cfg.Name, err)
		}
		// Raft's notification ends the term, not the next poll of a
		// loop. The new leader may begin deciding before the old one has
		// heard of the new term (a deposed leader learns it from the
		// others), so what the test waits for is both: the old one no
		// longer deciding, and another one deciding.
		var next int
		poll.Until(t, 30*time.Second, func() error {
			if srvs[old].deciding() {
				return fmt.Errorf("%s still decides", srvs[old].cfg.Name)
			}
			for i, s := range srvs {
				if i != old && s.deciding() {
					next = i
					return nil
				}
			}
			return fmt.Errorf("no server decides after %s", srvs[old].cfg.Name)
		})
		if oldCtx.Err() == nil {
			t.Fatalf("round %d: %s lost the leadership and its dispatcher's context is not ended", round, srvs[old].cfg.Name)
		}
		poll.Until(t, 10*time.Second, func() error {
			if ev := traces[next].get(); !slices.Contains(ev, "decide") {
				return fmt.Errorf("%s made no decision yet: %v", srvs[next].cfg.Name, ev)
			}
			return nil
		})
	}
	for i, tr := range traces {
		ev := tr.get()
		if err := checkTerms(ev); err != nil {
			t.Errorf("%s: %v", srvs[i].cfg.Name, err)
		}
		t.Logf("%s: %v", srvs[i].cfg.Name, ev)
	}
}

// A request the leader is answering when it loses the leadership is not
// cut by the end of its term: it runs under the server's context, and its
// caller gets the answer (a write would fail as not-leader by itself).
func TestRequestOutlivesTheLeadersTerm(t *testing.T) {
	type seen struct {
		server string
		err    error // the request's context after the term ended
	}
	got := make(chan seen, 1)
	var once sync.Once
	srvs, _ := newGroupOfThree(t, func(s *Server) {
		s.beforeHandle = func(ctx context.Context, m *nats.Msg) {
			if m.Subject != wire.APISubject(wire.OpJobList) || !s.deciding() {
				return // a follower forwards it; the test asks again
			}
			once.Do(func() {
				tctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := s.raft.TransferLeadership(tctx); err != nil {
					got <- seen{s.cfg.Name, fmt.Errorf("transfer: %w", err)}
					return
				}
				if err := poll.Wait(10*time.Second, func() error {
					if s.deciding() {
						return errors.New("still deciding")
					}
					return nil
				}); err != nil {
					got <- seen{s.cfg.Name, err}
					return
				}
				got <- seen{s.cfg.Name, ctx.Err()}
			})
		}
	})
	nc, err := nats.Connect(srvs[0].cfg.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	poll.Until(t, 30*time.Second, func() error {
		var jl wire.JobListResp
		if err := wire.Request(ctx, nc, wire.APISubject(wire.OpJobList), wire.JobListReq{}, &jl); err != nil {
			return err
		}
		select {
		case g := <-got:
			got <- g
			return nil
		default:
			return errors.New("the request was not answered by the leader yet")
		}
	})
	g := <-got
	if g.err != nil {
		t.Fatalf("%s lost the leadership while answering, and the request's context is: %v", g.server, g.err)
	}
}
