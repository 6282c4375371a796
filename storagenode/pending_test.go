package storagenode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// pendingNode is a node whose data port accepts, with no servers behind
// it: every connection waits for its hello, and one that sends bytes that
// are no TLS is closed by the node.
func pendingNode(t *testing.T, total, perHost int) (*prometheus.Registry, string) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ID = "sn1"
	cfg.DataDir = t.TempDir()
	cfg.NATSURL = "nats://127.0.0.1:1" // never dialled
	cfg.Pools = []PoolConfig{{Name: "Default", Dir: t.TempDir()}}
	cfg.MaxPendingConns, cfg.MaxPendingPerHost = total, perHost
	reg := prometheus.NewRegistry()
	n, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.ln, n.tls = ln, dataplane.ServerConfig(n.cert)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.acceptLoop(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		<-done
		n.mu.Lock()
		for c := range n.conns {
			c.Close()
		}
		n.mu.Unlock()
		n.wg.Wait()
		n.guard.Close()
	})
	return reg, ln.Addr().String()
}

// refusedPending is what the node's metrics count of connections closed
// for too many pending from their address.
func refusedPending(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "cairn_node_tickets_rejected_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == "too_many_pending" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// dialFrom connects to addr from the loopback address from (127.0.0.x).
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByPeer reports whether the node closed c: a read finds its end
// within a short wait, where an open connection times out.
func closedByPeer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := c.Read(make([]byte, 512))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

func waitClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	poll.Until(t, 10*time.Second, func() error {
		if !closedByPeer(c) {
			return errors.New(what + ": the node has not closed it")
		}
		return nil
	})
}

// One address gets at most MaxPendingPerHost connections that have not
// shown a ticket: the next is closed at once, and counted, while other
// addresses are served; once its connections go, the address is served
// again.
func TestPendingConnectionsPerHost(t *testing.T) {
	reg, addr := pendingNode(t, 8, 2)
	idle := []net.Conn{dialFrom(t, "127.0.0.1", addr), dialFrom(t, "127.0.0.1", addr)}
	refused := dialFrom(t, "127.0.0.1", addr)
	waitClosed(t, refused, "a third connection from 127.0.0.1")
	if got := refusedPending(t, reg); got != 1 {
		t.Fatalf("%v connections counted refused as too many pending; want 1", got)
	}
	for _, c := range idle {
		if closedByPeer(c) {
			t.Fatal("a connection within the address's limit was closed before its hello timed out")
		}
	}
	other := dialFrom(t, "127.0.0.2", addr)
	if _, err := other.Write([]byte("no TLS here\n")); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, other, "a connection from 127.0.0.2 that sent no TLS")
	for _, c := range idle {
		c.Close()
	}
	poll.Until(t, 10*time.Second, func() error {
		c := dialFrom(t, "127.0.0.1", addr)
		defer c.Close()
		if closedByPeer(c) {
			return errors.New("127.0.0.1 is still refused after its pending connections closed")
		}
		return nil
	})
}

// Past MaxPendingConns in all, the node accepts nothing more until a
// place comes free: a new connection waits, served neither nor refused,
// and is served once one of those before it goes.
func TestPendingConnectionsInAllWait(t *testing.T) {
	_, addr := pendingNode(t, 3, 2)
	first := dialFrom(t, "127.0.0.2", addr)
	dialFrom(t, "127.0.0.2", addr)
	dialFrom(t, "127.0.0.3", addr)
	waiting := dialFrom(t, "127.0.0.4", addr) // in the kernel's backlog
	if _, err := waiting.Write([]byte("no TLS here\n")); err != nil {
		t.Fatal(err)
	}
	poll.Holds(t, 300*time.Millisecond, func() error {
		if closedByPeer(waiting) {
			return errors.New("a connection past max_pending_conns was served or refused instead of waiting")
		}
		return nil
	})
	first.Close()
	waitClosed(t, waiting, "the waiting connection, once a place came free")
}

func TestPendingLimitsValidated(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir, cfg.Pools = os.TempDir(), []PoolConfig{{Name: "Default", Dir: "/srv/pool"}}
	cfg.MaxPendingConns, cfg.MaxPendingPerHost = 0, -1
	err := cfg.Validate()
	for _, want := range []string{"max_pending_conns", "max_pending_per_host"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("a config with %s below 1: %v", want, err)
		}
	}
}

// A connection whose ticket was found valid no longer counts as pending:
// with room for one pending connection, the streams of one host are all
// let in while the first ones still run.
func TestStreamsDoNotCountAsPending(t *testing.T) {
	r := newRig(t, true, func(c *Config) { c.MaxPendingConns, c.MaxPendingPerHost = 1, 1 })
	r.waitRegistered()
	opened := make(chan error, 1)
	go func() {
		for i := range 3 {
			// The node's answer, an Accept or a refusal of the job (the
			// rig's servers grant the streams one volume), shows it read
			// the hello and checked the ticket.
			conn, err := r.open(r.ticket(uint64(i+1), ticket.OpBackup))
			if err != nil && wire.CodeOf(err) == "" {
				opened <- fmt.Errorf("stream %d: %w", i+1, err)
				return
			}
			defer conn.Close()
		}
		opened <- nil
	}()
	poll.Until(t, 20*time.Second, func() error {
		select {
		case err := <-opened:
			if err != nil {
				t.Fatal(err)
			}
			return nil
		default:
			return errors.New("three streams at once with room for one pending connection: not all accepted")
		}
	})
}
