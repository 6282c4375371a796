package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
)

type bufferSink struct {
	bytes.Buffer
	closed, canceled bool
}

func (s *bufferSink) ID() string    { return "test" }
func (s *bufferSink) Close() error  { s.closed = true; return nil }
func (s *bufferSink) Cancel() error { s.canceled = true; return nil }

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// populated is a catalog with a bit of everything.
func populated(t testing.TB) *testCatalog {
	c := newTestCatalog(t)
	c.setup()
	c.backup(LevelFull, bigTree(3, 50))
	c.backup(LevelIncremental, []fileindex.Entry{deleted("/data/d001"), file("/data/new", 5)})
	id := c.startBackup(LevelIncremental, "/home")
	c.writeIndex(id, []fileindex.Entry{dir("/home"), file("/home/x", 1)}, 0)
	c.must(&Command{Op: OpAppendJobLog, JobLog: &JobLog{JobID: id, Lines: []LogLine{{Level: "info", Msg: "hello"}}}})
	return c
}

func snapshot(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink bufferSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed || sink.canceled {
		t.Fatalf("sink closed %v canceled %v", sink.closed, sink.canceled)
	}
	return sink.Bytes()
}

func TestSnapshotRestoresIntoAFreshCatalog(t *testing.T) {
	c := populated(t)
	f := NewFSM(c.s, testLogger(t))
	want := dump(t, c.s)
	wantIndex, _ := c.s.AppliedIndex()

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Changes after Snapshot are not in it, though Persist runs later.
	c.must(&Command{Op: OpRegisterClient, Client: &Client{Name: "late"}})
	var sink bufferSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	snap.Release() // raft may; it must not panic

	fresh, err := Open(filepath.Join(t.TempDir(), "fresh.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := NewFSM(fresh, testLogger(t)).Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, fresh); got != want {
		t.Fatalf("restored catalog differs:\n%s\n---\n%s", got, want)
	}
	if idx, _ := fresh.AppliedIndex(); idx != wantIndex {
		t.Fatalf("restored applied index %d, want %d", idx, wantIndex)
	}
	if _, err := fresh.Client("late"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a change after Snapshot is in it: %v", err)
	}
	// The restored file is the catalog from now on: it survives a reopen.
	fresh.Close()
	again, err := Open(fresh.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if got := dump(t, again); got != want {
		t.Fatal("reopened restored catalog differs")
	}
}

func TestRestoreRejectsWhatIsNotACatalog(t *testing.T) {
	c := populated(t)
	want := dump(t, c.s)
	f := NewFSM(c.s, testLogger(t))
	if err := f.Restore(io.NopCloser(bytes.NewReader([]byte("not a bbolt file at all")))); err == nil {
		t.Fatal("garbage restored")
	}
	if got := dump(t, c.s); got != want {
		t.Fatal("a failed restore changed the catalog")
	}
}

// Readers keep reading while the FSM restores snapshots under them: every
// read succeeds and answers what the snapshot holds, never an error of a
// file being swapped and never a half-restored catalog.
func TestReadsDuringRestore(t *testing.T) {
	c := populated(t)
	f := NewFSM(c.s, testLogger(t))
	img := snapshot(t, f)
	// What every read must answer, before and after each restore alike.
	read := func() (string, error) {
		var buf bytes.Buffer
		j, err := c.s.Job(1)
		if err != nil {
			return "", err
		}
		vols, err := c.s.Volumes(VolumeFilter{Pool: "disk1"})
		if err != nil {
			return "", err
		}
		counts, err := c.s.Counts()
		if err != nil {
			return "", err
		}
		entries, err := fileindex.Collect(c.s.Index(1))
		if err != nil {
			return "", err
		}
		ls, err := c.s.ListDir(2, "/data")
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&buf, "job %d %s %d lines; %d volumes; %d backups; %d entries; %d in /data",
			j.ID, j.State, len(j.Log), len(vols), counts.Backups[BackupComplete], len(entries), len(ls))
		return buf.String(), nil
	}
	want, err := read()
	if err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads, failures atomic.Int64
	var firstBad atomic.Value
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				got, err := read()
				reads.Add(1)
				if err != nil || got != want {
					failures.Add(1)
					firstBad.CompareAndSwap(nil, fmt.Sprintf("%q, %v", got, err))
				}
			}
		})
	}
	for range 10 {
		// Each restore starts once the readers made progress since the
		// last one, so reads and restores interleave on a loaded machine
		// too.
		before := reads.Load()
		poll.Until(t, 10*time.Second, func() error {
			if reads.Load() == before {
				return errors.New("no reader got through since the last restore")
			}
			return nil
		})
		if err := f.Restore(io.NopCloser(bytes.NewReader(img))); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d reads during 10 restores failed or answered wrong; the first: %s (want %q)", n, reads.Load(), firstBad.Load(), want)
	}
	if got, err := read(); err != nil || got != want {
		t.Fatalf("after the restores: %q, %v; want %q", got, err, want)
	}
}

func TestFSMStopsOnACommandItCannotApply(t *testing.T) {
	c := populated(t)
	f := NewFSM(c.s, testLogger(t))
	apply := func(cmd *Command) ApplyResult {
		t.Helper()
		data, err := EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		c.index++
		return f.Apply(&raft.Log{Type: raft.LogCommand, Index: c.index, Data: data}).(ApplyResult)
	}
	// A refusal is a result: the FSM goes on.
	if res := apply(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "ghost"}}); !errors.Is(res.Err, &Error{Code: CodeUnknownClient}) {
		t.Fatalf("refusal: %v", res.Err)
	}
	if res := apply(&Command{Op: OpRegisterClient, Client: &Client{Name: "ok"}}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := f.Apply(&raft.Log{Type: raft.LogNoop, Index: c.index + 1}); res != nil {
		t.Fatalf("no-op log: %v", res)
	}
	// A command from a newer version stops it.
	c.index++
	res := f.Apply(&raft.Log{Type: raft.LogCommand, Index: c.index, Data: []byte{9, 2, '{', '}'}}).(ApplyResult)
	if !errors.Is(res.Err, ErrFSMStopped) || !errors.Is(res.Err, ErrBadCommand) {
		t.Fatalf("undecodable command: %v", res.Err)
	}
	stoppedAt, _ := c.s.AppliedIndex()
	if res := apply(&Command{Op: OpRegisterClient, Client: &Client{Name: "after"}}); !errors.Is(res.Err, ErrFSMStopped) {
		t.Fatalf("command after the stop: %v", res.Err)
	}
	if _, err := c.s.Client("after"); !errors.Is(err, ErrNotFound) {
		t.Fatal("a stopped FSM applied a command")
	}
	if idx, _ := c.s.AppliedIndex(); idx != stoppedAt || idx >= c.index-1 {
		t.Fatalf("applied index moved to %d while stopped (stopped at %d)", idx, stoppedAt)
	}
	if _, err := f.Snapshot(); !errors.Is(err, ErrFSMStopped) {
		t.Fatalf("snapshot of a stopped FSM: %v", err)
	}
	// A snapshot from a healthy server makes it whole again.
	healthy := populated(t)
	if err := f.Restore(io.NopCloser(bytes.NewReader(snapshot(t, NewFSM(healthy.s, testLogger(t)))))); err != nil {
		t.Fatal(err)
	}
	if f.Failed() != nil {
		t.Fatal("still stopped after a restore")
	}
	c.index = 1000
	if res := apply(&Command{Op: OpCreateVolume, Volume: &Volume{ID: uuid.New(), Pool: "disk1"}}); res.Err != nil {
		t.Fatal(res.Err)
	}
}

// TestResumeKeepsTheRaftLogsError: a stopped FSM whose missing commands are
// no longer in the Raft log cannot resume, says to restart, and keeps the
// log store's own error (raft.ErrLogNotFound) for the server to match.
func TestResumeKeepsTheRaftLogsError(t *testing.T) {
	l := newLogFSM(t, t.TempDir())
	l.f.SetSpaceFloor(1 << 62) // more than any disk: the FSM stops before the next command
	if res := l.apply(&Command{Op: OpRegisterClient, Client: &Client{Name: "lost"}}); !errors.Is(res.Err, ErrFSMStopped) {
		t.Fatalf("apply below the floor: %v", res.Err)
	}
	if err := l.logs.DeleteRange(l.c.index, l.c.index); err != nil {
		t.Fatal(err)
	}
	l.f.SetSpaceFloor(0)
	err := l.f.Resume(l.logs)
	if !errors.Is(err, ErrFSMStopped) || !errors.Is(err, raft.ErrLogNotFound) || !strings.Contains(err.Error(), "restart the server") {
		t.Fatalf("resume without the log: %v, want the stop wrapping raft.ErrLogNotFound and saying to restart", err)
	}
}

// TestWaitAppliedWakesOnEachApply: a reader waiting for an index returns
// once a command at or past it is applied (a refusal counts: the catalog
// holds its outcome), and gives up with its context; a snapshot restored
// past the index ends the wait too.
func TestWaitAppliedWakesOnEachApply(t *testing.T) {
	c := populated(t)
	f := NewFSM(c.s, testLogger(t))
	if got, _ := c.s.AppliedIndex(); f.Applied() != got {
		t.Fatalf("a new FSM says %d applied, the catalog %d", f.Applied(), got)
	}
	apply := func(cmd *Command) {
		t.Helper()
		data, err := EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		c.index++
		f.Apply(&raft.Log{Type: raft.LogCommand, Index: c.index, Data: data})
	}
	wait := func(index uint64, d time.Duration) <-chan error {
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			done <- f.WaitApplied(ctx, index)
		}()
		return done
	}
	pending := func(done <-chan error) func() error {
		return func() error {
			select {
			case err := <-done:
				return fmt.Errorf("the wait ended before its index was applied: %v", err)
			default:
				return nil
			}
		}
	}

	if err := <-wait(f.Applied(), time.Minute); err != nil {
		t.Fatalf("wait for what is applied: %v", err)
	}
	done := wait(c.index+2, time.Minute)
	apply(&Command{Op: OpRegisterClient, Client: &Client{Name: "one"}})
	poll.Holds(t, 50*time.Millisecond, pending(done))
	apply(&Command{Op: OpCreateJob, Job: &Job{Type: JobBackup, Client: "ghost"}}) // refused
	if err := <-done; err != nil {
		t.Fatalf("wait past a refusal: %v", err)
	}
	if err := <-wait(c.index+1, 20*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait for an index never applied: %v", err)
	}

	ahead := populated(t)
	for range 5 {
		ahead.must(&Command{Op: OpRegisterClient, Client: &Client{Name: fmt.Sprintf("c%d", ahead.index)}})
	}
	target, _ := ahead.s.AppliedIndex()
	done = wait(target, time.Minute)
	poll.Holds(t, 50*time.Millisecond, pending(done))
	if err := f.Restore(io.NopCloser(bytes.NewReader(snapshot(t, NewFSM(ahead.s, testLogger(t)))))); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("wait past a restored snapshot: %v", err)
	}
}
