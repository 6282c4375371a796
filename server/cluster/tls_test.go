package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/cairnbackup/cairn/internal/poll"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/pki"
)

// logBuffer keeps what a server logged, for checking, and shows it in the
// test's log too.
type logBuffer struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func (l *logBuffer) has(s string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !strings.Contains(l.b.String(), s) {
		return fmt.Errorf("the log does not say %q yet", s)
	}
	return nil
}

// testCA issues loopback Raft certificates.
type testCA struct {
	t  testing.TB
	ca *pki.CA
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	ca, err := pki.CreateCA(filepath.Join(t.TempDir(), "ca"), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{t: t, ca: ca}
}

// config issues a certificate for name on 127.0.0.1 and loads it.
func (c *testCA) config(name string, server bool) *tls.Config {
	c.t.Helper()
	is, err := c.ca.Issue(pki.IssueOptions{Name: name, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: server, Client: true}, c.t.TempDir())
	if err != nil {
		c.t.Fatal(err)
	}
	cfg, err := pki.MutualTLS(pki.Files{CA: is.CA, Cert: is.Cert, Key: is.Key})
	if err != nil {
		c.t.Fatal(err)
	}
	return cfg
}

func startTLSServer(t *testing.T, id string, bootstrap bool, cfg *tls.Config) (*server, *logBuffer) {
	t.Helper()
	dir := t.TempDir()
	logs := &logBuffer{t: t}
	s := &server{t: t, dir: dir, cfg: testConfig(id, dir, bootstrap)}
	s.cfg.TLS = cfg
	s.logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With("server", id)
	s.start()
	t.Cleanup(s.stop)
	return s, logs
}

func TestThreeVotersOverTLS(t *testing.T) {
	ca := newTestCA(t)
	s1, _ := startTLSServer(t, "s1", true, ca.config("s1", true))
	s2, _ := startTLSServer(t, "s2", false, ca.config("s2", true))
	s3, _ := startTLSServer(t, "s3", false, ca.config("s3", true))
	s1.waitLeader()
	for _, s := range []*server{s2, s3} {
		join(t, s1, s)
	}
	job := populate(s1, 5)
	for _, s := range []*server{s2, s3} {
		poll.Until(t, 10*time.Second, func() error {
			if j, err := s.store.Job(job); err != nil || j.LogLines != 5 {
				return fmt.Errorf("%s: job %+v, %v", s.cfg.ID, j, err)
			}
			return nil
		})
		if got, want := dump(t, s.store), dump(t, s1.store); got != want {
			t.Fatalf("%s's catalog differs from the leader's", s.cfg.ID)
		}
	}

	// The leader goes; the other two elect one over TLS and go on.
	s1.stop()
	var leader *server
	poll.Until(t, 15*time.Second, func() error {
		for _, s := range []*server{s2, s3} {
			if s.node.IsLeader() {
				leader = s
				return nil
			}
		}
		return fmt.Errorf("no new leader")
	})
	leader.apply(&catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "after-failover"}})
	for _, s := range []*server{s2, s3} {
		poll.Until(t, 10*time.Second, func() error {
			_, err := s.store.Client("after-failover")
			return err
		})
	}
}

// TestTLSRefusesForeignMembers: a member whose certificate another CA signed
// is added to the group but never receives a byte of the log, and cannot
// talk to a member; nor can a client-only certificate of the group's own CA.
func TestTLSRefusesForeignMembers(t *testing.T) {
	ca := newTestCA(t)
	s1, logs1 := startTLSServer(t, "s1", true, ca.config("s1", true))
	s2, _ := startTLSServer(t, "s2", false, ca.config("s2", true))
	s1.waitLeader()
	ctx := ctxT(t)
	join(t, s1, s2)
	job := populate(s1, 2)
	poll.Until(t, 10*time.Second, func() error {
		_, err := s2.store.Job(job)
		return err
	})

	other := newTestCA(t)
	foreign, foreignLogs := startTLSServer(t, "x1", false, other.config("x1", true))
	// x1 is added as a non-voter but never gets the log: s1 does not trust
	// its certificate. It never catches up, and the join takes it out again.
	_, err := s1.node.Join(ctx, "x1", foreign.node.Addr(), 3*time.Second, func(context.Context) (Progress, error) {
		return progressOf(foreign), nil
	})
	if !errors.Is(err, ErrCatchUp) {
		t.Fatalf("join of a server with a foreign certificate: %v", err)
	}
	s1.apply(&catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "after-x1"}})
	poll.Until(t, 10*time.Second, func() error { return foreignLogs.has("refused a connection at the TLS handshake") })
	poll.Until(t, 10*time.Second, func() error { return logs1.has("unknown authority") })
	if st := foreign.node.Stats(); st.LastIndex != 0 || st.CatalogIndex != 0 {
		t.Fatalf("the foreign member received the log: %+v", st)
	}
	if _, err := foreign.store.Client("after-x1"); err == nil {
		t.Fatal("the foreign member has the group's catalog")
	}
	if _, ok := peersOf(t, s1.node)["x1"]; ok {
		t.Fatal("x1 is still in the configuration after its join failed")
	}

	// A foreign certificate dialing a member, even from a dialer that
	// trusts the group's CA, is refused by the member.
	trusting := other.config("x2", true)
	trusting.RootCAs = s1.cfg.TLS.RootCAs
	talk(t, trusting, s1.node.Addr())
	poll.Until(t, 10*time.Second, func() error { return logs1.has("certificate signed by unknown authority") })

	// An agent's client-only certificate from the group's own CA is refused.
	talk(t, ca.config("web1", false), s1.node.Addr())
	poll.Until(t, 10*time.Second, func() error { return logs1.has("not a backup server's certificate") })
}

// talk dials addr as a Raft peer with cfg and sends a request; the member
// must drop it.
func talk(t *testing.T, cfg *tls.Config, addr string) {
	t.Helper()
	st, err := newTLSStream("127.0.0.1:0", nil, cfg, 5*time.Second, slog.New(slog.NewTextHandler(&logBuffer{t: t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := st.Dial(raft.ServerAddress(addr), 5*time.Second)
	if err != nil {
		return // refused at once: fine
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte{0})
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("a member answered a peer with certificate %q", cfg.Certificates[0].Leaf.Subject.CommonName)
	}
}
