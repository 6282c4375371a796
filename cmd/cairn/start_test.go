package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/wire"
)

// scriptedServer answers backup.start on an embedded NATS server with the
// answers it is given, in order (the last one again and again), and keeps
// the requests. A nil answer is no answer at all.
type scriptedServer struct {
	url string

	mu      sync.Mutex
	answers []func(wire.BackupStartReq) (wire.JobStarted, error)
	seen    []wire.BackupStartReq
}

func newScriptedServer(t *testing.T, answers ...func(wire.BackupStartReq) (wire.JobStarted, error)) *scriptedServer {
	t.Helper()
	ns, err := natsd.Start(natsd.Config{Anonymous: true}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	s := &scriptedServer{url: ns.URL(), answers: answers}
	nc, err := wire.Connect(ns.URL(), "scripted-server", wire.NATSAuth{}, "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.Subscribe(wire.APISubject(wire.OpBackupStart), func(m *nats.Msg) {
		body, err := wire.Unmarshal(m.Data)
		if err != nil {
			return
		}
		req, err := wire.Decode[wire.BackupStartReq](body)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.seen = append(s.seen, req)
		answer := s.answers[min(len(s.seen), len(s.answers))-1]
		s.mu.Unlock()
		if answer == nil {
			return // the answer is lost
		}
		resp, err := answer(req)
		if err != nil {
			wire.Respond(m, wire.MarshalError(wire.AsError(err)), slog.New(slog.NewTextHandler(io.Discard, nil)))
			return
		}
		data, _ := wire.Marshal(resp)
		wire.Respond(m, data, slog.New(slog.NewTextHandler(io.Discard, nil)))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *scriptedServer) requests() []wire.BackupStartReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]wire.BackupStartReq(nil), s.seen...)
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
