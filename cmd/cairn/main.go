// Command cairn is every role of Cairn in one binary: server, storagenode,
// agent, the all-in-one dev and demo, and the admin commands.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
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

// run executes one command line and returns its exit code (exitCodesHelp
// says which). Errors go to errOut: as 'error:' and 'hint:' lines, or with
// --json as one JSON object.
func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	root := newRootCmd(out, errOut)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	reportError(errOut, wantsJSON(root, args), cmd.CommandPath(), err)
	return exitCode(err)
}
