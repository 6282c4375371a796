package wire

import (
	"errors"
	"fmt"
)

// Error is what crosses the NATS boundary in place of a Go error: a stable
// code that scripts can match, a message that names the thing, and a hint
// that says what to do. The CLI prints the message and the hint and exits
// non-zero.
//
// An Error made on this side of the wire keeps the error it was made from
// (a %w in Errorf, the chain AsError was given): errors.Is and errors.As
// see through it to the domain error, so the edge that maps a domain error
// to a code loses nothing of it. The cause does not cross the wire; there
// the code is what callers match.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`

	cause error
}

func (e *Error) Error() string { return e.Message }

// Unwrap is the error this one was made from, nil for one that came over
// the wire.
func (e *Error) Unwrap() error { return e.cause }

// Is lets errors.Is(err, &Error{Code: c}) match on the code alone.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
	}
	return false
}

// Stable error codes. Never change the meaning of one; add new ones.
const (
	CodeBadRequest         = "bad_request"
	CodeUnsupportedVersion = "unsupported_version"
	CodeUnknownOperation   = "unknown_operation"
	CodeInvalidArgument    = "invalid_argument"
	CodeNotFound           = "not_found"
	CodeUnknownClient      = "unknown_client"
	CodeAlreadyExists      = "already_exists"
	CodeNotLeader          = "not_leader"
	// CodeNoQuorum: no leader, and too few members answer to elect one.
	// Unlike not_leader, waiting a few seconds does not cure it, so a
	// caller does not retry: nothing was proposed.
	CodeNoQuorum       = "no_quorum"
	CodeUnavailable    = "unavailable"
	CodeTimeout        = "timeout"
	CodePoolFull       = "pool_full"
	CodeTicketRejected = "ticket_rejected"
	CodeKey            = "key_error"
	CodeCorrupt        = "corrupt_data"
	CodeIO             = "io_error"
	CodeAborted        = "aborted"
	CodeTargetNotEmpty = "target_not_empty"
	// CodeNodeLost: an agent could not reach its storage node or lost the
	// stream to it, or the node could not take the job yet (it has not
	// registered with the servers since it started); a backup is tried
	// again on another node of the pool.
	CodeNodeLost = "node_lost"
	// CodeWrongState: the thing is not in a state that allows the change.
	CodeWrongState = "wrong_state"
	// CodePermissionDenied: NATS refused the role's credential a subject.
	CodePermissionDenied = "permission_denied"
	// CodeRefused: a restore left entries out on purpose or could not
	// create them; the job log names each and why.
	CodeRefused = "refused"
	// CodeTooLarge: a request or reply is bigger than the NATS servers
	// accept in one message (their max_payload). The sender refuses it at
	// once, so nobody waits for an answer that never comes.
	CodeTooLarge = "message_too_large"
	// CodeAgentLost: a storage node's backup stream ended before its end:
	// the agent stopped, restarted or lost the network. The backup goes
	// on with its next attempt.
	CodeAgentLost = "agent_lost"
	// CodeHandedBack: a storage node or agent that was stopping (SIGTERM)
	// gave a running job back. A backup goes on with its next attempt.
	CodeHandedBack = "handed_back"
	// CodeDuplicateAgent: two agents run under one client name at once
	// (a cloned machine, a copied credential); every job of that client
	// would reach both.
	CodeDuplicateAgent = "duplicate_agent"
	// CodeOutcomeUnknown: the servers could not confirm whether a start
	// (backup, restore, tape label or move) took effect: the leader was
	// lost, or its catalog stopped, while it was being recorded. It may
	// still run. Repeating the request with the same request id is safe:
	// it answers what the first one did, and never does it twice.
	CodeOutcomeUnknown = "outcome_unknown"
	// CodeDiskFull: a server cannot write its catalog or Raft log, or a
	// storage node its own temporary files (not a pool's: CodePoolFull),
	// for lack of space. The message names the server or node and the
	// directory.
	CodeDiskFull = "disk_full"
	// CodeWrongGroup: the request is for another group of servers than
	// any that answers it on this NATS, or names no group where servers of
	// several groups share the NATS (see GroupHeader).
	CodeWrongGroup = "wrong_group"
	// CodeCommandRefused: an agent's configuration does not allow a
	// command a backup asked it to run (an application step, a command
	// source); the hint names the agent's setting and file.
	CodeCommandRefused = "command_refused"
	// CodeCommandFailed: an application step that fails its job, or a
	// command source, exited non-zero, was killed or ran past its
	// timeout; the message gives its status and the end of its output.
	CodeCommandFailed = "command_failed"
	CodeInternal      = "internal"
)

// defaultHints are the catalog's help texts, used when an error carries none.
var defaultHints = map[string]string{
	CodeBadRequest:         "the message is not a valid Cairn request; check that client and server run compatible versions",
	CodeUnsupportedVersion: "upgrade the older of the two programs so both speak the same message version",
	CodeUnknownOperation:   "this server does not know that operation; check the command or upgrade the server",
	CodeInvalidArgument:    "correct the argument named in the message",
	CodeNotFound:           "list what exists with the matching 'list' command",
	CodeUnknownClient:      "start 'cairn agent --name NAME' on that host first, then check 'cairn client list'",
	CodeNotLeader:          "retry; the request goes to the current leader",
	CodeUnavailable:        "check that the server, storage node and agent involved are running ('cairn client list', 'cairn pool list')",
	CodeTimeout:            "check that a Cairn server is running and reachable on the NATS URL (--nats or CAIRN_NATS)",
	CodePoolFull:           "free space in the pool's directory, move it to a larger filesystem, or lower the pool's maximum volume size",
	CodeTicketRejected:     "the job ticket was not accepted; rerun the job so the server issues a new one",
	CodeKey:                "import or pass the key named in the message ('cairn key export' writes the escrow file)",
	CodeCorrupt:            "the files named were not restored; restore them from another backup or copy",
	CodeIO:                 "check the device or filesystem named in the message",
	CodeTargetNotEmpty:     "choose an empty directory, or pass --force to restore into it",
	CodeNodeLost:           "check the storage node and the network between it and the client",
	CodeWrongState:         "check the state of what the message names ('cairn job show', 'cairn volume list')",
	CodePermissionDenied:   "use a credential whose NATS permissions allow this ('cairn cert nats-config' writes them), or ask the NATS administrator",
	CodeRefused:            "the warnings name each entry not restored and why; pass what they say (--devices for device nodes) or restore those entries by hand",
	CodeOutcomeUnknown:     "run the same command again with the same --request-id (it never starts a second job), or look for it with 'cairn job list --request-id ID'",
	CodeDiskFull:           "free space in the directory named, or move the server's data directory to a larger filesystem; the server goes on by itself once there is room",
	CodeTooLarge:           "ask for less (a subtree, a smaller --limit), or raise max_payload on every NATS server; a Cairn list or plan that does not page is a bug, so report it with the log line that names the subject",
	CodeAgentLost:          "the job goes on with its next attempt once the agent is back; check the agent's log if it does not come back",
	CodeHandedBack:         "the job goes on with its next attempt, on another storage node when the one that stopped serves none",
	CodeDuplicateAgent:     "stop the clone, or give it its own name and credentials ('cairn cert issue', 'cairn cert nats-config --agents'); 'cairn client list' shows both",
	CodeWrongGroup:         "set the role's group (--group, CAIRN_GROUP for commands, group in a config file) to the group it belongs to; 'cairn cluster status --group ID' lists a group's servers",
	CodeCommandRefused:     "allow the command in the agent's configuration (allowed_command_dirs, allowed_commands), or ask for one it allows",
	CodeCommandFailed:      "run the command on the client as the agent would (as root, from /) to see why it fails; the backup committed nothing",
	CodeInternal:           "this is a bug in Cairn; the server log has details",
}

// Errorf builds an Error with a code, a hint (the catalog's when empty) and a
// formatted message. As with fmt.Errorf, an error formatted with %w is
// wrapped: the Error unwraps to it.
func Errorf(code, hint, format string, args ...any) *Error {
	if hint == "" {
		hint = defaultHints[code]
	}
	err := fmt.Errorf(format, args...)
	e := &Error{Code: code, Message: err.Error(), Hint: hint}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		e.cause = u.Unwrap()
	case interface{ Unwrap() []error }:
		e.cause = err // several %w: the fmt error unwraps to each
	}
	return e
}

// AsError turns any error into an Error for the wire, keeping an Error found
// in its chain and classifying the rest as internal.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var we *Error
	if errors.As(err, &we) {
		out := *we
		if out.Hint == "" {
			out.Hint = defaultHints[out.Code]
		}
		if msg := err.Error(); msg != we.Message {
			out.Message = msg // keep the context the chain added
			out.cause = err
		}
		return &out
	}
	return &Error{Code: CodeInternal, Message: err.Error(), Hint: defaultHints[CodeInternal], cause: err}
}

// HintFor returns the catalog's hint for code.
func HintFor(code string) string { return defaultHints[code] }

// CodeOf returns the code of the Error in err's chain, or "".
func CodeOf(err error) string {
	var we *Error
	if errors.As(err, &we) {
		return we.Code
	}
	return ""
}
