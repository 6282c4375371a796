package natsauth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/pki"
	"github.com/cairnbackup/cairn/wire"
)

// authServer runs an embedded NATS server on a configuration Render wrote,
// with TLS and client verification, and returns the seed directory and the
// CA directory its clients use.
type authServer struct {
	url    string
	creds  string
	certs  string
	verify bool
	ca     *pki.CA
}

// startAuthServer starts it: with verify, clients present certificates and
// are the users they name; without, they log in with nkeys.
func startAuthServer(t *testing.T, verify bool) *authServer {
	t.Helper()
	dir := t.TempDir()
	a := &authServer{creds: filepath.Join(dir, "creds"), certs: filepath.Join(dir, "certs"), verify: verify}
	ca, err := pki.CreateCA(filepath.Join(dir, "ca"), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	a.ca = ca
	srv, err := ca.Issue(pki.IssueOptions{Name: "nats", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true}, a.certs)
	if err != nil {
		t.Fatal(err)
	}
	cfg := AuthConfig{Listen: "127.0.0.1:-1", TLS: pki.Files{CA: srv.CA, Cert: srv.Cert, Key: srv.Key}, VerifyClients: verify}
	for _, u := range []struct {
		kind, name string
		keyAdmin   bool
	}{
		{wire.KindServer, "s1", false}, {wire.KindNode, "sn1", false}, {wire.KindAgent, "web1", false}, {wire.KindAgent, "web2", false},
		{wire.KindAdmin, "admin", false}, {wire.KindAdmin, "keeper", true},
	} {
		user, err := CertUser(u.kind, u.name)
		if !verify {
			user, err = LoadOrCreateUser(a.creds, u.kind, u.name)
		}
		if err != nil {
			t.Fatal(err)
		}
		user.KeyAdmin = u.keyAdmin
		if !verify {
			if st, _ := os.Stat(user.SeedFile); st.Mode().Perm() != 0o600 {
				t.Fatalf("seed file mode %v", st.Mode().Perm())
			}
		}
		cfg.Users = append(cfg.Users, user)
		if _, err := ca.Issue(pki.IssueOptions{Name: u.name, Client: true}, a.certs); err != nil {
			t.Fatal(err)
		}
	}
	text, err := cfg.Render()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, text, 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server does not read the configuration: %v\n%s", err, text)
	}
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(ns.Shutdown)
	a.url = "tls://" + ns.Addr().String()
	return a
}

// auth is the NATS credential of kind/name: its certificate, or its nkey.
func (a *authServer) auth(kind, name string) wire.NATSAuth {
	auth := wire.NATSAuth{CAFile: filepath.Join(a.certs, pki.CACertFile)}
	if a.verify {
		auth.CertFile, auth.KeyFile = filepath.Join(a.certs, name+".crt"), filepath.Join(a.certs, name+".key")
	} else {
		auth.NkeyFile = filepath.Join(a.creds, SeedFileName(kind, name))
	}
	return auth
}

// client connects as kind/name and collects the permission violations the
// server reports.
type client struct {
	nc   *nats.Conn
	mu   sync.Mutex
	errs []error
}

func (a *authServer) connect(t *testing.T, kind, name string) *client {
	t.Helper()
	return a.connectWithInbox(t, kind, name, wire.Inbox(kind, name))
}

// connectWithInbox connects as kind/name with replies coming to inbox.
func (a *authServer) connectWithInbox(t *testing.T, kind, name, inbox string) *client {
	t.Helper()
	return a.connectWith(t, kind, name, inbox, a.auth(kind, name))
}

// connectWith connects with auth, as kind/name says it is.
func (a *authServer) connectWith(t *testing.T, kind, name, inbox string, auth wire.NATSAuth) *client {
	t.Helper()
	c := &client{}
	opts, err := wire.ConnectOptions(kind+"-"+name, auth, inbox)
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		c.mu.Lock()
		c.errs = append(c.errs, err)
		c.mu.Unlock()
	}))
	nc, err := nats.Connect(a.url, opts...)
	if err != nil {
		t.Fatalf("connect as %s %s: %v", kind, name, err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	return c
}

// plain connects as kind/name with replies coming to inbox and nothing but
// wire.ConnectOptions, as a role does: its requests fail at once when NATS
// refuses them.
func (a *authServer) plain(t *testing.T, kind, name, inbox string) *nats.Conn {
	t.Helper()
	auth := a.auth(kind, name)
	opts, err := wire.ConnectOptions(kind+"-"+name, auth, inbox)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(a.url, opts...)
	if err != nil {
		t.Fatalf("connect as %s %s: %v", kind, name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// violation waits for the server to report a permission violation naming
// subject.
func (c *client) violation(t *testing.T, what, subject string) {
	t.Helper()
	poll.Until(t, 5*time.Second, func() error {
		_ = c.nc.Flush()
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, err := range c.errs {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(strings.ToLower(err.Error()), what) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return nil
			}
		}
		return fmt.Errorf("no permissions violation for %s %q; errors: %v", what, subject, c.errs)
	})
}

func (c *client) noViolations(t *testing.T) {
	t.Helper()
	_ = c.nc.Flush()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.errs) > 0 {
		t.Fatalf("unexpected errors: %v", c.errs)
	}
}

// TestAuthConfigConfinesEachRole: with client certificates verified, each
// role is the user its certificate names, and may use only its own
// subjects; a certificate the configuration does not name is refused, and
// web1's certificate cannot log in as web2, whatever nkey comes with it.
func TestAuthConfigConfinesEachRole(t *testing.T) {
	a := startAuthServer(t, true)
	confinesEachRole(t, a)

	// web1's certificate with an nkey seed (say, web2's, taken from a
	// deployment that had nkey users) does not log in: the server takes
	// no nkey. And as web1 it is confined to web1.
	seeds := t.TempDir()
	if _, err := LoadOrCreateUser(seeds, wire.KindAgent, "web2"); err != nil {
		t.Fatal(err)
	}
	withSeed := a.auth(wire.KindAgent, "web1")
	withSeed.NkeyFile = filepath.Join(seeds, SeedFileName(wire.KindAgent, "web2"))
	opts, err := wire.ConnectOptions("web1-as-web2", withSeed, "")
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(a.url, opts...); err == nil {
		nc.Close()
		t.Fatal("web1's certificate with web2's nkey seed was let in")
	} else if we := wire.ConnectError(a.url, err, ""); !strings.Contains(we.Hint, "without --nats-nkey") {
		t.Fatalf("web1's certificate with an nkey: %v (hint %q)", we, we.Hint)
	}
	as2 := a.connectWith(t, wire.KindAgent, "web2", wire.Inbox(wire.KindAgent, "web2"), a.auth(wire.KindAgent, "web1"))
	if _, err := as2.nc.SubscribeSync(wire.AgentSubject("web2", ">")); err != nil {
		t.Fatal(err)
	}
	as2.violation(t, "subscription", "cairn.agent.web2.>")
	if err := as2.nc.Publish(wire.FromAgentSubject("web2", wire.OpAgentRegister), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	as2.violation(t, "publish", wire.FromAgentSubject("web2", wire.OpAgentRegister))

	// A certificate of the same CA for a name the configuration does not
	// list logs in as nobody.
	if _, err := a.ca.Issue(pki.IssueOptions{Name: "web3", Client: true}, a.certs); err != nil {
		t.Fatal(err)
	}
	opts, err = wire.ConnectOptions("web3", a.auth(wire.KindAgent, "web3"), "")
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(a.url, opts...); err == nil {
		nc.Close()
		t.Fatal("a certificate the configuration does not name was let in")
	} else if we := wire.ConnectError(a.url, err, ""); !strings.Contains(we.Error(), "refused this role's credentials") {
		t.Fatalf("unlisted certificate: %v", we)
	}
	// Without a client certificate, TLS verification refuses the client.
	opts, _ = wire.ConnectOptions("nocert", wire.NATSAuth{CAFile: filepath.Join(a.certs, pki.CACertFile)}, "")
	if nc, err := nats.Connect(a.url, opts...); err == nil {
		nc.Close()
		t.Fatal("a client without a certificate was let in")
	}
}

// TestNkeyUsersWithoutClientCertificates: where the NATS server verifies no
// client certificate, each role logs in with its nkey, as confined; an nkey
// the configuration does not list is refused.
func TestNkeyUsersWithoutClientCertificates(t *testing.T) {
	a := startAuthServer(t, false)
	confinesEachRole(t, a)
	stranger := t.TempDir()
	if _, err := LoadOrCreateUser(stranger, wire.KindAgent, "web1"); err != nil {
		t.Fatal(err)
	}
	opts, err := wire.ConnectOptions("stranger", wire.NATSAuth{
		CAFile: filepath.Join(a.certs, pki.CACertFile), NkeyFile: filepath.Join(stranger, SeedFileName(wire.KindAgent, "web1")),
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(a.url, opts...); err == nil {
		nc.Close()
		t.Fatal("an unknown nkey was let in")
	} else if we := wire.ConnectError(a.url, err, ""); !strings.Contains(we.Error(), "refused this role's credentials") {
		t.Fatalf("unknown nkey: %v", we)
	}
}

// TestRenderRefusesNkeysBesideCertificates: nats-server lets a listed nkey
// in with any certificate of the CA, so a configuration that verifies
// client certificates holds no nkey user; a name listed as two roles is
// one user with both roles' subjects.
func TestRenderRefusesNkeysBesideCertificates(t *testing.T) {
	u, err := LoadOrCreateUser(t.TempDir(), wire.KindAgent, "web1")
	if err != nil {
		t.Fatal(err)
	}
	cfg := AuthConfig{Listen: "127.0.0.1:4222", TLS: pki.Files{CA: "ca.crt", Cert: "n.crt", Key: "n.key"}, VerifyClients: true, Users: []User{u}}
	if _, err := cfg.Render(); err == nil || !strings.Contains(err.Error(), "never an nkey") {
		t.Fatalf("an nkey user beside verified certificates: %v", err)
	}
	agent, _ := CertUser(wire.KindAgent, "backup1")
	node, _ := CertUser(wire.KindNode, "backup1")
	cfg.Users = []User{agent, node}
	text, err := cfg.Render()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(text), `user: "CN=backup1,O=Cairn"`) != 1 || !strings.Contains(string(text), `"cairn.srv.agent.backup1.>"`) ||
		!strings.Contains(string(text), `"cairn.srv.node.backup1.>"`) || !strings.Contains(string(text), "verify_and_map: true") {
		t.Fatalf("one certificate for two roles:\n%s", text)
	}
}

func confinesEachRole(t *testing.T, a *authServer) {
	srv := a.connect(t, wire.KindServer, "s1")
	web1 := a.connect(t, wire.KindAgent, "web1")
	web2 := a.connect(t, wire.KindAgent, "web2")
	node := a.connect(t, wire.KindNode, "sn1")
	admin := a.connect(t, wire.KindAdmin, "admin")

	// The server answers the API and agents' requests; agents answer orders.
	echo := func(m *nats.Msg) { _ = m.Respond(append([]byte("re: "), m.Data...)) }
	for _, s := range []string{wire.APIWildcard, wire.FromAgentWildcard, wire.FromNodeWildcard} {
		if _, err := srv.nc.QueueSubscribe(s, wire.ServerQueue, echo); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		cl   *client
		subj string
	}{{web1, wire.AgentSubject("web1", ">")}, {web2, wire.AgentSubject("web2", ">")}, {node, wire.NodeSubject("sn1", ">")}} {
		if _, err := c.cl.nc.Subscribe(c.subj, echo); err != nil {
			t.Fatal(err)
		}
		if err := c.cl.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	_ = srv.nc.Flush()
	request := func(c *client, subject string) error {
		_, err := c.nc.Request(subject, []byte("x"), 2*time.Second)
		return err
	}
	// What each role must be able to do.
	for _, r := range []struct {
		c       *client
		subject string
	}{
		{web1, wire.FromAgentSubject("web1", wire.OpAgentRegister)},
		{node, wire.FromNodeSubject("sn1", wire.OpNodeRegister)},
		{admin, wire.APISubject(wire.OpStatus)},
		{srv, wire.AgentSubject("web1", wire.OpPing)}, // answered under allow_responses
		{srv, wire.NodeSubject("sn1", wire.OpPing)},
	} {
		if err := request(r.c, r.subject); err != nil {
			t.Fatalf("request on %s: %v", r.subject, err)
		}
	}
	if err := web1.nc.Publish(wire.AgentBeatSubject("web1"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	web1.noViolations(t)
	node.noViolations(t)
	admin.noViolations(t)

	// web1 cannot read web2's orders or replies, nor speak for web2 or an admin.
	if _, err := web1.nc.SubscribeSync(wire.AgentSubject("web2", ">")); err != nil {
		t.Fatal(err)
	}
	web1.violation(t, "subscription", "cairn.agent.web2.>")
	if _, err := web1.nc.SubscribeSync(wire.Inbox(wire.KindAgent, "web2") + ".>"); err != nil {
		t.Fatal(err)
	}
	web1.violation(t, "subscription", "_INBOX.agent.web2.>")
	if err := request(web1, wire.APISubject(wire.OpBackupStart)); err == nil {
		t.Fatal("an agent's credential got an answer to an admin request")
	}
	web1.violation(t, "publish", wire.APISubject(wire.OpBackupStart))
	if err := web1.nc.Publish(wire.FromAgentSubject("web2", wire.OpJobDone), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	web1.violation(t, "publish", wire.FromAgentSubject("web2", wire.OpJobDone))
	if err := web1.nc.Publish(wire.AgentBeatSubject("web2"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	web1.violation(t, "publish", wire.AgentBeatSubject("web2"))

	// A storage node is as confined; an admin cannot give agents orders.
	if _, err := node.nc.SubscribeSync(wire.AgentSubject("web1", ">")); err != nil {
		t.Fatal(err)
	}
	node.violation(t, "subscription", "cairn.agent.web1.>")
	if err := node.nc.Publish(wire.FromAgentSubject("web1", wire.OpJobDone), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	node.violation(t, "publish", wire.FromAgentSubject("web1", wire.OpJobDone))
	if err := admin.nc.Publish(wire.AgentSubject("web1", wire.OpRunRestore), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	admin.violation(t, "publish", wire.AgentSubject("web1", wire.OpRunRestore))
	web2.noViolations(t)
}

// TestAdminsAreConfinedToTheirOwnInboxAndKeyExportIsAGrant: one admin's
// credential cannot read another admin's replies (key exports travel in
// them), and only a key admin may ask for the data keys; an admin without
// the grant is told so at once, not after a timeout.
func TestAdminsAreConfinedToTheirOwnInboxAndKeyExportIsAGrant(t *testing.T) {
	a := startAuthServer(t, true)
	srv := a.connect(t, wire.KindServer, "s1")
	keys := []byte(`{"v":1,"body":{"keys":[]}}`)
	for _, s := range []string{wire.APIWildcard, wire.EscrowWildcard} {
		if _, err := srv.nc.QueueSubscribe(s, wire.ServerQueue, func(m *nats.Msg) { _ = m.Respond(keys) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	admin := a.plain(t, wire.KindAdmin, "admin", wire.Inbox(wire.KindAdmin, "admin"))
	keeper := a.plain(t, wire.KindAdmin, "keeper", wire.Inbox(wire.KindAdmin, "keeper"))
	ctx := context.Background()

	if err := wire.Request(ctx, keeper, wire.APISubject(wire.OpKeyExport), wire.Empty{}, nil); err != nil {
		t.Fatalf("a key admin's key export: %v", err)
	}
	if err := wire.Request(ctx, admin, wire.APISubject(wire.OpStatus), wire.Empty{}, nil); err != nil {
		t.Fatalf("an admin's status request: %v", err)
	}

	// The admin's key export is refused by NATS, and said so within
	// moments of the request, though the request would wait 30s.
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t0 := time.Now()
	err := wire.Request(rctx, admin, wire.APISubject(wire.OpKeyExport), wire.Empty{}, nil)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodePermissionDenied || !strings.Contains(err.Error(), `permission denied for subject "`+wire.APISubject(wire.OpKeyExport)+`"`) ||
		!strings.Contains(we.Hint, "--key-admins") {
		t.Fatalf("an admin without the key grant asked for the keys: got %v (code %s), want permission denied for %s", err, wire.CodeOf(err), wire.APISubject(wire.OpKeyExport))
	}
	if took := time.Since(t0); took > 5*time.Second {
		t.Errorf("the refusal took %s to reach the caller", took)
	}
	// Around the grant: the same operation on the general API subject is
	// no operation at all.
	if op, ok := wire.TrimAPI("cairn.api." + wire.OpKeyExport); ok {
		t.Fatalf("cairn.api.%s is operation %q: an admin allowed cairn.api.> could export keys", wire.OpKeyExport, op)
	}

	// One admin cannot read another's replies.
	watched := a.connect(t, wire.KindAdmin, "admin")
	if _, err := watched.nc.SubscribeSync(wire.Inbox(wire.KindAdmin, "keeper") + ".>"); err != nil {
		t.Fatal(err)
	}
	watched.violation(t, "subscription", "_INBOX.admin.keeper.>")
	if _, err := watched.nc.SubscribeSync("_INBOX.admin.>"); err != nil {
		t.Fatal(err)
	}
	watched.violation(t, "subscription", "_INBOX.admin.>")

	// An admin that takes another admin's inbox gets no answer and is told
	// why at once.
	posing := a.plain(t, wire.KindAdmin, "admin", wire.Inbox(wire.KindAdmin, "keeper"))
	err = wire.Request(rctx, posing, wire.APISubject(wire.OpStatus), wire.Empty{}, nil)
	if !errors.As(err, &we) || we.Code != wire.CodePermissionDenied || !strings.Contains(err.Error(), "_INBOX.admin.keeper.") || !strings.Contains(we.Hint, "--nats-admin") {
		t.Fatalf("admin on keeper's inbox: got %v, want permission denied for the inbox", err)
	}
}

func TestNameOfSeedFile(t *testing.T) {
	for path, want := range map[string]string{"/etc/cairn/nkeys/admin-alice.nk": "alice", "admin-admin.nk": "admin", "agent-web1.nk": "", "admin-.nk": "", "admin-x.y.nk": "", "alice.nk": ""} {
		got, ok := NameOfSeedFile(path, wire.KindAdmin)
		if got != want || ok != (want != "") {
			t.Errorf("NameOfSeedFile(%q) = %q, %v; want %q", path, got, ok, want)
		}
	}
}

func TestLoadOrCreateUserKeepsSeeds(t *testing.T) {
	dir := t.TempDir()
	u1, err := LoadOrCreateUser(dir, wire.KindAgent, "web1")
	if err != nil {
		t.Fatal(err)
	}
	u2, err := LoadOrCreateUser(dir, wire.KindAgent, "web1")
	if err != nil || u1.NKey != u2.NKey {
		t.Fatalf("second call made a new key: %v", err)
	}
	if _, err := LoadOrCreateUser(dir, wire.KindAgent, "bad.name"); err == nil {
		t.Fatal("a name with a dot became a user")
	}
	os.WriteFile(filepath.Join(dir, SeedFileName(wire.KindAgent, "x")), []byte("garbage"), 0o600)
	if _, err := LoadOrCreateUser(dir, wire.KindAgent, "x"); err == nil || !strings.Contains(err.Error(), "remove it") {
		t.Fatalf("garbage seed file: %v", err)
	}
}
