// Command cairn is every role of Cairn in one binary: server, storagenode,
// agent, the all-in-one dev and demo, and the admin commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cairnbackup/cairn/wire"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// usageError is a command line the user must correct.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// run executes one command line and returns the exit code: 0 success, 1 an
// error, 2 a command line that cannot be understood.
func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	root := newRootCmd(out, errOut)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	printError(errOut, cmd.CommandPath(), err)
	var ue *usageError
	if errors.As(err, &ue) || isFlagError(err) {
		return 2
	}
	return 1
}

// printError prints err and its hint. A message may quote names from the
// clients' disks or a damaged volume: each of its lines goes through
// printable, so none can drive the terminal.
func printError(w io.Writer, cmdPath string, err error) {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		// Tabs are layout (cobra indents its suggestions with one), and
		// harmless to a terminal.
		cells := strings.Split(l, "\t")
		for j, c := range cells {
			cells[j] = printable(c)
		}
		lines[i] = strings.Join(cells, "\t")
	}
	fmt.Fprintf(w, "error: %s\n", strings.Join(lines, "\n"))
	var we *wire.Error
	var ue *usageError
	switch {
	case errors.As(err, &we) && we.Hint != "":
		fmt.Fprintf(w, "hint: %s\n", we.Hint)
	case errors.As(err, &ue) || isFlagError(err):
		fmt.Fprintf(w, "hint: see '%s --help'\n", cmdPath)
	}
}
