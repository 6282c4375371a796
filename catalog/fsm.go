package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// ErrFSMStopped wraps the cause when the FSM stopped applying commands: a
// command it could not decode (a newer leader) or a change the catalog file
// could not take (disk full, I/O error).
var ErrFSMStopped = errors.New("catalog stopped applying Raft commands")

// FSM applies the Raft log to a Store.
//
// A command that the catalog refuses is a result, identical on every server.
// A command that cannot be applied at all is different: skipping it would
// make this server's catalog differ from the others', so the FSM stops. It
// answers every later command with the error and refuses snapshots, so Raft
// keeps the log; Resume (once there is space again), a restart (after the
// disk is fixed or the server upgraded) or a snapshot from the leader
// brings it back, replaying the log from the catalog's applied index.
//
// With a space floor set, the FSM stops before a command once less than the
// floor is free where the catalog lives, rather than let bbolt find out in
// the middle of a commit: whether a commit needs new pages depends on its
// free list, so a full disk would otherwise stop the catalog at a command
// nobody can predict, and leave Raft no room for its own writes.
type FSM struct {
	store *Store
	log   *slog.Logger
	floor atomic.Int64

	// applyMu keeps Apply and Resume in log order; handed and applied are
	// under it.
	applyMu sync.Mutex
	// handed is the last command Raft handed to Apply, applied or not.
	handed uint64
	// applied is the catalog's applied index as the FSM left it.
	applied uint64

	mu     sync.Mutex
	failed error

	// skipped counts replayed commands the catalog already held.
	skipped atomic.Uint64

	// appliedNow is applied for readers outside applyMu; moved, under
	// waitMu, is closed each time it advances, for WaitApplied.
	appliedNow atomic.Uint64
	waitMu     sync.Mutex
	moved      chan struct{}

	// beforeApply, when set, runs before each command: a test holds a
	// server's catalog behind the group's with it.
	beforeApply atomic.Pointer[func(index uint64)]
}

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.FSMSnapshot = (*fsmSnapshot)(nil)
)

// NewFSM returns the FSM over store.
func NewFSM(store *Store, logger *slog.Logger) *FSM {
	f := &FSM{store: store, log: logger.With("component", "catalog-fsm")}
	f.applied, _ = store.AppliedIndex()
	f.handed = f.applied
	f.appliedNow.Store(f.applied)
	return f
}

// Applied is the index of the last command the catalog holds.
func (f *FSM) Applied() uint64 { return f.appliedNow.Load() }

// WaitApplied returns once the catalog holds every command up to index,
// or ctx's error when it ends first.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		f.waitMu.Lock()
		if f.appliedNow.Load() >= index {
			f.waitMu.Unlock()
			return nil
		}
		if f.moved == nil {
			f.moved = make(chan struct{})
		}
		moved := f.moved
		f.waitMu.Unlock()
		select {
		case <-moved:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// setApplied records applied (under applyMu) and wakes WaitApplied.
func (f *FSM) setApplied(index uint64) {
	f.applied = index
	f.waitMu.Lock()
	f.appliedNow.Store(index)
	if f.moved != nil {
		close(f.moved)
		f.moved = nil
	}
	f.waitMu.Unlock()
}

// SetBeforeApply has fn run before each command the FSM applies, on
// Raft's FSM goroutine; nil removes it. Tests use it to hold one server's
// catalog behind the others'.
func (f *FSM) SetBeforeApply(fn func(index uint64)) {
	if fn == nil {
		f.beforeApply.Store(nil)
		return
	}
	f.beforeApply.Store(&fn)
}

// SetSpaceFloor makes the FSM stop before a command once fewer than bytes
// are free on the catalog's filesystem; 0 turns the check off.
func (f *FSM) SetSpaceFloor(bytes int64) { f.floor.Store(bytes) }

// SpaceFloor is the floor SetSpaceFloor set.
func (f *FSM) SpaceFloor() int64 { return f.floor.Load() }

func (f *FSM) dir() string { return filepath.Dir(f.store.Path()) }

// Store is the catalog the FSM applies to.
func (f *FSM) Store() *Store { return f.store }

// Failed is why the FSM stopped applying commands, nil while it applies them.
func (f *FSM) Failed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *FSM) fail(err error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failed == nil {
		var full *DiskFullError
		if !errors.As(err, &full) && IsNoSpace(err) {
			err = &DiskFullError{Dir: f.dir(), Free: -1, Err: err}
		}
		f.failed = fmt.Errorf("%w: %w", ErrFSMStopped, err)
		f.log.Error("catalog stopped applying commands; it resumes once the cause is fixed (free space), or after a restart", "err", err)
	}
	return f.failed
}

// Skipped is the number of commands Raft handed over that the catalog had
// applied before: the log replayed after a restart.
func (f *FSM) Skipped() uint64 { return f.skipped.Load() }

// Apply applies one committed log entry and returns its ApplyResult.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	if fn := f.beforeApply.Load(); fn != nil {
		(*fn)(l.Index)
	}
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	f.handed = max(f.handed, l.Index)
	if err := f.Failed(); err != nil {
		return ApplyResult{Err: err}
	}
	return f.applyLocked(l.Index, l.Data)
}

func (f *FSM) applyLocked(index uint64, data []byte) ApplyResult {
	c, err := DecodeCommand(data)
	if err != nil {
		return ApplyResult{Err: f.fail(fmt.Errorf("raft index %d: %w", index, err))}
	}
	if index > f.applied {
		if err := checkSpace(f.dir(), f.floor.Load()); err != nil {
			return ApplyResult{Err: f.fail(fmt.Errorf("raft index %d (%s) not applied: %w", index, c.Op, err))}
		}
	}
	res := f.store.Apply(index, c)
	if res.Skipped {
		f.skipped.Add(1)
	}
	var refusal *Error
	if res.Err != nil && !errors.As(res.Err, &refusal) {
		res.Err = f.fail(res.Err)
		return res
	}
	f.setApplied(max(f.applied, index))
	return res
}

// Behind is how many commands Raft handed the FSM that the catalog does
// not hold: those it could not apply since it stopped.
func (f *FSM) Behind() uint64 {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	return f.handed - min(f.applied, f.handed)
}

// Resume applies, in order, the commands Raft handed over while the FSM was
// stopped, reading them back from logs, and goes on applying if they all
// apply: once the disk has room again, the catalog catches up without a
// restart. It returns why it could not, and the FSM stays stopped then.
// Raft keeps those entries: a stopped FSM refuses snapshots, so the log is
// not compacted past them.
func (f *FSM) Resume(logs raft.LogStore) error {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	cause := f.Failed()
	if cause == nil {
		return nil
	}
	if err := checkSpace(f.dir(), f.floor.Load()); err != nil {
		return err
	}
	applied, err := f.store.AppliedIndex()
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.failed = nil // applyLocked stops it again on the first failure
	f.mu.Unlock()
	n := 0
	for i := applied + 1; i <= f.handed; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			return f.fail(fmt.Errorf("raft index %d, which the catalog has not applied, is not in the Raft log (%w): "+
				"restart the server to rebuild its catalog from the group", i, err))
		}
		if l.Type != raft.LogCommand {
			continue
		}
		if res := f.applyLocked(i, l.Data); res.Err != nil {
			if err := f.Failed(); err != nil {
				return err
			}
		}
		n++
	}
	f.log.Info("catalog applies commands again", "caught_up", n, "applied_index", f.applied, "was", cause)
	return nil
}

// Snapshot captures the catalog as of the last applied command. It starts a
// read transaction here, on the FSM's goroutine, so Persist later streams
// exactly this state while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.Failed(); err != nil {
		return nil, err
	}
	tx, err := f.store.beginRead()
	if err != nil {
		return nil, fmt.Errorf("catalog snapshot: %w", err)
	}
	return &fsmSnapshot{tx: tx}, nil
}

// Restore replaces the catalog with a snapshot. A snapshot is a whole
// consistent catalog, so a catalog that had stopped applying is whole again.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.store.Restore(rc); err != nil {
		return err
	}
	f.mu.Lock()
	f.failed = nil
	f.mu.Unlock()
	idx, _ := f.store.AppliedIndex()
	f.applyMu.Lock()
	f.setApplied(idx)
	f.handed = max(f.handed, idx)
	f.applyMu.Unlock()
	f.log.Info("catalog restored from a snapshot", "applied_index", idx)
	return nil
}

type fsmSnapshot struct {
	tx   *bbolt.Tx
	once sync.Once
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.tx.WriteTo(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("write catalog snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {
	s.once.Do(func() { _ = s.tx.Rollback() })
}
