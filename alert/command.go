package alert

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// CommandError is a command that failed, timed out or could not start.
type CommandError struct {
	Sink string
	Path string
	// Err is the exit status or the reason the program did not run.
	Err error
	// TimedOut: the program ran past its timeout and was killed.
	TimedOut bool
	// Output is the start of what it wrote on stdout and stderr.
	Output string
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("command %s: %s: %v", e.Sink, e.Path, e.Err)
	if e.TimedOut {
		msg = fmt.Sprintf("command %s: %s: still running after its timeout, killed", e.Sink, e.Path)
	}
	if e.Output != "" {
		msg += "; output: " + strconv.Quote(e.Output)
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

// maxOutput is how much of a command's output is kept for the log: enough
// for its error message, not enough for a runaway program to fill memory.
const maxOutput = 4 << 10

// waitForPipes bounds how long a command's output is read after it exited:
// a child it left behind may hold the pipe open.
const waitForPipes = time.Second

type command struct {
	cfg   CommandConfig
	grace time.Duration // between SIGTERM and SIGKILL
}

func newCommand(cfg CommandConfig) *command {
	cfg.Timeout = orDefault(cfg.Timeout, DefaultCommandTimeout)
	return &command{cfg: cfg, grace: KillGrace}
}

func (c *command) name() string { return c.cfg.Name }
func (c *command) close()       {}

// env is what a command finds in its environment besides the server's.
func env(e Event) []string {
	vars := []string{
		"CAIRN_ALERT_VERSION=" + strconv.Itoa(e.Version),
		"CAIRN_ALERT_KIND=" + string(e.Kind),
		"CAIRN_ALERT_TIME=" + e.Time.UTC().Format(time.RFC3339),
		"CAIRN_ALERT_SUMMARY=" + e.Summary,
		"CAIRN_ALERT_SUBJECT=" + e.Subject(),
		"CAIRN_ALERT_CLIENT=" + e.Client,
		"CAIRN_ALERT_POLICY=" + e.Policy,
		"CAIRN_ALERT_POOL=" + e.Pool,
		"CAIRN_ALERT_JOB=",
	}
	if e.Job != 0 {
		vars[len(vars)-1] += strconv.FormatUint(e.Job, 10)
	}
	return vars
}

// deliver runs the program in a process group of its own, so that its
// timeout ends the children it started too: SIGTERM to the group, SIGKILL
// KillGrace later. When ctx is done (the server stops) the group gets
// SIGKILL at once.
func (c *command) deliver(ctx context.Context, e Event, body []byte) error {
	cmd := exec.Command(c.cfg.Path, c.cfg.Args...)
	cmd.Env = append(os.Environ(), env(e)...)
	cmd.Stdin = bytes.NewReader(body)
	out := &boundedBuffer{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = waitForPipes
	fail := func(err error, timedOut bool) error {
		return &CommandError{Sink: c.cfg.Name, Path: c.cfg.Path, Err: err, TimedOut: timedOut, Output: out.String()}
	}
	if err := cmd.Start(); err != nil {
		return fail(err, false)
	}
	pgid := cmd.Process.Pid
	done := make(chan struct{})
	var timedOut bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		timeout := time.NewTimer(c.cfg.Timeout)
		defer timeout.Stop()
		select {
		case <-done:
			return
		case <-ctx.Done():
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			return
		case <-timeout.C:
			timedOut = true
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
		}
		grace := time.NewTimer(c.grace)
		defer grace.Stop()
		select {
		case <-done:
		case <-ctx.Done():
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		case <-grace.C:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}()
	err := cmd.Wait()
	close(done)
	wg.Wait()
	if timedOut {
		return fail(context.DeadlineExceeded, true)
	}
	if err != nil {
		if ctx.Err() != nil {
			return fail(errors.Join(err, ctx.Err()), false)
		}
		return fail(err, false)
	}
	return nil
}

// boundedBuffer keeps the first max bytes written to it and counts the
// rest.
type boundedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	max     int
	dropped int64
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.max - b.buf.Len()
	if room > len(p) {
		room = len(p)
	}
	if room > 0 {
		b.buf.Write(p[:room])
	}
	b.dropped += int64(len(p) - room)
	return len(p), nil
}

func (b *boundedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := string(bytes.TrimSpace(b.buf.Bytes()))
	if b.dropped > 0 {
		s += fmt.Sprintf(" [%d more bytes]", b.dropped)
	}
	return s
}
