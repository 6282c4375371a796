package orchestrator

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/server/cluster"
)

// A Go caller of the orchestrator (a scheduler) tells its refusals apart
// with errors.Is against the sentinels, sees the cause through them, and
// gets the hint the CLI prints.
func TestErrorsFromTheGoAPI(t *testing.T) {
	w := newWorld(t, testConfig)
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		err   error
		kind  *Error
		other *Error // a kind it must not match
		hint  string
	}{
		{"unknown client", start(w, BackupSpec{Client: "ghost", Paths: []fileindex.Path{"/data"}}), ErrUnknownClient, ErrInvalidArgument, ""},
		{"bad client name", start(w, BackupSpec{Client: "bad.name", Paths: []fileindex.Path{"/data"}}), ErrInvalidArgument, ErrUnknownClient, "use letters, digits"},
		{"no path", start(w, BackupSpec{Client: "web"}), ErrInvalidArgument, ErrNotFound, "pass --path DIR"},
		{"bad level", start(w, BackupSpec{Client: "web", Paths: []fileindex.Path{"/data"}, Level: "weekly"}), ErrInvalidArgument, ErrNotFound, "use full, incremental or differential"},
		{"bad exclude", start(w, BackupSpec{Client: "web", Paths: []fileindex.Path{"/data"}, Excludes: []fileindex.Path{"[z-"}}), ErrInvalidArgument, ErrNotFound, "the patterns --exclude takes"},
		{"unknown pool", start(w, BackupSpec{Client: "web", Paths: []fileindex.Path{"/data"}, Pool: "Nope"}), ErrNotFound, ErrUnknownClient, "cairn pool list"},
		{"no backup", restore(w, RestoreSpec{To: "/r", RequestID: "r1"}, "web"), ErrNotFound, ErrInvalidArgument, "run a backup first"},
		{"cancel of no job", cancel(w, 999), ErrNotFound, ErrWrongState, "cairn job list"},
	} {
		if !errors.Is(c.err, c.kind) || errors.Is(c.err, c.other) {
			t.Errorf("%s: %v: errors.Is(%s) = %v, errors.Is(%s) = %v", c.name, c.err, c.kind.Code, errors.Is(c.err, c.kind), c.other.Code, errors.Is(c.err, c.other))
			continue
		}
		var e *Error
		if !errors.As(c.err, &e) || !strings.Contains(e.Hint, c.hint) {
			t.Errorf("%s: %v: hint %q, want one with %q", c.name, c.err, e.Hint, c.hint)
		}
		if c.kind == ErrNotFound && !errors.Is(c.err, catalog.ErrNotFound) {
			t.Errorf("%s: %v does not match catalog.ErrNotFound", c.name, c.err)
		}
	}

	// A start whose record may or may not have committed: the caller
	// repeats it under the same request id, and sees why.
	w.mu.Lock()
	w.applyErr = cluster.ErrOutcomeUnknown
	w.mu.Unlock()
	_, err := w.o.StartBackup(ctx, BackupSpec{Client: "web", Paths: []fileindex.Path{"/data"}, RequestID: "nightly-1"})
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, cluster.ErrOutcomeUnknown) || !strings.Contains(err.Error(), "nightly-1") {
		t.Fatalf("a start of unknown outcome: %v (ErrOutcomeUnknown %v, cause kept %v)", err, errors.Is(err, ErrOutcomeUnknown), errors.Is(err, cluster.ErrOutcomeUnknown))
	}
}

func start(w *world, spec BackupSpec) error {
	_, err := w.o.StartBackup(context.Background(), spec)
	return err
}

func restore(w *world, spec RestoreSpec, client string) error {
	spec.Client = client
	_, err := w.o.StartRestore(context.Background(), spec)
	return err
}

func cancel(w *world, id uint64) error {
	_, err := w.o.Cancel(context.Background(), CancelSpec{ID: id, By: "test"})
	return err
}
