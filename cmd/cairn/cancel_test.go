package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/wire"
)

// 'cairn job cancel' of a job that ended exits 1 and says how it ended,
// with --json too; one of a job that does not exist exits 1, one with a
// job number that is not one exits 2. (integration's TestCancelJob
// cancels running and queued jobs.)
func TestJobCancelOfEndedJob(t *testing.T) {
	ctx := devCLI(t)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := cli(ctx, "backup", "--client", "web", "--path", src, "--wait"); code != 0 {
		t.Fatalf("backup: %d %q %q", code, out, stderr)
	}
	code, out, stderr := cli(ctx, "job", "cancel", "1", "--reason", "too late")
	if code != 1 || out != "" || !strings.Contains(stderr, "job 1 already ended (success); there is nothing to cancel") {
		t.Fatalf("cancel of an ended job: exit %d, %q, %q", code, out, stderr)
	}
	code, out, stderr = cli(ctx, "--json", "job", "cancel", "1")
	if e := decodeJSONError(t, stderr); code != 1 || out != "" || e == nil || e.Code != wire.CodeWrongState {
		t.Fatalf("cancel of an ended job, --json: exit %d, %q, %q", code, out, stderr)
	}
	code, _, stderr = cli(ctx, "job", "cancel", "99")
	if code != 1 || !strings.Contains(stderr, "job 99 does not exist") {
		t.Fatalf("cancel of a job that does not exist: exit %d, %q", code, stderr)
	}
	if code, _, stderr = cli(ctx, "job", "cancel", "one"); code != exitUsage {
		t.Fatalf("cancel of job 'one': exit %d, %q", code, stderr)
	}
	code, out, _ = cli(ctx, "--json", "job", "show", "1")
	var j wire.JobInfo
	if code != 0 || json.Unmarshal([]byte(out), &j) != nil || j.State != "success" || j.CanceledBy != "" {
		t.Fatalf("the job after refused cancels: %d %s", code, out)
	}
}

// A cancel whose wait meets an election (the servers answer 'no leader'
// to a job.show) keeps waiting for the job as it was, and does not take
// the failed answer for a job that ended in no state.
func TestJobCancelWaitsThroughAnElection(t *testing.T) {
	job := func(state string) scriptedAnswer {
		return func(json.RawMessage) (any, error) {
			j := wire.JobInfo{ID: 5, Type: "backup", State: state}
			if state == "canceled" {
				j.Error = "canceled by admin"
			}
			return j, nil
		}
	}
	noLeader := func(json.RawMessage) (any, error) {
		return nil, wire.Errorf(wire.CodeNotLeader, "", "no leader: the servers are electing one")
	}
	s := newScriptedServer(t)
	s.script(wire.OpJobCancel, job("running"))
	s.script(wire.OpJobShow, noLeader, noLeader, job("running"), job("canceled"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Setenv("CAIRN_NATS", "")
	code, out, stderr := cli(ctx, "--nats", s.url, "job", "cancel", "5")
	if code != 0 || !strings.Contains(out, "job 5 canceled") {
		t.Fatalf("cancel across an election: exit %d, %q, %q", code, out, stderr)
	}
}
