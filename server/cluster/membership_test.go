package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/internal/poll"
)

func progressOf(s *server) Progress {
	st := s.node.Stats()
	return Progress{LastIndex: st.LastIndex, CatalogIndex: st.CatalogIndex}
}

// join adds s to leader's group the way the servers do: a non-voter until
// it caught up, then a voter. A voter added before Raft reached it would
// count for the majority at once, and a leader whose lease runs out
// waiting for it steps down.
func join(t testing.TB, leader, s *server) {
	t.Helper()
	if _, err := leader.node.Join(ctxT(t), s.cfg.ID, s.node.Addr(), 15*time.Second, func(context.Context) (Progress, error) {
		return progressOf(s), nil
	}); err != nil {
		t.Fatal(err)
	}
}

func peersOf(t *testing.T, n *Node) map[string]Peer {
	t.Helper()
	peers, _, err := n.Configuration()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]Peer{}
	for _, p := range peers {
		m[p.ID] = p
	}
	return m
}

// TestJoinCatchesUpAsNonvoterThenVotes: a server joins as a non-voter,
// applies the leader's log while it counts for no quorum, and only then is
// a voter, with the leader's catalog.
func TestJoinCatchesUpAsNonvoterThenVotes(t *testing.T) {
	s1 := startServer(t, "s1", t.TempDir(), true)
	s1.waitLeader()
	job := populate(s1, 200)
	s2 := startServer(t, "s2", t.TempDir(), false)
	if s2.node.HasState() || s2.node.IsVoter() {
		t.Fatalf("a server that never joined says it has state (%v) or votes (%v)", s2.node.HasState(), s2.node.IsVoter())
	}
	ctx := ctxT(t)
	asked := 0
	res, err := s1.node.Join(ctx, "s2", s2.node.Addr(), 10*time.Second, func(context.Context) (Progress, error) {
		asked++
		if p := peersOf(t, s1.node)["s2"]; p.ID != "s2" || p.Voter {
			t.Errorf("while s2 catches up the configuration has it as %+v; want a non-voter", p)
		}
		return progressOf(s2), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if asked == 0 || res.Target == 0 || res.Already {
		t.Fatalf("join result %+v after %d questions", res, asked)
	}
	if p := peersOf(t, s1.node)["s2"]; !p.Voter {
		t.Fatalf("s2 after the join: %+v; want a voter", p)
	}
	poll.Until(t, 10*time.Second, func() error {
		if !s2.node.IsVoter() || !s2.node.HasState() {
			p, i, err := s2.node.Configuration()
			return fmt.Errorf("s2 does not see itself as a voter: %v %d %v", p, i, err)
		}
		return nil
	})
	if j, err := s2.store.Job(job); err != nil || j.LogLines != 200 {
		t.Fatalf("s2 promoted before it applied the log: job %+v, %v", j, err)
	}
	again, err := s1.node.Join(ctx, "s2", s2.node.Addr(), time.Second, nil)
	if err != nil || !again.Already {
		t.Fatalf("joining a voter again: %+v, %v", again, err)
	}
	_, err = s1.node.Join(ctx, "s2", "127.0.0.1:1", time.Second, nil)
	if !errors.Is(err, ErrAddressTaken) {
		t.Fatalf("joining s2 at another address: %v", err)
	}
}

// TestJoinThatCannotCatchUpChangesNothing: a server that is not there (its
// address answers nothing) is added as a non-voter, never catches up, and
// is removed again. Added as a voter it would have made a group of one a
// group of two with one down, without a majority; as a non-voter it counts
// for none, so the leader commits writes all along and the configuration
// ends as it was.
func TestJoinThatCannotCatchUpChangesNothing(t *testing.T) {
	s1 := startServer(t, "s1", t.TempDir(), true)
	s1.waitLeader()
	ctx := ctxT(t)
	// A port nothing listens on, which no other socket is given meanwhile.
	dead := freeport.LoopbackAddr(t)
	before := peersOf(t, s1.node)
	during := 0
	_, err := s1.node.Join(ctx, "s3", dead, 1500*time.Millisecond, func(context.Context) (Progress, error) {
		during++
		res, err := s1.node.Apply(ctx, &catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: fmt.Sprintf("c%d", during)}})
		if err != nil || res.Err != nil {
			t.Errorf("a write while s3 catches up: %v %v", err, res.Err)
		}
		return Progress{}, errors.New("no answer")
	})
	var je *JoinError
	if !errors.As(err, &je) || je.Step != StepCatchUp || !je.Undone || !errors.Is(err, ErrCatchUp) {
		t.Fatalf("join of a server that is not there: %v", err)
	}
	if during == 0 {
		t.Fatal("the join never asked s3 how far it got")
	}
	after := peersOf(t, s1.node)
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("configuration after the failed join: %v; before: %v", after, before)
	}
	res, err := s1.node.Apply(ctx, &catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "after"}})
	if err != nil || res.Err != nil {
		t.Fatalf("a write after the failed join: %v %v", err, res.Err)
	}

	// Raft reaches a server that answers, but its log stays behind: the
	// join says where it got.
	s2 := startServer(t, "s2", t.TempDir(), false)
	_, err = s1.node.Join(ctx, "s2", s2.node.Addr(), time.Second, func(context.Context) (Progress, error) {
		return Progress{}, nil
	})
	if !errors.As(err, &je) || !je.Undone || !strings.Contains(err.Error(), "do not reach it") {
		t.Fatalf("join of a server whose log stays empty: %v", err)
	}
	if _, err := s2.node.Join(ctx, "s4", dead, time.Second, nil); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("a join on a server that does not lead: %v", err)
	}
}

// TestTransferLeadership: the leader hands over to the other voter.
func TestTransferLeadership(t *testing.T) {
	s1 := startServer(t, "s1", t.TempDir(), true)
	s1.waitLeader()
	s2 := startServer(t, "s2", t.TempDir(), false)
	ctx := ctxT(t)
	if _, err := s1.node.Join(ctx, "s2", s2.node.Addr(), 10*time.Second, func(context.Context) (Progress, error) {
		return progressOf(s2), nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s1.node.TransferLeadership(ctx); err != nil {
		t.Fatal(err)
	}
	s2.waitLeader()
	if s1.node.IsLeader() {
		t.Fatal("s1 still leads")
	}
}
