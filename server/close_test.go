package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/wire"
)

// TestCloseWaitsForRequestsInFlight: a request being answered when Close
// begins sees its context end, and Close waits for it before it closes Raft
// and the catalog, so it is answered from an open catalog (no "use of
// closed database") and Close returns only after it.
func TestCloseWaitsForRequestsInFlight(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ns, err := natsd.Start(natsd.Config{Anonymous: true}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	cfg := DefaultConfig()
	cfg.Name, cfg.Bootstrap, cfg.DataDir, cfg.NATSURL, cfg.RaftAddr = "s1", true, t.TempDir(), ns.URL(), "127.0.0.1:0"
	s, err := New(cfg, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	entered, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.beforeHandle = func(ctx context.Context, m *nats.Msg) {
		if !strings.HasSuffix(m.Subject, wire.OpJobList) {
			return
		}
		once.Do(func() {
			close(entered)
			<-ctx.Done() // Close began
			<-proceed
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, func() error {
		if !s.Serving() {
			return errors.New("the server does not answer roles yet")
		}
		return nil
	})
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	answered := make(chan error, 1)
	go func() {
		var jobs json.RawMessage
		answered <- wire.Request(ctx, nc, wire.APISubject(wire.OpJobList), wire.JobListReq{}, &jobs)
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		close(proceed)
		t.Fatalf("Close returned (%v) while a request was being answered", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(proceed)
	// Answered, or refused as from a server that stops: never a closed
	// catalog, nor silence.
	if err := <-answered; err != nil && (wire.CodeOf(err) != wire.CodeUnavailable || !strings.Contains(err.Error(), "stopping")) {
		t.Fatalf("the request in flight was not answered cleanly: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("close: %v", err)
	}
}
