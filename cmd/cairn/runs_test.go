package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/wire"
)

// 'cairn job list --queued' shows the queued jobs in the order the leader
// serves them (priority, then scheduled time) with what each waits for;
// 'cairn job runs' shows a skipped run with its reason and a promoted one
// with its levels.
func TestJobQueueAndRuns(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ns, err := natsd.Start(natsd.Config{Anonymous: true}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	at := time.Date(2026, 3, 2, 21, 0, 0, 0, time.UTC)
	var asked wire.JobListReq
	r := wire.NewRouter()
	r.Handle(wire.OpJobList, func(_ context.Context, _ string, raw json.RawMessage) (any, error) {
		if err := json.Unmarshal(raw, &asked); err != nil {
			return nil, err
		}
		// Newest first, as the servers list them.
		return wire.JobListResp{Jobs: []wire.JobInfo{
			{ID: 44, Type: "backup", Client: "web1", State: "queued", Policy: "late", Scheduled: at.Add(time.Hour), Created: at, Waiting: "client web1 runs job 41"},
			{ID: 43, Type: "backup", Client: "web1", State: "queued", Policy: "urgent", Priority: 5, Scheduled: at.Add(2 * time.Hour), Created: at, Waiting: "client web1 runs job 41"},
			{ID: 42, Type: "backup", Client: "db1", State: "queued", Pool: "Tape", Created: at.Add(-time.Hour), Waiting: "pool Tape: 2 of 2 drives busy"},
		}}, nil
	})
	r.Handle(wire.OpRunList, func(context.Context, string, json.RawMessage) (any, error) {
		return wire.RunListResp{Runs: []wire.RunInfo{
			{Policy: "nightly", Client: "web1", Scheduled: at.Add(24 * time.Hour), Asked: "incremental", Level: "incremental", State: "skipped",
				Reason: "job 41 of the run at 2026-03-02T21:00:00Z is still running"},
			{Policy: "nightly", Client: "web1", Scheduled: at, Asked: "incremental", Level: "full", State: "dispatched", JobID: 41, JobState: "running",
				Promotion: "promoted to full: no full of this fileset yet",
				Warning:   "pool Default cannot take the run of policy nightly at 2026-03-02T21:00:00Z: it needs about 8.0 MiB and has 1.0 MiB free"},
		}}, nil
	})
	if _, err := wire.Serve(ctx, nc, wire.APIWildcard, wire.ServerQueue, logger, r.Dispatch(wire.TrimAPI)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CAIRN_NATS", "")

	code, out, stderr := cli(ctx, "--nats", ns.URL(), "job", "list", "--queued")
	if code != 0 || len(asked.States) != 1 || asked.States[0] != "queued" {
		t.Fatalf("job list --queued: exit %d, asked %+v, %q", code, asked, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[1], "43 ") || !strings.HasPrefix(lines[2], "42 ") || !strings.HasPrefix(lines[3], "44 ") ||
		!strings.Contains(lines[1], "client web1 runs job 41") || !strings.Contains(lines[2], "pool Tape: 2 of 2 drives busy") {
		t.Fatalf("job list --queued:\n%s", out)
	}
	if code, _, stderr := cli(ctx, "--nats", ns.URL(), "job", "list", "--queued", "--state", "running"); code != exitUsage {
		t.Fatalf("--queued with --state: exit %d, %q", code, stderr)
	}

	code, out, stderr = cli(ctx, "--nats", ns.URL(), "job", "runs", "--policy", "nightly")
	if code != 0 || !strings.Contains(out, "skipped") || !strings.Contains(out, "job 41 of the run at 2026-03-02T21:00:00Z is still running") ||
		!strings.Contains(out, "incremental->full") || !strings.Contains(out, "41 (running)") || !strings.Contains(out, "no full of this fileset yet") ||
		!strings.Contains(out, "no full of this fileset yet; warning: pool Default cannot take the run") {
		t.Fatalf("job runs: exit %d\n%s%s", code, out, stderr)
	}
	t.Logf("job runs:\n%s", out)
	if code, out2, stderr := cli(ctx, "--nats", ns.URL(), "job", "list", "--runs"); code != 0 || out2 != out {
		t.Fatalf("job list --runs: exit %d, %q, %q; want what job runs printed", code, out2, stderr)
	}
}
