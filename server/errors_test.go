package server

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/server/cluster"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/wire"
)

// A catalog change that did not apply is told with a code and a hint, and
// the error keeps what Raft or the catalog said: errors.Is finds it
// through the code the edge chose.
func TestApplyErrorKeepsTheCause(t *testing.T) {
	s := &Server{cfg: Config{Name: "s1", DataDir: t.TempDir()}}
	shutdown := errors.New("raft is shutdown")
	for _, c := range []struct {
		err   error
		code  string
		cause error
	}{
		{fmt.Errorf("catalog commit_backup: %w", cluster.ErrOutcomeUnknown), wire.CodeOutcomeUnknown, cluster.ErrOutcomeUnknown},
		{fmt.Errorf("apply: %w", catalog.ErrFSMStopped), wire.CodeUnavailable, catalog.ErrFSMStopped},
		{fmt.Errorf("apply: %w", shutdown), wire.CodeUnavailable, shutdown},
	} {
		we := s.applyError(c.err)
		if we.Code != c.code || !errors.Is(we, c.cause) {
			t.Errorf("applyError(%v) = %s %q; errors.Is(cause) = %v", c.err, we.Code, we.Message, errors.Is(we, c.cause))
		}
	}
	full := &catalog.DiskFullError{Dir: s.raftDir(), Free: 10, Need: 100}
	var got *catalog.DiskFullError
	if we := s.applyError(fmt.Errorf("apply: %w", full)); we.Code != wire.CodeDiskFull || !errors.As(we, &got) || got != full {
		t.Errorf("applyError of a full disk = %s %q; the DiskFullError kept: %v", we.Code, we.Message, got)
	}
	unwrap := errors.New("cipher: message authentication failed")
	if we := s.unwrapError("k1", unwrap); we.Error() != "server s1 cannot unwrap data key k1: "+unwrap.Error() || !errors.Is(we, unwrap) {
		t.Errorf("unwrapError = %q; the cause kept: %v", we.Error(), errors.Is(we, unwrap))
	}
}

// Every refusal of the orchestrator reaches a caller over NATS with the
// code, hint and message it had before the orchestrator returned its own
// errors (the hints below are those the CLI printed then): the edge maps
// them, and loses nothing.
func TestOrchestratorRefusalsReachTheCLIUnchanged(t *testing.T) {
	h := newHarness(t)
	h.setup()
	x := []fileindex.Path{"/x"}
	var first wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: x, Level: "full", Start: wire.Start{RequestID: "once"}}, &first))
	for _, c := range []struct {
		op        string
		req       any
		code      string
		hint, msg string
	}{
		{wire.OpBackupStart, wire.BackupStartReq{Client: "nosuch", Paths: x}, wire.CodeUnknownClient, wire.HintFor(wire.CodeUnknownClient),
			`client "nosuch" is not known: no agent of that name has registered`},
		{wire.OpBackupStart, wire.BackupStartReq{Client: "bad.name", Paths: x}, wire.CodeInvalidArgument,
			"use letters, digits, '-' and '_' (at most 63, starting with a letter or digit)", `client name "bad.name" is not valid`},
		{wire.OpBackupStart, wire.BackupStartReq{Client: "web"}, wire.CodeInvalidArgument, "pass --path DIR (repeat it for several)", "nothing to back up: no path given"},
		{wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"rel"}}, wire.CodeInvalidArgument,
			"give absolute paths, as they are on the client", `path "rel" is not an absolute path`},
		{wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: x, Level: "weekly"}, wire.CodeInvalidArgument,
			"use full, incremental or differential", `backup level "weekly" is not known`},
		{wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: x, Excludes: []fileindex.Path{""}}, wire.CodeInvalidArgument,
			"see 'cairn backup --help' for the patterns --exclude takes", ""},
		{wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: x, Pool: "Nope"}, wire.CodeNotFound,
			"list pools with 'cairn pool list'", `pool "Nope" does not exist`},
		{wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: x, Application: wire.Application{Before: []wire.AppStep{{}}}}, wire.CodeInvalidArgument,
			"give each --before and --after a command", "an application step has no command"},
		{wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/other"}, Start: wire.Start{RequestID: "once"}}, wire.CodeAlreadyExists,
			"give each request its own id: only a repeat of the very same command may reuse one", "request id once was used for another request"},
		{wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: x, Start: wire.Start{RequestID: "a b"}}, wire.CodeInvalidArgument,
			"use up to 128 letters, digits, '.', '_', ':' and '-', starting with a letter or digit (a UUID will do)", `request id "a b" is not valid`},
		{wire.OpRestoreStart, wire.RestoreStartReq{PointInTime: wire.PointInTime{Client: "web"}, To: "/r"}, wire.CodeNotFound,
			"run a backup first", "client web has no complete backup"},
		{wire.OpRestoreStart, wire.RestoreStartReq{PointInTime: wire.PointInTime{Client: "web", BackupID: 77}, To: "/r"}, wire.CodeNotFound,
			"list backups with 'cairn backup list --client web'", "client web has no backup 77"},
		{wire.OpRestoreStart, wire.RestoreStartReq{PointInTime: wire.PointInTime{}, To: "/r"}, wire.CodeInvalidArgument, "pass --client NAME", "no client given"},
		{wire.OpTreeList, wire.TreeListReq{PointInTime: wire.PointInTime{Client: "ghost"}}, wire.CodeUnknownClient, wire.HintFor(wire.CodeUnknownClient),
			`client "ghost" is not known: no agent of that name has registered`},
		{wire.OpJobCancel, wire.JobCancelReq{}, wire.CodeInvalidArgument, "list jobs with 'cairn job list'", "no job id given"},
		{wire.OpJobCancel, wire.JobCancelReq{ID: 999}, wire.CodeNotFound, "list jobs with 'cairn job list'", "job 999 does not exist"},
		{wire.OpJobShow, wire.JobShowReq{ID: 999}, wire.CodeNotFound, "list jobs with 'cairn job list'", "job 999 does not exist"},
		// Not the orchestrator's, but a read that maps the catalog's
		// not-found as it did.
		{wire.OpPolicyShow, wire.PolicyNameReq{Name: "nosuch"}, wire.CodeNotFound, "list policies with 'cairn policy list'", `policy "nosuch" does not exist`},
	} {
		err := h.api(c.op, c.req, nil)
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != c.code || we.Hint != c.hint || (c.msg != "" && we.Message != c.msg) {
			t.Errorf("%s %+v: %#v, want code %s, hint %q, message %q", c.op, c.req, we, c.code, c.hint, c.msg)
		}
	}
}

// The edge keeps the code of the error that decided, outermost in the
// chain; an error with no code at all is internal.
func TestWireErrorOfAChain(t *testing.T) {
	refusal := orchestrator.CatalogError(&catalog.Error{Code: catalog.CodeWrongState, Msg: "job 3 ended", Hint: "look at it"})
	for _, c := range []struct {
		err        error
		code, hint string
	}{
		{refusal, wire.CodeWrongState, "look at it"},
		{fmt.Errorf("cancel: %w", refusal), wire.CodeWrongState, "look at it"},
		{wire.Errorf(wire.CodeKey, "import the key", "unwrap: %w", refusal), wire.CodeKey, "import the key"},
		{orchestrator.NotStarted(wire.Errorf(wire.CodeDiskFull, "free space in /d", "full"), "the backup of web"), wire.CodeDiskFull, "free space in /d"},
		{errors.New("a bug"), wire.CodeInternal, wire.HintFor(wire.CodeInternal)},
	} {
		we := wireError(c.err)
		if we.Code != c.code || we.Hint != c.hint || we.Message != c.err.Error() {
			t.Errorf("wireError(%v) = %s %q %q, want %s %q", c.err, we.Code, we.Hint, we.Message, c.code, c.hint)
		}
		if !errors.Is(we, c.err) {
			t.Errorf("wireError(%v) lost its cause", c.err)
		}
	}
}
