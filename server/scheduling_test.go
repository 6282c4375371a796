package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/alert"
	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/internal/clock"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// TestScheduledRunHappensOnceAcrossLeaders: a group of three on real Raft
// and NATS runs a policy on one fake clock. The leader is killed at the
// instant the run falls due (before, during or after its record: whatever
// the race gives), or after it started the run's job and before it marked
// the run dispatched; the next leader's scheduler finishes the run, and
// the catalog holds one run and one job.
func TestScheduledRunHappensOnceAcrossLeaders(t *testing.T) {
	for _, acrossDispatch := range []bool{false, true} {
		name := "killed at the scheduled instant"
		if acrossDispatch {
			name = "killed across the dispatch"
		}
		t.Run(name, func(t *testing.T) {
			at := time.Date(2026, 3, 2, 21, 0, 0, 0, time.UTC)
			fake := clock.NewFake(at.Add(-time.Minute))
			// Created at 20:59, the leader's time when it is stored.
			policy := catalog.Policy{Name: "nightly", Clients: []string{"web1"}, Paths: []string{"/srv"}, Pool: "Default", TimeZone: "UTC",
				Schedule: "daily 21:00 incremental", Retention: catalog.PolicyRetention{All: catalog.KeepRules{Last: 7}}}
			started := make(chan string, 3)
			release := make(chan struct{})
			srvs, _ := newGroupOfThree(t, func(s *Server) {
				s.clock = fake
				if acrossDispatch {
					name := s.cfg.Name
					s.afterRunStart = func(ctx context.Context) {
						select {
						case started <- name:
						default:
						}
						select {
						case <-release:
						case <-ctx.Done():
						}
					}
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var old int
			poll.Until(t, 30*time.Second, func() (err error) {
				old, err = leaderOf(srvs)
				return err
			})
			for _, c := range []*catalog.Command{
				{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "web1", Hostname: "web1.example"}},
				{Op: catalog.OpPutKey, Key: &catalog.Key{ID: "k1", Pool: "Default", Wrapped: []byte("wrapped")}},
				{Op: catalog.OpCreatePool, Pool: &catalog.Pool{Name: "Default", Nodes: []string{"sn1"}, KeyID: "k1", BlockSize: 1 << 16, BlockRawSize: 1 << 20}},
				{Op: catalog.OpRegisterNode, Node: &catalog.StorageNode{ID: "sn1", DataAddr: "127.0.0.1:7020", Pools: []catalog.NodePool{{Name: "Default", Dir: "/srv/pool"}}}},
				{Op: catalog.OpPutPolicy, PolicyPut: &catalog.PolicyPut{Policy: policy, Mode: catalog.PutCreate}},
			} {
				if _, err := srvs[old].orch.Apply(ctx, c); err != nil {
					t.Fatal(err)
				}
			}
			fake.Advance(time.Minute) // 21:00: the run falls due
			if acrossDispatch {
				var who string
				select {
				case who = <-started:
				case <-ctx.Done():
					t.Fatal("no leader started the run's job")
				}
				if who != srvs[old].cfg.Name {
					t.Fatalf("%s started the run, %s leads", who, srvs[old].cfg.Name)
				}
			}
			if err := srvs[old].Close(); err != nil {
				t.Logf("close the old leader: %v", err)
			}
			close(release)
			var survivors []*Server
			for i, s := range srvs {
				if i != old {
					survivors = append(survivors, s)
				}
			}
			poll.Until(t, 30*time.Second, func() error {
				for _, s := range survivors {
					r, err := s.store.LastRun("nightly", "web1")
					if err != nil {
						return err
					}
					if r == nil || r.State != catalog.RunDispatched {
						return fmt.Errorf("%s: the run is %+v", s.cfg.Name, r)
					}
				}
				return nil
			})
			for _, s := range survivors {
				runs, err := s.store.Runs(catalog.RunFilter{Policy: "nightly"})
				if err != nil {
					t.Fatal(err)
				}
				jobs, err := s.store.Jobs(catalog.JobFilter{Client: "web1"})
				if err != nil {
					t.Fatal(err)
				}
				if len(runs) != 1 || len(jobs) != 1 || runs[0].JobID != jobs[0].ID || jobs[0].Policy != "nightly" || !jobs[0].Scheduled.Equal(at) {
					t.Fatalf("%s: runs %+v, jobs %+v", s.cfg.Name, runs, jobs)
				}
				if jobs[0].RequestID != catalog.RunRequestID(runs[0].Key()) {
					t.Fatalf("%s: the job's request id %s is not the run's", s.cfg.Name, jobs[0].RequestID)
				}
			}
		})
	}
}

// run.list answers the runs of a policy, newest first, with their jobs'
// states, and refuses a policy or a client that does not exist.
func TestRunList(t *testing.T) {
	h := newHarness(t)
	h.setup()
	at := time.Date(2026, 3, 2, 21, 0, 0, 0, time.UTC)
	for _, c := range []*catalog.Command{
		{Op: catalog.OpPutPolicy, PolicyPut: &catalog.PolicyPut{Mode: catalog.PutCreate, Policy: catalog.Policy{Name: "nightly", Clients: []string{"web"},
			Paths: []string{"/srv"}, Pool: "Default", Schedule: "daily 21:00", Retention: catalog.PolicyRetention{All: catalog.KeepRules{Last: 7}}}}},
		{Op: catalog.OpRecordRuns, Runs: &catalog.RunsRecord{Runs: []catalog.Run{
			{Policy: "nightly", Client: "web", Scheduled: at.Add(-24 * time.Hour), State: catalog.RunMissed, Reason: "down"},
			{Policy: "nightly", Client: "web", Scheduled: at, Asked: catalog.LevelIncremental, Level: catalog.LevelFull, State: catalog.RunSkipped, Reason: "busy"},
		}}},
	} {
		if _, err := h.srv.orch.Apply(h.ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	var resp wire.RunListResp
	h.must(h.api(wire.OpRunList, wire.RunListReq{Policy: "nightly", Client: "web"}, &resp))
	if len(resp.Runs) != 2 || resp.Runs[0].State != "skipped" || resp.Runs[0].Reason != "busy" || resp.Runs[1].State != "missed" || resp.More {
		t.Fatalf("runs %+v", resp)
	}
	h.must(h.api(wire.OpRunList, wire.RunListReq{Limit: 1}, &resp))
	if len(resp.Runs) != 1 || !resp.More || !resp.Runs[0].Scheduled.Equal(at) {
		t.Fatalf("one run: %+v", resp)
	}
	wantCode(t, h.api(wire.OpRunList, wire.RunListReq{Policy: "weekly"}, &resp), wire.CodeNotFound)
	wantCode(t, h.api(wire.OpRunList, wire.RunListReq{Client: "nosuch"}, &resp), wire.CodeUnknownClient)
	h.must(h.api(wire.OpRunList, wire.RunListReq{Client: "web", States: []string{"missed"}}, &resp))
	if len(resp.Runs) != 1 || resp.Runs[0].Reason != "down" {
		t.Fatalf("missed runs of client web: %+v", resp)
	}
}

// A run missed while the servers were down (here: the leader's clock jumps
// past its catch-up window) is recorded missed and alerted to the
// webhook of the servers' config, as a failed job is.
func TestMissedRunIsAlerted(t *testing.T) {
	alerts := make(chan alert.Event, 8)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e alert.Event
		if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		alerts <- e
	}))
	t.Cleanup(hook.Close)
	h := newFakeClockHarness(t, func(c *Config) {
		c.Alerts.Webhooks = []alert.WebhookConfig{{Name: "ops", URL: hook.URL}}
	})
	h.setup()
	due := h.fake.Now().Add(time.Hour).UTC()
	policy := catalog.Policy{Name: "hourly", Clients: []string{"web"}, Paths: []string{"/srv"}, Pool: "Default", TimeZone: "UTC",
		Schedule:      fmt.Sprintf("daily %02d:%02d incremental", due.Hour(), due.Minute()),
		CatchUpWindow: time.Hour, Retention: catalog.PolicyRetention{All: catalog.KeepRules{Last: 7}}}
	if _, err := h.srv.orch.Apply(h.ctx, &catalog.Command{Op: catalog.OpPutPolicy, PolicyPut: &catalog.PolicyPut{Policy: policy, Mode: catalog.PutCreate}}); err != nil {
		t.Fatal(err)
	}
	h.advance(3 * time.Hour) // two hours past the run, one past its window
	select {
	case e := <-alerts:
		if e.Kind != alert.MissedRun || e.Policy != "hourly" || e.Client != "web" || e.Missed != 1 || e.Scheduled == nil ||
			!strings.Contains(e.Error, "catch-up window of 1 hour") {
			t.Fatalf("alert %+v", e)
		}
		t.Logf("alert: %s", e.Summary)
	case <-time.After(20 * time.Second):
		t.Fatal("no missed_run alert")
	}
	r, err := h.srv.store.LastRun("hourly", "web")
	if err != nil || r == nil || r.State != catalog.RunMissed {
		t.Fatalf("the run: %+v, %v", r, err)
	}
}
