package integration

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/internal/poll"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/natsauth"
	"github.com/cairnbackup/cairn/pki"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// secSys is a deployment secured as README's "Securing a deployment" says,
// all on 127.0.0.1: a CA and one certificate per host from 'cairn cert', a
// real nats-server on the configuration 'cairn cert nats-config' wrote (TLS,
// client certificates verified, each role the user its certificate names),
// a server whose Raft
// runs over mutual TLS with the group's secrets from 'cairn cluster init', a
// storage node and the agents of web1 and web2, each with its own
// credentials.
type secSys struct {
	t     *testing.T
	dir   string
	logs  *logs
	url   string // tls://127.0.0.1:port
	ca    string // the CA's directory
	hosts string // one directory per host: NAME.crt, NAME.key, ca.crt

	// natsCluster is the NATS cluster, when there is one.
	natsCluster *natsCluster

	raftAddr string
	server   *proc
	node     *proc
	agents   map[string]*proc

	// nats is the nats-server process of a deployment with one, natsLog
	// its log file, and natsConfig the 'cairn cert nats-config' command
	// line that writes its configuration, but for the users.
	nats       *proc
	natsLog    string
	natsConfig []string
}

// natsUsers are the users a NATS configuration lists, by role, as
// 'cairn cert nats-config' takes them.
type natsUsers struct {
	servers, nodes, agents, admins, keyAdmins []string
}

// secUsers are the users of the secured deployment: every role it runs,
// the admin ops, and admin, who may export keys.
func secUsers() natsUsers {
	return natsUsers{servers: []string{"s1"}, nodes: []string{"sn1"}, agents: secClients, admins: []string{"ops"}, keyAdmins: []string{"admin"}}
}

// args are the nats-config flags that list u.
func (u natsUsers) args() []string {
	return []string{"--servers", strings.Join(u.servers, ","), "--nodes", strings.Join(u.nodes, ","), "--agents", strings.Join(u.agents, ","),
		"--admins", strings.Join(u.admins, ","), "--key-admins", strings.Join(u.keyAdmins, ",")}
}

// writeNATSConfig writes the NATS configuration for u with 'cairn cert
// nats-config', over the one there, as an operator does to add or remove a
// role; nats-server reads it at its start or at a reload (reloadNATS).
func (d *secSys) writeNATSConfig(u natsUsers) {
	d.t.Helper()
	d.cli(append(append(d.natsConfig, "--force"), u.args()...)...)
}

// reloadNATS makes nats-server read its configuration again (SIGHUP, as
// 'nats-server --signal reload' sends), and waits until it says it did.
func (d *secSys) reloadNATS() {
	d.t.Helper()
	before, _ := os.ReadFile(d.natsLog)
	d.nats.send(syscall.SIGHUP)
	poll.Until(d.t, 15*time.Second, func() error {
		failIfCrashed(d.t, d.nats)
		data, err := os.ReadFile(d.natsLog)
		if err != nil {
			return err
		}
		if len(data) < len(before) || !strings.Contains(string(data[len(before):]), "Reloaded server configuration") {
			return fmt.Errorf("nats-server has not reloaded its configuration yet")
		}
		return nil
	})
}

var secClients = []string{"web1", "web2"}

// cli runs a cairn command that does not talk to NATS and must succeed.
func (d *secSys) cli(args ...string) result {
	d.t.Helper()
	r := runCairn(d.t, "nats://127.0.0.1:1", args...)
	if r.code != 0 {
		d.t.Fatalf("expected success:\n%s", r)
	}
	return r
}

// auth is the NATS TLS and credential of one role's host.
func (d *secSys) auth(kind, name string) wire.NATSAuth {
	h := filepath.Join(d.hosts, name)
	return wire.NATSAuth{
		CAFile: filepath.Join(h, pki.CACertFile), CertFile: filepath.Join(h, name+".crt"), KeyFile: filepath.Join(h, name+".key"),
	}
}

// natsFlags are the global flags that give a command a role's NATS
// credentials.
func (d *secSys) natsFlags(kind, name string) []string {
	a := d.auth(kind, name)
	return []string{"--nats", d.url, "--nats-ca", a.CAFile, "--nats-cert", a.CertFile, "--nats-key", a.KeyFile}
}

// as runs an admin command with the credentials of kind/name.
func (d *secSys) as(kind, name string, args ...string) result {
	d.t.Helper()
	return runCairn(d.t, d.url, append(d.natsFlags(kind, name), args...)...)
}

// admin runs an admin command with the admin's credentials.
func (d *secSys) admin(args ...string) result {
	d.t.Helper()
	return d.as(wire.KindAdmin, "admin", args...)
}

func (d *secSys) adminJSON(v any, args ...string) error {
	return d.admin(append(args, "--json")...).decodeJSON(v)
}

// secOpts shape a secured deployment.
type secOpts struct {
	// natsCluster, when not 0, runs that many NATS servers as a cluster
	// from the files 'cairn cert nats-config --cluster' writes, every role
	// given every server's URL; one NATS server when 0.
	natsCluster int
}

func newSecSys(t *testing.T) *secSys { return newSecSysWith(t, secOpts{}) }

func newSecSysWith(t *testing.T, o secOpts) *secSys {
	t.Helper()
	natsBin := natsServerBin(t)
	dir := t.TempDir()
	d := &secSys{t: t, dir: dir, logs: &logs{}, ca: filepath.Join(dir, "ca"), hosts: filepath.Join(dir, "hosts"),
		raftAddr: freeport.LoopbackAddr(t), agents: map[string]*proc{}}
	d.logs.printOnFailure(t)
	d.logs.keepIn(t, os.Getenv("CAIRN_TEST_LOGS"))

	// The certificates, as an operator makes them. The NATS servers of a
	// cluster dial each other's routes: --client --server.
	d.cli("cert", "ca", "--out", d.ca)
	natsCert := []string{"cert", "issue", "--ca", d.ca, "--name", "nats", "--ip", "127.0.0.1", "--out", filepath.Join(d.hosts, "nats")}
	if o.natsCluster > 0 {
		natsCert = append(natsCert, "--client", "--server")
	}
	d.cli(natsCert...)
	d.cli("cert", "issue", "--ca", d.ca, "--name", "s1", "--ip", "127.0.0.1", "--client", "--server", "--out", filepath.Join(d.hosts, "s1"))
	for _, name := range append([]string{"sn1", "admin", "ops"}, secClients...) {
		days := "730"
		if name == "web2" {
			days = "20" // a certificate about to expire, which its role warns of
		}
		d.cli("cert", "issue", "--ca", d.ca, "--name", name, "--client", "--days", days, "--out", filepath.Join(d.hosts, name))
	}
	nh := filepath.Join(d.hosts, "nats")
	natsLogs := filepath.Join(dir, "nats-logs")
	if err := os.MkdirAll(natsLogs, 0o700); err != nil {
		t.Fatal(err)
	}
	natsArgs := []string{"cert", "nats-config", "--log-dir", natsLogs,
		"--tls-ca", filepath.Join(nh, pki.CACertFile), "--tls-cert", filepath.Join(nh, "nats.crt"), "--tls-key", filepath.Join(nh, "nats.key")}
	var natsProcs []*proc
	if o.natsCluster == 0 {
		natsAddr := freeport.LoopbackAddr(t)
		d.url = "tls://" + natsAddr
		natsConf := filepath.Join(dir, "nats", "nats.conf")
		d.natsConfig = append(natsArgs, "--out", natsConf, "--listen", natsAddr, "--monitor", freeport.LoopbackAddr(t))
		d.writeNATSConfig(secUsers())
		p := newProc(t, d.logs, dir, "nats-server", "-c", natsConf)
		p.bin = natsBin
		natsProcs = append(natsProcs, p)
		d.nats, d.natsLog = p, filepath.Join(natsLogs, "nats.log")
		d.logs.add(d.natsLog)
	} else {
		// As on three NATS hosts, each its own client, route and
		// monitoring address, here all on 127.0.0.1.
		d.natsCluster = &natsCluster{t: t, scheme: "tls"}
		var routes, listens, monitors []string
		for i := range o.natsCluster {
			ns := &natsServer{name: fmt.Sprintf("n%d", i+1), client: freeport.LoopbackAddr(t), route: freeport.LoopbackAddr(t), monitor: freeport.LoopbackAddr(t)}
			d.natsCluster.servers = append(d.natsCluster.servers, ns)
			routes = append(routes, ns.name+"="+ns.route)
			listens, monitors = append(listens, ns.client), append(monitors, ns.monitor)
		}
		confs := filepath.Join(dir, "nats")
		r := d.cli(append(append(natsArgs, secUsers().args()...), "--out", confs, "--cluster", strings.Join(routes, ","),
			"--listen", strings.Join(listens, ","), "--monitor", strings.Join(monitors, ","))...)
		if !strings.Contains(r.stdout, "--nats "+d.natsCluster.URL()) {
			t.Fatalf("nats-config does not tell the roles' --nats URL %s:\n%s", d.natsCluster.URL(), r)
		}
		for _, ns := range d.natsCluster.servers {
			ns.proc = newProc(t, d.logs, dir, "nats-"+ns.name, "-c", filepath.Join(confs, ns.name+".conf"))
			ns.proc.bin = natsBin
			natsProcs = append(natsProcs, ns.proc)
			d.logs.add(filepath.Join(natsLogs, ns.name+".log"))
		}
		d.url = d.natsCluster.URL()
	}
	secrets := filepath.Join(dir, "secrets.json")
	d.cli("cluster", "init", "--out", secrets)

	s1 := filepath.Join(d.hosts, "s1")
	d.server = newProc(t, d.logs, dir, "server", append(d.natsFlags(wire.KindServer, "s1"),
		"server", "--bootstrap", "--name", "s1", "--data", filepath.Join(dir, "s1"), "--raft-addr", d.raftAddr, "--secrets", secrets,
		"--tls-ca", filepath.Join(s1, pki.CACertFile), "--tls-cert", filepath.Join(s1, "s1.crt"), "--tls-key", filepath.Join(s1, "s1.key"),
		"--liveness-timeout", "4s", "--metrics-addr", anyAddr, "--log-level", "debug")...)
	nodeCfg := writeJSON(t, filepath.Join(dir, "storagenode.json"), map[string]any{"heartbeat_interval": int64(300 * time.Millisecond)})
	d.node = newProc(t, d.logs, dir, "storagenode", append(d.natsFlags(wire.KindNode, "sn1"),
		"storagenode", "--config", nodeCfg, "--name", "sn1", "--data", filepath.Join(dir, "sn1"), "--data-addr", freeport.LoopbackAddr(t),
		"--pool", "Default="+filepath.Join(dir, "pool"), "--metrics-addr", anyAddr)...)
	agentCfg := writeJSON(t, filepath.Join(dir, "agent.json"), map[string]any{
		"heartbeat_interval": int64(300 * time.Millisecond), "progress_interval": int64(100 * time.Millisecond),
	})
	for _, c := range secClients {
		d.agents[c] = newProc(t, d.logs, dir, "agent-"+c, append(d.natsFlags(wire.KindAgent, c),
			"agent", "--config", agentCfg, "--name", c, "--metrics-addr", anyAddr)...)
	}
	t.Cleanup(func() {
		for _, c := range secClients {
			d.agents[c].stop()
		}
		d.node.stop()
		d.server.stop()
		for _, p := range natsProcs {
			p.stop()
		}
	})

	for _, p := range natsProcs {
		p.start()
	}
	if d.natsCluster != nil {
		d.natsCluster.waitRouted()
	}
	poll.Until(t, 20*time.Second, func() error {
		failIfCrashed(t, natsProcs...)
		nc, err := d.connect(wire.KindAdmin, "admin")
		if err != nil {
			return err
		}
		nc.nc.Close()
		return nil
	})
	d.server.start()
	d.node.start()
	for _, c := range secClients {
		d.agents[c].start()
	}
	d.waitReady()
	return d
}

// waitReady waits until the server leads, and every agent and the storage
// node are online.
func (d *secSys) waitReady() {
	t := d.t
	t.Helper()
	poll.Until(t, 60*time.Second, func() error {
		failIfCrashed(t, d.server, d.node, d.agents["web1"], d.agents["web2"])
		return rolesReady(d.adminJSON, secClients, "")
	})
}

// ---- raw NATS connections, made as a role would ----

// secConn is a NATS connection with one role's credentials that records
// what the NATS server reports to it asynchronously (permission violations).
type secConn struct {
	name string
	nc   *nats.Conn
	mu   sync.Mutex
	errs []error
}

// connect opens a connection as kind/name, with the options the role itself
// uses (wire.ConnectOptions: TLS with its certificate, the role's own inbox).
func (d *secSys) connect(kind, name string) (*secConn, error) {
	return d.connectWith(kind+" "+name, d.auth(kind, name), inboxOf(kind, name))
}

func inboxOf(kind, name string) string { return wire.Inbox(kind, name) }

func (d *secSys) connectWith(label string, auth wire.NATSAuth, inbox string, extra ...nats.Option) (*secConn, error) {
	c := &secConn{name: label}
	opts, err := wire.ConnectOptions("cairn-test-"+strings.ReplaceAll(label, " ", "-"), auth, inbox)
	if err != nil {
		return nil, err
	}
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		c.mu.Lock()
		c.errs = append(c.errs, err)
		c.mu.Unlock()
	}), nats.MaxReconnects(0))
	opts = append(opts, extra...)
	nc, err := nats.Connect(d.url, opts...)
	if err != nil {
		return nil, err
	}
	c.nc = nc
	return c, nil
}

func (d *secSys) mustConnect(t *testing.T, kind, name string) *secConn {
	t.Helper()
	c, err := d.connect(kind, name)
	if err != nil {
		t.Fatalf("connect to NATS as %s %s with its own credentials: %v", kind, name, err)
	}
	t.Cleanup(c.nc.Close)
	return c
}

// refused waits for the NATS server to report a permissions violation for
// op ("subscription" or "publish") on subject.
func (c *secConn) refused(t *testing.T, op, subject string) {
	t.Helper()
	err := poll.Wait(5*time.Second, func() error {
		_ = c.nc.Flush()
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, err := range c.errs {
			msg := strings.ToLower(err.Error())
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(msg, op) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return nil
			}
		}
		return errors.New("no permissions violation yet")
	})
	if err == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Errorf("HOLE: the NATS server allowed %s's %s on %q (no permissions violation reported; errors seen: %v)", c.name, op, subject, c.errs)
}

// subscribeRefused subscribes to subject and checks that the NATS server
// refuses it.
func (c *secConn) subscribeRefused(t *testing.T, subject string) chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, 64)
	if _, err := c.nc.ChanSubscribe(subject, ch); err != nil {
		t.Fatalf("subscribe %s: %v", subject, err)
	}
	c.refused(t, "subscription", subject)
	return ch
}

// requestRefused sends a request on subject and checks that the NATS
// server refuses the publish and that nothing answers it.
func (c *secConn) requestRefused(t *testing.T, subject string, body any) {
	t.Helper()
	data, err := wire.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := c.nc.Request(subject, data, time.Second)
	if err == nil {
		t.Errorf("HOLE: %s's request on %q was answered: %s", c.name, subject, msg.Data)
	}
	c.refused(t, "publish", subject)
}

// quiet checks that nothing arrives on ch within d.
func quiet(t *testing.T, what string, ch chan *nats.Msg, d time.Duration) {
	t.Helper()
	select {
	case m := <-ch:
		t.Errorf("HOLE: %s: a message arrived on %q: %.200s", what, m.Subject, m.Data)
	case <-time.After(d):
	}
}

// ---- the test ----

// TestSecuredDeployment proves what a secured deployment lets each role do,
// and what it refuses: with real processes and a real nats-server, an
// agent's credentials cannot read another agent's orders, cannot issue admin
// commands, cannot speak for another role, and cannot fetch another client's
// data through the data plane; NATS refuses connections without TLS or
// credentials; a storage node's credentials cannot issue admin commands.
func TestSecuredDeployment(t *testing.T) {
	d := newSecSys(t)

	// web1's own raw connection listens to its own orders and tries to
	// listen to web2's, while the system runs the backups below.
	web1 := d.mustConnect(t, wire.KindAgent, "web1")
	ownOrders := make(chan *nats.Msg, 64)
	if _, err := web1.nc.ChanSubscribe(wire.AgentSubject("web1", ">"), ownOrders); err != nil {
		t.Fatal(err)
	}
	web2Orders := web1.subscribeRefused(t, wire.AgentSubject("web2", ">"))

	type clientRun struct {
		backup  wire.JobInfo
		restore wire.JobInfo
		src     string
	}
	runs := map[string]*clientRun{}
	ok := t.Run("backup and restore work for web1 and web2 with admin credentials", func(t *testing.T) {
		for i, c := range secClients {
			src := makeTree(t, sample.Spec{TextFiles: 12, RandomFiles: 6, MaxFileSize: 16 << 10, SparseSize: 1 << 20, Seed: uint64(40 + i)})
			want := snapshot(t, src)
			r := &clientRun{src: src}
			if err := d.adminJSON(&r.backup, "backup", "--client", c, "--level", "full", "--wait", "--path", src); err != nil {
				t.Fatalf("backup of %s through the CLI with admin credentials: %v", c, err)
			}
			if r.backup.State != "success" || r.backup.BackupID == 0 {
				t.Fatalf("backup job %d of %s ended %s: %s", r.backup.ID, c, r.backup.State, r.backup.Error)
			}
			to := filepath.Join(t.TempDir(), "restore-"+c)
			if err := d.adminJSON(&r.restore, "restore", "--client", c, "--to", to, "--backup", strconv.FormatUint(r.backup.BackupID, 10)); err != nil {
				t.Fatalf("restore of %s through the CLI with admin credentials: %v", c, err)
			}
			if r.restore.State != "success" {
				t.Fatalf("restore job %d of %s ended %s: %s", r.restore.ID, c, r.restore.State, r.restore.Error)
			}
			checkRestored(t, want, to, src)
			runs[c] = r
		}
	})
	if !ok {
		t.Fatal("the secured system does not work; the refusals below would prove nothing")
	}

	t.Run("Raft accepts only a server certificate of the group", func(t *testing.T) {
		hosts := func(n string) string { return filepath.Join(d.hosts, n) }
		dialRaft := func(cert string) error {
			cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: certPool(t, filepath.Join(d.ca, pki.CACertFile)), ServerName: "127.0.0.1"}
			if cert != "" {
				kp, err := tls.LoadX509KeyPair(filepath.Join(hosts(cert), cert+".crt"), filepath.Join(hosts(cert), cert+".key"))
				if err != nil {
					t.Fatal(err)
				}
				cfg.Certificates = []tls.Certificate{kp}
			}
			return refusedByPeer(d.raftAddr, cfg)
		}
		if err := dialRaft("s1"); err != nil {
			t.Fatalf("control: the server's own certificate is refused by its Raft port: %v", err)
		}
		if err := dialRaft(""); err == nil {
			t.Error("HOLE: the Raft port accepted a TLS connection without a client certificate")
		}
		if err := dialRaft("web1"); err == nil {
			t.Error("HOLE: the Raft port accepted web1's client-only certificate, signed by the same CA")
		}
		c, err := net.DialTimeout("tcp", d.raftAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// A plain Raft RPC header, which a transport without TLS would read.
		_, _ = c.Write([]byte{0, 0x81, 0xa4})
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64)
		if n, err := c.Read(buf); err == nil && n > 0 && buf[0] != 0x15 {
			t.Errorf("HOLE: the Raft port answered plain TCP with %x, not a TLS alert", buf[:n])
		}
	})

	t.Run("web1's credentials cannot read web2's orders or other roles' inboxes", func(t *testing.T) {
		gotOwn := false
		for !gotOwn {
			select {
			case m := <-ownOrders:
				gotOwn = strings.HasPrefix(m.Subject, wire.AgentSubject("web1", ""))
			default:
				t.Fatal("control: web1's raw connection saw none of web1's own orders, so silence on web2's would prove nothing")
			}
		}
		quiet(t, "web1's subscription to web2's orders while web2 ran a backup and a restore", web2Orders, 10*time.Millisecond)
		for _, subject := range []string{
			wire.Inbox(wire.KindAgent, "web2") + ".>",
			wire.Inbox(wire.KindAdmin, "admin") + ".>",
			wire.Inbox(wire.KindNode, "sn1") + ".>",
			wire.Inbox(wire.KindServer, "s1") + ".>",
			"_INBOX.>",
			wire.NodeSubject("sn1", ">"),
			wire.APIWildcard,
			wire.FromAgentWildcard,
			wire.BeatWildcard,
			"cairn.evt.>",
			">",
		} {
			web1.subscribeRefused(t, subject)
		}
	})

	t.Run("web1's credentials cannot issue admin requests", func(t *testing.T) {
		w := d.mustConnect(t, wire.KindAgent, "web1")
		w.requestRefused(t, wire.APISubject(wire.OpStatus), wire.Empty{})
		w.requestRefused(t, wire.APISubject(wire.OpKeyExport), wire.Empty{})
		w.requestRefused(t, wire.APISubject(wire.OpRestoreStart), wire.RestoreStartReq{PointInTime: wire.PointInTime{Client: "web2"}, TargetClient: "web1", To: "/tmp/stolen"})
		// Around the API: straight to the leader's forwarding subject or to
		// one server.
		w.requestRefused(t, wire.LeaderSubject("any-group", wire.APISubject(wire.OpKeyExport)), wire.Empty{})
		w.requestRefused(t, wire.ServerSubject("s1", wire.OpServerStatus), wire.Empty{})
		// And the way an operator would try it: the CLI with web1's files.
		r := d.as(wire.KindAgent, "web1", "--timeout", "3s", "key", "export", "--to", filepath.Join(t.TempDir(), "keys.json"))
		if r.code == 0 {
			t.Errorf("HOLE: 'cairn key export' with web1's credentials succeeded:\n%s", r)
		}
	})

	t.Run("web1's credentials cannot speak for web2, the storage node or the servers", func(t *testing.T) {
		w := d.mustConnect(t, wire.KindAgent, "web1")
		w.requestRefused(t, wire.FromAgentSubject("web2", wire.OpAgentRegister), wire.AgentRegisterReq{Name: "web2"})
		w.requestRefused(t, wire.FromAgentSubject("web2", wire.OpRestorePlan), wire.RestorePlanReq{JobID: runs["web2"].restore.ID})
		w.requestRefused(t, wire.FromNodeSubject("sn1", wire.OpRestorePlan), wire.RestorePlanReq{JobID: runs["web2"].restore.ID})
		w.requestRefused(t, wire.FromNodeSubject("sn1", wire.OpKeyGet), wire.KeyGetReq{JobID: runs["web2"].restore.ID})
		w.requestRefused(t, wire.AgentSubject("web2", wire.OpRunRestore), wire.RunRestore{JobID: 1})
		w.requestRefused(t, wire.NodeSubject("sn1", wire.OpPing), wire.Empty{})
		data, _ := wire.Marshal(wire.AgentHeartbeat{})
		_ = w.nc.Publish(wire.AgentBeatSubject("web2"), data)
		w.refused(t, "publish", wire.AgentBeatSubject("web2"))
		_ = w.nc.Publish(wire.JobEventSubject(runs["web2"].backup.ID), data)
		w.refused(t, "publish", wire.JobEventSubject(runs["web2"].backup.ID))

		// On its own subjects, the servers still answer web1 only about
		// web1's jobs: web2's restore plan (its files and where they lie)
		// and web2's base tree stay closed.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// No agent gets a restore plan, not even of its own jobs: the
		// storage node takes it from the servers.
		var plan wire.RestorePlanResp
		err := wire.Request(ctx, w.nc, wire.FromAgentSubject("web1", wire.OpRestorePlan), wire.RestorePlanReq{JobID: runs["web2"].restore.ID}, &plan)
		if wire.CodeOf(err) != wire.CodeUnknownOperation {
			t.Errorf("HOLE: web1 asked for the plan of web2's restore job %d: got %v (%d reads), want unknown_operation", runs["web2"].restore.ID, err, len(plan.Reads))
		}
		var base wire.BaseTreeResp
		err = wire.Request(ctx, w.nc, wire.FromAgentSubject("web1", wire.OpBaseTree), wire.BaseTreeReq{JobID: runs["web2"].backup.ID}, &base)
		if wire.CodeOf(err) != wire.CodeNotFound {
			t.Errorf("HOLE: web1 asked for the base tree of web2's backup job %d: got %v, want not_found", runs["web2"].backup.ID, err)
		}
		// web1's progress reports name job ids: one naming web2's job must
		// not reach those who follow that job.
		admin := d.mustConnect(t, wire.KindAdmin, "admin")
		events := make(chan *nats.Msg, 16)
		if _, err := admin.nc.ChanSubscribe(wire.JobEventSubject(runs["web2"].backup.ID), events); err != nil {
			t.Fatal(err)
		}
		if err := admin.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		pdata, _ := wire.Marshal(wire.Progress{JobID: runs["web2"].backup.ID, Phase: "forged by web1", Files: 424242})
		if err := w.nc.Publish(wire.AgentProgressSubject("web1"), pdata); err != nil {
			t.Fatal(err)
		}
		_ = w.nc.Flush()
		quiet(t, "web1 reported progress for web2's job; the servers published it as that job's event", events, 1500*time.Millisecond)
	})

	t.Run("web1 cannot make the servers publish on another role's subjects", func(t *testing.T) {
		// A request on web1's own subject whose reply subject is web2's
		// order subject: answering it there would let web1 inject
		// messages, with the servers' authority, into web2's orders.
		w := d.mustConnect(t, wire.KindAgent, "web1")
		w2 := d.mustConnect(t, wire.KindAgent, "web2")
		injected := make(chan *nats.Msg, 16)
		if _, err := w2.nc.ChanSubscribe(wire.AgentSubject("web2", ">"), injected); err != nil {
			t.Fatal(err)
		}
		if err := w2.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		data, _ := wire.Marshal(wire.AgentRegisterReq{Name: "web1", Hostname: "web1"})
		for _, reply := range []string{wire.AgentSubject("web2", wire.OpRunBackup), wire.APISubject(wire.OpStatus)} {
			if err := w.nc.PublishRequest(wire.FromAgentSubject("web1", wire.OpAgentRegister), reply, data); err != nil {
				t.Fatal(err)
			}
		}
		_ = w.nc.Flush()
		quiet(t, "web1 named web2's order subject as its reply subject; the servers answered there", injected, 1500*time.Millisecond)
	})

	t.Run("a storage node's credentials cannot issue admin commands", func(t *testing.T) {
		n := d.mustConnect(t, wire.KindNode, "sn1")
		n.requestRefused(t, wire.APISubject(wire.OpStatus), wire.Empty{})
		n.requestRefused(t, wire.APISubject(wire.OpKeyExport), wire.Empty{})
		n.requestRefused(t, wire.APISubject(wire.OpBackupStart), wire.BackupStartReq{Client: "web2", Paths: []fileindex.Path{"/"}})
		n.requestRefused(t, wire.LeaderSubject("any-group", wire.APISubject(wire.OpKeyExport)), wire.Empty{})
		n.requestRefused(t, wire.AgentSubject("web1", wire.OpRunRestore), wire.RunRestore{JobID: 1})
		n.subscribeRefused(t, wire.AgentSubject("web1", ">"))
		n.subscribeRefused(t, wire.Inbox(wire.KindAdmin, "admin")+".>")
		r := d.as(wire.KindNode, "sn1", "--timeout", "3s", "job", "list")
		if r.code == 0 {
			t.Errorf("HOLE: 'cairn job list' with the storage node's credentials succeeded:\n%s", r)
		}
	})

	t.Run("each admin reads its own replies only, and only a key admin exports keys", func(t *testing.T) {
		ops := d.mustConnect(t, wire.KindAdmin, "ops")
		for _, subject := range []string{wire.Inbox(wire.KindAdmin, "admin") + ".>", "_INBOX.admin.>", "_INBOX.>"} {
			ops.subscribeRefused(t, subject)
		}
		if r := d.as(wire.KindAdmin, "ops", "status"); r.code != 0 {
			t.Fatalf("control: the admin ops cannot run 'cairn status' with its own credential:\n%s", r)
		}
		// Through the CLI, as an operator would: refused by NATS, and said
		// so at once although the command would wait 30s for an answer.
		t0 := time.Now()
		r := d.as(wire.KindAdmin, "ops", "--timeout", "30s", "key", "export", "--to", filepath.Join(t.TempDir(), "keys.json"))
		took := time.Since(t0)
		if r.code == 0 {
			t.Errorf("HOLE: 'cairn key export' with the credential of ops, no key admin, succeeded:\n%s", r)
		} else {
			checkFailure(t, r, 1, `permission denied for subject "`+wire.APISubject(wire.OpKeyExport)+`"`, "--key-admins")
		}
		if took > 10*time.Second {
			t.Errorf("the refused key export took %s to fail, want it at once", took)
		}
		ops.requestRefused(t, wire.APISubject(wire.OpKeyExport), wire.Empty{})
		// Rotating the group's secrets is a key admin's too.
		r = d.as(wire.KindAdmin, "ops", "--timeout", "30s", "cluster", "rotate-secrets", "--secrets", filepath.Join(d.dir, "secrets.json"))
		checkFailure(t, r, 1, `permission denied for subject "`+wire.APISubject(wire.OpSecretsRotate)+`"`)
		// Around the grant: the operation on the general API subject,
		// and the leader's forwarding subject.
		resp, err := ops.nc.Request("cairn.api."+wire.OpKeyExport, mustMarshal(t, wire.Empty{}), 10*time.Second)
		if err != nil {
			t.Fatalf("cairn.api.%s: %v", wire.OpKeyExport, err)
		}
		if body, err := wire.Unmarshal(resp.Data); err == nil || wire.CodeOf(err) != wire.CodeUnknownOperation {
			t.Errorf("HOLE: the servers answered key export on cairn.api.%s: %.200s (%v)", wire.OpKeyExport, body, err)
		}
		ops.requestRefused(t, wire.LeaderSubject("any-group", wire.APISubject(wire.OpKeyExport)), wire.Empty{})

		keys := filepath.Join(t.TempDir(), "keys.json")
		if r := d.admin("key", "export", "--to", keys); r.code != 0 {
			t.Fatalf("the key admin's 'cairn key export': \n%s", r)
		}
		f, err := keyring.ReadFile(keys)
		if err != nil || len(f.Keys) == 0 {
			t.Fatalf("the key admin's export: %v, %d keys", err, len(f.Keys))
		}
	})

	t.Run("NATS refuses connections without TLS or without credentials", func(t *testing.T) {
		d.checkNATSRefusals(t)
	})

	t.Run("an agent started as web2 with web1's certificate is web1 to NATS", func(t *testing.T) {
		// The host holds web1's certificate and says it is web2: NATS
		// takes the user from the certificate, so it gets web1's
		// subjects, and neither web2's orders nor web2's requests.
		h := filepath.Join(d.hosts, "web1")
		impostor := newProc(t, d.logs, d.dir, "agent-web2-with-web1-cert", "--nats", d.url,
			"--nats-ca", filepath.Join(h, pki.CACertFile), "--nats-cert", filepath.Join(h, "web1.crt"), "--nats-key", filepath.Join(h, "web1.key"),
			"agent", "--name", "web2", "--metrics-addr", anyAddr)
		impostor.start()
		defer impostor.stop()
		poll.Until(t, 20*time.Second, func() error {
			text := impostor.logText()
			if !strings.Contains(text, `cairn.agent.web2.>`) || !strings.Contains(text, "permission denied") {
				return fmt.Errorf("the impostor has not been refused web2's orders and requests yet")
			}
			return nil
		})

		// The same host with web2's nkey seed besides, as a deployment
		// with nkey users handed out (nkeys/agent-web2.nk beside the
		// NATS configuration): the seed does not make it web2 either.
		seeds := filepath.Join(d.dir, "nats", "nkeys")
		seed := filepath.Join(seeds, natsauth.SeedFileName(wire.KindAgent, "web2"))
		if _, err := os.Stat(seed); err != nil {
			if _, err := natsauth.LoadOrCreateUser(seeds, wire.KindAgent, "web2"); err != nil {
				t.Fatal(err)
			}
		}
		withSeed := newProc(t, d.logs, d.dir, "agent-web2-with-web1-cert-and-seed", "--nats", d.url,
			"--nats-ca", filepath.Join(h, pki.CACertFile), "--nats-cert", filepath.Join(h, "web1.crt"), "--nats-key", filepath.Join(h, "web1.key"),
			"--nats-nkey", seed, "agent", "--name", "web2", "--metrics-addr", anyAddr)
		withSeed.start()
		defer withSeed.stop()
		poll.Until(t, 20*time.Second, func() error {
			if !strings.Contains(withSeed.logText(), "takes no nkey") {
				return fmt.Errorf("the agent with web1's certificate and a seed of web2 has not been refused yet")
			}
			return nil
		})
		for _, p := range []*proc{impostor, withSeed} {
			if text := p.logText(); strings.Contains(text, "registered with the servers") {
				t.Errorf("HOLE: %s registered as web2:\n%s", p.name, text)
			}
		}
		var clients []wire.ClientInfo
		if err := d.adminJSON(&clients, "client", "list"); err != nil {
			t.Fatal(err)
		}
		for _, c := range clients {
			if c.Duplicate != "" {
				t.Errorf("HOLE: an impostor reached the servers as a second agent of %s: %s", c.Name, c.Duplicate)
			}
		}
	})

	t.Run("SIGHUP reloads every role's certificates and the system goes on", func(t *testing.T) {
		type hupped struct {
			p      *proc
			before string
			want   []string
		}
		all := []*hupped{
			{p: d.server, want: []string{"NATS client certificate", "raft certificate"}},
			{p: d.node, want: []string{"NATS client certificate", "data port certificate"}},
			{p: d.agents["web1"], want: []string{"NATS client certificate"}},
		}
		for _, h := range all {
			h.before = h.p.logText()
			h.p.send(syscall.SIGHUP)
		}
		for _, h := range all {
			h.p.waitLog(t, 15*time.Second, h.before, h.want...)
		}
		src := makeTree(t, sample.Spec{TextFiles: 4, MaxFileSize: 4 << 10, Seed: 77})
		var j wire.JobInfo
		if err := d.adminJSON(&j, "backup", "--client", "web1", "--level", "full", "--wait", "--path", src); err != nil || j.State != "success" {
			t.Fatalf("a backup after SIGHUP: %+v, %v", j, err)
		}
	})

	t.Run("every certificate's expiry is in the metrics, a warning comes before, and a renewal is reloaded by SIGHUP", func(t *testing.T) {
		d.checkCertExpiry(t)
	})

	// Last: it stops the real agents.
	t.Run("the data plane gives web1 nothing of web2", func(t *testing.T) {
		d.checkDataPlane(t, runs["web1"].backup.BackupID, runs["web2"].backup.BackupID)
	})
}

// certExpiry reads cairn_cert_expiry_timestamp_seconds from a role's
// metrics: the expiry of each certificate it uses, by "use subject".
func certExpiry(t *testing.T, p *proc) map[string]time.Time {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + p.metricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Time{}
	for _, line := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "cairn_cert_expiry_timestamp_seconds{")
		if !ok {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		use, subject := labelValue(labels, "use"), labelValue(labels, "subject")
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[use+" "+subject] = time.Unix(int64(v), 0)
	}
	return out
}

func labelValue(labels, name string) string {
	_, after, ok := strings.Cut(labels, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(after, `"`)
	return v
}

// checkCertExpiry checks what the roles say of their certificates' expiry,
// and the renewal of one about to expire: web2's, issued for 20 days.
func (d *secSys) checkCertExpiry(t *testing.T) {
	days := func(at time.Time) int { return int(time.Until(at).Hours() / 24) }
	server, node, web2 := certExpiry(t, d.server), certExpiry(t, d.node), certExpiry(t, d.agents["web2"])
	for what, got := range map[string]map[string]time.Time{
		"server nats client CN=s1,O=Cairn":         server,
		"server raft CN=s1,O=Cairn":                server,
		"server raft ca CN=Cairn CA,O=Cairn":       server,
		"server nats ca CN=Cairn CA,O=Cairn":       server,
		"node nats client CN=sn1,O=Cairn":          node,
		"node data port CN=cairn storage node sn1": node,
		"web2 nats client CN=web2,O=Cairn":         web2,
	} {
		_, key, _ := strings.Cut(what, " ")
		if _, ok := got[key]; !ok {
			t.Errorf("no cairn_cert_expiry_timestamp_seconds for %s: %v", what, got)
		}
	}
	if n := days(server["raft CN=s1,O=Cairn"]); n < 700 {
		t.Errorf("the server's raft certificate expires in %d days by its metrics, want about 730", n)
	}
	if n := days(web2["nats client CN=web2,O=Cairn"]); n < 18 || n > 20 {
		t.Errorf("web2's certificate expires in %d days by its metrics, want 19", n)
	}
	agent := d.agents["web2"]
	if text := agent.logText(); !strings.Contains(text, "expires soon") || !strings.Contains(text, "CN=web2,O=Cairn") {
		t.Errorf("web2's agent did not warn that its certificate expires in 20 days:\n%s", agent.logTail(20))
	}
	for _, p := range []*proc{d.server, d.node, d.agents["web1"]} {
		if strings.Contains(p.logText(), "expires soon") {
			t.Errorf("%s warns of a certificate that expires in two years", p.name)
		}
	}

	// A daily cron job on the CA's machine renews what expires within 30
	// days: web2's alone; then web2's host gets the files (here they are
	// in place) and its agent a SIGHUP.
	certs, err := filepath.Glob(filepath.Join(d.hosts, "*", "*.crt"))
	if err != nil || len(certs) < 6 {
		t.Fatalf("host certificates: %v %v", certs, err)
	}
	r := d.cli(append([]string{"cert", "renew", "--ca", d.ca, "--within", "30"}, certs...)...)
	if strings.Count(r.stdout, "renewed ") != 1 || !strings.Contains(r.stdout, "renewed web2") {
		t.Fatalf("cert renew --within 30 renewed other than web2's certificate alone:\n%s", r)
	}
	before := agent.logText()
	agent.send(syscall.SIGHUP)
	agent.waitLog(t, 15*time.Second, before, "reconnected to NATS with it")
	poll.Until(t, 20*time.Second, func() error {
		if n := days(certExpiry(t, agent)["nats client CN=web2,O=Cairn"]); n < 700 {
			return fmt.Errorf("web2's metrics say its certificate expires in %d days after the renewal and SIGHUP", n)
		}
		var clients []wire.ClientInfo
		if err := d.adminJSON(&clients, "client", "list"); err != nil {
			return err
		}
		for _, c := range clients {
			if c.Name == "web2" && c.Online {
				return nil
			}
		}
		return fmt.Errorf("web2 is not online with its renewed certificate: %+v", clients)
	})
	if strings.Contains(agent.logSince(before), "expires soon") {
		t.Error("web2's agent still warns after the renewal and SIGHUP")
	}
}

// refusedByPeer makes a TLS connection and reports nil when the peer keeps
// it open (it waits for the client to speak, as Raft's transport does), and
// the error when it refuses it (a TLS alert after the handshake, as TLS 1.3
// sends for a client certificate it rejects).
func refusedByPeer(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err == nil {
		return nil
	}
	return err
}

func certPool(t *testing.T, caFile string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", caFile)
	}
	return p
}

func (d *secSys) checkNATSRefusals(t *testing.T) {
	addr := strings.TrimPrefix(d.url, "tls://")
	web1 := d.auth(wire.KindAgent, "web1")
	connectFails := func(what string, auth wire.NATSAuth, want string, extra ...nats.Option) {
		t.Helper()
		c, err := d.connectWith("web1 "+what, auth, wire.Inbox(wire.KindAgent, "web1"), extra...)
		if err == nil {
			c.nc.Close()
			t.Errorf("HOLE: NATS accepted a connection %s", what)
			return
		}
		if !strings.Contains(strings.ToLower(err.Error()), want) {
			t.Errorf("NATS refused a connection %s, but with %q, want it to say %q", what, err, want)
		}
	}

	// Plain TCP: the server's INFO demands TLS and a CONNECT in clear text
	// gets no PONG.
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	info, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("read the NATS server's INFO: %v", err)
	}
	if !strings.Contains(info, `"tls_required":true`) {
		t.Errorf("HOLE: the NATS server does not require TLS: %s", info)
	}
	_, _ = fmt.Fprintf(conn, "CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"plain\"}\r\nPING\r\n")
	rest, _ := io.ReadAll(br)
	if strings.Contains(string(rest), "PONG") {
		t.Errorf("HOLE: the NATS server answered a plain-text CONNECT: %q", rest)
	}

	noCert := web1
	noCert.CertFile, noCert.KeyFile = "", ""
	connectFails("without a client certificate", noCert, "tls")

	// A certificate of the deployment's CA for a name the NATS
	// configuration does not list is nobody.
	d.cli("cert", "issue", "--ca", d.ca, "--name", "web3", "--client", "--out", filepath.Join(d.hosts, "web3"))
	connectFails("with a certificate of the CA for a name the configuration does not list", d.auth(wire.KindAgent, "web3"), "authorization")

	// web1's certificate with an nkey seed, as the nkey users of old
	// configurations had: the server takes no nkey, so a seed of web2's
	// cannot make web1's certificate web2.
	u, err := natsauth.LoadOrCreateUser(t.TempDir(), wire.KindAgent, "web2")
	if err != nil {
		t.Fatal(err)
	}
	withSeed := web1
	withSeed.NkeyFile = u.SeedFile
	connectFails("with web1's certificate and an nkey seed", withSeed, "nkey")

	// A certificate from another CA, of the right name.
	otherCA := filepath.Join(t.TempDir(), "other-ca")
	d.cli("cert", "ca", "--out", otherCA)
	other := filepath.Join(t.TempDir(), "other")
	d.cli("cert", "issue", "--ca", otherCA, "--name", "web1", "--client", "--out", other)
	foreign := web1
	foreign.CertFile, foreign.KeyFile = filepath.Join(other, "web1.crt"), filepath.Join(other, "web1.key")
	connectFails("with a client certificate of another CA", foreign, "tls")

	// A NATS server impostor with a certificate of another CA does not get
	// the role's connection either (the client checks the server).
	impostorCA := web1
	impostorCA.CAFile = filepath.Join(otherCA, pki.CACertFile)
	connectFails("that trusts another CA than the NATS server's", impostorCA, "x509")
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	data, err := wire.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// ---- the data plane ----

// fakeAgent is a raw NATS connection that does an agent's part with that
// agent's credentials: it registers, heartbeats with the jobs it holds,
// acknowledges every order, and leaves the data connection to the test.
type fakeAgent struct {
	name     string
	c        *secConn
	restores chan wire.RunRestore

	mu      sync.Mutex
	running map[uint64]bool
}

func (d *secSys) fakeAgent(t *testing.T, name string) *fakeAgent {
	t.Helper()
	c := d.mustConnect(t, wire.KindAgent, name)
	a := &fakeAgent{name: name, c: c, restores: make(chan wire.RunRestore, 16), running: map[uint64]bool{}}
	orders := make(chan *nats.Msg, 16)
	if _, err := c.nc.ChanSubscribe(wire.AgentSubject(name, ">"), orders); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	wg.Add(2)
	go func() {
		defer wg.Done()
		ack, _ := wire.Marshal(wire.Empty{})
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-orders:
				_ = m.Respond(ack)
				if !strings.HasSuffix(m.Subject, "."+wire.OpRunRestore) {
					continue
				}
				body, err := wire.Unmarshal(m.Data)
				if err != nil {
					continue
				}
				o, err := wire.Decode[wire.RunRestore](body)
				if err != nil {
					continue
				}
				a.mu.Lock()
				first := !a.running[o.JobID]
				a.running[o.JobID] = true
				a.mu.Unlock()
				if first {
					a.restores <- o
				}
			}
		}
	}()
	if err := wire.Request(ctx, c.nc, wire.FromAgentSubject(name, wire.OpAgentRegister), wire.AgentRegisterReq{Name: name, Hostname: "fake-" + name}, nil); err != nil {
		t.Fatalf("register as %s: %v", name, err)
	}
	go func() {
		defer wg.Done()
		for {
			a.mu.Lock()
			var hb wire.AgentHeartbeat
			for id := range a.running {
				hb.Running = append(hb.Running, id)
			}
			a.mu.Unlock()
			_ = wire.Publish(c.nc, wire.AgentBeatSubject(name), hb)
			select {
			case <-ctx.Done():
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	return a
}

// restore starts a restore of backup for the agent's client with the admin
// CLI and returns the order the agent gets.
func (a *fakeAgent) restore(t *testing.T, d *secSys, backup uint64) wire.RunRestore {
	t.Helper()
	var started wire.JobStarted
	if err := d.adminJSON(&started, "restore", "--client", a.name, "--to", "/tmp/never-written", "--wait=false",
		"--backup", strconv.FormatUint(backup, 10)); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for {
		select {
		case o := <-a.restores:
			if o.JobID == started.JobID {
				return o
			}
		case <-deadline:
			t.Fatalf("%s got no restore order for job %d within 30s", a.name, started.JobID)
		}
	}
}

// finish reports the job as ended, so it does not wait for its watchdog.
func (a *fakeAgent) finish(job uint64) {
	a.mu.Lock()
	delete(a.running, job)
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = wire.Request(ctx, a.c.nc, wire.FromAgentSubject(a.name, wire.OpJobDone),
		wire.JobDoneReq{JobID: job, Error: wire.Errorf(wire.CodeAborted, "", "security test: the data connection was the test's")}, nil)
}

// hello opens a data connection to the node of o with tk and returns the
// connection once accepted, or the node's refusal.
func hello(o wire.RunRestore, tk string) (*dataplane.Conn, error) {
	client := ""
	if p, _, ok := strings.Cut(tk, "."); ok {
		if raw, err := base64.RawURLEncoding.DecodeString(p); err == nil {
			var tt ticket.Ticket
			_ = json.Unmarshal(raw, &tt)
			client = tt.Client
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := dataplane.Dial(ctx, o.Node.Addr, o.Node.CertSHA256)
	if err != nil {
		return nil, err
	}
	if err := conn.WriteJSON(dataplane.FrameHello, dataplane.Hello{V: dataplane.Version, Ticket: tk, Client: client, Version: "test"}); err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	var acc dataplane.Accept
	if err := conn.ReadJSON(dataplane.FrameAccept, &acc); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// stream takes in a restore stream to its end, as the agent does: the
// sessions its reads name and the record bytes that came, or the node's
// error.
func stream(conn *dataplane.Conn) (sessions []uuid.UUID, n int, err error) {
	for {
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		typ, p, err := conn.ReadFrame()
		if err != nil {
			return sessions, n, fmt.Errorf("the node closed the connection: %w", err)
		}
		switch typ {
		case dataplane.FrameReadStart:
			var rs dataplane.ReadStart
			if err := dataplane.DecodeJSON(typ, p, typ, &rs); err != nil {
				return sessions, n, err
			}
			sessions = append(sessions, rs.SessionID)
		case dataplane.FrameRecords:
			n += len(p)
		case dataplane.FrameDamaged, dataplane.FrameReadDone:
		default:
			return sessions, n, dataplane.DecodeJSON(typ, p, dataplane.FrameEnd, &dataplane.RestoreEnd{})
		}
	}
}

// tamper returns tk with its payload changed by f and the original
// signature kept.
func tamper(t *testing.T, tk string, f func(*ticket.Ticket)) string {
	t.Helper()
	payload, sig, _ := strings.Cut(tk, ".")
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		t.Fatal(err)
	}
	var tt ticket.Ticket
	if err := json.Unmarshal(raw, &tt); err != nil {
		t.Fatal(err)
	}
	f(&tt)
	raw, err = json.Marshal(tt)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(raw) + "." + sig
}

func decodeTicket(t *testing.T, tk string) ticket.Ticket {
	t.Helper()
	var tt ticket.Ticket
	tamper(t, tk, func(x *ticket.Ticket) { tt = *x })
	return tt
}

func wantRefusal(t *testing.T, what string, err error, says string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("HOLE: the storage node accepted %s", what)
	case wire.CodeOf(err) != wire.CodeTicketRejected || !strings.Contains(err.Error(), says):
		t.Errorf("the storage node refused %s, but with %q (code %s), want a ticket_rejected error saying %q", what, err, wire.CodeOf(err), says)
	}
}

func (d *secSys) checkDataPlane(t *testing.T, web1Backup, web2Backup uint64) {
	// The real agents step aside: the test does their part with their
	// credentials, so it holds the tickets they would get.
	for _, c := range secClients {
		d.agents[c].stop()
	}
	fake1, fake2 := d.fakeAgent(t, "web1"), d.fakeAgent(t, "web2")

	// What web2's agent reads in a restore, and a check that those reads
	// do give web2's data to web2's own ticket.
	o2 := fake2.restore(t, d, web2Backup)
	conn, err := hello(o2, o2.Ticket)
	if err != nil {
		t.Fatalf("control: web2's own ticket was refused: %v", err)
	}
	sessions2, n, err := stream(conn)
	conn.Close()
	fake2.finish(o2.JobID)
	if err != nil || n == 0 || len(sessions2) == 0 {
		t.Fatalf("control: web2's own restore gave %d bytes of sessions %v: %v", n, sessions2, err)
	}
	web2Session := sessions2[0]

	o1 := fake1.restore(t, d, web1Backup)
	tk1 := decodeTicket(t, o1.Ticket)
	if tk1.Client != "web1" || tk1.Op != ticket.OpRestore {
		t.Fatalf("web1's restore order carries a ticket for %s %s", tk1.Client, tk1.Op)
	}

	t.Run("a web1 restore ticket does not read a web2 session", func(t *testing.T) {
		conn, err := hello(o1, o1.Ticket)
		if err != nil {
			t.Fatalf("web1's own fresh ticket was refused: %v", err)
		}
		defer conn.Close()
		// A read of web2's session as an agent of protocol version 1
		// sent it: the node takes its plan from the servers, not from
		// the agent, and streams web1's restore only.
		_ = conn.WriteJSON(7, map[string]any{"session_id": web2Session, "key_id": "k", "locs": []any{map[string]any{"path": "/"}}})
		sessions, n, err := stream(conn)
		for _, s := range sessions {
			if s == web2Session || !slices.Contains(tk1.Sessions, s.String()) {
				t.Errorf("HOLE: web1's restore stream read session %s (%d bytes), which its ticket does not name", s, n)
			}
		}
		if wire.CodeOf(err) != "" && !errors.Is(err, io.EOF) {
			t.Logf("web1's restore stream ended with %v", err)
		}
		fake1.finish(o1.JobID)
	})

	t.Run("a used ticket is refused", func(t *testing.T) {
		conn, err := hello(o1, o1.Ticket)
		if conn != nil {
			conn.Close()
		}
		wantRefusal(t, "web1's ticket a second time", err, "already used")
	})

	t.Run("a forged ticket is refused", func(t *testing.T) {
		widened := tamper(t, o1.Ticket, func(x *ticket.Ticket) {
			x.ID = ticket.NewID()
			x.Sessions = append(x.Sessions, web2Session.String())
		})
		conn, err := hello(o1, widened)
		if conn != nil {
			conn.Close()
		}
		wantRefusal(t, "web1's ticket with web2's session added", err, "invalid signature")

		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		own := tk1
		own.ID, own.Sessions = "", []string{web2Session.String()}
		own.Issued, own.Expires = time.Now().Add(-time.Second), time.Now().Add(time.Minute)
		signed, err := ticket.Sign(own, key)
		if err != nil {
			t.Fatal(err)
		}
		conn, err = hello(o1, signed)
		if conn != nil {
			conn.Close()
		}
		wantRefusal(t, "a ticket web1 signed itself", err, "invalid signature")

		conn, err = hello(o1, "")
		if conn != nil {
			conn.Close()
		}
		wantRefusal(t, "a hello without a ticket", err, "no job ticket")
	})

	t.Run("a data connection without the pinned certificate fails", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// The real node, but a fingerprint the servers did not give.
		sum := sha256.Sum256([]byte("another certificate"))
		if c, err := dataplane.Dial(ctx, o1.Node.Addr, hex.EncodeToString(sum[:])); err == nil {
			c.Close()
			t.Error("HOLE: the agent's dial accepted a storage node whose certificate is not the pinned one")
		}

		// An impostor on another address with its own certificate: the
		// agent refuses it before it sends the ticket.
		cert, _, err := dataplane.LoadOrCreateCert(t.TempDir(), "sn1")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := tls.Listen("tcp", "127.0.0.1:0", dataplane.ServerConfig(cert))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		got := make(chan int, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- 0
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			b, _ := io.ReadAll(c)
			got <- len(b)
		}()
		if c, err := dataplane.Dial(ctx, ln.Addr().String(), o1.Node.CertSHA256); err == nil {
			_ = c.WriteJSON(dataplane.FrameHello, dataplane.Hello{V: dataplane.Version, Ticket: "would-leak"})
			c.Close()
			t.Error("HOLE: the agent's dial accepted an impostor's certificate in place of the pinned one")
		}
		if n := <-got; n > 0 {
			t.Errorf("HOLE: the impostor received %d bytes of application data", n)
		}

		// No TLS at all: the node does not speak the data protocol in clear.
		pc, err := net.DialTimeout("tcp", o1.Node.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		plain := dataplane.NewConn(pc)
		_ = plain.WriteJSON(dataplane.FrameHello, dataplane.Hello{V: dataplane.Version, Ticket: o1.Ticket})
		_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(pc)
		if strings.Contains(string(b), "job_id") {
			t.Errorf("HOLE: the data port answered a plain-text hello: %q", b)
		}
	})
}
