package integration

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/sshdtest"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// TestBenchSFTPAgainstRestic is the driver of bench/sftp.sh, not a test:
// it backs up and restores the tree at $CAIRN_BENCH_SFTP_TREE with Cairn
// to an SFTP pool and with restic to an sftp: repository, both on one
// real sshd on loopback, in the order $CAIRN_BENCH_SFTP_ORDER gives, and
// appends each step's seconds and peak resident set to
// $CAIRN_BENCH_SFTP_OUT. Each restored tree is checked against the
// original, outside the timing.
func TestBenchSFTPAgainstRestic(t *testing.T) {
	tree := os.Getenv("CAIRN_BENCH_SFTP_TREE")
	if tree == "" {
		t.Skip("the driver of bench/sftp.sh: it runs with CAIRN_BENCH_SFTP_TREE set")
	}
	out := os.Getenv("CAIRN_BENCH_SFTP_OUT")
	run := os.Getenv("CAIRN_BENCH_SFTP_RUN")
	streams, _ := strconv.Atoi(os.Getenv("CAIRN_BENCH_SFTP_STREAMS"))
	var bytes int64
	if err := filepath.WalkDir(tree, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				bytes += info.Size()
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want := snapshot(t, tree)
	sshd := sshdtest.Start(t)
	record := func(system, op string, took time.Duration, rssMB float64) {
		line := fmt.Sprintf("%s\t%s\t%s\t%.2f\t%.1f\t%.0f\n", run, system, op, took.Seconds(), float64(bytes)/1e6/took.Seconds(), rssMB)
		t.Log(strings.TrimSpace(line))
		if out == "" {
			return
		}
		f, err := os.OpenFile(out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(line); err != nil {
			t.Fatal(err)
		}
	}
	systems := map[string]func(){
		"cairn":  func() { benchCairnSFTP(t, sshd, tree, want, streams, record) },
		"restic": func() { benchResticSFTP(t, sshd, tree, record) },
	}
	order := strings.Split(os.Getenv("CAIRN_BENCH_SFTP_ORDER"), ",")
	if len(order) != 2 {
		order = []string{"cairn", "restic"}
	}
	for _, sys := range order {
		systems[sys]()
	}
}

// dropCaches makes a step read from the disk, as the other system's did.
func dropCaches(t *testing.T) {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		t.Logf("page cache not dropped (%v): the figures read from memory", err)
	}
}

// peakRSS is the sum of the processes' peak resident sets (VmHWM) in MB
// since resetRSS.
func peakRSS(t *testing.T, pids ...int) float64 {
	var sum float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				sum += kb * 1024 / 1e6
			}
		}
	}
	return sum
}

func resetRSS(pids ...int) {
	for _, pid := range pids {
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0o200)
	}
}

// benchCairnSFTP: the whole system (server, storage node, agent, each a
// process), the storage node's SFTP pool on sshd; the RSS is the storage
// node's and the agent's, the two processes the data goes through.
func benchCairnSFTP(t *testing.T, sshd *sshdtest.Server, tree string, want *sample.Manifest, streams int, record func(string, string, time.Duration, float64)) {
	remote := filepath.Join(sshd.Dir, "cairn")
	if err := os.Mkdir(remote, 0o700); err != nil {
		t.Fatal(err)
	}
	s := newStack(t, stackOpts{nodeConfig: map[string]any{"sftp_pools": []map[string]any{{
		"name": "Offsite", "host": sshd.Host, "port": sshd.Port, "user": sshd.User,
		"key_file": sshd.KeyFile, "known_hosts": sshd.KnownHosts, "remote_dir": remote, "streams": streams,
	}}}})
	pids := []int{s.storage.pid(), s.agent.pid()}
	dropCaches(t)
	resetRSS(pids...)
	start := time.Now()
	var job wire.JobInfo
	s.json(&job, "backup", "--client", s.client, "--path", tree, "--level", "full", "--pool", "Offsite", "--wait")
	took := time.Since(start)
	if job.State != "success" {
		t.Fatalf("cairn backup to the SFTP pool: %+v", job)
	}
	record("cairn", "backup", took, peakRSS(t, pids...))

	to := filepath.Join(t.TempDir(), "restore")
	dropCaches(t)
	resetRSS(pids...)
	start = time.Now()
	s.restore(to, "--backup", strconv.FormatUint(job.BackupID, 10))
	record("cairn", "restore", time.Since(start), peakRSS(t, pids...))
	checkRestored(t, want, to, tree)
	_ = os.RemoveAll(to)
}

// benchResticSFTP: restic 0.14 with a v2 repository (compression auto)
// over sftp: to the same sshd, through OpenSSH's ssh client with the same
// key; the RSS is restic's (ssh's is a few MB more).
func benchResticSFTP(t *testing.T, sshd *sshdtest.Server, tree string, record func(string, string, time.Duration, float64)) {
	bin, err := exec.LookPath("restic")
	if err != nil {
		t.Fatalf("restic is not installed (Debian: apt-get install restic): %v", err)
	}
	dir := t.TempDir()
	repo := fmt.Sprintf("sftp:%s@%s:%s", sshd.User, sshd.Host, filepath.Join(sshd.Dir, "restic"))
	sshCmd := fmt.Sprintf("ssh -p %d -i %s -o UserKnownHostsFile=%s -o IdentitiesOnly=yes -o BatchMode=yes %s@%s -s sftp",
		sshd.Port, sshd.KeyFile, sshd.KnownHosts, sshd.User, sshd.Host)
	restic := func(args ...string) (time.Duration, float64) {
		cmd := exec.Command(bin, append([]string{"-r", repo, "-o", "sftp.command=" + sshCmd, "-q"}, args...)...)
		cmd.Env = append(os.Environ(), "RESTIC_PASSWORD=bench", "RESTIC_CACHE_DIR="+filepath.Join(dir, "cache"))
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("restic %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		return time.Since(start), float64(ru.Maxrss) * 1024 / 1e6
	}
	restic("init", "--repository-version", "2")
	dropCaches(t)
	took, rss := restic("backup", tree)
	record("restic", "backup", took, rss)
	to := filepath.Join(dir, "restore")
	dropCaches(t)
	took, rss = restic("restore", "latest", "--target", to)
	record("restic", "restore", took, rss)
	// Contents and names only: restic restores atimes to the millisecond.
	if out, err := exec.Command("diff", "-r", "--no-dereference", tree, filepath.Join(to, tree)).CombinedOutput(); err != nil {
		t.Fatalf("restic's restore differs from the tree: %v\n%s", err, out)
	}
}
