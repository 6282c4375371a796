package natsd_test

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/natsauth"
	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/wire"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestStartServesClients(t *testing.T) {
	s, err := natsd.Start(natsd.Config{Anonymous: true}, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("x")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("x", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5e9)
	if err != nil || string(m.Data) != "hello" {
		t.Fatalf("got %v %v", m, err)
	}
}

// A port another process listens on is refused at once, named, not
// after the server's start times out.
func TestStartSaysAtOnceThatThePortIsInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	start := time.Now()
	s, err := natsd.Start(natsd.Config{Anonymous: true, Port: port}, discard())
	if err == nil {
		s.Shutdown()
		t.Fatal("started on a port in use")
	}
	if !errors.Is(err, natsd.ErrPortInUse) || !strings.Contains(err.Error(), strconv.Itoa(port)) || time.Since(start) > 5*time.Second {
		t.Fatalf("after %s: %v", time.Since(start), err)
	}
}

func TestStartRefusesAConfigWithoutUsers(t *testing.T) {
	if s, err := natsd.Start(natsd.Config{}, discard()); err == nil {
		s.Shutdown()
		t.Fatal("an embedded server with no users and no explicit anonymous access started")
	}
}

// TestUsersAreRequiredAndConfined: with users, the embedded server listens
// on 127.0.0.1 only, refuses a connection without a credential or with an
// nkey it does not list, and holds each user to its role's subjects.
func TestUsersAreRequiredAndConfined(t *testing.T) {
	dir := t.TempDir()
	var users []natsd.User
	for _, u := range []struct{ kind, name string }{{wire.KindServer, "s"}, {wire.KindAgent, "web"}, {wire.KindAdmin, "admin"}} {
		user, err := natsauth.LoadOrCreateUser(dir, u.kind, u.name)
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, user.Embedded())
	}
	s, err := natsd.Start(natsd.Config{Users: users}, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if u, err := url.Parse(s.URL()); err != nil || u.Hostname() != "127.0.0.1" {
		t.Fatalf("the embedded server's URL is %s, want it on 127.0.0.1 only", s.URL())
	}

	if nc, err := nats.Connect(s.URL(), nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("HOLE: an anonymous connection was let in")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous connection: %v, want an authorization error", err)
	}
	stranger, err := natsauth.LoadOrCreateUser(t.TempDir(), wire.KindAdmin, "admin")
	if err != nil {
		t.Fatal(err)
	}
	opts, err := wire.ConnectOptions("stranger", wire.NATSAuth{NkeyFile: stranger.SeedFile}, wire.Inbox(wire.KindAdmin, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(s.URL(), opts...); err == nil {
		nc.Close()
		t.Fatal("HOLE: an nkey the server does not list was let in")
	}

	connect := func(kind, name string) *nats.Conn {
		opts, err := wire.ConnectOptions(kind+"-"+name, wire.NATSAuth{NkeyFile: filepath.Join(dir, natsauth.SeedFileName(kind, name))}, wire.Inbox(kind, name))
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(s.URL(), opts...)
		if err != nil {
			t.Fatalf("connect as %s %s: %v", kind, name, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	srv := connect(wire.KindServer, "s")
	if _, err := srv.Subscribe(wire.APIWildcard, func(m *nats.Msg) { _ = m.Respond([]byte(`{"v":1,"body":{}}`)) }); err != nil {
		t.Fatal(err)
	}
	if err := srv.Flush(); err != nil {
		t.Fatal(err)
	}
	admin := connect(wire.KindAdmin, "admin")
	ctx := t.Context()
	if err := wire.Request(ctx, admin, wire.APISubject(wire.OpStatus), wire.Empty{}, nil); err != nil {
		t.Fatalf("the admin's request: %v", err)
	}
	web := connect(wire.KindAgent, "web")
	err = wire.Request(ctx, web, wire.APISubject(wire.OpStatus), wire.Empty{}, nil)
	if wire.CodeOf(err) != wire.CodePermissionDenied || !strings.Contains(err.Error(), wire.APISubject(wire.OpStatus)) {
		t.Fatalf("HOLE: the agent's admin request: %v, want permission denied", err)
	}
}
