package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/wire"
)

// TestAgentAnswersWhetherItWouldTakeAnOrder: asked before the servers make
// a job, a running agent says whether it would take it, as its order
// would: a path it does not have, or a restore target that holds
// something, is refused with the order's code; it only looks, so a target
// that does not exist yet is still not there afterwards.
func TestAgentAnswersWhetherItWouldTakeAnOrder(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ns, err := natsd.Start(natsd.Config{Anonymous: true}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	cfg := DefaultConfig()
	cfg.Name, cfg.NATSURL = "web", ns.URL()
	a, err := New(cfg, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	nc, err := nats.Connect(ns.URL()) // as the servers
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

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
