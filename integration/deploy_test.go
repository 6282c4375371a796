package integration

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/pki"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// TestNATSClusterFromNATSConfig runs a secured deployment on the NATS
// cluster 'cairn cert nats-config --cluster' writes: three real
// nats-servers, routed to each other over mutual TLS, each with a
// monitoring port on the loopback and a log file, every role given the
// three URLs. Admin commands through each NATS server alone reach the
// backup server wherever it is connected, so messages route across; only
// the NATS servers' certificate may be a route; and when the NATS server
// the backup server is connected to is killed, the roles go on through the
// other two and a backup and a restore run.
func TestNATSClusterFromNATSConfig(t *testing.T) {
	d := newSecSysWith(t, secOpts{natsCluster: 3})
	c := d.natsCluster

	for _, ns := range c.servers {
		log := filepath.Join(d.dir, "nats-logs", ns.name+".log")
		if data, err := os.ReadFile(log); err != nil || !strings.Contains(string(data), "Server is ready") {
			t.Errorf("NATS server %s has not logged to its log file %s (%v)", ns.name, log, err)
		}
	}

	// Where each role is connected: the test then uses every NATS server.
	connectedTo := func(prefix string) int {
		for i := range c.servers {
			if !c.servers[i].proc.alive() {
				continue
			}
			if n, err := c.clientsOf(i, prefix); err == nil && n > 0 {
				return i
			}
		}
		return -1
	}
	via := func(i int, args ...string) result {
		a := d.auth(wire.KindAdmin, "admin")
		return runCairn(t, c.serverURL(i), append([]string{"--nats", c.serverURL(i), "--nats-ca", a.CAFile, "--nats-cert", a.CertFile, "--nats-key", a.KeyFile}, args...)...)
	}
	at := connectedTo("cairn-server-s1")
	if at < 0 {
		t.Fatal("the backup server is connected to none of the NATS servers")
	}
	t.Logf("the backup server is connected to NATS server %s", c.servers[at].name)
	for i, ns := range c.servers {
		r := via(i, "status", "--json")
		if r.code != 0 {
			t.Errorf("'cairn status' through NATS server %s alone (the backup server is on %s): the request did not route:\n%s", ns.name, c.servers[at].name, r)
		}
	}

	t.Run("only the NATS servers' certificate may be a route", func(t *testing.T) {
		for _, tc := range []struct {
			cert string
			want string
		}{{"nats", "PONG"}, {"web1", "Authorization Violation"}} {
			got, err := routeConnect(t, c.servers[0].route, filepath.Join(d.hosts, tc.cert), tc.cert)
			if err != nil || !strings.Contains(got, tc.want) {
				t.Errorf("a route connection with %s's certificate: got %q (%v), want %q", tc.cert, got, err, tc.want)
			}
		}
	})

	backupAndRestore := func(t *testing.T, seed uint64) {
		t.Helper()
		src := makeTree(t, sample.Spec{TextFiles: 8, RandomFiles: 4, MaxFileSize: 16 << 10, Seed: seed})
		want := snapshot(t, src)
		var j wire.JobInfo
		if err := d.adminJSON(&j, "backup", "--client", "web1", "--level", "full", "--wait", "--path", src); err != nil || j.State != "success" {
			t.Fatalf("backup: %+v, %v", j, err)
		}
		to := filepath.Join(t.TempDir(), "restored")
		var r wire.JobInfo
		if err := d.adminJSON(&r, "restore", "--client", "web1", "--to", to, "--backup", strconv.FormatUint(j.BackupID, 10)); err != nil || r.State != "success" {
			t.Fatalf("restore: %+v, %v", r, err)
		}
		checkRestored(t, want, to, src)
	}
	backupAndRestore(t, 61)

	// The NATS server the backup server is connected to dies.
	c.kill(at)
	t.Logf("killed NATS server %s", c.servers[at].name)
	c.waitRouted()
	poll.Until(t, 60*time.Second, func() error {
		failIfCrashed(t, d.server, d.node, d.agents["web1"])
		if now := connectedTo("cairn-server-s1"); now < 0 {
			return fmt.Errorf("the backup server has not reconnected to another NATS server")
		}
		var clients []wire.ClientInfo
		if err := d.adminJSON(&clients, "client", "list"); err != nil {
			return err
		}
		for _, cl := range clients {
			if cl.Name == "web1" && !cl.Online {
				return fmt.Errorf("web1 is not online again")
			}
		}
		return nil
	})
	for i, ns := range c.servers {
		if i == at {
			continue
		}
		if r := via(i, "status"); r.code != 0 {
			t.Errorf("'cairn status' through NATS server %s after %s died:\n%s", ns.name, c.servers[at].name, r)
		}
	}
	backupAndRestore(t, 62)
}

// routeConnect dials a NATS route port with the certificate in dir/name.crt
// as a NATS server would (TLS first, then CONNECT and PING), and returns
// what the server answers.
func routeConnect(t *testing.T, addr, dir, name string) (string, error) {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: certPool(t, filepath.Join(dir, pki.CACertFile)), Certificates: []tls.Certificate{kp}, ServerName: "127.0.0.1"})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	if info, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(info, "INFO ") {
		return info, fmt.Errorf("no INFO from the route port: %v", err)
	}
	if _, err := fmt.Fprintf(conn, "CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":true,\"name\":\"intruder\",\"cluster\":\"cairn\"}\r\nPING\r\n"); err != nil {
		return "", err
	}
	for {
		line, err := r.ReadString('\n')
		if strings.HasPrefix(line, "PONG") || strings.HasPrefix(line, "-ERR") {
			return line, nil
		}
		if err != nil {
			return line, err
		}
	}
}

// TestRotateSecretsInAGroup rotates the secrets of a running group of three
// servers as README says, and restores a backup made before: refused, with
// nothing changed, while a member is stopped; then every member holds the
// new KEK and ticket key (in its files too), every data key is the same
// key wrapped anew, a backup made before the rotation restores through a
// storage node that learns the new ticket key, and a member restarted with
// the old secrets file, as its unit names it, runs on the new keys.
func TestRotateSecretsInAGroup(t *testing.T) {
	c := newClusterSys(t, clusterOpts{})
	s := c.as("web01")
	tree := makeTree(t, smallSpec(71))
	want := snapshot(t, tree)
	old := s.backup("full", tree)
	oldSecrets, err := keyring.ReadSecrets(filepath.Join(c.dir, "secrets.json"))
	if err != nil {
		t.Fatal(err)
	}
	escrow := func(name string) map[string]string {
		path := filepath.Join(t.TempDir(), name)
		c.ok("key", "export", "--to", path)
		f, err := keyring.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, k := range f.Keys {
			out[k.ID] = fmt.Sprintf("%x", k.Key)
		}
		return out
	}
	before := escrow("before.json")

	// New secrets, at the same path on every server (here one machine).
	newFile := filepath.Join(c.dir, "secrets-2.json")
	c.ok("cluster", "init", "--out", newFile)
	newSecrets, err := keyring.ReadSecrets(newFile)
	if err != nil {
		t.Fatal(err)
	}
	newFP := keyring.KEKFingerprint(newSecrets.KEK)

	s3 := c.member("s3")
	if l := c.leader(); l == s3 {
		t.Fatal("s3 leads; the test stops a follower")
	}
	stop(s3.proc)
	r := c.cairn("cluster", "rotate-secrets", "--secrets", newFile)
	checkFailure(t, r, 1, "nothing changed", "s3")
	for _, m := range c.servers {
		if k, _ := os.ReadFile(filepath.Join(m.data, "kek")); !bytes.Equal(k, oldSecrets.KEK) {
			t.Fatalf("a refused rotation changed %s's KEK file", m.name)
		}
	}
	s3.proc.start()
	c.waitSettled()

	r = c.ok("cluster", "rotate-secrets", "--secrets", newFile)
	if !strings.Contains(r.stdout, "secrets are rotated") || !strings.Contains(r.stdout, newFP) {
		t.Errorf("rotate-secrets does not say what it did:\n%s", r)
	}
	// Every member adopts them, and writes them where it reads its keys
	// at start.
	poll.Until(t, 30*time.Second, func() error {
		for _, m := range c.servers {
			st, err := c.status(m)
			if err != nil {
				return err
			}
			if st.KEKFingerprint != newFP {
				return fmt.Errorf("%s holds KEK %s, want the new %s", m.name, st.KEKFingerprint, newFP)
			}
			if k, _ := os.ReadFile(filepath.Join(m.data, "kek")); !bytes.Equal(k, newSecrets.KEK) {
				return fmt.Errorf("%s's KEK file does not hold the new KEK", m.name)
			}
			if k, _ := os.ReadFile(filepath.Join(m.data, "ticket.key")); !bytes.Equal(k, newSecrets.TicketSeed) {
				return fmt.Errorf("%s's ticket.key does not hold the new ticket key", m.name)
			}
		}
		return nil
	})
	if after := escrow("after.json"); !maps.Equal(after, before) {
		t.Errorf("the data keys changed in the rotation:\nbefore %v\nafter  %v", before, after)
	}
	if r := c.cairn("cluster", "rotate-secrets", "--secrets", newFile); r.code == 0 || !strings.Contains(r.output(), "already") {
		t.Errorf("the same rotation again: %s", r)
	}

	// The backup made before the rotation restores: its data key opens
	// with the new KEK, and the storage node takes the ticket signed with
	// the new key.
	to := filepath.Join(t.TempDir(), "restored")
	s.restore(to, "--backup", strconv.FormatUint(old.BackupID, 10))
	checkRestored(t, want, to, tree)

	// A member restarted as its unit starts it, with the old secrets
	// file: it says the file is old, and runs on the new keys.
	s2 := c.member("s2")
	stop(s2.proc)
	s2.proc.start()
	c.waitSettled()
	if st, err := c.status(s2); err != nil || st.KEKFingerprint != newFP {
		t.Errorf("s2 after a restart with the old secrets file: %+v, %v", st, err)
	}
	if !strings.Contains(s2.proc.logText(), "rotated away from") {
		t.Error("s2, restarted with the old secrets file, does not say it is old")
	}
	// Backups go on after the rotation, through any member.
	tree2 := makeTree(t, smallSpec(72))
	want2 := snapshot(t, tree2)
	j := s.backup("incremental", tree2)
	to2 := filepath.Join(t.TempDir(), "restored2")
	s.restore(to2, "--backup", strconv.FormatUint(j.BackupID, 10))
	checkRestored(t, want2, to2, tree2)
}
