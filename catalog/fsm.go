package catalog

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
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
// keeps the log; a restart (after the disk is fixed or the server upgraded)
// replays the log from the catalog's applied index.
type FSM struct {
	store *Store
	log   *slog.Logger

	mu     sync.Mutex
	failed error

	// skipped counts replayed commands the catalog already held.
	skipped atomic.Uint64
}

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.FSMSnapshot = (*fsmSnapshot)(nil)
)

// NewFSM returns the FSM over store.
func NewFSM(store *Store, logger *slog.Logger) *FSM {
	return &FSM{store: store, log: logger.With("component", "catalog-fsm")}
}

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
		f.failed = fmt.Errorf("%w: %w", ErrFSMStopped, err)
		f.log.Error("catalog stopped applying commands; fix the cause and restart the server", "err", err)
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
	if err := f.Failed(); err != nil {
		return ApplyResult{Err: err}
	}
	c, err := DecodeCommand(l.Data)
	if err != nil {
		return ApplyResult{Err: f.fail(fmt.Errorf("raft index %d: %w", l.Index, err))}
	}
	res := f.store.Apply(l.Index, c)
	if res.Skipped {
		f.skipped.Add(1)
	}
	var refusal *Error
	if res.Err != nil && !errors.As(res.Err, &refusal) {
		res.Err = f.fail(res.Err)
	}
	return res
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
