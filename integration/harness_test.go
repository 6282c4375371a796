package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/natsauth"
	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// cairnBin is the binary under test, built once by TestMain.
var cairnBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cairn-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The binary is no secret: a test runs it as another user too.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cairnBin = filepath.Join(dir, "cairn")
	// No admin command of a test finds a client file of a 'cairn dev' the
	// machine's user may run, and no 'cairn dev' of a test writes one to
	// /run/cairn or ~/.config: a test that wants one sets its own.
	os.Setenv("CAIRN_DEV_FILE", filepath.Join(dir, "no-dev-client.json"))
	if bin := os.Getenv("CAIRN_TEST_BINARY"); bin != "" {
		// Another build, such as the one before a fix, to see a new test
		// fail on it.
		cairnBin = bin
	} else {
		build := exec.Command("go", "build", "-o", cairnBin, "./cmd/cairn")
		build.Dir = ".." // the module root
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build the cairn binary: %v\n%s", err, out)
			return 1
		}
	}
	code := m.Run()
	// Every test stops what it started; a cairn process still running now
	// is a leak, and is killed so it does not outlive the run.
	if leaked := cairnProcesses(); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: cairn processes still running after the tests: %v\n", leaked)
		for _, pid := range leaked {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return 1
	}
	return code
}

// cairnProcesses lists the processes running the binary under test.
func cairnProcesses() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && strings.TrimSuffix(exe, " (deleted)") == cairnBin {
			pids = append(pids, pid)
		}
	}
	return pids
}

// inCI reports whether a missing tool must fail a test rather than skip it.
func inCI() bool { return os.Getenv("CAIRN_CI") != "" }

// need fails (under CI) or skips, loudly, a test that lacks what it needs.
func need(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if inCI() {
		t.Fatalf("this test needs %s: %v", what, err)
	}
	t.Skipf("SKIPPED: this test needs %s (it fails instead under CAIRN_CI=1): %v", what, err)
}

// ---- addresses ----
//
// A port picked free and handed to a process later can be taken meanwhile,
// by another test's listener or by any outgoing connection's local port,
// and the process dies on "address already in use" long before the test
// notices. So a role listens on port 0 wherever nothing needs its port
// before it starts or after it restarts (every metrics endpoint: anyAddr),
// and the harness reads the port it got from the line the role logs
// (proc.boundAddr).
//
// Raft, NATS cluster and storage node data addresses cannot be port 0:
// the group's configuration and the peers must know a Raft or NATS address
// before the process starts, and all three must stay the same across a
// restart (agents and servers hold a storage node's data address; with a
// new port per restart the jobs dispatched meanwhile dial a closed port).
// Those come from freeport.LoopbackAddr, from below the kernel's ephemeral
// port range, which neither outgoing connections nor port-0 listeners use.

// anyAddr asks the kernel for a port when the process binds.
const anyAddr = "127.0.0.1:0"

// ---- processes ----

// proc is a cairn process running in its own process group, its output in
// a log file.
type proc struct {
	t       *testing.T
	name    string
	bin     string // the program; the cairn binary under test when empty
	args    []string
	env     []string // its whole environment; this process's when nil
	dir     string   // its working directory; this process's when empty
	logPath string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	err      error // how the last run ended
	ended    bool  // the test signalled the last run to end
	logStart int64 // where the last run's lines start in the log file
}

// logs remembers every log file of a test, to print when it fails.
type logs struct {
	mu    sync.Mutex
	files []string
}

func (l *logs) add(path string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.files {
		if f == path {
			return
		}
	}
	l.files = append(l.files, path)
}

// printOnFailure registers a cleanup that prints the logs of a failed test.
// Register it before anything whose cleanup must run first is set up: it
// runs after the processes were stopped, so their last words are in.
func (l *logs) printOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, f := range l.files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Logf("log %s: %v", f, err)
				continue
			}
			const max = 24 << 10
			if len(data) > max {
				data = append([]byte("...\n"), data[len(data)-max:]...)
			}
			t.Logf("==== %s ====\n%s", filepath.Base(f), data)
		}
	})
}

func newProc(t *testing.T, l *logs, logDir, name string, args ...string) *proc {
	p := &proc{t: t, name: name, args: args, logPath: filepath.Join(logDir, name+".log")}
	l.add(p.logPath)
	return p
}

// start runs the process; its log file is appended to across restarts.
func (p *proc) start() {
	p.t.Helper()
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(f, "---- %s: %s %s\n", time.Now().Format(time.RFC3339Nano), p.name, strings.Join(p.args, " "))
	logStart, _ := f.Seek(0, io.SeekEnd)
	bin := p.bin
	if bin == "" {
		bin = cairnBin
	}
	cmd := exec.Command(bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env, cmd.Dir = p.env, p.dir
	// Its own process group, so a stop reaches everything it started; and
	// killed with the test binary should that die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.err, p.ended, p.logStart = cmd, done, nil, false, logStart
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
}

// alive reports whether the process is still running.
func (p *proc) alive() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// exitErr is how the process ended; nil while it runs or after exit 0.
func (p *proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// crashed says how the last run ended when it ended without the test
// stopping or killing it, with the end of its log; nil while it runs, when
// the test ended it, or before it started.
func (p *proc) crashed() error {
	p.mu.Lock()
	done, ended, err := p.done, p.ended, p.err
	p.mu.Unlock()
	if done == nil || ended {
		return nil
	}
	select {
	case <-done:
	default:
		return nil
	}
	if err == nil {
		err = errors.New("exit status 0")
	}
	return fmt.Errorf("%s exited by itself (%v); the end of its log:\n%s", p.name, err, p.logTail(4<<10))
}

// failIfCrashed fails the test at once when one of procs crashed: waiting
// any longer for a dead role to be ready only hides why.
func failIfCrashed(t testing.TB, procs ...*proc) {
	t.Helper()
	for _, p := range procs {
		if err := p.crashed(); err != nil {
			t.Fatal(err)
		}
	}
}

// logTail is the last n bytes of what the process logged.
func (p *proc) logTail(n int) string {
	text := p.logText()
	if len(text) > n {
		text = "...\n" + text[len(text)-n:]
	}
	return text
}

// boundAddr waits for the address the process's last run logged on its
// line with msg="<msg>" under key, for a listener it bound on port 0. An
// "http://" address is given as host:port.
func (p *proc) boundAddr(msg, key string) string {
	p.t.Helper()
	var addr string
	poll.Until(p.t, 60*time.Second, func() error {
		failIfCrashed(p.t, p)
		p.mu.Lock()
		from := p.logStart
		p.mu.Unlock()
		text := p.logText()
		if int64(len(text)) < from {
			return fmt.Errorf("%s's log is shorter than its last start", p.name)
		}
		for _, line := range strings.Split(text[from:], "\n") {
			if !strings.Contains(line, `msg="`+msg+`"`) {
				continue
			}
			for _, f := range strings.Fields(line) {
				if v, ok := strings.CutPrefix(f, key+"="); ok {
					v = strings.TrimPrefix(v, "http://")
					v, _, _ = strings.Cut(v, "/")
					addr = v
					return nil
				}
			}
		}
		return fmt.Errorf("%s has not logged %s yet", p.name, msg)
	})
	return addr
}

// metricsAddr is where the process serves /metrics now.
func (p *proc) metricsAddr() string {
	p.t.Helper()
	return p.boundAddr("serving metrics", "addr")
}

// signal sends sig to the process group and waits up to timeout for the
// process to end. It reports whether it ended.
func (p *proc) signal(sig syscall.Signal, timeout time.Duration) bool {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.ended = true
	p.mu.Unlock()
	if cmd == nil {
		return true
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// stop ends a running process gracefully (SIGTERM; SIGKILL after 15s) and
// checks that nothing of its process group is left. A process that does not
// exit 0 on SIGTERM, or that had already exited by itself, fails the test:
// a role must shut down cleanly, and only when told.
func (p *proc) stop() {
	p.t.Helper()
	if !p.alive() {
		if err := p.crashed(); err != nil {
			p.t.Error(err)
		}
		p.checkGroupGone()
		return
	}
	if !p.signal(syscall.SIGTERM, 15*time.Second) {
		p.t.Errorf("%s did not stop within 15s of SIGTERM; killing it", p.name)
		p.signal(syscall.SIGKILL, 10*time.Second)
	} else if err := p.exitErr(); err != nil {
		p.t.Errorf("%s exited with %v on SIGTERM, want exit 0", p.name, err)
	}
	p.checkGroupGone()
}

// kill ends the process with SIGKILL, as a crash or the OOM killer would.
func (p *proc) kill() {
	p.t.Helper()
	if !p.signal(syscall.SIGKILL, 10*time.Second) {
		p.t.Fatalf("%s did not die of SIGKILL within 10s", p.name)
	}
	p.checkGroupGone()
}

func (p *proc) checkGroupGone() {
	p.t.Helper()
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	pgid := cmd.Process.Pid
	poll.Until(p.t, 10*time.Second, func() error {
		if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			return fmt.Errorf("process group %d of %s still has processes (kill 0: %v)", pgid, p.name, err)
		}
		return nil
	})
}

// logText is what the process logged so far.
func (p *proc) logText() string {
	data, _ := os.ReadFile(p.logPath)
	return string(data)
}

// ---- the system ----

// stackOpts shape a system.
type stackOpts struct {
	// poolDir is the Default pool's directory; a new one when empty.
	poolDir string
	// poolOpts follow the pool's directory in its --pool flag
	// (",volume-size=6m").
	poolOpts string
	// agentConfig adds fields to the agent's config file
	// (max_bytes_per_second, to make a backup last).
	agentConfig map[string]any
	// nodeArgs are more flags for the storage node.
	nodeArgs []string
	// nodeConfig adds fields to the storage node's config file
	// (sftp_pools, which have no flag).
	nodeConfig map[string]any
	// logFormat is the roles' log format: the server's and the agent's
	// --log-format, the storage node's config file's log_format.
	logFormat string
	// serverData is the server's data directory; a new one when empty.
	serverData string
	// serverConfig, when set, is the server's config file.
	serverConfig string
}

// stack is one Cairn system: an embedded NATS server in the test process
// and a server, a storage node and an agent as separate processes.
type stack struct {
	t    *testing.T
	dir  string
	logs *logs
	nats *natsd.Server
	url  string
	// adminFlags give an admin command the stack's admin credential.
	adminFlags []string
	// nkeys holds each role's nkey seed (natsauth.SeedFileName).
	nkeys  string
	client string
	node   string
	pool   string

	poolDir, serverData, nodeData string
	agentCfg                      string // the agent's config file
	raftAddr                      string

	server, storage, agent *proc
	procs                  []*proc // every process of the system, for waitReady
}

// newStack starts a system and waits until the storage node and the agent
// have registered. Everything it starts is stopped when the test ends.
func newStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	dir := t.TempDir()
	s := &stack{
		t: t, dir: dir, logs: &logs{}, client: "web01", node: "sn1", pool: "Default",
		serverData: filepath.Join(dir, "server"), nodeData: filepath.Join(dir, "node"),
		poolDir: o.poolDir, raftAddr: freeport.LoopbackAddr(t),
	}
	if s.poolDir == "" {
		s.poolDir = filepath.Join(dir, "pool")
	}
	if o.serverData != "" {
		s.serverData = o.serverData
	}
	s.logs.printOnFailure(t)
	s.startNATS(natsRole{wire.KindServer, "s1"}, natsRole{wire.KindNode, s.node}, natsRole{wire.KindAgent, s.client}, natsRole{wire.KindAdmin, "admin"})

	// Heartbeats every 300ms and progress every 100ms, so that liveness and
	// progress show within a test's patience.
	nodeFields := map[string]any{"heartbeat_interval": int64(300 * time.Millisecond)}
	for k, v := range o.nodeConfig {
		nodeFields[k] = v
	}
	var logFlags []string
	if o.logFormat != "" {
		nodeFields["log_format"] = o.logFormat
		logFlags = []string{"--log-format", o.logFormat}
	}
	nodeCfg := writeJSON(t, filepath.Join(dir, "storagenode.json"), nodeFields)
	agentFields := map[string]any{
		"heartbeat_interval": int64(300 * time.Millisecond), "progress_interval": int64(100 * time.Millisecond),
	}
	for k, v := range o.agentConfig {
		agentFields[k] = v
	}
	s.agentCfg = writeJSON(t, filepath.Join(dir, "agent.json"), agentFields)
	agentCfg := s.agentCfg
	serverArgs := []string{"server", "--bootstrap", "--nats", s.url, "--nats-nkey", s.seed(wire.KindServer, "s1"), "--name", "s1", "--data", s.serverData,
		"--raft-addr", s.raftAddr, "--liveness-timeout", "5s", "--metrics-addr", anyAddr, "--log-level", "debug"}
	if o.serverConfig != "" {
		serverArgs = append(serverArgs, "--config", o.serverConfig)
	}
	serverArgs = append(serverArgs, logFlags...)
	s.server = newProc(t, s.logs, dir, "server", serverArgs...)
	s.storage = newProc(t, s.logs, dir, "storagenode", append([]string{"storagenode", "--nats", s.url, "--nats-nkey", s.seed(wire.KindNode, s.node), "--config", nodeCfg, "--name", s.node,
		"--data", s.nodeData, "--data-addr", freeport.LoopbackAddr(t), "--pool", s.pool + "=" + s.poolDir + o.poolOpts, "--metrics-addr", anyAddr}, o.nodeArgs...)...)
	s.agent = newProc(t, s.logs, dir, "agent", "agent", "--nats", s.url, "--nats-nkey", s.seed(wire.KindAgent, s.client), "--config", agentCfg, "--name", s.client,
		"--metrics-addr", anyAddr)
	s.agent.args = append(s.agent.args, logFlags...)
	t.Cleanup(func() {
		// Reverse order of start; each stop checks its process group is gone.
		for _, p := range []*proc{s.agent, s.storage, s.server} {
			p.stop()
		}
	})
	s.procs = []*proc{s.server, s.storage, s.agent}
	s.server.start()
	s.storage.start()
	s.agent.start()
	s.waitReady()
	return s
}

// natsRole is one role's user of the stack's NATS server.
type natsRole struct{ kind, name string }

// startNATS starts the stack's NATS server, logging to nats.log: every
// role with its own nkey user and its role's permissions, as in 'cairn
// dev' and a secured deployment (an admin is a key admin too); nothing
// gets in anonymously. The admin flags are the last admin's.
func (s *stack) startNATS(roles ...natsRole) {
	t := s.t
	t.Helper()
	natsLog := filepath.Join(s.dir, "nats.log")
	s.logs.add(natsLog)
	lf, err := os.Create(natsLog)
	if err != nil {
		t.Fatal(err)
	}
	s.nkeys = filepath.Join(s.dir, "nkeys")
	var users []natsd.User
	for _, r := range roles {
		user, err := natsauth.LoadOrCreateUser(s.nkeys, r.kind, r.name)
		if err != nil {
			t.Fatal(err)
		}
		user.KeyAdmin = r.kind == wire.KindAdmin
		users = append(users, user.Embedded())
		if r.kind == wire.KindAdmin {
			s.adminFlags = []string{"--nats-nkey", s.seed(wire.KindAdmin, r.name)}
		}
	}
	ns, err := natsd.Start(natsd.Config{Users: users}, slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		lf.Close()
		t.Fatal(err)
	}
	s.nats, s.url = ns, ns.URL()
	t.Cleanup(func() {
		ns.Shutdown()
		lf.Close()
	})
}

// seed is the nkey seed file of a role of the stack.
func (s *stack) seed(kind, name string) string {
	return filepath.Join(s.nkeys, natsauth.SeedFileName(kind, name))
}

// connect opens a raw NATS connection as a role of the stack, with that
// role's own credential and inbox.
func (s *stack) connect(kind, name string) *nats.Conn {
	s.t.Helper()
	opts, err := wire.ConnectOptions("integration-"+kind+"-"+name, wire.NATSAuth{NkeyFile: s.seed(kind, name)}, wire.Inbox(kind, name))
	if err != nil {
		s.t.Fatal(err)
	}
	nc, err := nats.Connect(s.url, opts...)
	if err != nil {
		s.t.Fatalf("connect to NATS as %s %s: %v", kind, name, err)
	}
	s.t.Cleanup(nc.Close)
	return nc
}

func writeJSON(t testing.TB, path string, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitReady waits until the server answers as the Raft leader, and the
// agent and the pool's storage node are online.
func (s *stack) waitReady() {
	s.t.Helper()
	poll.Until(s.t, 60*time.Second, func() error {
		failIfCrashed(s.t, s.procs...)
		return rolesReady(s.tryJSON, []string{s.client}, s.pool)
	})
}

// rolesReady says what is not ready yet, as the command line answers
// through get: the server does not lead, one of clients is not online, or
// no storage node of pool ("": of any pool) is.
func rolesReady(get func(v any, args ...string) error, clients []string, pool string) error {
	var st wire.StatusResp
	if err := get(&st, "status"); err != nil {
		return err
	}
	if !st.IsLeader {
		return fmt.Errorf("server %s is %s, not leader", st.Server, st.RaftState)
	}
	var listed []wire.ClientInfo
	if err := get(&listed, "client", "list"); err != nil {
		return err
	}
	for _, name := range clients {
		if !slices.ContainsFunc(listed, func(c wire.ClientInfo) bool { return c.Name == name && c.Online }) {
			return fmt.Errorf("client %s is not online: %+v", name, listed)
		}
	}
	var pools []wire.PoolInfo
	if err := get(&pools, "pool", "list"); err != nil {
		return err
	}
	for _, p := range pools {
		for _, n := range p.Nodes {
			if (pool == "" || p.Name == pool) && n.Online {
				return nil
			}
		}
	}
	return fmt.Errorf("pool %q has no online storage node: %+v", pool, pools)
}

// ---- the command line ----

// result is what one cairn command did.
type result struct {
	args           []string
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("cairn %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// output is stdout and stderr together.
func (r result) output() string { return r.stdout + r.stderr }

// runCairn runs one admin command against NATS url, in its own process group.
func runCairn(t testing.TB, url string, args ...string) result {
	t.Helper()
	return runCairnAs(t, nil, nil, append([]string{"--nats", url}, args...)...)
}

// runCairnAs runs one cairn command line as it is given, in its own process
// group, as the user cred names (this process's when nil), with env as its
// whole environment (this process's when nil).
func runCairnAs(t testing.TB, cred *syscall.Credential, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cairnBin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := result{args: args, stdout: out.String(), stderr: errOut.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run cairn %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("cairn %s did not end within 3 minutes", strings.Join(args, " "))
	}
	return r
}

// cairn runs an admin command against the stack, with its admin
// credential.
func (s *stack) cairn(args ...string) result {
	s.t.Helper()
	return runCairn(s.t, s.url, append(slices.Clone(s.adminFlags), args...)...)
}

// ok runs a command that must succeed.
func (s *stack) ok(args ...string) result {
	s.t.Helper()
	r := s.cairn(args...)
	if r.code != 0 {
		s.t.Fatalf("expected success:\n%s", r)
	}
	return r
}

// fails runs a command that must fail with exit code code, print an error
// and a hint, and say every one of want (case-insensitive).
func (s *stack) fails(code int, want []string, args ...string) result {
	s.t.Helper()
	r := s.cairn(args...)
	checkFailure(s.t, r, code, want...)
	return r
}

func checkFailure(t testing.TB, r result, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("want exit %d:\n%s", code, r)
		return
	}
	if !hasLinePrefix(r.stderr, "error: ") || !hasLinePrefix(r.stderr, "hint: ") {
		t.Errorf("want an 'error:' and a 'hint:' line on stderr:\n%s", r)
	}
	for _, w := range want {
		if !strings.Contains(strings.ToLower(r.output()), strings.ToLower(w)) {
			t.Errorf("want the output to say %q:\n%s", w, r)
		}
	}
}

func hasLinePrefix(s, prefix string) bool {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) && len(strings.TrimSpace(l)) > len(strings.TrimSpace(prefix)) {
			return true
		}
	}
	return false
}

// tryJSON runs a command with --json and decodes its output.
func (s *stack) tryJSON(v any, args ...string) error {
	return s.cairn(append(args, "--json")...).decodeJSON(v)
}

// decodeJSON decodes what the command, run with --json, printed into v, or
// says why it cannot: the command failed, or printed something else.
func (r result) decodeJSON(v any) error {
	if r.code != 0 {
		return fmt.Errorf("%s", r)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		return fmt.Errorf("decode the output of cairn %s: %v\n%s", strings.Join(r.args, " "), err, r.stdout)
	}
	return nil
}

// json runs a command that must succeed with --json and decodes its output.
func (s *stack) json(v any, args ...string) {
	s.t.Helper()
	if err := s.tryJSON(v, args...); err != nil {
		s.t.Fatal(err)
	}
}

// backup runs a backup that must succeed and returns its job.
func (s *stack) backup(level string, paths ...string) wire.JobInfo {
	s.t.Helper()
	args := []string{"backup", "--client", s.client, "--level", level, "--wait"}
	for _, p := range paths {
		args = append(args, "--path", p)
	}
	var j wire.JobInfo
	s.json(&j, args...)
	if j.State != "success" || j.BackupID == 0 {
		s.t.Fatalf("backup job %d ended %s (backup %d): %s", j.ID, j.State, j.BackupID, j.Error)
	}
	return j
}

// restore runs a restore that must succeed; extra are --backup, --at or
// paths.
func (s *stack) restore(to string, extra ...string) wire.JobInfo {
	s.t.Helper()
	var j wire.JobInfo
	s.json(&j, append([]string{"restore", "--client", s.client, "--to", to}, extra...)...)
	if j.State != "success" {
		s.t.Fatalf("restore job %d ended %s: %s", j.ID, j.State, j.Error)
	}
	return j
}

func (s *stack) job(id uint64) wire.JobInfo {
	s.t.Helper()
	var j wire.JobInfo
	s.json(&j, "job", "show", strconv.FormatUint(id, 10))
	return j
}

// volumes lists the catalog's volumes.
func (s *stack) volumes() []wire.VolumeInfo {
	s.t.Helper()
	var vs []wire.VolumeInfo
	s.json(&vs, "volume", "list")
	return vs
}

// metrics fetches a role's /metrics page.
func (s *stack) metricsText(role string) (string, error) {
	p := map[string]*proc{"server": s.server, "storagenode": s.storage, "agent": s.agent}[role]
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + p.metricsAddr() + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics of %s: %s", role, resp.Status)
	}
	return string(data), err
}

// ---- trees ----

// smallSpec is a sample tree that keeps a test fast: 40 text and 20 random
// files up to 64 KiB, a 32 MiB sparse image (192 KiB of data), and what
// Generate always adds (a 4 MiB random file, links, odd names, a fifo).
func smallSpec(seed uint64) sample.Spec {
	return sample.Spec{TextFiles: 40, RandomFiles: 20, MaxFileSize: 64 << 10, SparseSize: 32 << 20, Seed: seed}
}

// makeTree generates a sample tree in a new directory and returns its path.
func makeTree(t testing.TB, spec sample.Spec) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := sample.Generate(src, spec); err != nil {
		t.Fatal(err)
	}
	return src
}

func snapshot(t testing.TB, root string) *sample.Manifest {
	t.Helper()
	m, err := sample.Snapshot(root)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkRestored compares the tree restored under to (which holds it under
// its original absolute path src) with want.
func checkRestored(t testing.TB, want *sample.Manifest, to, src string) {
	t.Helper()
	got := snapshot(t, filepath.Join(to, src))
	if diffs := sample.Compare(want, got); len(diffs) > 0 {
		t.Fatalf("the tree restored in %s differs from the original (%d differences):\n  %s", to, len(diffs), strings.Join(diffs, "\n  "))
	}
}

// emptyOrMissing checks that a restore target holds nothing.
func emptyOrMissing(t testing.TB, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) > 0 {
		var names []string
		filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error {
			names = append(names, p)
			return nil
		})
		t.Fatalf("%s should be empty or missing, it holds: %v", dir, names)
	}
}

// The harness tells a role that crashed from one the test ended: the first
// fails the test at once with the role's last words, the second is not an
// error. And a role on port 0 reports the port it got.
func TestHarnessTellsACrashFromAStop(t *testing.T) {
	l := &logs{}
	dir := t.TempDir()
	bad := newProc(t, l, dir, "bad", "server", "--data", filepath.Join(dir, "srv"), "--raft-addr", freeport.LoopbackAddr(t), "--no-such-flag")
	bad.start()
	poll.Until(t, 30*time.Second, func() error {
		if bad.alive() {
			return errors.New("the server with a bad flag still runs")
		}
		return nil
	})
	err := bad.crashed()
	if err == nil || !strings.Contains(err.Error(), "exited by itself (exit status") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("crashed() = %v, want the exit status and the log's end", err)
	}

	nkeys := filepath.Join(dir, "nkeys")
	user, err := natsauth.LoadOrCreateUser(nkeys, wire.KindAgent, "web01")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsd.Start(natsd.Config{Users: []natsd.User{user.Embedded()}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	good := newProc(t, l, dir, "good", "agent", "--nats", ns.URL(), "--nats-nkey", filepath.Join(nkeys, natsauth.SeedFileName(wire.KindAgent, "web01")),
		"--name", "web01", "--metrics-addr", anyAddr)
	good.start()
	addr := good.metricsAddr()
	if _, port, _ := net.SplitHostPort(addr); port == "" || port == "0" {
		t.Fatalf("metrics address %q", addr)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics on the reported address: %v", err)
	}
	resp.Body.Close()
	good.stop()
	if err := good.crashed(); err != nil {
		t.Fatalf("a role the test stopped: %v", err)
	}
	good.start() // a new run binds a new port, and reports it
	if again := good.metricsAddr(); again == "" {
		t.Fatal("no metrics address after a restart")
	}
	good.stop()
}
