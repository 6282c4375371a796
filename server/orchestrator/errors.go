package orchestrator

import (
	"errors"
	"fmt"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/wire"
)

// Error is what the orchestrator's Go API returns when it refuses a request
// or cannot carry it out, and what a job it fails ends with. Code is one of
// the wire's stable codes: the same vocabulary a failed job's error code is
// recorded in, and what the NATS edge (server/orchestration.go) answers
// with, together with Hint (empty: the code's usual hint). Err is the
// cause, when there is one: a catalog refusal, what an agent or the
// server said, a cluster error.
//
// A caller tells kinds apart with errors.Is against the sentinels below
// (errors.Is(err, orchestrator.ErrUnknownClient)), which match on the
// code, and finds the cause with errors.Is and errors.As as usual.
type Error struct {
	Code string
	Msg  string
	Hint string
	Err  error
}

func (e *Error) Error() string { return e.Msg }

func (e *Error) Unwrap() error { return e.Err }

// Is matches an *Error of the same code (the sentinels), and a not_found
// error matches catalog.ErrNotFound.
func (e *Error) Is(target error) bool {
	if target == catalog.ErrNotFound {
		return e.Code == wire.CodeNotFound
	}
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// The kinds of error, one per code, for errors.Is.
var (
	// ErrInvalidArgument: the request is bad input; nothing was started.
	ErrInvalidArgument = &Error{Code: wire.CodeInvalidArgument, Msg: "invalid argument"}
	// ErrNotFound: what the request names (a job, a pool, a backup, a
	// path in a backup) does not exist.
	ErrNotFound = &Error{Code: wire.CodeNotFound, Msg: "not found"}
	// ErrUnknownClient: no agent of that name has registered.
	ErrUnknownClient = &Error{Code: wire.CodeUnknownClient, Msg: "unknown client"}
	// ErrAlreadyExists: a request id reused for another request, or a
	// catalog refusal of the same kind.
	ErrAlreadyExists = &Error{Code: wire.CodeAlreadyExists, Msg: "already exists"}
	// ErrWrongState: the job or backup is not in a state that allows it.
	ErrWrongState = &Error{Code: wire.CodeWrongState, Msg: "wrong state"}
	// ErrUnavailable: a storage node, an agent or the catalog needed is
	// not there now; trying later may succeed.
	ErrUnavailable = &Error{Code: wire.CodeUnavailable, Msg: "unavailable"}
	// ErrNotLeader: this server does not lead its group; nothing was
	// proposed.
	ErrNotLeader = &Error{Code: wire.CodeNotLeader, Msg: "not the leader"}
	// ErrTimeout: a job waited or stalled too long, and failed.
	ErrTimeout = &Error{Code: wire.CodeTimeout, Msg: "timeout"}
	// ErrCorrupt: the catalog's copy of a file index does not read.
	ErrCorrupt = &Error{Code: wire.CodeCorrupt, Msg: "corrupt data"}
	// ErrOutcomeUnknown: a start may or may not have taken effect;
	// repeating it under the same request id is safe.
	ErrOutcomeUnknown = &Error{Code: wire.CodeOutcomeUnknown, Msg: "outcome unknown"}
	// ErrDuplicateAgent: two agents run under the client's name.
	ErrDuplicateAgent = &Error{Code: wire.CodeDuplicateAgent, Msg: "duplicate agent"}
	// ErrAgentLost: the agent of a running job went away.
	ErrAgentLost = &Error{Code: wire.CodeAgentLost, Msg: "agent lost"}
	// ErrHandedBack: a stopping storage node or agent gave a job back.
	ErrHandedBack = &Error{Code: wire.CodeHandedBack, Msg: "handed back"}
)

// errorf makes an error of kind with a hint (empty: the code's usual one)
// and a message; as with fmt.Errorf, a %w operand is its cause.
func errorf(kind *Error, hint, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: kind.Code, Msg: err.Error(), Hint: hint, Err: errors.Unwrap(err)}
}

// relay makes an error that another party gave the orchestrator (an
// agent's refusal, a check of package wire, the server's ApplyError) one
// of its own, with the same code and hint and that error as its cause, so
// that a caller's errors.Is against the sentinels sees it too.
func relay(err error) error {
	if err == nil {
		return nil
	}
	code, hint, ok := Describe(err)
	if !ok {
		return err
	}
	var e *Error
	if errors.As(err, &e) && e.Code == code {
		return err
	}
	return &Error{Code: code, Msg: err.Error(), Hint: hint, Err: err}
}

// Describe finds the code and hint of err: those of the first *Error or
// *wire.Error in its chain, the outermost being the one that decided. ok
// is false for an error that has neither (a bug, or an error of the Go
// runtime), which the edge answers as internal.
func Describe(err error) (code, hint string, ok bool) {
	for e := err; e != nil; e = errors.Unwrap(e) {
		switch x := e.(type) {
		case *Error:
			return x.Code, x.Hint, true
		case *wire.Error:
			return x.Code, x.Hint, true
		}
	}
	// A chain that forks (errors.Join, several %w) is searched as
	// errors.As does.
	var oe *Error
	if errors.As(err, &oe) {
		return oe.Code, oe.Hint, true
	}
	var we *wire.Error
	if errors.As(err, &we) {
		return we.Code, we.Hint, true
	}
	return "", "", false
}

// failure is the code, message and hint a job that fails with err is
// recorded with.
func failure(err error) (code, msg, hint string) {
	code, hint, ok := Describe(err)
	if !ok {
		code = wire.CodeInternal
	}
	if hint == "" {
		hint = wire.HintFor(code)
	}
	return code, err.Error(), hint
}
