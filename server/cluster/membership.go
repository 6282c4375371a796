package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// A server joins the group the way etcd's learners do: first as a
// non-voter, which counts for no quorum, so a server that cannot be
// reached or cannot keep up takes nothing away from the group; and only
// once it has applied the leader's log as of its addition is it promoted to
// voter. A join that fails at any step removes the non-voter again, so the
// configuration is as it was.

// ErrCatchUp means the new server did not apply the leader's log within the
// time allowed; it was removed again.
var ErrCatchUp = errors.New("the new server did not catch up with the leader")

// JoinStep names the step of a join that failed.
type JoinStep string

const (
	StepAddNonvoter JoinStep = "add as non-voter"
	StepCatchUp     JoinStep = "catch up"
	StepPromote     JoinStep = "promote to voter"
)

// JoinError is a join that failed at Step. Undone says whether the
// non-voter was removed again (the configuration is as before); when false,
// UndoErr says why not.
type JoinError struct {
	Server  string
	Step    JoinStep
	Err     error
	Undone  bool
	UndoErr error
}

func (e *JoinError) Error() string {
	s := fmt.Sprintf("join %s: %s: %v", e.Server, e.Step, e.Err)
	switch {
	case e.Step == StepAddNonvoter:
	case e.Undone:
		s += "; it was removed again, the group is as before"
	case e.UndoErr != nil:
		s += fmt.Sprintf("; removing it again failed too (%v): remove it with 'cairn cluster remove --name %s'", e.UndoErr, e.Server)
	}
	return s
}

func (e *JoinError) Unwrap() error { return e.Err }

// JoinResult says how a join went.
type JoinResult struct {
	// Already is set when the server was a voter at that address before:
	// nothing changed.
	Already bool
	// Target is the last command the leader's catalog had applied once the
	// non-voter was added: what the new server's catalog had to apply
	// before its promotion.
	Target uint64
	// CaughtUp is how long it took to apply it.
	CaughtUp time.Duration
}

// Progress is how far a joining server got: the last entry in its Raft log
// (Stats.LastIndex) and the last command its catalog applied
// (Stats.CatalogIndex). Raft's own applied index will not do: it moves when
// an entry is handed to the FSM, before the catalog has it.
type Progress struct {
	LastIndex, CatalogIndex uint64
}

// ProgressFunc reports a joining server's Progress. The leader cannot see
// it through hashicorp/raft, so the caller asks the server itself.
type ProgressFunc func(ctx context.Context) (Progress, error)

// Join adds id at addr as a non-voter, waits at most catchUp until progress
// reports that it received the entry that added it and that its catalog
// holds every command the leader's had applied then, and promotes it to
// voter. Only the leader can do it.
func (n *Node) Join(ctx context.Context, id, addr string, catchUp time.Duration, progress ProgressFunc) (JoinResult, error) {
	var res JoinResult
	if n.raft.State() != raft.Leader {
		return res, &JoinError{Server: id, Step: StepAddNonvoter, Err: n.notLeader()}
	}
	peers, _, err := n.Configuration()
	if err != nil {
		return res, &JoinError{Server: id, Step: StepAddNonvoter, Err: err}
	}
	wasNonvoter := false
	var added uint64 // the index of the entry that made id a non-voter
	for _, p := range peers {
		if p.ID != id {
			continue
		}
		if p.Addr != addr {
			return res, &JoinError{Server: id, Step: StepAddNonvoter,
				Err: fmt.Errorf("%w: it is a member at %s already", ErrAddressTaken, p.Addr)}
		}
		if p.Voter {
			res.Already = true
			return res, nil
		}
		wasNonvoter = true // a join that stopped half-way: go on from there
	}
	if wasNonvoter {
		_, added, _ = n.Configuration()
	} else {
		f := n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.timeout(ctx))
		if err := n.wait(ctx, "add non-voter "+id, f); err != nil {
			return res, &JoinError{Server: id, Step: StepAddNonvoter, Err: err}
		}
		added = f.Index()
	}
	fail := func(step JoinStep, err error) (JoinResult, error) {
		je := &JoinError{Server: id, Step: step, Err: err}
		// The caller's context may be what ended; the undo gets its own.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.ApplyTimeout)
		defer cancel()
		if uerr := n.RemoveServer(uctx, id); uerr != nil {
			je.UndoErr = uerr
			n.log.Error("a failed join left a non-voter in the group", "member", id, "step", step, "err", err, "undo_err", uerr)
		} else {
			je.Undone = true
			n.log.Warn("join failed; the non-voter was removed again", "member", id, "step", step, "err", err)
		}
		return res, je
	}
	res.Target, err = n.store.AppliedIndex()
	if err != nil {
		return fail(StepCatchUp, err)
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, catchUp)
	defer cancel()
	var last Progress
	var lastErr error
	pause := 20 * time.Millisecond
	for {
		got, err := progress(wctx)
		// A new server whose catalog is as empty as the leader's has still
		// to be reached by Raft: the entry that added it says it was.
		if err == nil && got.LastIndex >= added && got.CatalogIndex >= res.Target {
			break
		}
		if err == nil {
			last, lastErr = got, nil
		} else {
			lastErr = err
		}
		if n.raft.State() != raft.Leader {
			return fail(StepCatchUp, n.notLeader())
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return fail(StepCatchUp, ctx.Err())
			}
			why := fmt.Sprintf("its catalog applied index %d of %d", last.CatalogIndex, res.Target)
			if last.LastIndex < added {
				why = fmt.Sprintf("the leader's Raft entries do not reach it (its log ends at %d, the entry that added it is %d)", last.LastIndex, added)
			}
			if lastErr != nil {
				why = fmt.Sprintf("it did not say how far it is: %v", lastErr)
			}
			return fail(StepCatchUp, fmt.Errorf("%w within %s: %s", ErrCatchUp, catchUp, why))
		case <-time.After(pause):
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
	res.CaughtUp = time.Since(start)
	if err := n.AddVoter(ctx, id, addr); err != nil {
		return fail(StepPromote, err)
	}
	n.log.Info("server joined the group", "member", id, "addr", addr, "caught_up_index", res.Target, "caught_up_in", res.CaughtUp)
	return res, nil
}

// ErrAddressTaken means a server of that name is in the group at another
// address.
var ErrAddressTaken = errors.New("the server is in the group at another address")

// Configuration is the latest configuration this server knows, committed
// or not, and the log index it was written at (0 for none: a server that
// was never part of a group).
func (n *Node) Configuration() ([]Peer, uint64, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, 0, fmt.Errorf("raft configuration: %w", err)
	}
	var peers []Peer
	for _, s := range f.Configuration().Servers {
		peers = append(peers, Peer{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	// The future's own Index is not filled in by hashicorp/raft; Stats has it.
	idx, _ := strconv.ParseUint(n.raft.Stats()["latest_configuration_index"], 10, 64)
	return peers, idx, nil
}

// IsVoter reports whether this server is a voter in the latest
// configuration it knows.
func (n *Node) IsVoter() bool {
	peers, _, err := n.Configuration()
	if err != nil {
		return false
	}
	for _, p := range peers {
		if p.ID == n.cfg.ID {
			return p.Voter
		}
	}
	return false
}

// HasState reports whether this server was ever part of a group: it
// bootstrapped one, or a leader reached it.
func (n *Node) HasState() bool {
	peers, _, err := n.Configuration()
	return err == nil && len(peers) > 0
}

// TransferLeadership hands leadership to the most up-to-date other voter
// and returns once this server no longer leads.
func (n *Node) TransferLeadership(ctx context.Context) error {
	if n.raft.State() != raft.Leader {
		return fmt.Errorf("transfer leadership: %w", n.notLeader())
	}
	return n.wait(ctx, "transfer leadership", n.raft.LeadershipTransfer())
}
