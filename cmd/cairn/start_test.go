package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/wire"
)

// scriptedServer answers API requests on an embedded NATS server with the
// answers it is given for each operation, in order (the last one again and
// again), and keeps the requests. A nil answer is no answer at all.
type scriptedServer struct {
	t   *testing.T
	url string
	nc  *nats.Conn

	mu   sync.Mutex
	seen map[string][]json.RawMessage
}

// scriptedAnswer is one answer of a scripted server to a request's body.
type scriptedAnswer func(json.RawMessage) (any, error)

// newScriptedServer starts a scripted server that answers backup.start
// with answers (and nothing else until told with script).
func newScriptedServer(t *testing.T, answers ...func(wire.BackupStartReq) (wire.JobStarted, error)) *scriptedServer {
	t.Helper()
	ns, err := natsd.Start(natsd.Config{Anonymous: true}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := wire.Connect(ns.URL(), "scripted-server", wire.NATSAuth{}, "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s := &scriptedServer{t: t, url: ns.URL(), nc: nc, seen: map[string][]json.RawMessage{}}
	if len(answers) > 0 {
		s.script(wire.OpBackupStart, typedAnswers(answers)...)
	}
	return s
}

// script has the server answer op with answers.
func (s *scriptedServer) script(op string, answers ...scriptedAnswer) {
	s.t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	sub, err := s.nc.Subscribe(wire.APISubject(op), func(m *nats.Msg) {
		body, err := wire.Unmarshal(m.Data)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.seen[op] = append(s.seen[op], body)
		answer := answers[min(len(s.seen[op]), len(answers))-1]
		s.mu.Unlock()
		if answer == nil {
			return // the answer is lost
		}
		resp, err := answer(body)
		if err != nil {
			wire.Respond(m, wire.MarshalError(wire.AsError(err)), logger)
			return
		}
		data, _ := wire.Marshal(resp)
		wire.Respond(m, data, logger)
	})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { sub.Unsubscribe() })
	if err := s.nc.Flush(); err != nil {
		s.t.Fatal(err)
	}
}

// typedAnswers are answers to requests of type Req as a scripted server's.
func typedAnswers[Req, Resp any](answers []func(Req) (Resp, error)) []scriptedAnswer {
	out := make([]scriptedAnswer, len(answers))
	for i, answer := range answers {
		if answer == nil {
			continue
		}
		out[i] = func(body json.RawMessage) (any, error) {
			req, err := wire.Decode[Req](body)
			if err != nil {
				return nil, err
			}
			return answer(req)
		}
	}
	return out
}

// requests are the backup.start requests the server got.
func (s *scriptedServer) requests() []wire.BackupStartReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []wire.BackupStartReq
	for _, body := range s.seen[wire.OpBackupStart] {
		req, err := wire.Decode[wire.BackupStartReq](body)
		if err != nil {
			s.t.Fatal(err)
		}
		out = append(out, req)
	}
	return out
}

func fails(code, msg string) func(wire.BackupStartReq) (wire.JobStarted, error) {
	return func(wire.BackupStartReq) (wire.JobStarted, error) {
		return wire.JobStarted{}, wire.Errorf(code, "", "%s", msg)
	}
}

func starts(id uint64) func(wire.BackupStartReq) (wire.JobStarted, error) {
	return func(r wire.BackupStartReq) (wire.JobStarted, error) {
		return wire.JobStarted{JobID: id, State: "running", RequestID: r.RequestID, Repeated: r.Retry}, nil
	}
}

func backupArgs(url string, extra ...string) []string {
	return append([]string{"--nats", url, "--timeout", "300ms", "backup", "--client", "web", "--path", "/data", "--retry-for", "3s"}, extra...)
}

// The CLI tries a start again, with the same request id and marked as a
// repeat, while the answer is unclear (a lost answer, outcome_unknown, no
// leader), and reports the job it then gets.
func TestStartIsRetriedWithItsRequestID(t *testing.T) {
	s := newScriptedServer(t, fails(wire.CodeOutcomeUnknown, "leader lost"), nil, fails(wire.CodeNotLeader, "electing"), starts(7))
	code, stdout, stderr := cli(context.Background(), backupArgs(s.url)...)
	if code != 0 || !strings.Contains(stdout, "job 7") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	reqs := s.requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests, want 4: %+v", len(reqs), reqs)
	}
	for i, r := range reqs {
		if r.RequestID == "" || r.RequestID != reqs[0].RequestID || r.Retry != (i > 0) {
			t.Fatalf("request %d: %+v (first %+v)", i, r, reqs[0])
		}
	}
	if !strings.Contains(stdout, "request "+reqs[0].RequestID+" already started") {
		t.Fatalf("the answer to a repeat does not say so: %s", stdout)
	}
}

// A start still unclear when the retries end exits 4 and says how to find
// out: the same command with the request id. One that never reached a
// server is a plain failure; an answer that it failed is not retried.
func TestStartOutcomeUnknownExitsThree(t *testing.T) {
	unknown := newScriptedServer(t, nil, fails(wire.CodeNotLeader, "electing"))
	code, _, stderr := cli(context.Background(), backupArgs(unknown.url, "--request-id", "nightly-42")...)
	if code != exitUnknown || !strings.Contains(stderr, "could not tell whether the backup of web (request nightly-42) was carried out") ||
		!strings.Contains(stderr, "hint: run the same command again with --request-id nightly-42") {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	for _, r := range unknown.requests() {
		if r.RequestID != "nightly-42" || !r.Retry {
			t.Fatalf("a request with the user's id must be marked as a repeat: %+v", r)
		}
	}

	noLeader := newScriptedServer(t, fails(wire.CodeNotLeader, "no leader: the servers are electing one"))
	code, _, stderr = cli(context.Background(), backupArgs(noLeader.url)...)
	if code != 1 || !strings.Contains(stderr, "electing") || len(noLeader.requests()) < 2 {
		t.Fatalf("exit %d after %d requests\n%s", code, len(noLeader.requests()), stderr)
	}

	full := newScriptedServer(t, fails(wire.CodeDiskFull, "server s1 cannot write its catalog: the disk is full: free space in /srv"))
	code, _, stderr = cli(context.Background(), backupArgs(full.url)...)
	if code != 1 || !strings.Contains(stderr, "the disk is full: free space in /srv") || len(full.requests()) != 1 {
		t.Fatalf("exit %d after %d requests\n%s", code, len(full.requests()), stderr)
	}
}

// A --wait whose servers stop answering for a while (a restart of cairn
// dev, an election) keeps asking for its job and reports how it ended; it
// does not exit as if the job had failed while it goes on.
func TestWaitOutlivesServersThatStopAnswering(t *testing.T) {
	job := func(state string) scriptedAnswer {
		return func(json.RawMessage) (any, error) {
			return wire.JobInfo{ID: 7, Type: "backup", State: state, Client: "web"}, nil
		}
	}
	gone := func(json.RawMessage) (any, error) {
		return nil, wire.Errorf(wire.CodeUnavailable, "", "nothing answers the job.show of the API")
	}
	s := newScriptedServer(t, starts(7))
	s.script(wire.OpJobShow, job("running"), gone, nil, gone, job("running"), job("success"))
	code, stdout, stderr := cli(context.Background(), backupArgs(s.url, "--wait")...)
	if code != 0 || !strings.Contains(stdout, "no answer from the servers") || !strings.Contains(stdout, "backup job 7 success") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
}

// One whose servers stay silent past waitOutage exits 4 (outcome unknown)
// and says how to follow the job.
func TestWaitGivesUpOnServersGoneTooLong(t *testing.T) {
	was := waitOutage
	waitOutage = 500 * time.Millisecond
	t.Cleanup(func() { waitOutage = was })
	gone := func(json.RawMessage) (any, error) {
		return nil, wire.Errorf(wire.CodeUnavailable, "", "nothing answers the job.show of the API")
	}
	s := newScriptedServer(t, starts(7))
	s.script(wire.OpJobShow, gone)
	code, stdout, stderr := cli(context.Background(), backupArgs(s.url, "--wait")...)
	if code != exitUnknown || !strings.Contains(stderr, "stopped waiting for job 7") || !strings.Contains(stderr, "cairn job show 7") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
}

// The admin connection never stops reconnecting: with nats.go's default
// (60 tries, about two minutes) a --wait through a longer outage ended
// with 'connection closed', exit 1, while its job went on.
func TestAdminConnectionKeepsReconnecting(t *testing.T) {
	s := newScriptedServer(t)
	t.Setenv(devFileEnv, filepath.Join(t.TempDir(), "none.json"))
	g := &globals{natsURL: s.url}
	nc, err := g.connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.Opts.MaxReconnect != -1 || !nc.Opts.AllowReconnect {
		t.Fatalf("the admin connection reconnects at most %d times (allowed %v)", nc.Opts.MaxReconnect, nc.Opts.AllowReconnect)
	}
}
