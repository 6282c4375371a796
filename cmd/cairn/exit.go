package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/internal/datadir"
	"github.com/cairnbackup/cairn/wire"
)

// Exit codes: what a script may rely on. exitCodesHelp says the same to
// people, in 'cairn --help', and README.md does too.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	// exitWarnings: a job waited for (--wait) ended with warnings: it did
	// its work, and its log says what it could not do as asked.
	exitWarnings = 3
	// exitUnknown: a start (backup, restore, media label, a library move)
	// whose answer was lost even after its retries: it may or may not
	// have been carried out. Running it again with the --request-id the
	// error names carries it out once, whatever became of the first.
	exitUnknown = 4
	// exitDiffers: 'policy diff' found what applying the file would
	// change. diff(1) says 1, which here is a failure: a script must tell
	// "the file differs" from "the file could not be read".
	exitDiffers = 5
	// exitSignal + the signal's number: the command was interrupted, as
	// shells report it (130 for Ctrl-C, 143 for SIGTERM). A job waited
	// for goes on.
	exitSignal = 128
)

// Codes of errors that have no wire code of their own.
const (
	codeUsage       = "usage"
	codeInterrupted = "interrupted"
	// codeError is an error that carries no code: the message says it all.
	codeError = "error"
)

const exitCodesHelp = `Exit codes:
  0    success
  1    failure: the error says what failed, the hint what to do
  2    usage: a command line that cannot be understood (an unknown command,
       flag or value); nothing was done
  3    finished with warnings: a job waited for (--wait) did its work, and
       its log says what it could not do as asked ('cairn job show ID')
  4    outcome unknown: a start (backup, restore, media label, library move)
       got no clear answer, even after trying again; run it again with the
       --request-id the error names: it is carried out once. Or a --wait
       whose servers stopped answering for 5 minutes: the job goes on, follow
       it with 'cairn job show ID'
  5    differences: 'policy diff' found what applying the file would change
  130  interrupted (Ctrl-C; 143 for SIGTERM): a job waited for goes on

Errors go to stderr as 'error: MESSAGE' and 'hint: WHAT TO DO' lines. With
--json they go to stderr as one line of JSON,
  {"error":{"code":"unknown_client","message":"...","hint":"..."}}
and stdout holds only what the command prints on success (a job waited for
is printed there however it ended). The code is one of the stable codes of
package wire (invalid_argument, not_found, unknown_client, ...), 'usage' for
a command line that cannot be understood, 'interrupted', or 'error' for an
error with no code of its own; the hint is left out when there is none.`

// signalError is the cause of a context a signal ended.
type signalError struct{ sig os.Signal }

func (e *signalError) Error() string { return "interrupted by " + e.sig.String() }

// exitStatus is 128 plus the signal's number.
func (e *signalError) exitStatus() int {
	if s, ok := e.sig.(syscall.Signal); ok {
		return exitSignal + int(s)
	}
	return exitSignal + int(syscall.SIGINT)
}

// interruptedError is a --wait that a signal stopped: the job goes on.
type interruptedError struct {
	job uint64
	sig *signalError // nil when the context ended without a signal (a test)
}

func (e *interruptedError) Error() string {
	return fmt.Sprintf("stopped waiting: job %d goes on; follow it with 'cairn job show %d'", e.job, e.job)
}

// interrupted makes the error of a --wait of job id that ctx ended.
func interrupted(ctx context.Context, id uint64) *interruptedError {
	var se *signalError
	errors.As(context.Cause(ctx), &se)
	return &interruptedError{job: id, sig: se}
}

// warningsError is a job waited for that ended with warnings: not a
// failure, but not what a script asked for either.
type warningsError struct{ job *wire.JobInfo }

func (e *warningsError) Error() string {
	n := fmt.Sprintf("%d warnings", e.job.Warnings)
	if e.job.Warnings == 1 {
		n = "1 warning"
	}
	return fmt.Sprintf("%s job %d ended with %s; see them with 'cairn job show %d'", e.job.Type, e.job.ID, n, e.job.ID)
}

// exitCode is the exit status of a command that returned err, in ctx.
func exitCode(ctx context.Context, err error) int {
	var ie *interruptedError
	var we *warningsError
	var se *signalError
	var de *differsError
	switch {
	case isUsage(err):
		return exitUsage
	case errors.As(err, &ie):
		if ie.sig != nil {
			return ie.sig.exitStatus()
		}
		return exitSignal + int(syscall.SIGINT)
	case errors.As(err, &we):
		return exitWarnings
	case errors.As(err, &de):
		return exitDiffers
	case errors.As(context.Cause(ctx), &se):
		// Whatever failed, it failed because it was interrupted.
		return se.exitStatus()
	case wire.CodeOf(err) == wire.CodeOutcomeUnknown:
		return exitUnknown
	}
	return exitFailure
}

func isUsage(err error) bool {
	var ue *usageError
	var uc *unknownCommandError
	return errors.As(err, &ue) || errors.As(err, &uc) || isFlagError(err)
}

// cliError is err as the command line reports it: a code, a message and a
// hint. cmdPath is the command that failed.
func cliError(cmdPath string, err error) *wire.Error {
	var uc *unknownCommandError
	var ie *interruptedError
	var inUse *datadir.InUseError
	var we *wire.Error
	switch {
	case errors.As(err, &uc):
		return &wire.Error{Code: codeUsage, Message: err.Error(), Hint: fmt.Sprintf("see '%s --help'", uc.group)}
	case isUsage(err):
		return &wire.Error{Code: codeUsage, Message: err.Error(), Hint: fmt.Sprintf("see '%s --help'", cmdPath)}
	case errors.As(err, &ie):
		return &wire.Error{Code: codeInterrupted, Message: err.Error(),
			Hint: "only the waiting stopped: the job runs on the servers until it ends"}
	case errors.As(err, &inUse):
		return &wire.Error{Code: codeError, Message: err.Error(),
			Hint: "stop that process first, or give this one a data directory of its own (--data)"}
	case errors.As(err, &we):
		out := wire.AsError(err)
		if out.Code == "" {
			out.Code = codeError
		}
		return out
	}
	return &wire.Error{Code: codeError, Message: err.Error()}
}

// reportError prints the error a command ended with to w, as JSON when
// asked. A job that ended with warnings is no error: people get a warning
// line, and --json nothing (the job printed on stdout says it).
func reportError(w io.Writer, asJSON bool, cmdPath string, err error) {
	var we *warningsError
	var de *differsError
	if errors.As(err, &de) {
		return // the diff printed is the answer
	}
	if errors.As(err, &we) {
		if !asJSON {
			fmt.Fprintf(w, "warning: %s\n", printable(err.Error()))
		}
		return
	}
	if asJSON {
		printJSONError(w, cliError(cmdPath, err))
		return
	}
	printError(w, cmdPath, err)
}

// printError prints err and its hint. A message may quote names from the
// clients' disks or a damaged volume: each of its lines goes through
// printable, so none can drive the terminal.
func printError(w io.Writer, cmdPath string, err error) {
	e := cliError(cmdPath, err)
	lines := strings.Split(e.Message, "\n")
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
	if e.Hint != "" {
		fmt.Fprintf(w, "hint: %s\n", printable(e.Hint))
	}
}

// printJSONError prints e as one line: {"error":{"code":...}}. JSON
// escapes what could drive a terminal, so the message goes as it is.
func printJSONError(w io.Writer, e *wire.Error) {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(struct {
		Error *wire.Error `json:"error"`
	}{e})
}

// wantsJSON reports whether the command line asked for --json, even when
// it could not be parsed as far as the flag.
func wantsJSON(root *cobra.Command, args []string) bool {
	if f := root.PersistentFlags().Lookup("json"); f != nil && f.Changed {
		return f.Value.String() == "true"
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "--json" {
			return true
		}
		if v, ok := strings.CutPrefix(a, "--json="); ok {
			b, err := strconv.ParseBool(v)
			return err == nil && b
		}
	}
	return false
}
