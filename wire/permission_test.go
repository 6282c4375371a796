package wire

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/internal/poll"
)

// confinedServer runs a NATS server with one user, "limited", who may
// publish only below ok.> and subscribe only to its own inbox, as a role's
// credential is confined in a deployment.
func confinedServer(t *testing.T) *server.Server {
	t.Helper()
	opts := &server.Options{
		Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		Users: []*server.User{{
			Username: "limited", Password: "pw",
			Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{"ok.>"}},
				Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.limited.>"}},
			},
		}, {Username: "all", Password: "pw"}},
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func connectAs(t *testing.T, s *server.Server, user, inbox string) *nats.Conn {
	t.Helper()
	opts, err := ConnectOptions("test", NATSAuth{User: user, Password: "pw"}, inbox)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// A request the credential may not publish fails at once with the subject
// named, instead of waiting out its timeout and blaming the servers.
func TestRequestDeniedPublishFailsAtOnce(t *testing.T) {
	s := confinedServer(t)
	all := connectAs(t, s, "all", "")
	// Something answers on the denied subject, so only the permission
	// can stop the request.
	if _, err := all.Subscribe("denied.op", func(m *nats.Msg) { _ = m.Respond(MarshalError(Errorf(CodeInternal, "", "answered"))) }); err != nil {
		t.Fatal(err)
	}
	if err := all.Flush(); err != nil {
		t.Fatal(err)
	}
	nc := connectAs(t, s, "limited", "_INBOX.limited")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	err := Request(ctx, nc, "denied.op", Empty{}, nil)
	if CodeOf(err) != CodePermissionDenied {
		t.Fatalf("Request = %v (code %q), want %s", err, CodeOf(err), CodePermissionDenied)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the denial took %s: it waited for the timeout", took)
	}
	t.Logf("denied after %s: %v", time.Since(start), err)

	// The connection stays usable for what the credential allows.
	if _, err := all.Subscribe("ok.op", func(m *nats.Msg) { _ = m.Respond(mustMarshal(t, Empty{})) }); err != nil {
		t.Fatal(err)
	}
	_ = all.Flush()
	if err := Request(ctx, nc, "ok.op", Empty{}, nil); err != nil {
		t.Fatalf("allowed request after a denial: %v", err)
	}
}

// A reply inbox the credential may not subscribe to fails the request at
// once too: it is the admin whose inbox prefix does not match its user.
func TestRequestDeniedInboxFailsAtOnce(t *testing.T) {
	s := confinedServer(t)
	nc := connectAs(t, s, "limited", "_INBOX.someoneelse")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	err := Request(ctx, nc, "ok.op", Empty{}, nil)
	if CodeOf(err) != CodePermissionDenied {
		t.Fatalf("Request = %v (code %q), want %s", err, CodeOf(err), CodePermissionDenied)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the denial took %s: it waited for the timeout", took)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A role started before NATS waits for it, and one whose credentials NATS
// refused comes back once they are accepted again, instead of giving up
// after the second refusal as nats.go does by default.
func TestConnectWaitsForNATSAndSurvivesRefusals(t *testing.T) {
	port := freeport.Loopback(t)
	var log syncBuffer
	logger := slog.New(slog.NewTextHandler(&log, nil))
	nc, err := Connect(fmt.Sprintf("nats://127.0.0.1:%d", port), "waiting", NATSAuth{User: "role", Password: "good"}, "", logger)
	if err != nil {
		t.Fatalf("Connect with NATS down = %v, want it to wait", err)
	}
	defer nc.Close()
	if nc.IsConnected() {
		t.Fatal("connected to nothing")
	}

	users := func(pw string) []*server.User { return []*server.User{{Username: "role", Password: pw}} }
	opts := &server.Options{Host: "127.0.0.1", Port: port, NoSigs: true, NoLog: true, Users: users("other")}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	// Refused three times (each refusal is a connection that NATS
	// accepted and then refused): nats.go would have closed the
	// connection after the second identical refusal.
	poll.Until(t, 60*time.Second, func() error {
		if n := nc.Stats().Reconnects; n < 3 {
			return fmt.Errorf("%d refusals so far", n)
		}
		return nil
	})
	if !strings.Contains(log.String(), "refused this role's credentials") {
		t.Errorf("the refusal is not in the role's log:\n%s", log.String())
	}
	if nc.IsClosed() {
		t.Fatal("the connection gave up after refused credentials")
	}
	// The administrator fixes the NATS configuration.
	opts2 := *opts
	opts2.Users = users("good")
	if err := s.ReloadOptions(&opts2); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 60*time.Second, func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("not reconnected after the credentials were accepted again (status %v)", nc.Status())
		}
		return nil
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
