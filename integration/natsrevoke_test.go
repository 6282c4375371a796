package integration

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// TestNATSCredentialRevoked takes a running role's NATS user away and gives
// it back, as an operator does who reruns 'cairn cert nats-config' and
// forgets a storage node, then notices and reruns it: each time the real
// nats-server reloads its configuration on SIGHUP. The storage node is
// disconnected and refused at every attempt; it says so in its log and
// metrics, keeps running, tries again with backoff instead of spinning, and
// comes back by itself once its user is restored (nats.go gives up for
// good after the second identical refusal unless told otherwise, and the
// node then stayed offline while its process ran). A backup started
// meanwhile waits for it and then completes. An admin command whose user
// was removed, or whose key export permission was, fails at once and says
// why, and works again once the configuration is restored.
func TestNATSCredentialRevoked(t *testing.T) {
	d := newSecSys(t)
	nodePID := d.node.pid()
	nodeMetrics := d.node.metricsAddr()
	natsConnected := func(want float64) func() error {
		return func() error {
			failIfCrashed(t, d.node)
			v, err := metricValue(nodeMetrics, "cairn_nats_connected")
			if err != nil {
				return err
			}
			if v != want {
				return fmt.Errorf("the storage node's cairn_nats_connected is %v, want %v", v, want)
			}
			return nil
		}
	}
	poll.Until(t, 10*time.Second, natsConnected(1))
	if r := d.as(wire.KindAdmin, "ops", "status"); r.code != 0 {
		t.Fatalf("control: the admin ops cannot run 'cairn status':\n%s", r)
	}

	// The configuration written again without the storage node, without
	// the admin ops, and with admin no longer a key admin.
	revoked := secUsers()
	revoked.nodes = nil
	revoked.admins = []string{"admin"}
	revoked.keyAdmins = nil
	before := d.node.logText()
	d.writeNATSConfig(revoked)
	d.reloadNATS()
	revokedAt := time.Now()

	// The node is cut off and refused at each attempt: at least three
	// refusals, where nats.go alone closes the connection at the second.
	const refusal = "refused this role's credentials"
	poll.Until(t, 60*time.Second, func() error {
		failIfCrashed(t, d.node)
		got := d.node.logSince(before)
		if strings.Contains(got, "NATS connection closed") {
			t.Fatalf("the storage node gave up on NATS after its credentials were refused; it would stay offline for good:\n%s", got)
		}
		if n := strings.Count(got, refusal); n < 3 {
			return fmt.Errorf("the storage node logged %d refusals of its credentials, want 3", n)
		}
		return nil
	})
	poll.Until(t, 10*time.Second, natsConnected(0))
	if got := d.node.logSince(before); !strings.Contains(got, "cairn cert nats-config") {
		t.Errorf("the storage node's log does not say what to fix (regenerate the NATS configuration):\n%s", got)
	}

	// The servers see the node go offline, and a backup started now waits
	// for it instead of failing.
	poll.Until(t, 30*time.Second, func() error {
		var pools []wire.PoolInfo
		if err := d.adminJSON(&pools, "pool", "list"); err != nil {
			return err
		}
		for _, p := range pools {
			for _, n := range p.Nodes {
				if n.Name == "sn1" && n.Online {
					return fmt.Errorf("sn1 is still online for the servers")
				}
			}
		}
		return nil
	})
	src := makeTree(t, sample.Spec{TextFiles: 6, RandomFiles: 2, MaxFileSize: 8 << 10, Seed: 91})
	want := snapshot(t, src)
	var started wire.JobStarted
	if err := d.adminJSON(&started, "backup", "--client", "web1", "--level", "full", "--path", src); err != nil {
		t.Fatalf("start a backup while the storage node is cut off: %v", err)
	}
	poll.Until(t, 30*time.Second, func() error {
		var j wire.JobInfo
		if err := d.adminJSON(&j, "job", "show", strconv.FormatUint(started.JobID, 10)); err != nil {
			return err
		}
		if j.State != "queued" || !strings.Contains(j.Waiting, "sn1") {
			return fmt.Errorf("job %d is %s, waiting %q: want queued, waiting for sn1", j.ID, j.State, j.Waiting)
		}
		return nil
	})

	// An admin command is told at once, and told why: the removed admin
	// that NATS refused its credential, the admin that lost key export
	// that the permission for that subject is denied.
	t0 := time.Now()
	r := d.as(wire.KindAdmin, "ops", "--timeout", "30s", "status")
	checkFailure(t, r, 1, refusal)
	if took := time.Since(t0); took > 10*time.Second {
		t.Errorf("'cairn status' with a removed admin's credential took %s to fail, want it at once", took)
	}
	t0 = time.Now()
	r = d.admin("--timeout", "30s", "key", "export", "--to", filepath.Join(t.TempDir(), "keys.json"))
	checkFailure(t, r, 1, `permission denied for subject "`+wire.APISubject(wire.OpKeyExport)+`"`)
	if took := time.Since(t0); took > 10*time.Second {
		t.Errorf("'cairn key export' after its permission was revoked took %s to fail, want it at once", took)
	}

	// Backoff, not a spin: after the first quick tries, at most about one
	// attempt a second (the delay doubles from 250 ms up to 10 s).
	cutOff := time.Since(revokedAt)
	refusals := strings.Count(d.node.logSince(before), refusal)
	if limit := 6 + int(cutOff/time.Second); refusals > limit {
		t.Errorf("the storage node was refused %d times in %s, more than %d: it retries without backing off", refusals, cutOff.Round(time.Millisecond), limit)
	}
	t.Logf("cut off for %s: %d refusals logged", cutOff.Round(time.Millisecond), refusals)

	// The operator notices and writes the configuration again.
	before = d.node.logText()
	d.writeNATSConfig(secUsers())
	d.reloadNATS()
	// The next attempt is at most 10 s away.
	poll.Until(t, 30*time.Second, natsConnected(1))
	if !strings.Contains(d.node.logSince(before), "NATS reconnected") {
		t.Errorf("the storage node's log does not say it reconnected:\n%s", d.node.logSince(before))
	}
	var j wire.JobInfo
	poll.Until(t, 60*time.Second, func() error {
		if err := d.adminJSON(&j, "job", "show", strconv.FormatUint(started.JobID, 10)); err != nil {
			return err
		}
		if j.State == "queued" || j.State == "running" {
			return fmt.Errorf("job %d is %s (waiting %q)", j.ID, j.State, j.Waiting)
		}
		return nil
	})
	if j.State != "success" || j.Node != "sn1" {
		t.Fatalf("the backup started while sn1 was cut off ended %s on %q: %s", j.State, j.Node, j.Error)
	}
	to := filepath.Join(t.TempDir(), "restore")
	var rj wire.JobInfo
	if err := d.adminJSON(&rj, "restore", "--client", "web1", "--to", to, "--backup", strconv.FormatUint(j.BackupID, 10)); err != nil || rj.State != "success" {
		t.Fatalf("restore of the backup made after the reconnect: %+v, %v", rj, err)
	}
	checkRestored(t, want, to, src)
	if r := d.as(wire.KindAdmin, "ops", "status"); r.code != 0 {
		t.Errorf("the admin ops, restored, cannot run 'cairn status':\n%s", r)
	}
	if r := d.admin("key", "export", "--to", filepath.Join(t.TempDir(), "keys.json")); r.code != 0 {
		t.Errorf("admin, a key admin again, cannot export the keys:\n%s", r)
	}
	if pid := d.node.pid(); pid != nodePID {
		t.Errorf("the storage node is process %d, not %d: it restarted", pid, nodePID)
	}
}

// metricValue reads one unlabelled metric from the /metrics page at addr.
func metricValue(addr, name string) (float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s on the /metrics page at %s", name, addr)
}

// TestRolesStartedBeforeNATS starts the server, the storage node and an
// agent while nats-server is down, as a host that boots its services in any
// order does: each waits for NATS and says so instead of exiting, and once
// nats-server runs the system works without a restart of any role.
func TestRolesStartedBeforeNATS(t *testing.T) {
	d := newSecSys(t)
	roles := []*proc{d.server, d.node, d.agents["web1"]}
	for _, p := range roles {
		stop(p)
	}
	stop(d.nats)
	befores := map[*proc]string{}
	for _, p := range roles {
		befores[p] = p.logText()
		p.start()
	}
	for _, p := range roles {
		p.waitLog(t, 30*time.Second, befores[p], "NATS not reachable yet; the role waits for it")
	}
	// Still waiting a moment later, not exited: the next attempts are
	// refused connections, and none of them ends the process.
	poll.Until(t, 30*time.Second, func() error {
		failIfCrashed(t, roles...)
		for _, p := range roles {
			if n := strings.Count(p.logSince(befores[p]), "NATS not reachable; retrying"); n < 2 {
				return fmt.Errorf("%s logged %d failed attempts to reach NATS, want 2", p.name, n)
			}
		}
		return nil
	})
	d.nats.start()
	d.waitReady()
	for _, p := range roles {
		if !strings.Contains(p.logSince(befores[p]), "NATS connected") {
			t.Errorf("%s does not log that it connected:\n%s", p.name, p.logSince(befores[p]))
		}
	}
	src := makeTree(t, sample.Spec{TextFiles: 4, MaxFileSize: 4 << 10, Seed: 93})
	var j wire.JobInfo
	if err := d.adminJSON(&j, "backup", "--client", "web1", "--level", "full", "--wait", "--path", src); err != nil || j.State != "success" {
		t.Fatalf("a backup once NATS is up: %+v, %v", j, err)
	}
}
