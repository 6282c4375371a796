package main

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/natsauth"
	"github.com/cairnbackup/cairn/pki"
	"github.com/cairnbackup/cairn/wire"
)

// wantFail checks a command line that must fail with code, an error and a
// hint, saying every one of want.
func wantFail(t *testing.T, code int, want []string, args ...string) {
	t.Helper()
	got, stdout, stderr := cli(context.Background(), args...)
	if got != code || !strings.Contains(stderr, "error: ") || !strings.Contains(stderr, "hint: ") {
		t.Fatalf("cairn %s: exit %d, want %d with an error and a hint\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, stdout, stderr)
	}
	for _, w := range want {
		if !strings.Contains(strings.ToLower(stderr), strings.ToLower(w)) {
			t.Errorf("cairn %s: stderr does not say %q:\n%s", strings.Join(args, " "), w, stderr)
		}
	}
}

func wantOK(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := cli(context.Background(), args...)
	if code != 0 {
		t.Fatalf("cairn %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

func TestCertCommands(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	wantOK(t, "cert", "ca", "--out", ca)
	if st, err := os.Stat(filepath.Join(ca, "ca.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v %v", st, err)
	}
	wantFail(t, 1, []string{"already exists", "never replaced"}, "cert", "ca", "--out", ca)
	wantFail(t, 2, []string{"--out"}, "cert", "ca")

	out := wantOK(t, "cert", "issue", "--ca", ca, "--name", "s1", "--ip", "127.0.0.1", "--client", "--server", "--out", filepath.Join(dir, "s1"))
	if !strings.Contains(out, "server and client") || !strings.Contains(out, "127.0.0.1") {
		t.Fatalf("issue output: %s", out)
	}
	for _, f := range []string{"s1.crt", "s1.key", "ca.crt"} {
		if _, err := os.Stat(filepath.Join(dir, "s1", f)); err != nil {
			t.Fatal(err)
		}
	}
	wantOK(t, "cert", "issue", "--ca", ca, "--name", "web1", "--client", "--out", filepath.Join(dir, "web1"))
	wantFail(t, 1, []string{"already exists"}, "cert", "issue", "--ca", ca, "--name", "s1", "--ip", "127.0.0.1", "--out", filepath.Join(dir, "s1"))
	const whereTheCAIs = "hint: pass --ca the directory 'cairn cert ca --out DIR' made, on the machine that holds ca.key"
	wantFail(t, 1, []string{"no CA in", "cairn cert ca", whereTheCAIs}, "cert", "issue", "--ca", filepath.Join(dir, "nothing"), "--name", "x", "--client", "--out", dir)
	// A host's copy of the CA: its certificate without its key.
	hostCopy := filepath.Join(dir, "host-copy")
	os.MkdirAll(hostCopy, 0o700)
	crt, err := os.ReadFile(filepath.Join(ca, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(hostCopy, pki.CACertFile), crt, 0o600)
	wantFail(t, 1, []string{"the CA key", "is missing", whereTheCAIs}, "cert", "issue", "--ca", hostCopy, "--name", "x", "--client", "--out", dir)
	wantFail(t, 1, []string{whereTheCAIs}, "cert", "renew", "--ca", hostCopy, filepath.Join(dir, "web1", "web1.crt"))
	wantFail(t, 2, []string{"not valid"}, "cert", "issue", "--ca", ca, "--name", "../etc/x", "--client", "--out", dir)
	wantFail(t, 2, []string{"not an IP"}, "cert", "issue", "--ca", ca, "--name", "x", "--ip", "10.0.0", "--out", dir)
	wantFail(t, 1, []string{"--ip or --dns"}, "cert", "issue", "--ca", ca, "--name", "nats_1", "--out", dir)
	wantFail(t, 2, []string{"--name"}, "cert", "issue", "--ca", ca, "--out", dir)
}

func TestCertRenew(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	wantOK(t, "cert", "ca", "--out", ca)
	wantOK(t, "cert", "issue", "--ca", ca, "--name", "s1", "--ip", "127.0.0.1", "--client", "--server", "--days", "10", "--out", filepath.Join(dir, "s1"))
	wantOK(t, "cert", "issue", "--ca", ca, "--name", "web1", "--client", "--out", filepath.Join(dir, "web1"))
	s1, web1 := filepath.Join(dir, "s1", "s1.crt"), filepath.Join(dir, "web1", "web1.crt")
	s1Before, web1Before := mustReadCert(t, s1), mustReadCert(t, web1)

	// A cron job's run: only what expires within 30 days, the CA's copy
	// beside the certificates skipped.
	out := wantOK(t, "cert", "renew", "--ca", ca, "--within", "30", s1, web1, filepath.Join(dir, "s1", "ca.crt"))
	s1After, web1After := mustReadCert(t, s1), mustReadCert(t, web1)
	if s1After.SerialNumber.Cmp(s1Before.SerialNumber) == 0 {
		t.Fatalf("s1, which expires in 10 days, was not renewed by --within 30:\n%s", out)
	}
	if time.Until(s1After.NotAfter) < 700*24*time.Hour || s1After.Subject.CommonName != "s1" || !s1After.IPAddresses[0].Equal(s1Before.IPAddresses[0]) {
		t.Errorf("renewed s1: %v until %v, %v", s1After.Subject, s1After.NotAfter, s1After.IPAddresses)
	}
	if web1After.SerialNumber.Cmp(web1Before.SerialNumber) != 0 {
		t.Errorf("web1, valid for two years, was renewed by --within 30:\n%s", out)
	}
	if !strings.Contains(out, "renewed s1") || !strings.Contains(out, "not renewed") {
		t.Errorf("renew output does not say what it did:\n%s", out)
	}
	// Without --within, every certificate named.
	wantOK(t, "cert", "renew", "--ca", ca, web1)
	if mustReadCert(t, web1).SerialNumber.Cmp(web1Before.SerialNumber) == 0 {
		t.Error("web1 was not renewed without --within")
	}

	other := filepath.Join(dir, "other")
	wantOK(t, "cert", "ca", "--out", other)
	wantFail(t, 1, []string{"not issued by the CA"}, "cert", "renew", "--ca", other, s1)
	wantFail(t, 2, []string{"HOST.crt"}, "cert", "renew", "--ca", ca)
	wantFail(t, 2, []string{"--ca"}, "cert", "renew", s1)
	wantFail(t, 1, []string{"no such file"}, "cert", "renew", "--ca", ca, filepath.Join(dir, "nosuch.crt"))
}

func mustReadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	c, err := pki.ReadCertificate(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClusterInitAndRecoverErrors(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets.json")
	wantOK(t, "cluster", "init", "--out", secrets)
	if _, err := keyring.ReadSecrets(secrets); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(secrets); st.Mode().Perm() != 0o600 {
		t.Fatalf("secrets mode %v", st.Mode().Perm())
	}
	wantFail(t, 1, []string{"already exists"}, "cluster", "init", "--out", secrets)

	peers := filepath.Join(dir, "peers.json")
	os.WriteFile(peers, []byte(`[{"id":"s1","address":"127.0.0.1:7010"},{"id":"s2","address":"127.0.0.1:7011"}]`), 0o600)
	wantFail(t, 2, []string{"--data"}, "cluster", "recover", "--peers", peers)
	wantFail(t, 2, []string{"pass --name"}, "cluster", "recover", "--data", dir, "--peers", peers)
	wantFail(t, 1, []string{"no catalog"}, "cluster", "recover", "--data", dir, "--peers", peers, "--name", "s1")
	// A Raft log another process holds open: the server still runs.
	store, err := catalog.Open(filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	store.Close()
	os.MkdirAll(filepath.Join(dir, "raft"), 0o700)
	held, err := bbolt.Open(filepath.Join(dir, "raft", "raft.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantFail(t, 1, []string{"raft.db", "hint: stop the server first: it holds its catalog and Raft log while it runs"},
		"cluster", "recover", "--data", dir, "--peers", peers, "--name", "s1")
	held.Close()
	os.WriteFile(peers, []byte(`{`), 0o600)
	wantFail(t, 1, []string{"peers file"}, "cluster", "recover", "--data", dir, "--peers", peers)
}

func TestNATSConfigCommand(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	wantOK(t, "cert", "ca", "--out", ca)
	wantOK(t, "cert", "issue", "--ca", ca, "--name", "nats", "--ip", "127.0.0.1", "--out", filepath.Join(dir, "nats"))
	conf := filepath.Join(dir, "nats.conf")
	args := []string{"cert", "nats-config", "--out", conf, "--listen", "127.0.0.1:4222",
		"--tls-ca", filepath.Join(ca, "ca.crt"), "--tls-cert", filepath.Join(dir, "nats", "nats.crt"), "--tls-key", filepath.Join(dir, "nats", "nats.key"),
		"--servers", "s1,s2", "--nodes", "sn1", "--agents", "web1,web2", "--admins", "admin,alice", "--key-admins", "keeper,alice"}
	out := wantOK(t, args...)
	for _, w := range []string{"CN=web1,O=Cairn", "CN=sn1,O=Cairn", "CN=s2,O=Cairn", "CN=admin,O=Cairn", "CN=keeper,O=Cairn", "key admin", "no --nats-nkey"} {
		if !strings.Contains(out, w) {
			t.Errorf("output does not name %s:\n%s", w, out)
		}
	}
	text, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"cairn.srv.agent.web2.>"`, `"_INBOX.agent.web1.>"`, "verify_and_map: true", `user: "CN=web1,O=Cairn"`, "allow_responses: true", `"cairn.api.>"`} {
		if !strings.Contains(string(text), w) {
			t.Errorf("configuration lacks %s:\n%s", w, text)
		}
	}
	if strings.Contains(string(text), "nkey:") {
		t.Errorf("a configuration that maps users from certificates lists an nkey, which nats-server would let in with any certificate of the CA:\n%s", text)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server does not read the configuration: %v\n%s", err, text)
	}
	// Each admin reads its own inbox only; key export is the key admins'.
	perms := map[string]*server.Permissions{}
	for _, u := range opts.Users {
		perms[u.Username] = u.Permissions
	}
	for name, keyAdmin := range map[string]bool{"admin": false, "alice": true, "keeper": true} {
		p := perms[natsauth.CertSubjectOf(name)]
		if p == nil {
			t.Fatalf("admin %s is not in the configuration", name)
		}
		if !slices.Equal(p.Subscribe.Allow, []string{"_INBOX.admin." + name + ".>", "cairn.evt.>"}) {
			t.Errorf("admin %s may subscribe %v, want its own inbox and job events only", name, p.Subscribe.Allow)
		}
		if got := slices.Contains(p.Publish.Allow, wire.EscrowWildcard); got != keyAdmin {
			t.Errorf("admin %s may publish %v: key export granted %v, want %v", name, p.Publish.Allow, got, keyAdmin)
		}
	}
	if len(opts.Users) != 2+1+2+3 || len(opts.Nkeys) != 0 {
		t.Errorf("%d certificate users and %d nkey users in the configuration, want 8 (alice, a key admin and an admin, once) and none", len(opts.Users), len(opts.Nkeys))
	}
	wantFail(t, 1, []string{"already exists", "--force"}, args...)
	wantOK(t, append(args, "--force", "--agents", "web3")...)

	// Without client certificates, nkey users; their seeds are kept when
	// the file is written again.
	plain := filepath.Join(dir, "plain.conf")
	nargs := []string{"cert", "nats-config", "--out", plain, "--listen", "127.0.0.1:4222", "--servers", "s1", "--agents", "web1"}
	out = wantOK(t, nargs...)
	if !strings.Contains(out, "agent-web1.nk") {
		t.Errorf("output does not name the agent's seed file:\n%s", out)
	}
	seed, err := os.ReadFile(filepath.Join(dir, "nkeys", "agent-web1.nk"))
	if err != nil {
		t.Fatal(err)
	}
	wantOK(t, append(nargs, "--force", "--agents", "web3")...)
	again, _ := os.ReadFile(filepath.Join(dir, "nkeys", "agent-web1.nk"))
	if string(again) != string(seed) {
		t.Fatal("writing the configuration again replaced an agent's nkey seed")
	}
	wantFail(t, 2, []string{"--servers"}, "cert", "nats-config", "--out", filepath.Join(dir, "x.conf"))
	wantFail(t, 1, []string{"bad.name"}, "cert", "nats-config", "--out", filepath.Join(dir, "y.conf"), "--servers", "s1", "--agents", "bad.name")
}

func TestNATSConfigCluster(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	wantOK(t, "cert", "ca", "--out", ca)
	wantOK(t, "cert", "issue", "--ca", ca, "--name", "nats", "--dns", "nats1.example.net", "--client", "--server", "--out", filepath.Join(dir, "tls"))
	wantOK(t, "cert", "issue", "--ca", ca, "--name", "nats", "--dns", "nats1.example.net", "--out", filepath.Join(dir, "server-only"))
	tlsArgs := func(d string) []string {
		return []string{"--tls-ca", filepath.Join(dir, d, "ca.crt"), "--tls-cert", filepath.Join(dir, d, "nats.crt"), "--tls-key", filepath.Join(dir, d, "nats.key")}
	}
	out := filepath.Join(dir, "nats")
	cluster := "nats1.example.net:6222,nats2.example.net:6222,nats3.example.net:6222"
	args := append([]string{"cert", "nats-config", "--out", out, "--cluster", cluster, "--log-dir", "/var/log/nats",
		"--servers", "s1,s2,s3", "--nodes", "sn1", "--agents", "web1"}, tlsArgs("tls")...)
	stdout := wantOK(t, args...)
	if !strings.Contains(stdout, "--nats tls://nats1.example.net:4222,tls://nats2.example.net:4222,tls://nats3.example.net:4222") {
		t.Errorf("the output does not give the roles' --nats URL:\n%s", stdout)
	}
	for _, name := range []string{"nats1", "nats2", "nats3"} {
		conf := filepath.Join(out, name+".conf")
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			text, _ := os.ReadFile(conf)
			t.Fatalf("nats-server does not read %s: %v\n%s", conf, err, text)
		}
		if opts.ServerName != name || opts.Cluster.Name != "cairn" || opts.Cluster.Port != 6222 || len(opts.Routes) != 3 {
			t.Errorf("%s: server %q, cluster %q port %d, %d routes", conf, opts.ServerName, opts.Cluster.Name, opts.Cluster.Port, len(opts.Routes))
		}
		if !opts.Cluster.TLSMap || opts.Cluster.TLSConfig == nil || opts.Cluster.Username != "CN=nats,O=Cairn" {
			t.Errorf("%s: routes are not mutual TLS confined to the NATS servers' certificate: map %v, user %q", conf, opts.Cluster.TLSMap, opts.Cluster.Username)
		}
		if opts.HTTPHost != "127.0.0.1" || opts.HTTPPort != 8222 {
			t.Errorf("%s: monitoring on %s:%d, want 127.0.0.1:8222", conf, opts.HTTPHost, opts.HTTPPort)
		}
		if opts.LogFile != "/var/log/nats/"+name+".log" || opts.LogSizeLimit != 100<<20 {
			t.Errorf("%s: log file %q limited to %d bytes", conf, opts.LogFile, opts.LogSizeLimit)
		}
		if len(opts.Users) != 3+1+1+1 {
			t.Errorf("%s: %d users, want 6", conf, len(opts.Users))
		}
	}
	wantFail(t, 1, []string{"already exists", "--force"}, args...)
	wantOK(t, append(args, "--force")...)

	base := []string{"cert", "nats-config", "--servers", "s1"}
	wantFail(t, 2, []string{"directory"}, append(append(base, "--out", filepath.Join(dir, "x.conf"), "--cluster", cluster), tlsArgs("tls")...)...)
	wantFail(t, 2, []string{"at least two"}, append(append(base, "--out", filepath.Join(dir, "one"), "--cluster", "nats1.example.net:6222"), tlsArgs("tls")...)...)
	wantFail(t, 2, []string{"[NAME=]HOST:PORT"}, append(append(base, "--out", filepath.Join(dir, "bad"), "--cluster", "a:1,b"), tlsArgs("tls")...)...)
	wantFail(t, 2, []string{"two NATS servers 127.0.0.1", "NAME=HOST:PORT"}, append(append(base, "--out", filepath.Join(dir, "same"), "--cluster", "127.0.0.1:1,127.0.0.1:2"), tlsArgs("tls")...)...)
	wantFail(t, 2, []string{"--listen lists 2", "one per server"}, append(append(base, "--out", filepath.Join(dir, "l"), "--cluster", cluster, "--listen", "a:1,b:2"), tlsArgs("tls")...)...)
	wantFail(t, 2, []string{"loopback"}, append(append(base, "--out", filepath.Join(dir, "m"), "--cluster", cluster, "--monitor", "0.0.0.0:8222"), tlsArgs("tls")...)...)
	wantFail(t, 2, []string{"needs --tls-ca"}, append(base, "--out", filepath.Join(dir, "n"), "--cluster", cluster)...)
	wantFail(t, 1, []string{"client authentication", "--client --server"}, append(append(base, "--out", filepath.Join(dir, "o"), "--cluster", cluster), tlsArgs("server-only")...)...)
	wantFail(t, 2, []string{"routes' identity"}, append(append(base, "--out", filepath.Join(dir, "p"), "--cluster", cluster, "--agents", "nats"), tlsArgs("tls")...)...)
}

// TestNATSConfigSeedRotation rotates an agent's nkey seed as the help says,
// with a real NATS server on each configuration written: the old seed
// logs in until the rotation is finished, the new one from its start, and
// no other role's seed changes.
func TestNATSConfigSeedRotation(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	seeds := filepath.Join(dir, "nkeys")
	base := []string{"cert", "nats-config", "--out", conf, "--listen", "127.0.0.1:-1", "--monitor", "", "--log-dir", "",
		"--servers", "s1", "--agents", "web1,web2", "--verify-clients=false"}
	wantOK(t, base...)
	web1, web2 := filepath.Join(seeds, "agent-web1.nk"), filepath.Join(seeds, "agent-web2.nk")
	oldWeb1 := copyAside(t, web1)
	web2Seed, _ := os.ReadFile(web2)

	// logsIn starts a NATS server on the configuration as written now and
	// reports whether the seed in file logs in.
	logsIn := func(seed string) bool {
		t.Helper()
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		opts.NoSigs, opts.NoLog = true, true
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		defer ns.Shutdown()
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("NATS server not ready")
		}
		o, err := nats.NkeyOptionFromSeed(seed)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(ns.ClientURL(), o, nats.MaxReconnects(0))
		if err != nil {
			return false
		}
		nc.Close()
		return true
	}
	if !logsIn(oldWeb1) {
		t.Fatal("control: web1's seed does not log in")
	}

	wantFail(t, 1, []string{"already exists", "--force"}, append(base, "--rotate-seeds", "agent-web1")...)
	out := wantOK(t, append(base, "--force", "--rotate-seeds", "agent-web1")...)
	if !strings.Contains(out, "new seed "+web1) {
		t.Errorf("the output does not name the new seed:\n%s", out)
	}
	if !logsIn(web1) || !logsIn(oldWeb1) {
		t.Errorf("during the rotation, new seed logs in %v, old seed %v: want both", logsIn(web1), logsIn(oldWeb1))
	}
	if again, _ := os.ReadFile(web2); string(again) != string(web2Seed) {
		t.Error("rotating web1's seed changed web2's")
	}
	wantFail(t, 1, []string{"under way", "--finish-rotation"}, append(base, "--force", "--rotate-seeds", "agent-web1")...)
	wantFail(t, 2, []string{"KIND-NAME"}, append(base, "--force", "--rotate-seeds", "web1")...)
	wantFail(t, 1, []string{"no nkey seed"}, append(base, "--force", "--rotate-seeds", "agent-web9")...)

	wantOK(t, append(base, "--force", "--finish-rotation")...)
	if !logsIn(web1) {
		t.Error("the new seed does not log in after the rotation")
	}
	if logsIn(oldWeb1) {
		t.Error("the old seed still logs in after --finish-rotation")
	}
	wantFail(t, 1, []string{"no rotation under way"}, append(base, "--force", "--finish-rotation")...)
	wantFail(t, 2, []string{"certificate", "cert renew"}, "cert", "nats-config", "--out", filepath.Join(dir, "x.conf"), "--servers", "s1",
		"--tls-ca", "x", "--tls-cert", "y", "--tls-key", "z", "--rotate-seeds", "agent-web1", "--force")
}

func copyAside(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return to
}
