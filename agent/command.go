package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/configfile"
)

// The commands an order asks the agent to run (application steps, command
// sources) come from the servers, and the agent runs them as root: a
// compromised server must not be able to run what it likes on every client.
// So the agent runs only what its own configuration allows (CommandPolicy),
// and by default nothing.
//
// A command line is split into arguments by SplitCommand and run without a
// shell: an allowed directory then vouches for the program that runs, not
// for whatever a shell would make of the rest of the line ("/opt/ok/x;
// rm -rf /" is refused, not run in two parts). A shell runs a command only
// when the configuration allows shells (CommandPolicy.AllowShell) and lists
// the whole line, unchanged, among its exact commands.

// CommandPolicy is what an agent's configuration lets the servers have it
// run. The zero value allows nothing.
type CommandPolicy struct {
	// Dirs are directories whose programs may run with any arguments: the
	// first argument of a command must be an absolute path directly in
	// one of them (not in a subdirectory).
	Dirs []string
	// Commands are exact command lines that may run, compared argument
	// by argument once split.
	Commands []string
	// AllowShell runs a command line that is listed, verbatim, in
	// Commands with /bin/sh -c, so it may use pipes and redirections.
	AllowShell bool
}

// Setting names of the agent's configuration, for the hint of a refusal.
const (
	settingDirs     = "allowed_command_dirs"
	settingCommands = "allowed_commands"
	settingShell    = "allow_shell_commands"
)

// CommandRefusedError says that the agent's configuration does not allow
// a command. Setting names the configuration field that would allow it.
type CommandRefusedError struct {
	Command string
	Reason  string
	Setting string
}

func (e *CommandRefusedError) Error() string {
	return fmt.Sprintf("command %q refused: %s", fileindex.Escape(e.Command), e.Reason)
}

// ErrCommandLine is wrapped by the errors of a command line that cannot be
// split into arguments.
var ErrCommandLine = errors.New("bad command line")

// shellSpecial are the characters that mean something to a shell and
// nothing to SplitCommand: a line that has one unquoted was most likely
// written for a shell, and running it split would do something else.
const shellSpecial = "|&;<>()$`*?[]{}~#\n"

// SplitCommand splits a command line into its arguments, the way a POSIX
// shell splits a simple command, and no further: arguments are separated
// by spaces and tabs; single quotes keep everything up to the next single
// quote literally; double quotes keep everything up to the next double
// quote, a backslash in them escaping only \, " and $; outside quotes, a
// backslash keeps the next character literally. Nothing is expanded: a
// line with an unquoted |, &, ;, <, >, (, ), $, `, a glob character, ~, #
// or a newline is refused, since a shell would have done something with
// it that running the program directly does not.
func SplitCommand(line string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inArg := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("%w: a single quote is not closed", ErrCommandLine)
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inArg = true
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) && strings.IndexByte(`\"$`, line[i+1]) >= 0 {
					i++
				} else if line[i] == '$' || line[i] == '`' {
					return nil, fmt.Errorf("%w: %q in double quotes would be expanded by a shell; quote it with single quotes", ErrCommandLine, line[i])
				}
				cur.WriteByte(line[i])
			}
			if i == len(line) {
				return nil, fmt.Errorf("%w: a double quote is not closed", ErrCommandLine)
			}
			inArg = true
		case c == '\\':
			if i+1 == len(line) {
				return nil, fmt.Errorf("%w: it ends with a backslash", ErrCommandLine)
			}
			i++
			cur.WriteByte(line[i])
			inArg = true
		case strings.IndexByte(shellSpecial, c) >= 0:
			return nil, fmt.Errorf("%w: %q means something to a shell only; quote it, or run a script that does what the shell should", ErrCommandLine, c)
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("%w: it is empty", ErrCommandLine)
	}
	return args, nil
}

// Argv checks a command line against the policy and returns what to
// execute: its arguments, or /bin/sh -c and the line for a shell command
// the policy allows. A refusal is a *CommandRefusedError.
func (p CommandPolicy) Argv(line string) ([]string, error) {
	if p.AllowShell && slices.Contains(p.Commands, line) {
		return []string{"/bin/sh", "-c", line}, nil
	}
	args, err := SplitCommand(line)
	if err != nil {
		setting := settingCommands
		if !p.AllowShell {
			setting = settingShell
		}
		return nil, &CommandRefusedError{Command: line, Reason: err.Error(), Setting: setting}
	}
	for _, c := range p.Commands {
		if ca, err := SplitCommand(c); err == nil && slices.Equal(ca, args) {
			if !path.IsAbs(args[0]) {
				return nil, &CommandRefusedError{Command: line, Setting: settingCommands,
					Reason: "its program is not an absolute path: the agent does not search $PATH for a program it runs as root"}
			}
			return args, nil
		}
	}
	if !path.IsAbs(args[0]) {
		return nil, &CommandRefusedError{Command: line, Setting: settingDirs,
			Reason: "its program is not an absolute path: the agent does not search $PATH for a program it runs as root"}
	}
	if path.Clean(args[0]) != args[0] {
		return nil, &CommandRefusedError{Command: line, Setting: settingDirs, Reason: fmt.Sprintf("its program %q is not a clean path", args[0])}
	}
	if slices.Contains(p.cleanDirs(), path.Dir(args[0])) {
		return args, nil
	}
	if len(p.Dirs) == 0 && len(p.Commands) == 0 {
		return nil, &CommandRefusedError{Command: line, Setting: settingDirs, Reason: "this agent allows no command"}
	}
	return nil, &CommandRefusedError{Command: line, Setting: settingDirs,
		Reason: fmt.Sprintf("%s is in no allowed directory, and the line is no allowed command", path.Dir(args[0]))}
}

func (p CommandPolicy) cleanDirs() []string {
	out := make([]string, len(p.Dirs))
	for i, d := range p.Dirs {
		out[i] = path.Clean(d)
	}
	return out
}

// Validate checks the policy as a configuration gives it; an error is a
// configfile.FieldError naming the setting.
func (p CommandPolicy) Validate() error {
	for _, d := range p.Dirs {
		if !path.IsAbs(d) {
			return configfile.Fieldf(settingDirs, "%q is not an absolute path: give the directory's full path", d)
		}
	}
	for _, c := range p.Commands {
		if p.AllowShell {
			continue // run by a shell as it stands
		}
		args, err := SplitCommand(c)
		if err != nil {
			return configfile.Fieldf(settingCommands, "%q: %w (set %s to run it with /bin/sh -c)", c, err, settingShell)
		}
		if !path.IsAbs(args[0]) {
			return configfile.Fieldf(settingCommands, "%q: give the program's absolute path", c)
		}
	}
	return nil
}

// Output bounds: what a command writes to the job log is its last lines,
// so that a chatty or looping command cannot fill the log or the memory.
const (
	maxOutputLines    = 20
	maxOutputLineSize = 512
	outputTail        = maxOutputLines * maxOutputLineSize
)

// tailBuffer keeps the last outputTail bytes written to it, and how many
// were dropped before them.
type tailBuffer struct {
	buf     []byte
	dropped int64
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= outputTail {
		t.dropped += int64(len(t.buf) + len(p) - outputTail)
		t.buf = append(t.buf[:0], p[len(p)-outputTail:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - outputTail; over > 0 {
		t.dropped += int64(over)
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// Lines are the last lines written, at most maxOutputLines of at most
// maxOutputLineSize bytes each, escaped for a log (fileindex.Escape), and
// whether earlier output was left out.
func (t *tailBuffer) Lines() (lines []string, cut bool) {
	b := bytes.TrimRight(t.buf, "\n")
	cut = t.dropped > 0
	if cut {
		// The first line kept is most likely a part of one.
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	if len(b) == 0 {
		return nil, cut
	}
	all := bytes.Split(b, []byte("\n"))
	if len(all) > maxOutputLines {
		all = all[len(all)-maxOutputLines:]
		cut = true
	}
	for _, l := range all {
		l = bytes.TrimRight(l, "\r")
		s := fileindex.Escape(string(l))
		if len(s) > maxOutputLineSize {
			s = s[:maxOutputLineSize] + "..."
		}
		lines = append(lines, s)
	}
	return lines, cut
}

// CommandError is a command that ran and failed: it exited non-zero, was
// killed by a signal, or ran past its timeout. Output is the tail of what
// it wrote to its stderr (its stdout too for a step).
type CommandError struct {
	What     string // "before-step 1", "command source /db/x.sql"
	Command  string
	Status   int    // exit status; -1 when killed
	Signal   string // the signal that killed it, if any
	TimedOut time.Duration
	Output   []string
}

func (e *CommandError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %q ", e.What, fileindex.Escape(e.Command))
	switch {
	case e.TimedOut > 0:
		fmt.Fprintf(&b, "ran past its timeout of %s and was killed", e.TimedOut)
	case e.Signal != "":
		fmt.Fprintf(&b, "was killed by signal %s", e.Signal)
	default:
		fmt.Fprintf(&b, "exited with status %d", e.Status)
	}
	if len(e.Output) > 0 {
		fmt.Fprintf(&b, "; its output ended with: %s", strings.Join(e.Output, " | "))
	}
	return b.String()
}

// commandRun is one command to run: what it is for (for messages), its
// line, its environment besides the agent's, its timeout (0: none) and,
// for a command source, the file its stdout goes to.
type commandRun struct {
	what    string
	line    string
	env     []string
	timeout time.Duration
	stdout  *os.File // nil: stdout goes with stderr into the output
}

// commandResult is what a command that ran left: its output's last
// lines, and how long it took.
type commandResult struct {
	output []string
	cut    bool
	took   time.Duration
}

// killGrace is how long a command that ran past its timeout (or whose job
// was stopped) has between SIGTERM and SIGKILL, to clean up.
const killGrace = 10 * time.Second

// runCommand runs a command that policy allows, in a process group of its
// own, so that the timeout and a stopped job end what it started too: the
// group gets SIGTERM, then SIGKILL grace later. ctx ending stops it the
// same way. It returns a *CommandRefusedError for a command the policy
// does not allow, a *CommandError for one that failed.
func runCommand(ctx context.Context, policy CommandPolicy, grace time.Duration, c commandRun) (commandResult, error) {
	argv, err := policy.Argv(c.line)
	if err != nil {
		return commandResult{}, err
	}
	var out tailBuffer
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Dir = "/"
	cmd.Stderr = &out
	if c.stdout != nil {
		cmd.Stdout = c.stdout
	} else {
		cmd.Stdout = &out
	}
	// No Pdeathsig: it fires when the OS thread that started the child
	// ends, which the Go runtime may do while the agent lives on.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A child that escaped the group may hold the output pipe: Wait
	// stops waiting for it once the group was killed.
	cmd.WaitDelay = grace + 5*time.Second
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return commandResult{}, &CommandError{What: c.what, Command: c.line, Status: -1, Output: []string{fileindex.Escape(err.Error())}}
	}
	pgid := cmd.Process.Pid
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var timeout <-chan time.Time
	if c.timeout > 0 {
		tm := time.NewTimer(c.timeout)
		defer tm.Stop()
		timeout = tm.C
	}
	timedOut := false
	var werr error
	select {
	case werr = <-waited:
	case <-ctx.Done():
		werr = stopGroup(pgid, grace, waited)
	case <-timeout:
		timedOut = true
		werr = stopGroup(pgid, grace, waited)
	}
	res := commandResult{took: time.Since(t0)}
	res.output, res.cut = out.Lines()
	if ctx.Err() != nil && !timedOut {
		return res, context.Cause(ctx)
	}
	if werr == nil && !timedOut {
		return res, nil
	}
	ce := &CommandError{What: c.what, Command: c.line, Status: -1, Output: res.output}
	var ee *exec.ExitError
	switch {
	case timedOut:
		ce.TimedOut = c.timeout
	case errors.As(werr, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ce.Signal = unixSignalName(ws.Signal())
		} else {
			ce.Status = ee.ExitCode()
		}
	default:
		ce.Output = append(ce.Output, fileindex.Escape(werr.Error()))
	}
	return res, ce
}

// stopGroup sends the process group SIGTERM, and SIGKILL if its leader
// has not ended grace later, and returns the leader's end.
func stopGroup(pgid int, grace time.Duration, waited <-chan error) error {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case err := <-waited:
		// What it started goes with it.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return err
	case <-t.C:
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return <-waited
}

func unixSignalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGKILL:
		return "KILL"
	case syscall.SIGTERM:
		return "TERM"
	case syscall.SIGSEGV:
		return "SEGV"
	case syscall.SIGABRT:
		return "ABRT"
	case syscall.SIGINT:
		return "INT"
	case syscall.SIGPIPE:
		return "PIPE"
	}
	return fmt.Sprintf("%d (%s)", int(s), s)
}
