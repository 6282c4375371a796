package alert

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
)

func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "alert.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// A command reads the alert's JSON on stdin and finds its fields in the
// environment; its arguments reach it as they are, with no shell between.
func TestCommandRuns(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	path := script(t, `cat > "$1.json"
env | grep '^CAIRN_ALERT_' | sort > "$1.env"
printf '%s' "$2" > "$1.arg"
`)
	d, err := New(Config{Commands: []CommandConfig{{Name: "mail", Path: path, Args: []string{out, "$HOME; rm -rf /"}}}}, Options{Clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	closeDispatcher(t, d)
	last := t0.Add(-51 * time.Hour)
	e := NewRPOBreach(t0, "web1", "nightly", last, 24*time.Hour)
	if _, err := d.Send(e); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() error {
		if n := counter(t, d, "cairn_alerts_sent_total", "sink", "mail"); n != 1 {
			return fmt.Errorf("sent = %v (failed %v)", n, counter(t, d, "cairn_alerts_failed_total", "sink", "mail"))
		}
		return nil
	})
	body, err := os.ReadFile(out + ".json")
	if err != nil {
		t.Fatal(err)
	}
	got := decodeEvent(t, body)
	if got.Kind != RPOBreach || got.Client != "web1" || got.AgeSeconds != 51*3600 || got.TargetSeconds != 86400 || !got.LastGood.Equal(last) {
		t.Errorf("stdin decoded to %+v", got)
	}
	env, err := os.ReadFile(out + ".env")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"CAIRN_ALERT_KIND=rpo_breach", "CAIRN_ALERT_CLIENT=web1", "CAIRN_ALERT_POLICY=nightly",
		"CAIRN_ALERT_SUBJECT=client=web1 policy=nightly", "CAIRN_ALERT_VERSION=1",
		"CAIRN_ALERT_TIME=2026-12-02T05:00:00Z", "CAIRN_ALERT_SUMMARY=" + e.Summary, "CAIRN_ALERT_JOB=\n",
	} {
		if !strings.Contains(string(env), want) {
			t.Errorf("environment lacks %q:\n%s", want, env)
		}
	}
	if arg, _ := os.ReadFile(out + ".arg"); string(arg) != "$HOME; rm -rf /" {
		t.Errorf("argument reached the command as %q", arg)
	}
}

// A command past its timeout that ignores SIGTERM is killed with its
// children, KillGrace after the SIGTERM, and the failure says it timed
// out.
func TestCommandTimeoutIgnoresTERM(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	path := script(t, `trap '' TERM
sleep 1000 &
echo "$$ $!" > "`+pids+`"
echo still here
wait
`)
	c := newCommand(CommandConfig{Name: "stuck", Path: path, Timeout: 200 * time.Millisecond})
	c.grace = 300 * time.Millisecond
	start := time.Now()
	err := c.deliver(context.Background(), NewJobFailed(t0, 1, "c", "", "", "x"), []byte("{}"))
	elapsed := time.Since(start)
	var ce *CommandError
	if !errors.As(err, &ce) || !ce.TimedOut || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deliver = %v, want a timed-out CommandError", err)
	}
	if !strings.Contains(ce.Output, "still here") {
		t.Errorf("output %q, want what the command printed", ce.Output)
	}
	// SIGTERM at 200ms did nothing; SIGKILL came 300ms later.
	if elapsed < 500*time.Millisecond || elapsed > 10*time.Second {
		t.Errorf("deliver returned after %s, want 500ms (timeout and grace) or a little more", elapsed)
	}
	b, err := os.ReadFile(pids)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		poll.Until(t, 10*time.Second, func() error {
			if alive(pid) {
				return fmt.Errorf("process %d of the command's group still runs", pid)
			}
			return nil
		})
	}
}

// alive says whether pid runs: a zombie (killed, not yet reaped by init)
// does not.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}

// A failing command's error carries its exit status and the start of its
// output, however much it writes.
func TestCommandFailsWithBoundedOutput(t *testing.T) {
	path := script(t, `head -c 100000 /dev/zero | tr '\0' x
echo >&2 "no mail relay"
exit 3
`)
	c := newCommand(CommandConfig{Name: "mail", Path: path})
	err := c.deliver(context.Background(), NewJobFailed(t0, 1, "c", "", "", "x"), []byte("{}"))
	var ce *CommandError
	var ee *exec.ExitError
	if !errors.As(err, &ce) || !errors.As(err, &ee) || ee.ExitCode() != 3 || ce.TimedOut {
		t.Fatalf("deliver = %v, want a CommandError with exit status 3", err)
	}
	if len(ce.Output) > maxOutput+64 || !strings.HasSuffix(ce.Output, "more bytes]") {
		t.Errorf("output of %d bytes ending %q, want at most %d and a count of the rest", len(ce.Output), ce.Output[max(0, len(ce.Output)-40):], maxOutput)
	}
}

// A command that cannot start fails with the reason, and a Close under way
// kills a running one at once.
func TestCommandStartAndClose(t *testing.T) {
	c := newCommand(CommandConfig{Name: "gone", Path: "/nonexistent/alert"})
	if err := c.deliver(context.Background(), Event{}, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("deliver = %v, want not found", err)
	}

	path := script(t, "trap '' TERM\nsleep 1000\n")
	d, err := New(Config{Commands: []CommandConfig{{Name: "stuck", Path: path, Timeout: time.Hour}}}, Options{Clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Send(NewJobFailed(t0, 1, "c", "", "", "x")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := d.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("Close took %s", el)
	}
	if n := counter(t, d, "cairn_alerts_dropped_total", "sink", "stuck"); n != 1 {
		t.Errorf("dropped = %v, want 1", n)
	}
}
