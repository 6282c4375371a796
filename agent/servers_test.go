package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/wire"
)

// This file is what the agent's tests that run an agent start from: an
// embedded NATS server, fake servers that keep the agent's reports, the
// agent, and a listener where a test plays the storage node.

// fakeServers answers an agent's requests as the servers would, and keeps
// its job reports and registrations.
type fakeServers struct {
	mu         sync.Mutex
	done       []wire.JobDoneReq
	registered []wire.AgentRegisterReq
}

func (f *fakeServers) handle(_ context.Context, subject string, body json.RawMessage) (any, error) {
	_, op, _ := wire.SplitFrom(subject)
	switch op {
	case wire.OpJobDone:
		req, _ := wire.Decode[wire.JobDoneReq](body)
		f.mu.Lock()
		f.done = append(f.done, req)
		f.mu.Unlock()
	case wire.OpAgentRegister:
		req, _ := wire.Decode[wire.AgentRegisterReq](body)
		f.mu.Lock()
		f.registered = append(f.registered, req)
		f.mu.Unlock()
	}
	return wire.Empty{}, nil
}

// report waits up to timeout for the agent's first job report.
func (f *fakeServers) report(t *testing.T, timeout time.Duration) wire.JobDoneReq {
	t.Helper()
	var done wire.JobDoneReq
	poll.Until(t, timeout, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.done) == 0 {
			return errors.New("no report")
		}
		done = f.done[0]
		return nil
	})
	return done
}

// startAgent runs an agent with cfg on an embedded NATS server whose
// fake servers keep its reports.
func startAgent(t *testing.T, dirs []string, configFile string, tune ...func(*Agent)) (*Agent, *nats.Conn, *fakeServers) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ns, err := natsd.Start(natsd.Config{Anonymous: true}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	srv := &fakeServers{}
	if _, err := wire.Serve(context.Background(), nc, wire.FromAgentWildcard, "", logger, srv.handle); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Name = "web"
	cfg.NATSURL = ns.URL()
	cfg.AllowedCommandDirs, cfg.ConfigFile = dirs, configFile
	a, err := New(cfg, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.killGrace = 200 * time.Millisecond
	for _, f := range tune {
		f(a)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, nc, srv
}

// listenNode listens where a test plays storage node sn1 on the data port,
// and returns the listener and its certificate's fingerprint.
func listenNode(t testing.TB) (net.Listener, string) {
	t.Helper()
	cert, fp, err := dataplane.LoadOrCreateCert(t.TempDir(), "sn1")
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", dataplane.ServerConfig(cert))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, fp
}
