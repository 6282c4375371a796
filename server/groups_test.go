package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// TestGroupsShareANATS: two servers, each the first of a group of its own,
// on one NATS server, where either takes any request (one queue group).
// A request of group A is answered from A's catalog whichever server takes
// it; one of a group that runs nowhere is refused naming it and the server
// that took it; one that names no group is refused naming both groups.
func TestGroupsShareANATS(t *testing.T) {
	h := newHarness(t)
	a := h.srv
	cfg := DefaultConfig()
	// Named as A's server: administrators of two groups may both start
	// with an s1.
	cfg.Name = "s1"
	cfg.Bootstrap = true
	cfg.DataDir = t.TempDir()
	cfg.NATSURL = a.cfg.NATSURL
	cfg.RaftAddr = "127.0.0.1:0"
	b, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	poll.Until(t, 20*time.Second, func() error {
		if !b.Serving() {
			return errors.New("B's s1 does not answer roles yet")
		}
		if len(a.groupsHeard()) == 0 || len(b.groupsHeard()) == 0 {
			return errors.New("the servers have not heard each other's group yet")
		}
		return nil
	})
	groupA, groupB := a.groupName(), b.groupName()
	if groupA == "" || groupB == "" || groupA == groupB {
		t.Fatalf("groups %q and %q", groupA, groupB)
	}
	// An agent of group A registers: A's catalog knows web, B's does not.
	h.must(wire.RequestIn(ctx, h.nc, groupA, wire.FromAgentSubject("web", wire.OpAgentRegister), wire.AgentRegisterReq{Name: "web", Hostname: "web.example"}, nil))

	for i := range 20 {
		var clients wire.ClientListResp
		if err := wire.RequestIn(ctx, h.nc, groupA, wire.APISubject(wire.OpClientList), wire.ClientListReq{}, &clients); err != nil {
			t.Fatalf("client list %d of group A: %v", i, err)
		}
		if len(clients.Clients) != 1 || clients.Clients[0].Name != "web" {
			t.Fatalf("client list %d of group A answered %+v: not from A's catalog", i, clients)
		}
		clients = wire.ClientListResp{}
		if err := wire.RequestIn(ctx, h.nc, groupB, wire.APISubject(wire.OpClientList), wire.ClientListReq{}, &clients); err != nil {
			t.Fatalf("client list %d of group B: %v", i, err)
		}
		if len(clients.Clients) != 0 {
			t.Fatalf("client list %d of group B answered %+v: A's catalog", i, clients)
		}
	}
	for i := range 10 {
		err := wire.Request(ctx, h.nc, wire.APISubject(wire.OpClientList), wire.ClientListReq{}, nil)
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != wire.CodeWrongGroup || !strings.Contains(we.Message, "names no group") ||
			!strings.Contains(we.Message, groupA) || !strings.Contains(we.Message, groupB) {
			t.Fatalf("request %d that names no group: %v, want wrong_group naming %s and %s", i, err, groupA, groupB)
		}
	}
	for i := range 10 {
		err := wire.RequestIn(ctx, h.nc, "no-such-group", wire.FromNodeSubject("sn1", wire.OpNodeRegister), wire.NodeRegisterReq{ID: "sn1"}, nil)
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != wire.CodeWrongGroup || !strings.Contains(we.Message, "for group no-such-group") ||
			!strings.Contains(we.Message, "server s1 of group "+groupA) && !strings.Contains(we.Message, "server s1 of group "+groupB) {
			t.Fatalf("request %d of a group that runs nowhere: %v, want wrong_group naming it and the server that took it", i, err)
		}
	}
}
