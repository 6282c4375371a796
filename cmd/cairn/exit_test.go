package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/wire"
)

// TestEveryGroupRefusesAnUnknownSubcommand walks the whole command tree:
// every command with subcommands, given one it does not have, exits 2 and
// says "unknown command" with a hint, and prints no help on stdout, so a
// script never takes 'cairn job delete 19' for a deleted job.
func TestEveryGroupRefusesAnUnknownSubcommand(t *testing.T) {
	ctx := context.Background()
	var groups [][]string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.HasSubCommands() {
			groups = append(groups, strings.Fields(c.CommandPath())[1:])
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd(io.Discard, io.Discard))
	if len(groups) < 10 {
		t.Fatalf("found only %d command groups: %v", len(groups), groups)
	}
	for _, g := range groups {
		args := append(append([]string(nil), g...), "no-such-subcommand", "19")
		code, stdout, stderr := cli(ctx, args...)
		if code != 2 || !strings.Contains(stderr, `unknown command "no-such-subcommand"`) || !strings.Contains(stderr, "hint: ") || stdout != "" {
			t.Errorf("cairn %s: exit %d, stdout %q, stderr %q; want exit 2, unknown command and a hint", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	// The ones the administrators tripped over, and help on no topic.
	for _, args := range [][]string{
		{"job", "delete", "19"}, {"volume", "delete", "X"}, {"client", "delete", "vm"}, {"help", "no-such-topic"}, {"help", "job", "delete"},
	} {
		code, stdout, stderr := cli(ctx, args...)
		if code != 2 || !strings.Contains(stderr, "unknown command") || stdout != "" {
			t.Errorf("cairn %s: exit %d, stdout %q, stderr %q; want exit 2 and unknown command", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	// A group given nothing shows its help, as asked.
	if code, stdout, _ := cli(ctx, "job"); code != 0 || !strings.Contains(stdout, "Available Commands") {
		t.Errorf("cairn job: exit %d, %q; want its help", code, stdout)
	}
}

// TestErrorsAsJSON: with --json, wherever it stands and even on a command
// line cobra cannot parse, an error is one line of JSON on stderr with a
// code, a message and a hint, and stdout stays empty.
func TestErrorsAsJSON(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		args       []string
		exit       int
		code, hint string
	}{
		{[]string{"--json", "job", "show", "twelve"}, 2, codeUsage, "see 'cairn job show --help'"},
		{[]string{"job", "no-such-subcommand", "--json"}, 2, codeUsage, "see 'cairn job --help'"},
		{[]string{"--json", "--no-such-flag"}, 2, codeUsage, "see 'cairn --help'"},
		{[]string{"--json=true", "backup", "--path", "/x"}, 2, codeUsage, "see 'cairn backup --help'"},
		{[]string{"--json", "--nats", "nats://127.0.0.1:1", "client", "list"}, 1, wire.CodeUnavailable, "start 'cairn dev'"},
	} {
		code, stdout, stderr := cli(ctx, c.args...)
		e := decodeJSONError(t, stderr)
		if code != c.exit || stdout != "" || e == nil || e.Code != c.code || e.Message == "" || !strings.Contains(e.Hint, c.hint) {
			t.Errorf("cairn %s: exit %d, stdout %q, stderr %q; want exit %d and a JSON error %s with hint %q",
				strings.Join(c.args, " "), code, stdout, stderr, c.exit, c.code, c.hint)
		}
	}
	// Without --json, people get lines.
	if _, _, stderr := cli(ctx, "--json=false", "job", "show", "twelve"); !strings.HasPrefix(stderr, "error: ") {
		t.Errorf("--json=false: %q", stderr)
	}
}

// decodeJSONError decodes stderr that must be one line of JSON holding an
// error, or returns nil.
func decodeJSONError(t *testing.T, stderr string) *wire.Error {
	t.Helper()
	if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		return nil
	}
	var v struct {
		Error *wire.Error `json:"error"`
	}
	dec := json.NewDecoder(strings.NewReader(stderr))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return nil
	}
	return v.Error
}

// documentedExitCodes are the exit codes a script may rely on, with a
// word that must stand beside each where they are documented.
var documentedExitCodes = []struct {
	code int
	word string
}{
	{exitOK, "success"}, {exitFailure, "failure"}, {exitUsage, "usage"},
	{exitWarnings, "finished with warnings"}, {exitDiffers, "differences"}, {exitSignal + int(syscall.SIGINT), "interrupted"},
}

// TestExitCodesDocumented: 'cairn --help' and the README list every exit
// code a script may rely on.
func TestExitCodesDocumented(t *testing.T) {
	_, help, _ := cli(context.Background(), "--help")
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range documentedExitCodes {
		if !strings.Contains(help, fmt.Sprintf("\n  %-4d %s", c.code, c.word)) {
			t.Errorf("cairn --help does not list exit code %d (%s)", c.code, c.word)
		}
		if !strings.Contains(string(readme), fmt.Sprintf("| %d | %s", c.code, c.word)) {
			t.Errorf("README.md does not list exit code %d (%s)", c.code, c.word)
		}
	}
}

// TestExitCodeOfAnInterruptedCommand: a command a signal interrupted exits
// 128 plus the signal, whatever error it ended with; the waiting it
// stopped is reported as interrupted, not as a failure of the job.
func TestExitCodeOfAnInterruptedCommand(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(&signalError{sig: syscall.SIGTERM})
	if got := exitCode(ctx, errors.New("request canceled")); got != 143 {
		t.Errorf("a request SIGTERM cut short exits %d, want 143", got)
	}
	ie := interrupted(ctx, 7)
	if got := exitCode(ctx, ie); got != 143 {
		t.Errorf("a --wait SIGTERM stopped exits %d, want 143", got)
	}
	if e := cliError("cairn backup", ie); e.Code != codeInterrupted || !strings.Contains(e.Message, "job 7 goes on") || e.Hint == "" {
		t.Errorf("a --wait SIGTERM stopped is reported as %+v", e)
	}
	if got := exitCode(context.Background(), &warningsError{job: &wire.JobInfo{ID: 1, State: "warning"}}); got != exitWarnings {
		t.Errorf("a job that ended with warnings exits %d, want %d", got, exitWarnings)
	}
}
