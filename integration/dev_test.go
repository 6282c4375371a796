package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// TestDevPersistence runs 'cairn dev' as a process, backs up, stops it with
// SIGTERM and starts it again on the same directory: the client, the backup
// and its volume are all still there, the backup restores byte for byte,
// and the next backup builds on it.
func TestDevPersistence(t *testing.T) {
	dir := t.TempDir()
	s := &stack{
		t: t, dir: dir, logs: &logs{}, client: "devhost", node: "dev-node", pool: "Default",
		url: fmt.Sprintf("nats://127.0.0.1:%d", freeport.Loopback(t)),
	}
	s.logs.printOnFailure(t)
	_, port, _ := strings.Cut(strings.TrimPrefix(s.url, "nats://"), ":")
	data := filepath.Join(dir, "dev")
	s.adminFlags = []string{"--nats-nkey", filepath.Join(data, "nats", "admin-admin.nk")}
	dev := newProc(t, s.logs, dir, "dev", "dev", "--data", data, "--nats-port", port, "--raft-addr", freeport.LoopbackAddr(t),
		"--client", s.client, "--metrics-addr", anyAddr)
	s.procs = []*proc{dev}
	t.Cleanup(dev.stop)
	dev.start()
	s.waitReady()

	src := makeTree(t, smallSpec(23))
	snap := snapshot(t, src)
	b := s.backup("full", src)
	vols := s.volumes()
	if len(vols) != 1 {
		t.Fatalf("volumes: %+v", vols)
	}

	dev.stop()
	if err := dev.exitErr(); err != nil {
		t.Fatalf("cairn dev exited with %v on SIGTERM", err)
	}
	if !strings.Contains(dev.logText(), "stopping") {
		t.Errorf("cairn dev did not say it was stopping")
	}
	dev.start()
	s.waitReady()

	var clients []wire.ClientInfo
	s.json(&clients, "client", "list")
	if len(clients) != 1 || clients[0].Name != s.client || clients[0].Backups != 1 {
		t.Errorf("clients after the restart: %+v", clients)
	}
	var backups []wire.BackupInfo
	s.json(&backups, "backup", "list", "--client", s.client)
	if len(backups) != 1 || backups[0].ID != b.BackupID || backups[0].State != "complete" {
		t.Errorf("backups after the restart: %+v", backups)
	}
	after := s.volumes()
	if len(after) != 1 || after[0].Name != vols[0].Name || after[0].Bytes != vols[0].Bytes || after[0].Path != vols[0].Path {
		t.Errorf("volumes after the restart: %+v, before: %+v", after, vols)
	}
	if size := fileSize(t, after[0].Path); size != after[0].Bytes {
		t.Errorf("volume file %s has %d bytes, the catalog %d", after[0].Path, size, after[0].Bytes)
	}
	to := filepath.Join(t.TempDir(), "restore")
	s.restore(to, "--backup", strconv.FormatUint(b.BackupID, 10))
	checkRestored(t, snap, to, src)

	// The next backup is an incremental on the one from before the restart.
	if err := os.WriteFile(filepath.Join(src, "after-restart.txt"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	next := s.backup("incremental", src)
	s.json(&backups, "backup", "list", "--client", s.client)
	for _, nb := range backups {
		if nb.ID == next.BackupID && (nb.Parent != b.BackupID || nb.Level != "incremental") {
			t.Errorf("the backup after the restart: %+v, want an incremental on %d", nb, b.BackupID)
		}
	}
	to = filepath.Join(t.TempDir(), "restore-next")
	s.restore(to)
	checkRestored(t, snapshot(t, src), to, src)
}

// TestDevIsClosedToOtherUsers runs 'cairn dev' as root, as a reviewer did
// when any local user could drive it: the admin commands of the user who
// started it need no flags, while another user (nobody, in a child
// process) can read neither its client file nor the admin's seed, and gets
// nowhere with NATS anonymously: not a status, not a restore into a
// directory only root may write.
func TestDevIsClosedToOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		need(t, "root, to run a child process as another user", fmt.Errorf("running as uid %d", os.Geteuid()))
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534, NoSetGroups: true}
	if u, err := user.Lookup("nobody"); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		nobody.Uid, nobody.Gid = uint32(uid), uint32(gid)
	}
	dir := t.TempDir()
	// Every directory on the way is open to all, as /var/tmp is: what
	// keeps nobody out must be the modes 'cairn dev' sets itself.
	for p := dir; p != filepath.Dir(os.TempDir()) && p != "/"; p = filepath.Dir(p) {
		if strings.HasPrefix(p, os.TempDir()+"/") {
			if err := os.Chmod(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	data := filepath.Join(dir, "dev")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	clientFile := filepath.Join(dir, "dev.json")
	t.Setenv("CAIRN_DEV_FILE", clientFile)
	l := &logs{}
	l.printOnFailure(t)
	natsPort := freeport.Loopback(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	dev := newProc(t, l, dir, "dev", "dev", "--data", data, "--nats-port", strconv.Itoa(natsPort), "--raft-addr", freeport.LoopbackAddr(t),
		"--client", "devhost", "--metrics-addr", anyAddr)
	t.Cleanup(dev.stop)
	dev.start()

	// As root, with no flag at all: the client file says where and how.
	env := func(extra ...string) []string {
		return append([]string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "CAIRN_DEV_FILE=" + clientFile}, extra...)
	}
	poll.Until(t, 60*time.Second, func() error {
		failIfCrashed(t, dev)
		r := runCairnAs(t, nil, env(), "client", "list", "--json")
		if r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		var clients []wire.ClientInfo
		if err := json.Unmarshal([]byte(r.stdout), &clients); err != nil || len(clients) != 1 || !clients[0].Online {
			return fmt.Errorf("clients: %s (%v)", r.stdout, err)
		}
		return nil
	})
	if r := runCairnAs(t, nil, env(), "status"); r.code != 0 {
		t.Fatalf("'cairn status' with no flags, as the user who started cairn dev:\n%s", r)
	}
	banner := dev.logText()
	for _, w := range []string{"NATS " + url + " (127.0.0.1 only", "Raft 127.0.0.1:", "data port 127.0.0.1:", "from another terminal", clientFile, "--nats-nkey " + filepath.Join(data, "nats", "admin-admin.nk")} {
		if !strings.Contains(banner, w) {
			t.Errorf("the banner of cairn dev does not say %q:\n%s", w, banner)
		}
	}

	// As nobody.
	seed := filepath.Join(data, "nats", "admin-admin.nk")
	for _, f := range []string{clientFile, seed, filepath.Join(data, "nats", "client.json")} {
		cmd := exec.Command("cat", f)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("HOLE: nobody read %s: %.80q", f, out)
		}
	}
	r := runCairnAs(t, nobody, env(), "status")
	checkFailure(t, r, 1, "permission denied", clientFile, "the user who started 'cairn dev'")

	target := filepath.Join(dir, "root-only")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	r = runCairnAs(t, nobody, env(), "--nats", url, "--timeout", "10s", "restore", "--client", "devhost", "--to", filepath.Join(target, "pwned"), "--force")
	checkFailure(t, r, 1, "refused this role's credentials", "permission denied")
	r = runCairnAs(t, nobody, env(), "--nats", url, "--nats-nkey", seed, "--timeout", "10s", "status")
	if r.code == 0 {
		t.Errorf("HOLE: nobody ran 'cairn status' with the admin's seed path:\n%s", r)
	}
	if !strings.Contains(r.output(), "permission denied") {
		t.Errorf("nobody passing the admin's seed: want it to say permission denied:\n%s", r)
	}
	emptyOrMissing(t, filepath.Join(target, "pwned"))
}

// TestDevBannerReachesItsInstance runs 'cairn dev' on ports other than its
// defaults, as a second instance on a machine must, and runs what its
// banner tells another terminal to run, in a shell whose admin commands
// find no client file of it (a new terminal, where the client file names
// another instance or none): each command reaches this instance. The ports
// line states every port, the metrics one as bound, not as asked (:0).
func TestDevBannerReachesItsInstance(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CAIRN_DEV_FILE", filepath.Join(dir, "dev.json"))
	l := &logs{}
	l.printOnFailure(t)
	natsPort, raftAddr := freeport.Loopback(t), freeport.LoopbackAddr(t)
	dev := newProc(t, l, dir, "dev", "dev", "--data", filepath.Join(dir, "dev"), "--nats-port", strconv.Itoa(natsPort),
		"--raft-addr", raftAddr, "--client", "devhost", "--metrics-addr", anyAddr)
	t.Cleanup(dev.stop)
	dev.start()
	metrics := dev.metricsAddr()
	var banner []string
	poll.Until(t, 60*time.Second, func() error {
		failIfCrashed(t, dev)
		banner = strings.Split(dev.logText(), "\n")
		for _, line := range banner {
			if strings.HasPrefix(line, "try: ") {
				return nil
			}
		}
		return fmt.Errorf("no banner yet")
	})

	var ports string
	var commands []string
	for i, line := range banner {
		switch {
		case strings.HasPrefix(line, "ports: "):
			ports = line
		case strings.HasPrefix(line, "from another terminal"):
			if _, cmd, ok := strings.Cut(line, ": cairn "); ok {
				cmd, _, _ = strings.Cut(cmd, " (")
				commands = append(commands, "cairn "+cmd)
				continue
			}
			var script []string
			for _, next := range banner[i+1:] {
				if !strings.HasPrefix(next, "  ") {
					break
				}
				script = append(script, strings.TrimSpace(next))
			}
			commands = append(commands, strings.Join(script, "\n"))
		case strings.HasPrefix(line, "as another user, with a copy of the admin seed: "):
			commands = append(commands, strings.TrimPrefix(line, "as another user, with a copy of the admin seed: "))
		}
	}
	for _, want := range []string{fmt.Sprintf("NATS nats://127.0.0.1:%d ", natsPort), "Raft " + raftAddr + ",", "data port 127.0.0.1:", "metrics http://" + metrics + "/metrics"} {
		if !strings.Contains(ports, want) {
			t.Errorf("the ports line %q does not say %q", ports, want)
		}
	}
	if len(commands) != 2 {
		t.Fatalf("the banner shows %d ways to reach it, want 2 (this user, another one):\n%s", len(commands), strings.Join(banner, "\n"))
	}
	for _, script := range commands {
		sh := exec.Command("bash", "-euo", "pipefail", "-c", script)
		sh.Env = []string{"PATH=" + filepath.Dir(cairnBin) + ":/usr/bin:/bin", "HOME=" + t.TempDir(),
			"CAIRN_DEV_FILE=" + filepath.Join(dir, "another-instance.json")}
		out, err := sh.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "dev-server") {
			t.Errorf("the banner's\n%s\nfrom a new terminal: %v\n%s", script, err, out)
		}
	}
}
