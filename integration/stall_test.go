package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// tapeSystem is a server, a storage node that owns an emulated library of
// one drive with the tape pool Tape, and two agents, all separate
// processes on an embedded NATS server. The node's IdleTimeout is long:
// a drive that comes back soon after a job failed came back because the
// servers stopped the job, not because the node timed out.
type tapeSystem struct {
	*stack
	agents map[string]*proc
}

func newTapeSystem(t *testing.T) *tapeSystem {
	t.Helper()
	dir := t.TempDir()
	s := &stack{t: t, dir: dir, logs: &logs{}, client: "web01", node: "sn1", pool: "Tape",
		serverData: filepath.Join(dir, "server"), nodeData: filepath.Join(dir, "node"), raftAddr: freeport.LoopbackAddr(t)}
	s.logs.printOnFailure(t)
	s.startNATS(natsRole{wire.KindServer, "s1"}, natsRole{wire.KindNode, s.node}, natsRole{wire.KindAgent, "web01"}, natsRole{wire.KindAgent, "web02"}, natsRole{wire.KindAdmin, "admin"})
	nodeCfg := writeJSON(t, filepath.Join(dir, "storagenode.json"), map[string]any{
		"heartbeat_interval": int64(300 * time.Millisecond),
		"idle_timeout":       int64(10 * time.Minute),
		"libraries": []any{map[string]any{
			"name": "lib1", "mount_poll": int64(200 * time.Millisecond),
			"emulated": map[string]any{
				"dir": filepath.Join(dir, "library"), "drives": 1, "slots": 4, "mail_slots": 1,
				"barcodes": []string{"CRN001L9", "CRN002L9"}, "cartridge_bytes": int64(4 << 30), "early_warning_bytes": int64(256 << 20),
				"profile": "fast",
			},
		}},
		"tape_pools": []any{map[string]any{"name": "Tape", "library": "lib1"}},
	})
	s.server = newProc(t, s.logs, dir, "server", "server", "--bootstrap", "--nats", s.url, "--nats-nkey", s.seed(wire.KindServer, "s1"), "--name", "s1",
		"--data", s.serverData, "--raft-addr", s.raftAddr, "--liveness-timeout", "2s", "--metrics-addr", anyAddr, "--log-level", "debug")
	s.storage = newProc(t, s.logs, dir, "storagenode", "storagenode", "--nats", s.url, "--nats-nkey", s.seed(wire.KindNode, s.node), "--config", nodeCfg,
		"--name", s.node, "--data", s.nodeData, "--data-addr", freeport.LoopbackAddr(t), "--metrics-addr", anyAddr)
	ts := &tapeSystem{stack: s, agents: map[string]*proc{}}
	for name, extra := range map[string]map[string]any{
		"web01": {},
		// web02 backs up slowly, so a test can stop it in the middle.
		"web02": {"max_bytes_per_second": 8 << 20},
	} {
		cfg := map[string]any{"heartbeat_interval": int64(300 * time.Millisecond), "progress_interval": int64(100 * time.Millisecond)}
		for k, v := range extra {
			cfg[k] = v
		}
		path := writeJSON(t, filepath.Join(dir, name+".json"), cfg)
		ts.agents[name] = newProc(t, s.logs, dir, name, "agent", "--nats", s.url, "--nats-nkey", s.seed(wire.KindAgent, name), "--config", path,
			"--name", name, "--metrics-addr", anyAddr)
	}
	s.agent = ts.agents["web01"]
	s.procs = []*proc{s.server, s.storage, ts.agents["web01"], ts.agents["web02"]}
	t.Cleanup(func() {
		for _, p := range []*proc{ts.agents["web02"], ts.agents["web01"], s.storage, s.server} {
			p.signal(syscall.SIGCONT, 0) // a test that failed may leave one stopped
			p.stop()
		}
	})
	for _, p := range s.procs {
		p.start()
	}
	poll.Until(t, 60*time.Second, func() error {
		var clients []wire.ClientInfo
		if err := s.tryJSON(&clients, "client", "list"); err != nil {
			return err
		}
		online := 0
		for _, c := range clients {
			if c.Online {
				online++
			}
		}
		if online != 2 {
			return fmt.Errorf("%d of 2 clients online: %+v", online, clients)
		}
		var libs []wire.LibraryStatus
		return s.tryJSON(&libs, "library", "status")
	})
	s.ok("media", "label", "--library", "lib1", "--slots", "1", "--pool", "Tape")
	return ts
}

// pause stops a process as a hung client would stop: it neither reads
// nor answers, and keeps its connections.
func pause(t *testing.T, p *proc) {
	t.Helper()
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// The signal is delivered at once, the threads stop a moment later:
	// what the test looks at next must not change under it.
	poll.Until(t, 10*time.Second, func() error {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", cmd.Process.Pid))
		if err != nil || len(tasks) == 0 {
			return fmt.Errorf("threads of %s: %v", p.name, err)
		}
		for _, task := range tasks {
			stat, err := os.ReadFile(task)
			if err != nil {
				return err
			}
			// pid (comm) state ...: comm may hold spaces, not ')'.
			fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
			if len(fields) == 0 || (fields[0] != "T" && fields[0] != "t") {
				return fmt.Errorf("thread %s of %s is not stopped yet", task, p.name)
			}
		}
		return nil
	})
}

func resume(t *testing.T, p *proc) {
	t.Helper()
	p.signal(syscall.SIGCONT, 0)
}

// driveJob is the job that holds the library's drive, 0 when none does.
func (s *tapeSystem) driveJob() (uint64, error) {
	var drives []struct {
		Library string `json:"library"`
		wire.DriveInfo
	}
	if err := s.tryJSON(&drives, "drive", "status"); err != nil {
		return 0, err
	}
	if len(drives) != 1 {
		return 0, fmt.Errorf("drives: %+v", drives)
	}
	return drives[0].Job, nil
}

// waitFailed waits for a job to fail with a message that says want.
func (s *tapeSystem) waitFailed(id uint64, want string) wire.JobInfo {
	s.t.Helper()
	var j wire.JobInfo
	poll.Until(s.t, 30*time.Second, func() error {
		j = s.job(id)
		if j.State != "failed" {
			return fmt.Errorf("job %d is %s", id, j.State)
		}
		return nil
	})
	if !strings.Contains(j.Error, want) {
		s.t.Fatalf("job %d failed with %q, want it to say %q", id, j.Error, want)
	}
	return j
}

// waitDriveFree waits for the drive to be given back, which must come
// within a few seconds of the job's failure.
func (s *tapeSystem) waitDriveFree(failed time.Time) {
	s.t.Helper()
	poll.Until(s.t, 15*time.Second, func() error {
		j, err := s.driveJob()
		if err != nil {
			return err
		}
		if j != 0 {
			return fmt.Errorf("the drive is still held by job %d", j)
		}
		return nil
	})
	s.t.Logf("the drive was free %s after the attempt ended", time.Since(failed).Round(100*time.Millisecond))
}

// treeState is the kind and size of everything under a directory.
func treeState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return nil // a temporary file removed meanwhile
		}
		out[p] = fmt.Sprintf("%s %d", info.Mode().Type(), info.Size())
		if info.Mode().IsDir() {
			out[p] = "dir"
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func tempFiles(state map[string]string) []string {
	var out []string
	for p := range state {
		if strings.HasPrefix(filepath.Base(p), ".cairn-restore-") {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// writeRandomIn writes size random bytes at path, making its directory.
func writeRandomIn(t *testing.T, path string, size int, seed uint64) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, path, size, seed)
}

// TestStalledClientsReleaseTheDrive stops clients in the middle of a tape
// restore and of a tape backup, as a hung client would stop (SIGSTOP: it
// neither reads nor answers). In both, the servers end the attempt when
// the agent falls silent (the restore fails, the backup goes back to the
// queue) and order the storage node to stop it: the node gives the drive
// back at once (its own IdleTimeout is 10 minutes) and another client's
// job gets the drive. The restore's client, resumed, writes nothing more
// to its target; the backup's cut-off session leaves nothing behind, and
// its next attempt, once the client is back, restores whole.
func TestStalledClientsReleaseTheDrive(t *testing.T) {
	s := newTapeSystem(t)
	// Many small files: when the client stops, what is on its way to it
	// holds whole files, which it must not write once it resumes.
	src := filepath.Join(t.TempDir(), "src")
	for i := range 3000 {
		writeRandomIn(t, filepath.Join(src, fmt.Sprintf("d%02d", i/100), fmt.Sprintf("f%04d", i)), 8<<10, uint64(i))
	}
	snap := snapshot(t, src)
	var backup wire.JobInfo
	s.json(&backup, "backup", "--client", "web01", "--path", src, "--level", "full", "--pool", "Tape", "--wait")
	if backup.State != "success" {
		t.Fatalf("backup to tape: %+v", backup)
	}

	// A restore whose client stops in the middle.
	to := filepath.Join(t.TempDir(), "stalled")
	var started wire.JobStarted
	s.json(&started, "restore", "--client", "web01", "--to", to, "--wait=false")
	first := filepath.Join(to, src, "d00")
	poll.Until(t, 60*time.Second, func() error {
		if names, _ := os.ReadDir(first); len(names) < 20 {
			return fmt.Errorf("%d files restored in %s", len(names), first)
		}
		return nil
	})
	pause(t, s.agents["web01"])
	before := treeState(t, to)
	j := s.waitFailed(started.JobID, "agent of client web01 stopped answering")
	s.waitDriveFree(j.Ended)

	// Another client's restore gets the drive.
	to2 := filepath.Join(t.TempDir(), "other")
	var j2 wire.JobInfo
	s.json(&j2, "restore", "--client", "web01", "--target-client", "web02", "--to", to2)
	if j2.State != "success" {
		t.Fatalf("the second restore: %+v", j2)
	}
	checkRestored(t, snap, to2, src)

	// The first client, resumed, writes nothing more: the file under way
	// is never renamed into place and goes, and the whole files on their
	// way to it when it stopped are not written.
	resume(t, s.agents["web01"])
	poll.Until(t, 30*time.Second, func() error {
		if !strings.Contains(s.agents["web01"].logText(), "restore failed") {
			return errors.New("the agent has not ended the restore")
		}
		return nil
	})
	after := treeState(t, to)
	if left := tempFiles(after); len(left) > 0 {
		t.Errorf("temporary files left in the target: %v", left)
	}
	// The one entry the agent was applying when it stopped (its records
	// admitted, its rename not yet made) may land when it resumes: a
	// process cannot be stopped between two instructions of its choice.
	// It lands whole; anything more was written after the servers had
	// ended the job.
	var landed []string
	for p, st := range after {
		if before[p] == st {
			continue
		}
		if st == "dir" && before[p] == "" {
			continue // a parent the record under way made for its file
		}
		landed = append(landed, p)
		if len(landed) > 1 {
			t.Errorf("%s is %q after the job failed, was %q (and %s landed too)", p, st, before[p], landed[0])
			continue
		}
		rel, err := filepath.Rel(to, p)
		if err != nil {
			t.Fatal(err)
		}
		want, err := sample.ReadFile(filepath.Join("/", rel)) // its atime is the next backup's
		if err != nil {
			t.Errorf("%s is %q after the job failed, was %q: %v", p, st, before[p], err)
			continue
		}
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s landed after the job failed and is not whole (%d of %d bytes, %v)", p, len(got), len(want), err)
		}
	}
	t.Logf("entries that landed once the client resumed: %v", landed)
	t.Logf("the stopped client had restored %d entries", len(before))
	if j = s.job(started.JobID); j.State != "failed" {
		t.Fatalf("the stalled restore is %s after its client came back", j.State)
	}
	t.Logf("the stalled restore: %s", j.Error)

	// A backup whose client stops sending in the middle.
	src2 := filepath.Join(t.TempDir(), "src2")
	writeRandomIn(t, filepath.Join(src2, "data.bin"), 96<<20, 7)
	var b2 wire.JobStarted
	s.json(&b2, "backup", "--client", "web02", "--path", src2, "--level", "full", "--pool", "Tape")
	poll.Until(t, 60*time.Second, func() error {
		j := s.job(b2.JobID)
		if j.Progress == nil || j.Progress.Bytes < 8<<20 {
			return fmt.Errorf("backup job %s, progress %+v", j.State, j.Progress)
		}
		if dj, err := s.driveJob(); err != nil || dj != b2.JobID {
			return fmt.Errorf("the drive is held by job %d (%v)", dj, err)
		}
		return nil
	})
	pause(t, s.agents["web02"])
	// The servers take the attempt back (the backup waits in the queue for
	// its agent) and stop it on the node.
	var stopped time.Time
	poll.Until(t, 30*time.Second, func() error {
		j := s.job(b2.JobID)
		if j.State != "queued" || j.Attempt < 1 {
			return fmt.Errorf("backup job %d is %s (attempt %d)", b2.JobID, j.State, j.Attempt)
		}
		stopped = time.Now()
		return nil
	})
	s.waitDriveFree(stopped)
	var b3 wire.JobInfo
	s.json(&b3, "backup", "--client", "web01", "--path", src, "--level", "full", "--pool", "Tape", "--wait")
	if b3.State != "success" {
		t.Fatalf("the next backup: %+v", b3)
	}
	// Back, the client runs the backup's next attempt; the cut-off session
	// left nothing behind that counts.
	snap2 := snapshot(t, src2)
	resume(t, s.agents["web02"])
	var b2done wire.JobInfo
	poll.Until(t, 2*time.Minute, func() error {
		b2done = s.job(b2.JobID)
		if b2done.State == "queued" || b2done.State == "running" {
			return fmt.Errorf("backup job %d is %s (attempt %d)", b2.JobID, b2done.State, b2done.Attempt)
		}
		return nil
	})
	if b2done.State != "success" || b2done.Attempt < 2 {
		t.Fatalf("the stopped backup after its client came back: %+v", b2done)
	}
	to4 := filepath.Join(t.TempDir(), "web02")
	s.json(&j2, "restore", "--client", "web02", "--backup", strconv.FormatUint(b2done.BackupID, 10), "--to", to4)
	if j2.State != "success" {
		t.Fatalf("restore of the backup whose first attempt was stopped: %+v", j2)
	}
	checkRestored(t, snap2, to4, src2)
	to3 := filepath.Join(t.TempDir(), "after")
	s.json(&j2, "restore", "--client", "web01", "--backup", strconv.FormatUint(b3.BackupID, 10), "--to", to3)
	if j2.State != "success" {
		t.Fatalf("restore of the backup after the stopped one: %+v", j2)
	}
	checkRestored(t, snap, to3, src)
}
