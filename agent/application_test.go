package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/configfile"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

func TestSplitCommand(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []string
		bad  string
	}{
		{line: "/usr/bin/pg_dump mydb", want: []string{"/usr/bin/pg_dump", "mydb"}},
		{line: "  /bin/x\t a  b ", want: []string{"/bin/x", "a", "b"}},
		{line: `/bin/x 'a b' "c d" e\ f`, want: []string{"/bin/x", "a b", "c d", "e f"}},
		{line: `/bin/x 'it''s' "say \"hi\" \$5" ''`, want: []string{"/bin/x", "its", `say "hi" $5`, ""}},
		{line: `/bin/x '$HOME|;&'`, want: []string{"/bin/x", "$HOME|;&"}},
		{line: "/bin/x a | gzip", bad: `'|'`},
		{line: "/bin/x > /tmp/f", bad: `'>'`},
		{line: "/bin/x $HOME", bad: `'$'`},
		{line: `/bin/x "$HOME"`, bad: "expanded"},
		{line: "/bin/x *.sql", bad: `'*'`},
		{line: "/bin/x; rm -rf /", bad: `';'`},
		{line: "/bin/x 'open", bad: "single quote"},
		{line: `/bin/x "open`, bad: "double quote"},
		{line: `/bin/x \`, bad: "backslash"},
		{line: "   ", bad: "empty"},
	} {
		got, err := SplitCommand(tc.line)
		if tc.bad != "" {
			if !errors.Is(err, ErrCommandLine) || !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("%q: got %q, %v; want an error saying %s", tc.line, got, err, tc.bad)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %q, %v; want %q", tc.line, got, err, tc.want)
		}
	}
}

func TestCommandPolicy(t *testing.T) {
	p := CommandPolicy{Dirs: []string{"/etc/cairn/scripts/"}, Commands: []string{"/usr/bin/pg_dump -Fc 'my db'", "/usr/bin/pg_dump a | gzip"}}
	for _, tc := range []struct {
		line    string
		want    []string
		setting string
	}{
		{line: "/etc/cairn/scripts/freeze --all", want: []string{"/etc/cairn/scripts/freeze", "--all"}},
		{line: `/usr/bin/pg_dump -Fc "my db"`, want: []string{"/usr/bin/pg_dump", "-Fc", "my db"}},
		{line: "/usr/bin/pg_dump -Fc other", setting: settingDirs},
		{line: "/etc/cairn/scripts/sub/x", setting: settingDirs},
		{line: "/etc/cairn/scripts/../../../bin/sh", setting: settingDirs},
		{line: "freeze", setting: settingDirs},
		{line: "/usr/bin/pg_dump a | gzip", setting: settingShell},
	} {
		got, err := p.Argv(tc.line)
		if tc.setting != "" {
			var re *CommandRefusedError
			if !errors.As(err, &re) || re.Setting != tc.setting {
				t.Errorf("%q: got %q, %v; want a refusal naming %s", tc.line, got, err, tc.setting)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %q, %v; want %q", tc.line, got, err, tc.want)
		}
	}
	var re *CommandRefusedError
	if _, err := (CommandPolicy{}).Argv("/bin/true"); !errors.As(err, &re) || !strings.Contains(re.Reason, "allows no command") {
		t.Errorf("the zero policy: %v", err)
	}
	p.AllowShell = true
	if got, err := p.Argv("/usr/bin/pg_dump a | gzip"); err != nil || !slices.Equal(got, []string{"/bin/sh", "-c", "/usr/bin/pg_dump a | gzip"}) {
		t.Errorf("a listed shell line with shells allowed: %q %v", got, err)
	}
	if _, err := p.Argv("/usr/bin/pg_dump b | gzip"); !errors.As(err, &re) {
		t.Errorf("an unlisted shell line with shells allowed: %v", err)
	}
	if err := (CommandPolicy{Commands: []string{"/bin/a | b"}}).Validate(); err == nil || !strings.Contains(err.Error(), settingShell) {
		t.Errorf("a shell line without shells: %v", err)
	}
	if err := (CommandPolicy{Dirs: []string{"scripts"}}).Validate(); err == nil || !strings.Contains(err.Error(), settingDirs) {
		t.Errorf("a relative directory: %v", err)
	}
}

// script writes an executable shell script into dir and returns its path.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// groupAlive reports whether a process of group pgid still runs (a zombie
// that nobody reaped yet is not running).
func groupAlive(pgid int) bool {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			return true
		}
	}
	return false
}

// A step past its timeout is stopped with what it started, even when it
// ignores SIGTERM: SIGKILL follows after the grace.
func TestStepTimeoutKillsAGroupThatIgnoresSIGTERM(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	s := script(t, dir, "stubborn", fmt.Sprintf("trap '' TERM\necho $$ > %s\necho started\nsleep 60 &\nwait\nwait\n", pidFile))
	t0 := time.Now()
	_, err := runCommand(context.Background(), CommandPolicy{Dirs: []string{dir}}, 300*time.Millisecond, commandRun{what: "before-step 1", line: s, timeout: 300 * time.Millisecond})
	took := time.Since(t0)
	var ce *CommandError
	if !errors.As(err, &ce) || ce.TimedOut != 300*time.Millisecond || !slices.Contains(ce.Output, "started") {
		t.Fatalf("got %v, want a timeout with the output", err)
	}
	if !strings.Contains(err.Error(), "ran past its timeout of 300ms") {
		t.Fatalf("message: %v", err)
	}
	if took > 5*time.Second {
		t.Fatalf("took %s to stop", took)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pgid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	poll.Until(t, 5*time.Second, func() error {
		if groupAlive(pgid) {
			return fmt.Errorf("process group %d still runs", pgid)
		}
		return nil
	})
}

func TestCommandExitStatusAndSignal(t *testing.T) {
	dir := t.TempDir()
	policy := CommandPolicy{Dirs: []string{dir}}
	_, err := runCommand(context.Background(), policy, time.Second, commandRun{what: "x", line: script(t, dir, "three", "echo bad thing >&2\nexit 3\n")})
	var ce *CommandError
	if !errors.As(err, &ce) || ce.Status != 3 || !slices.Equal(ce.Output, []string{"bad thing"}) {
		t.Fatalf("exit 3: %#v", err)
	}
	_, err = runCommand(context.Background(), policy, time.Second, commandRun{what: "x", line: script(t, dir, "killed", "kill -SEGV $$\n")})
	if !errors.As(err, &ce) || ce.Signal != "SEGV" {
		t.Fatalf("killed: %#v", err)
	}
	res, err := runCommand(context.Background(), policy, time.Second, commandRun{what: "x", line: script(t, dir, "env", "echo $CAIRN_X\n"), env: []string{"CAIRN_X=y z"}})
	if err != nil || !slices.Equal(res.output, []string{"y z"}) {
		t.Fatalf("env: %v %v", res.output, err)
	}
}

// A command that writes without end fills neither the job log nor the
// agent's memory: its last lines are kept, cut to size, and it says so.
func TestCommandOutputIsBounded(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("x", 2000)
	s := script(t, dir, "chatty", fmt.Sprintf("i=0\nwhile [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done\necho %s\nprintf 'no newline at the end \\033[31m'\n", long))
	res, err := runCommand(context.Background(), CommandPolicy{Dirs: []string{dir}}, time.Second, commandRun{what: "x", line: s})
	if err != nil {
		t.Fatal(err)
	}
	if !res.cut || len(res.output) != maxOutputLines {
		t.Fatalf("cut %v, %d lines", res.cut, len(res.output))
	}
	if res.output[0] != "line 19982" || res.output[18] != long[:maxOutputLineSize]+"..." || res.output[19] != `no newline at the end \x1b[31m` {
		t.Fatalf("lines kept: %q ... %q", res.output[0], res.output[18:])
	}
}

// backupNode is a storage node's side of one backup stream: it accepts,
// keeps the records, and confirms the end, or sees the stream broken off.
type backupNode struct {
	addr, fp string
	records  bytes.Buffer
	end      *dataplane.End
	done     chan struct{}
	accepted bool
}

func startBackupNode(t *testing.T) *backupNode { return startBackupNodeIdle(t, 0) }

// startBackupNodeIdle starts a node that ends a stream whose agent sends
// nothing, not even a keepalive, for idle (0: never).
func startBackupNodeIdle(t *testing.T, idle time.Duration) *backupNode {
	l, fp := listenNode(t)
	n := &backupNode{addr: l.Addr().String(), fp: fp, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		conn := dataplane.NewConn(c)
		defer conn.Close()
		if _, _, err := conn.ReadFrame(); err != nil {
			return
		}
		n.accepted = true
		_ = conn.WriteJSON(dataplane.FrameAccept, dataplane.Accept{JobID: 7, Node: "sn1"})
		conn.SetTimeout(idle)
		for {
			typ, p, err := conn.ReadFrame()
			if err != nil {
				return
			}
			switch typ {
			case dataplane.FrameRecords:
				n.records.Write(p)
			case dataplane.FrameEnd:
				var end dataplane.End
				if dataplane.DecodeJSON(typ, p, dataplane.FrameEnd, &end) == nil {
					n.end = &end
				}
				_ = conn.WriteJSON(dataplane.FrameResult, dataplane.Result{JobID: 7})
				return
			}
		}
	}()
	return n
}

// runOrder sends a backup order with app to the agent and returns its
// report once the node's side has ended.
func runOrder(t *testing.T, nc *nats.Conn, srv *fakeServers, node *backupNode, paths []string, app wire.Application) wire.JobDoneReq {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := wire.Request(ctx, nc, wire.AgentSubject("web", wire.OpRunBackup), wire.RunBackup{
		JobID: 7, Attempt: 1, Level: "full", Paths: fileindex.Paths(paths), Application: app,
		Node: wire.DataEndpoint{Node: "sn1", Addr: node.addr, CertSHA256: node.fp}, Ticket: "t",
	}, nil); err != nil {
		t.Fatal(err)
	}
	return srv.report(t, 20*time.Second)
}

// A backup runs its before-step, stores a command source's output as a
// file among the walked ones, in index order, runs its after-step with
// the outcome, and the job log gets what they said.
func TestBackupRunsStepsAndSources(t *testing.T) {
	scripts := t.TempDir()
	out := t.TempDir()
	tree := filepath.Join(t.TempDir(), "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "f"), []byte("walked"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := script(t, scripts, "before", fmt.Sprintf("echo \"$CAIRN_STEP $CAIRN_JOB_ID $CAIRN_JOB_LEVEL $CAIRN_CLIENT\" > %s/before\necho frozen\n", out))
	after := script(t, scripts, "after", fmt.Sprintf("echo \"$CAIRN_STEP $CAIRN_JOB_STATUS\" > %s/after\n", out))
	dump := script(t, scripts, "dump", "echo \"-- dump of $1\"\nhead -c 3000000 /dev/zero | tr '\\0' 'd'\necho\necho 'dump done' >&2\n")
	// Sorted before and after the walked tree, so the merge places both.
	first, last := "/"+"0-first.sql", filepath.Join(tree+"~", "z.sql")
	_, nc, srv := startAgent(t, []string{scripts}, "")
	node := startBackupNode(t)
	done := runOrder(t, nc, srv, node, []string{tree}, wire.Application{
		Before:  []wire.AppStep{{Command: before + " --now", FailJob: true}},
		After:   []wire.AppStep{{Command: after}},
		Sources: []wire.CommandSource{{Path: fileindex.Path(last), Command: dump + " 'my db'"}, {Path: fileindex.Path(first), Command: dump + " one"}},
	})
	<-node.done
	if done.Error != nil {
		t.Fatalf("backup failed: %v", done.Error)
	}
	for f, want := range map[string]string{"before": "before 7 full web\n", "after": "after success\n"} {
		if b, err := os.ReadFile(filepath.Join(out, f)); err != nil || string(b) != want {
			t.Fatalf("%s-step saw %q, %v; want %q", f, b, err, want)
		}
	}
	notes := strings.Join(node.end.Notes, "\n")
	for _, want := range []string{"before-step 1: frozen", "command source " + last + " (stderr): dump done", "after-step 1 "} {
		if !strings.Contains(notes, want) {
			t.Fatalf("job log notes lack %q:\n%s", want, notes)
		}
	}
	// The stream restores like any other, in index order.
	root := filepath.Join(t.TempDir(), "r")
	r, err := NewRestorer(RestoreOptions{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for b := node.records.Bytes(); len(b) > 0; {
		typ, body, n, err := volume.ParseRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		if typ == volume.RecFileHeader {
			e, _ := fileindex.DecodeEntry(body)
			paths = append(paths, e.Path)
		}
		b = b[n:]
	}
	if !slices.IsSortedFunc(paths, fileindex.Compare) || paths[0] != first || paths[len(paths)-1] != last {
		t.Fatalf("entries %q", paths)
	}
	if err := r.Records(node.records.Bytes()); err != nil {
		t.Fatal(err)
	}
	if st, err := r.Finish(); err != nil || st.DamagedCount != 0 {
		t.Fatalf("restore: %+v %v", st, err)
	}
	got, err := os.ReadFile(filepath.Join(root, last))
	if err != nil || len(got) != len("-- dump of my db\n")+3000001 || !strings.HasPrefix(string(got), "-- dump of my db\nddd") {
		t.Fatalf("restored source: %d bytes, %v", len(got), err)
	}
	st, err := os.Stat(filepath.Join(root, first))
	if err != nil || st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("restored source's metadata: %v %v", st.Mode(), err)
	}
}

// A command source that exits non-zero fails the backup before its end is
// sent (the node rolls the session back), the report gives its status and
// the end of its stderr, and the after-step runs all the same, told so.
func TestFailedSourceFailsTheBackupAndAfterStepsRun(t *testing.T) {
	scripts := t.TempDir()
	out := t.TempDir()
	after := script(t, scripts, "after", fmt.Sprintf("echo \"$CAIRN_JOB_STATUS: $CAIRN_JOB_ERROR\" > %s/after\nexit 1\n", out))
	dump := script(t, scripts, "dump", "echo partial\necho 'pg_dump: error: connection refused' >&2\nexit 3\n")
	_, nc, srv := startAgent(t, []string{scripts}, "")
	node := startBackupNode(t)
	done := runOrder(t, nc, srv, node, []string{scripts}, wire.Application{
		After:   []wire.AppStep{{Command: after, FailJob: true}, {Command: after}},
		Sources: []wire.CommandSource{{Path: "/db/x.sql", Command: dump}},
	})
	<-node.done
	if len(done.Warnings) != 1 || !strings.Contains(done.Warnings[0], "after-step 2") || !strings.Contains(done.Warnings[0], "does not fail the job") {
		t.Fatalf("report's warnings: %q", done.Warnings)
	}
	if done.Error == nil || done.Error.Code != wire.CodeCommandFailed ||
		!strings.Contains(done.Error.Message, "command source /db/x.sql") || !strings.Contains(done.Error.Message, "exited with status 3") ||
		!strings.Contains(done.Error.Message, "pg_dump: error: connection refused") {
		t.Fatalf("report: %+v", done.Error)
	}
	if node.end != nil || node.records.Len() != 0 {
		t.Fatalf("the node got an end (%v) or records (%d bytes)", node.end, node.records.Len())
	}
	b, err := os.ReadFile(filepath.Join(out, "after"))
	if err != nil || !strings.HasPrefix(string(b), "failed: ") || !strings.Contains(string(b), "exited with status 3") {
		t.Fatalf("after-step saw %q, %v", b, err)
	}
}

// A command the agent's configuration does not allow fails the job with
// a hint that names the setting and the file, and nothing runs: not the
// allowed before-step either.
func TestRefusedCommandFailsTheJobAndNothingRuns(t *testing.T) {
	scripts := t.TempDir()
	out := t.TempDir()
	before := script(t, scripts, "before", fmt.Sprintf("touch %s/ran\n", out))
	_, nc, srv := startAgent(t, []string{scripts}, "/etc/cairn/agent.json")
	node := startBackupNode(t)
	done := runOrder(t, nc, srv, node, []string{scripts}, wire.Application{
		Before:  []wire.AppStep{{Command: before}},
		Sources: []wire.CommandSource{{Path: "/db/x.sql", Command: "/usr/bin/pg_dump mydb"}},
	})
	if done.Error == nil || done.Error.Code != wire.CodeCommandRefused || !strings.Contains(done.Error.Message, "/usr/bin/pg_dump") ||
		!strings.Contains(done.Error.Hint, "allowed_command_dirs") || !strings.Contains(done.Error.Hint, "/etc/cairn/agent.json") {
		t.Fatalf("report: %+v", done.Error)
	}
	if _, err := os.Stat(filepath.Join(out, "ran")); err == nil {
		t.Fatal("the before-step ran though the job was refused")
	}
	if node.accepted {
		t.Fatal("the agent connected to the node for a refused job")
	}
}

// A before-step that runs longer than the storage node waits for an idle
// agent does not lose the stream: the agent sends keepalives meanwhile.
func TestLongStepKeepsTheStream(t *testing.T) {
	scripts := t.TempDir()
	slow := script(t, scripts, "slow", "sleep 2\n")
	_, nc, srv := startAgent(t, []string{scripts}, "", func(a *Agent) { a.keepaliveEvery = 100 * time.Millisecond })
	node := startBackupNodeIdle(t, 700*time.Millisecond)
	done := runOrder(t, nc, srv, node, []string{scripts}, wire.Application{
		Before: []wire.AppStep{{Command: slow, FailJob: true}},
		After:  []wire.AppStep{{Command: slow}},
	})
	<-node.done
	if done.Error != nil || node.end == nil {
		t.Fatalf("report %+v, end %v", done.Error, node.end)
	}
}

// A job the servers stop while its before-step runs stops the step (its
// group too) and still runs the after-steps, told that the job failed.
func TestStoppedJobStillRunsAfterSteps(t *testing.T) {
	scripts := t.TempDir()
	out := t.TempDir()
	before := script(t, scripts, "before", fmt.Sprintf("touch %s/started\nsleep 30\n", out))
	after := script(t, scripts, "after", fmt.Sprintf("echo \"$CAIRN_JOB_STATUS: $CAIRN_JOB_ERROR\" > %s/after\n", out))
	_, nc, srv := startAgent(t, []string{scripts}, "")
	node := startBackupNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := wire.Request(ctx, nc, wire.AgentSubject("web", wire.OpRunBackup), wire.RunBackup{
		JobID: 7, Attempt: 1, Level: "full", Paths: fileindex.Paths([]string{scripts}),
		Application: wire.Application{Before: []wire.AppStep{{Command: before, FailJob: true}}, After: []wire.AppStep{{Command: after}}},
		Node:        wire.DataEndpoint{Node: "sn1", Addr: node.addr, CertSHA256: node.fp}, Ticket: "t",
	}, nil); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() error {
		_, err := os.Stat(filepath.Join(out, "started"))
		return err
	})
	t0 := time.Now()
	var res wire.CancelResult
	if err := wire.Request(ctx, nc, wire.AgentSubject("web", wire.OpCancel), wire.CancelJob{JobID: 7, Attempt: 1, Reason: "canceled by the operator"}, &res); err != nil || !res.Running {
		t.Fatalf("cancel: %+v %v", res, err)
	}
	done := srv.report(t, 10*time.Second)
	if time.Since(t0) > 8*time.Second {
		t.Fatalf("the stopped step took %s to end", time.Since(t0))
	}
	if done.Error == nil || done.Error.Code != wire.CodeAborted {
		t.Fatalf("report %+v", done.Error)
	}
	b, err := os.ReadFile(filepath.Join(out, "after"))
	if err != nil || !strings.HasPrefix(string(b), "failed: ") || !strings.Contains(string(b), "canceled by the operator") {
		t.Fatalf("after-step saw %q, %v", b, err)
	}
	<-node.done
	if node.end != nil {
		t.Fatal("the stopped job sent its end")
	}
}

// An after-step that fails the job fails a backup that went well: the
// node gets no end, so nothing is committed.
func TestFailingAfterStepKeepsTheBackupFromCommitting(t *testing.T) {
	scripts := t.TempDir()
	after := script(t, scripts, "after", "echo 'could not thaw' >&2\nexit 2\n")
	_, nc, srv := startAgent(t, []string{scripts}, "")
	node := startBackupNode(t)
	done := runOrder(t, nc, srv, node, []string{scripts}, wire.Application{After: []wire.AppStep{{Command: after, FailJob: true}}})
	<-node.done
	if done.Error == nil || done.Error.Code != wire.CodeCommandFailed || !strings.Contains(done.Error.Message, "after-step 1") ||
		!strings.Contains(done.Error.Message, "exited with status 2") || !strings.Contains(done.Error.Message, "could not thaw") {
		t.Fatalf("report %+v", done.Error)
	}
	if node.end != nil {
		t.Fatal("the node got the end of a backup whose after-step failed it")
	}
}

// A command line from the servers is split without surprises: whatever
// it splits into, each argument quoted again splits back to itself.
func FuzzSplitCommand(f *testing.F) {
	for _, s := range []string{"/usr/bin/pg_dump mydb", `/bin/x 'a b' "c \" d" e\ f`, "/bin/x | y", `"unclosed`, "", "a\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		args, err := SplitCommand(line)
		if err != nil {
			if !errors.Is(err, ErrCommandLine) {
				t.Fatalf("%q: error %v is no ErrCommandLine", line, err)
			}
			return
		}
		if len(args) == 0 {
			t.Fatalf("%q: no arguments and no error", line)
		}
		quoted := make([]string, len(args))
		for i, a := range args {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		again, err := SplitCommand(strings.Join(quoted, " "))
		if err != nil || !slices.Equal(again, args) {
			t.Fatalf("%q split into %q, quoted again into %q, %v", line, args, again, err)
		}
	})
}

// A command source stored where the walk goes, or above it, is refused
// before anything runs: the walk would find a file in its place, or an
// entry below a file.
func TestSourceInsideTheWalkIsRefused(t *testing.T) {
	scripts := t.TempDir()
	out := t.TempDir()
	before := script(t, scripts, "before", fmt.Sprintf("touch %s/ran\n", out))
	_, nc, srv := startAgent(t, []string{scripts}, "")
	for i, p := range []string{filepath.Join(scripts, "x.sql"), filepath.Dir(scripts)} {
		node := startBackupNode(t)
		srv.mu.Lock()
		srv.done = nil
		srv.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := wire.Request(ctx, nc, wire.AgentSubject("web", wire.OpRunBackup), wire.RunBackup{
			JobID: uint64(10 + i), Attempt: 1, Level: "full", Paths: fileindex.Paths([]string{scripts}),
			Application: wire.Application{Before: []wire.AppStep{{Command: before}}, Sources: []wire.CommandSource{{Path: fileindex.Path(p), Command: before}}},
			Node:        wire.DataEndpoint{Node: "sn1", Addr: node.addr, CertSHA256: node.fp}, Ticket: "t",
		}, nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		done := srv.report(t, 10*time.Second)
		if done.Error == nil || done.Error.Code != wire.CodeInvalidArgument || !strings.Contains(done.Error.Message, "one inside the other") {
			t.Fatalf("%s: report %+v", p, done.Error)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "ran")); err == nil {
		t.Fatal("the before-step ran")
	}
}

// A bad command setting in the agent's config names its field, as the
// config file spells it.
func TestConfigValidatesCommandSettings(t *testing.T) {
	for field, tune := range map[string]func(*Config){
		"allowed_command_dirs": func(c *Config) { c.AllowedCommandDirs = []string{"scripts"} },
		"allowed_commands":     func(c *Config) { c.AllowedCommands = []string{"pg_dump mydb"} },
		"spool_dir":            func(c *Config) { c.SpoolDir = "spool" },
	} {
		cfg := DefaultConfig()
		cfg.Name = "web"
		tune(&cfg)
		var fe *configfile.FieldError
		if err := cfg.Validate(); !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: %v", field, err)
		}
	}
	cfg := DefaultConfig()
	cfg.Name = "web"
	cfg.AllowedCommands, cfg.AllowShellCommands = []string{"pg_dump mydb | gzip"}, true
	if err := cfg.Validate(); err != nil {
		t.Errorf("a shell line with shells allowed: %v", err)
	}
}
