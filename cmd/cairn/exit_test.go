package main

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestEveryGroupRefusesAnUnknownSubcommand walks the whole command tree:
// every command with subcommands, given one it does not have, exits 2 and
// says "unknown command" with a hint, and prints no help on stdout, so a
// script never takes 'cairn job cancel 19' for a cancelled job.
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
		{"job", "cancel", "19"}, {"volume", "delete", "X"}, {"client", "delete", "vm"}, {"help", "no-such-topic"}, {"help", "job", "cancel"},
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
