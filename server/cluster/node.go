package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/catalog"
)

// Errors of Apply sort a command by what became of it, since a caller that
// answers a client must never say "failed" of a command that may still
// take effect.
var (
	// ErrNotLeader is wrapped by NotLeaderError: this server does not
	// lead, and proposed nothing.
	ErrNotLeader = errors.New("not the Raft leader")
	// ErrTimeout means the leader did not take the command in time; it was
	// not proposed.
	ErrTimeout = errors.New("timed out waiting for the Raft leader")
	// ErrShutdown means the node is shut down.
	ErrShutdown = errors.New("raft node is shut down")
	// ErrOutcomeUnknown means the command was proposed, but this server
	// cannot tell whether it was committed: leadership was lost, the node
	// shut down, or the caller stopped waiting. It may still be applied.
	ErrOutcomeUnknown = errors.New("the outcome is unknown: the command may still be committed")
	// ErrCommittedNotApplied means the command is in the Raft log, so every
	// member applies it, but this server's catalog stopped before it
	// (catalog.ErrFSMStopped, wrapped too): it takes effect here only once
	// the catalog resumes.
	ErrCommittedNotApplied = errors.New("committed to the Raft log, but this server's catalog could not apply it")
)

// NotLeaderError is returned for writes to a server that does not lead. The
// caller forwards to Leader, when one is known.
type NotLeaderError struct {
	Leader   string // address of the leader, empty when none is known
	LeaderID string
}

func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return "this server is not the Raft leader, and no leader is elected yet"
	}
	return fmt.Sprintf("this server is not the Raft leader; the leader is %s at %s", e.LeaderID, e.Leader)
}

func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// Node is this server's member of the Raft group that replicates the
// catalog.
type Node struct {
	cfg   Config
	log   *slog.Logger
	store *catalog.Store
	fsm   *catalog.FSM
	raft  *raft.Raft
	logs  *raftboltdb.BoltStore
	trans *guardedTransport

	shutdownOnce sync.Once
	shutdownErr  error
}

// Open starts the Raft member for store. The store stays the caller's: it
// must outlive the Node and is not closed by Shutdown.
func Open(cfg Config, store *catalog.Store, logger *slog.Logger) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger = logger.With("component", "raft", "raft_id", cfg.ID)
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("raft directory: %w", err)
	}
	hlog := newHCLogger(logger, "raft")
	n := &Node{cfg: cfg, log: logger, store: store, fsm: catalog.NewFSM(store, logger)}
	n.fsm.SetSpaceFloor(cfg.CatalogFloor)
	ok := false
	defer func() {
		if !ok {
			n.closeParts()
		}
	}()

	var err error
	n.logs, err = raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(cfg.Dir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second, FreelistType: bbolt.FreelistMapType},
	})
	if err != nil {
		return nil, fmt.Errorf("open raft log %s: %w", filepath.Join(cfg.Dir, "raft.db"), err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.SnapshotRetain, hlog)
	if err != nil {
		return nil, fmt.Errorf("raft snapshots in %s: %w", cfg.Dir, err)
	}
	var advertise net.Addr
	if cfg.AdvertiseAddr != "" {
		if advertise, err = net.ResolveTCPAddr("tcp", cfg.AdvertiseAddr); err != nil {
			return nil, fmt.Errorf("raft AdvertiseAddr %q: %w", cfg.AdvertiseAddr, err)
		}
	}
	if cfg.TLS != nil {
		stream, err := newTLSStream(cfg.BindAddr, advertise, cfg.TLS, cfg.TransportTimeout, logger)
		if err != nil {
			return nil, fmt.Errorf("raft TLS transport on %s: %w", cfg.BindAddr, err)
		}
		n.trans = &guardedTransport{NetworkTransport: raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: stream, MaxPool: cfg.MaxPool, Timeout: cfg.TransportTimeout, Logger: hlog,
		})}
	} else {
		t, err := raft.NewTCPTransportWithLogger(cfg.BindAddr, advertise, cfg.MaxPool, cfg.TransportTimeout, hlog)
		if err != nil {
			return nil, fmt.Errorf("raft transport on %s: %w", cfg.BindAddr, err)
		}
		n.trans = &guardedTransport{NetworkTransport: t}
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hlog
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	// The catalog file survives restarts and records the index it applied,
	// so restoring the last snapshot on start would only replace it with an
	// older copy; replaying the log after it skips what was applied.
	rc.NoSnapshotRestoreOnStart = true
	restore, err := n.checkCatalog(snaps)
	if err != nil {
		return nil, err
	}
	if restore {
		rc.NoSnapshotRestoreOnStart = false
	}
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raft config: %w", err)
	}

	hasState, err := raft.HasExistingState(n.logs, n.logs, snaps)
	if err != nil {
		return nil, fmt.Errorf("read raft state in %s: %w", cfg.Dir, err)
	}
	n.raft, err = raft.NewRaft(rc, n.fsm, n.logs, n.logs, snaps, n.trans)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	if cfg.Bootstrap && !hasState {
		err := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: raft.ServerID(cfg.ID), Address: n.trans.LocalAddr(),
		}}}).Error()
		if err != nil {
			return nil, fmt.Errorf("bootstrap raft group: %w", err)
		}
		logger.Info("bootstrapped a new one-voter raft group", "addr", n.trans.LocalAddr())
	}
	ok = true
	logger.Info("raft started", "addr", n.trans.LocalAddr(), "tls", cfg.TLS != nil, "existing_state", hasState, "restore_snapshot", restore)
	return n, nil
}

// checkCatalog compares the catalog's applied index with the Raft state in
// Dir. It reports whether raft must restore its last snapshot on start: the
// catalog is older than that snapshot (the file was lost or replaced), and the
// log before the snapshot is gone, so replay alone cannot rebuild it. A
// catalog newer than anything in the Raft state belongs to another log, and
// replaying this one over it would skip commands; that is refused.
func (n *Node) checkCatalog(snaps *raft.FileSnapshotStore) (bool, error) {
	applied, err := n.store.AppliedIndex()
	if err != nil {
		return false, fmt.Errorf("read the catalog's applied index: %w", err)
	}
	last, err := n.logs.LastIndex()
	if err != nil {
		return false, fmt.Errorf("read the raft log: %w", err)
	}
	list, err := snaps.List()
	if err != nil {
		return false, fmt.Errorf("list raft snapshots: %w", err)
	}
	var snapIndex uint64
	if len(list) > 0 {
		snapIndex = list[0].Index
	}
	if applied > max(last, snapIndex) {
		return false, fmt.Errorf("the catalog %s has applied Raft index %d, but the Raft state in %s ends at %d: "+
			"they come from different servers or times; restore the Raft directory that goes with the catalog, "+
			"or move the catalog aside so this server receives a copy from the group",
			n.store.Path(), applied, n.cfg.Dir, max(last, snapIndex))
	}
	if applied < snapIndex {
		n.log.Warn("catalog is older than the last raft snapshot; restoring the snapshot", "applied_index", applied, "snapshot_index", snapIndex)
		return true, nil
	}
	return false, nil
}

func (n *Node) closeParts() {
	if n.trans != nil {
		n.trans.Close()
	}
	if n.logs != nil {
		n.logs.Close()
	}
}

// ID is this server's Raft ID.
func (n *Node) ID() string { return n.cfg.ID }

// Addr is the address the transport listens on and advertises.
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// FSM is the state machine the node applies to the catalog.
func (n *Node) FSM() *catalog.FSM { return n.fsm }

func (n *Node) notLeader() *NotLeaderError {
	addr, id := n.raft.LeaderWithID()
	return &NotLeaderError{Leader: string(addr), LeaderID: string(id)}
}

// wait waits for a Raft future under ctx and maps Raft's errors to this
// package's. The future is left to finish on its own when ctx ends first.
func (n *Node) wait(ctx context.Context, what string, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		return fmt.Errorf("%s: stopped waiting: %w (%w)", what, ErrOutcomeUnknown, ctx.Err())
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrNotVoter):
		// Refused before the entry was appended to the log.
		return fmt.Errorf("%s: %w", what, n.notLeader())
	case errors.Is(err, raft.ErrLeadershipLost):
		// Appended, then leadership went: the next leader may commit it.
		return fmt.Errorf("%s: %w (%w)", what, ErrOutcomeUnknown, n.notLeader())
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%s: %w", what, ErrTimeout)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%s: %w (%w)", what, ErrOutcomeUnknown, ErrShutdown)
	case catalog.IsNoSpace(err):
		// The leader could not write the entry to its own log, so no
		// member has it: it is not committed, now or later.
		return fmt.Errorf("%s not committed: %w", what, &catalog.DiskFullError{Dir: n.cfg.Dir, Free: -1, Err: err})
	}
	return fmt.Errorf("%s: %w (%w)", what, ErrOutcomeUnknown, err)
}

func (n *Node) timeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return n.cfg.ApplyTimeout
}

// Apply proposes c to the group and returns what applying it produced. A
// refusal by the catalog is in the result's Err with a nil error; the error
// is for commands that were not applied here, and says whether they may
// still be:
//   - not proposed, so never applied: *NotLeaderError on a follower,
//     ErrTimeout, a context that ended before Apply (a caller that gave up
//     would be told "canceled" while the command went on to apply), a
//     catalog.DiskFullError of the Raft log, or the catalog's
//     own stop (catalog.ErrFSMStopped without ErrCommittedNotApplied): a
//     member whose catalog stopped proposes nothing, since it could not
//     apply it;
//   - ErrCommittedNotApplied: in the log, applied by every member whose
//     catalog runs, and here once it resumes;
//   - ErrOutcomeUnknown: perhaps committed, perhaps not.
//
// Apply sets c.Time when it is zero.
func (n *Node) Apply(ctx context.Context, c *catalog.Command) (catalog.ApplyResult, error) {
	if c.Time.IsZero() {
		c.Time = time.Now().UTC()
	}
	data, err := catalog.EncodeCommand(c)
	if err != nil {
		return catalog.ApplyResult{}, err
	}
	if n.raft.State() != raft.Leader {
		return catalog.ApplyResult{}, fmt.Errorf("catalog %s: %w", c.Op, n.notLeader())
	}
	if err := n.fsm.Failed(); err != nil {
		return catalog.ApplyResult{}, fmt.Errorf("catalog %s not proposed: %w", c.Op, err)
	}
	// A caller that already gave up would be told "canceled" while the
	// command went on to apply: propose nothing for it.
	if err := ctx.Err(); err != nil {
		return catalog.ApplyResult{}, fmt.Errorf("catalog %s: not proposed: %w", c.Op, err)
	}
	f := n.raft.Apply(data, n.timeout(ctx))
	if err := n.wait(ctx, fmt.Sprintf("catalog %s", c.Op), f); err != nil {
		return catalog.ApplyResult{}, err
	}
	res, ok := f.Response().(catalog.ApplyResult)
	if !ok {
		return catalog.ApplyResult{}, fmt.Errorf("catalog %s: unexpected FSM response %T", c.Op, f.Response())
	}
	if errors.Is(res.Err, catalog.ErrFSMStopped) {
		return res, fmt.Errorf("catalog %s: %w: %w", c.Op, ErrCommittedNotApplied, res.Err)
	}
	return res, nil
}

// ResumeCatalog brings a catalog that stopped applying commands back, once
// its cause is gone (disk space): see catalog.FSM.Resume.
func (n *Node) ResumeCatalog() error { return n.fsm.Resume(n.logs) }

// Barrier returns once every command committed before it is applied to this
// server's catalog; reads after it see every write acknowledged before it.
// Only the leader can do it.
func (n *Node) Barrier(ctx context.Context) error {
	if n.raft.State() != raft.Leader {
		return fmt.Errorf("barrier: %w", n.notLeader())
	}
	return n.wait(ctx, "barrier", n.raft.Barrier(n.timeout(ctx)))
}

// VerifyLeader returns once a majority of the group has confirmed this
// server still leads: what it then reports of its catalog is the group's,
// not a deposed leader's that has not heard of the election yet.
func (n *Node) VerifyLeader(ctx context.Context) error {
	if n.raft.State() != raft.Leader {
		return fmt.Errorf("verify leadership: %w", n.notLeader())
	}
	return n.wait(ctx, "verify leadership", n.raft.VerifyLeader())
}

// LeaderCh delivers true when this server becomes the leader and false when
// it stops leading, as Raft changes state. A reader that falls behind sees
// only the latest change, so a lost and regained leadership may arrive as
// one true: compare Term to tell. It has one reader, the server's
// leadership loop.
func (n *Node) LeaderCh() <-chan bool { return n.raft.LeaderCh() }

// Term is Raft's current term: a new one begins with every election.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// IsLeader reports whether this server leads the group now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// LeaderAddr is the leader's Raft address, empty when none is known.
func (n *Node) LeaderAddr() string {
	addr, _ := n.raft.LeaderWithID()
	return string(addr)
}

// LeaderID is the leader's Raft ID, empty when none is known.
func (n *Node) LeaderID() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// State is Raft's state: Follower, Candidate, Leader or Shutdown.
func (n *Node) State() string { return n.raft.State().String() }

// WaitLeader blocks until the group has a leader that this server knows of.
func (n *Node) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if n.LeaderAddr() != "" {
			return nil
		}
		if n.raft.State() == raft.Shutdown {
			return ErrShutdown
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for a raft leader: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Peer is one server of the group's configuration.
type Peer struct {
	ID    string `json:"id"`
	Addr  string `json:"addr"`
	Voter bool   `json:"voter"`
}

// Stats is the node's view of the group.
type Stats struct {
	ID    string `json:"id"`
	Addr  string `json:"addr"`
	State string `json:"state"`
	Term  uint64 `json:"term"`
	// LastIndex is the last entry in this server's log, CommitIndex the last
	// it knows committed, AppliedIndex the last Raft handed to the FSM.
	LastIndex    uint64 `json:"last_index"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	// CatalogIndex is the applied index the catalog file records: the last
	// command, as opposed to Raft's own entries.
	CatalogIndex      uint64 `json:"catalog_index"`
	LastSnapshotIndex uint64 `json:"last_snapshot_index"`
	Leader            string `json:"leader,omitempty"`
	LeaderID          string `json:"leader_id,omitempty"`
	Peers             []Peer `json:"peers"`
	// FSMError is set when the catalog stopped applying commands, and
	// CatalogBehind counts the commands it did not apply since.
	FSMError      string `json:"fsm_error,omitempty"`
	CatalogBehind uint64 `json:"catalog_behind,omitempty"`
}

// Stats reads the node's state.
func (n *Node) Stats() Stats {
	addr, id := n.raft.LeaderWithID()
	st := Stats{
		ID: n.cfg.ID, Addr: n.Addr(), State: n.raft.State().String(), Term: n.raft.CurrentTerm(),
		LastIndex: n.raft.LastIndex(), CommitIndex: n.raft.CommitIndex(), AppliedIndex: n.raft.AppliedIndex(),
		Leader: string(addr), LeaderID: string(id),
	}
	st.CatalogIndex, _ = n.store.AppliedIndex()
	st.LastSnapshotIndex, _ = strconv.ParseUint(n.raft.Stats()["last_snapshot_index"], 10, 64)
	if err := n.fsm.Failed(); err != nil {
		st.FSMError = err.Error()
		st.CatalogBehind = n.fsm.Behind()
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			st.Peers = append(st.Peers, Peer{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter})
		}
	}
	return st
}

// AddVoter adds a server to the group as a voter, or updates its address.
// Only the leader can do it.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	if n.raft.State() != raft.Leader {
		return fmt.Errorf("add voter %s: %w", id, n.notLeader())
	}
	return n.wait(ctx, "add voter "+id, n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.timeout(ctx)))
}

// RemoveServer removes a server from the group. Only the leader can do it.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	if n.raft.State() != raft.Leader {
		return fmt.Errorf("remove server %s: %w", id, n.notLeader())
	}
	return n.wait(ctx, "remove server "+id, n.raft.RemoveServer(raft.ServerID(id), 0, n.timeout(ctx)))
}

// Snapshot takes a snapshot now, so the log before it can be compacted.
func (n *Node) Snapshot() error {
	if err := n.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("raft snapshot: %w", err)
	}
	return nil
}

// Shutdown stops the node: Raft, then its transport and log. It leaves the
// catalog store open for the caller to close. Calling it again is a no-op.
func (n *Node) Shutdown() error {
	n.shutdownOnce.Do(func() {
		var errs []error
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
		// Before the log store closes under a heartbeat under way.
		n.trans.fence()
		if err := n.trans.Close(); err != nil {
			errs = append(errs, fmt.Errorf("raft transport: %w", err))
		}
		if err := n.logs.Close(); err != nil {
			errs = append(errs, fmt.Errorf("raft log: %w", err))
		}
		n.shutdownErr = errors.Join(errs...)
	})
	return n.shutdownErr
}
