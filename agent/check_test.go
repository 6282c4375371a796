package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/wire"
)

// TestAgentAnswersWhetherItWouldTakeAnOrder: asked before the servers make
// a job, a running agent says whether it would take it, as its order
// would: a path it does not have, or a restore target that holds
// something, is refused with the order's code; it only looks, so a target
// that does not exist yet is still not there afterwards.
func TestAgentAnswersWhetherItWouldTakeAnOrder(t *testing.T) {
	_, nc, _ := startAgent(t, nil, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	dir := t.TempDir()
	busy := filepath.Join(dir, "busy")
	os.MkdirAll(busy, 0o755)
	os.WriteFile(filepath.Join(busy, "keep"), nil, 0o644)
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	fresh := filepath.Join(dir, "fresh")

	for _, c := range []struct {
		op   string
		req  any
		code string // "" for yes
		says string
	}{
		{wire.OpCheckBackup, wire.CheckBackup{Paths: []fileindex.Path{fileindex.Path(dir), fileindex.Path(file)}}, "", ""},
		{wire.OpCheckBackup, wire.CheckBackup{Paths: []fileindex.Path{fileindex.Path(dir), "/no/such"}}, wire.CodeInvalidArgument, "path /no/such does not exist on client web"},
		{wire.OpCheckBackup, wire.CheckBackup{}, wire.CodeBadRequest, "names no path"},
		{wire.OpCheckRestore, wire.CheckRestore{To: fresh}, "", ""},
		{wire.OpCheckRestore, wire.CheckRestore{To: busy}, wire.CodeTargetNotEmpty, "not empty"},
		{wire.OpCheckRestore, wire.CheckRestore{To: busy, Force: true}, "", ""},
		{wire.OpCheckRestore, wire.CheckRestore{To: file}, wire.CodeInvalidArgument, "not a directory"},
	} {
		err := wire.Request(ctx, nc, wire.AgentSubject("web", c.op), c.req, nil)
		if wire.CodeOf(err) != c.code || (err != nil && !strings.Contains(err.Error(), c.says)) {
			t.Errorf("%s %+v: %v (code %q), want code %q saying %q", c.op, c.req, err, wire.CodeOf(err), c.code, c.says)
		}
	}
	if _, err := os.Lstat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a restore check made its target: %v", err)
	}
}

// TestTargetRefusalKeepsItsCause: the agent answers a restore target that
// holds something with target_not_empty, and the answer still wraps the
// agent's own TargetNotEmptyError naming the target, so code on this side
// of the wire matches it with errors.As instead of reading the message.
func TestTargetRefusalKeepsItsCause(t *testing.T) {
	busy := t.TempDir()
	if err := os.WriteFile(filepath.Join(busy, "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: Config{Name: "web"}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	_, err := a.onCheckRestore(context.Background(), "", wire.CheckRestore{To: busy})
	var ne *TargetNotEmptyError
	if wire.CodeOf(err) != wire.CodeTargetNotEmpty || !errors.As(err, &ne) || ne.Root != busy {
		t.Fatalf("check a restore into a target that holds a file: %v (code %q), want target_not_empty wrapping a TargetNotEmptyError of %s", err, wire.CodeOf(err), busy)
	}
	_, err = a.onCheckRestore(context.Background(), "", wire.CheckRestore{To: filepath.Join(busy, "keep", "below")})
	if wire.CodeOf(err) != wire.CodeInvalidArgument || !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("check a restore below a file: %v (code %q), want invalid_argument wrapping ENOTDIR", err, wire.CodeOf(err))
	}
}
