package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/wire"
)

// Exit codes: what a script may rely on. exitCodesHelp says the same to
// people, in 'cairn --help', and README.md does too.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// Codes of errors that have no wire code of their own.
const (
	codeUsage = "usage"
	// codeError is an error that carries no code: the message says it all.
	codeError = "error"
)

const exitCodesHelp = `Exit codes:
  0    success
  1    failure: the error says what failed, the hint what to do
  2    usage: a command line that cannot be understood (an unknown command,
       flag or value); nothing was done

Errors go to stderr as 'error: MESSAGE' and 'hint: WHAT TO DO' lines. With
--json they go to stderr as one line of JSON,
  {"error":{"code":"unknown_client","message":"...","hint":"..."}}
and stdout holds only what the command prints on success. The code is one
of the stable codes of package wire (invalid_argument, not_found,
unknown_client, ...), 'usage' for a command line that cannot be understood,
or 'error' for an error with no code of its own; the hint is left out when
there is none.`

// exitCode is the exit status of a command that returned err.
func exitCode(err error) int {
	if isUsage(err) {
		return exitUsage
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
	var we *wire.Error
	switch {
	case errors.As(err, &uc):
		return &wire.Error{Code: codeUsage, Message: err.Error(), Hint: fmt.Sprintf("see '%s --help'", uc.group)}
	case isUsage(err):
		return &wire.Error{Code: codeUsage, Message: err.Error(), Hint: fmt.Sprintf("see '%s --help'", cmdPath)}
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
// asked.
func reportError(w io.Writer, asJSON bool, cmdPath string, err error) {
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
