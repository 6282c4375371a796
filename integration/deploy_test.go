package integration

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
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
