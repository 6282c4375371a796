package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/alert"
	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/internal/clock"
	"github.com/cairnbackup/cairn/internal/poll"
)

// alertHook is a webhook that records what it is given; while held, a post
// is kept open until its sender gives it up, and not recorded, as if the
// receiver were slow when the sending leader died.
type alertHook struct {
	mu        sync.Mutex
	held      bool
	arrived   []alert.Kind // while held
	delivered []alert.Event
}

func (h *alertHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var e alert.Event
	if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	if h.held {
		h.arrived = append(h.arrived, e.Kind)
		h.mu.Unlock()
		<-r.Context().Done()
		return
	}
	h.delivered = append(h.delivered, e)
	h.mu.Unlock()
}

func (h *alertHook) hold(on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held = on
}

func (h *alertHook) kinds() (arrived, delivered []alert.Kind, events []alert.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.delivered {
		delivered = append(delivered, e.Kind)
	}
	return slices.Clone(h.arrived), delivered, slices.Clone(h.delivered)
}

// TestAlertsSurviveALeaderChange: a group of three on real Raft and NATS,
// on one fake clock. Its leader sees a client breach its RPO and a run
// missed, and dies while the webhook has not taken either alert: the next
// leader sends both, once. Then the leadership moves again while the
// breach goes on: the new leader sends the breach no second time (the
// alert of a run missed after the move, which it sends, shows it has
// been deciding meanwhile).
func TestAlertsSurviveALeaderChange(t *testing.T) {
	start := time.Date(2026, 3, 2, 20, 0, 0, 0, time.UTC)
	fake := clock.NewFake(start)
	hook := &alertHook{}
	web := httptest.NewServer(hook)
	t.Cleanup(web.Close)
	srvs, _ := newGroupOfThreeWith(t, func(c *Config) {
		c.Alerts.Webhooks = []alert.WebhookConfig{{Name: "ops", URL: web.URL, Timeout: time.Minute}}
	}, func(s *Server) {
		s.clock = fake
		s.alertDrain = 100 * time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var old int
	poll.Until(t, 30*time.Second, func() (err error) {
		old, err = leaderOf(srvs)
		return err
	})
	policy := func(name, at string, rpo time.Duration) *catalog.Command {
		return &catalog.Command{Op: catalog.OpPutPolicy, PolicyPut: &catalog.PolicyPut{Mode: catalog.PutCreate, Policy: catalog.Policy{
			Name: name, Clients: []string{"web1"}, Paths: []string{"/srv/" + name}, Pool: "Default", TimeZone: "UTC",
			Schedule: "daily " + at + " incremental", CatchUpWindow: time.Hour, RPO: rpo,
			Retention: catalog.PolicyRetention{All: catalog.KeepRules{Last: 7}},
		}}}
	}
	for _, c := range []*catalog.Command{
		{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "web1", Hostname: "web1.example"}},
		{Op: catalog.OpPutKey, Key: &catalog.Key{ID: "k1", Pool: "Default", Wrapped: []byte("wrapped")}},
		{Op: catalog.OpCreatePool, Pool: &catalog.Pool{Name: "Default", Nodes: []string{"sn1"}, KeyID: "k1", BlockSize: 1 << 16, BlockRawSize: 1 << 20}},
		{Op: catalog.OpRegisterNode, Node: &catalog.StorageNode{ID: "sn1", DataAddr: "127.0.0.1:7020", Pools: []catalog.NodePool{{Name: "Default", Dir: "/srv/pool"}}}},
		policy("nightly", "20:30", 2*time.Hour),
	} {
		if _, err := srvs[old].orch.Apply(ctx, c); err != nil {
			t.Fatal(err)
		}
	}

	// 23:00: the run of 20:30 is past its window of an hour, and web1 has
	// had no backup for three hours against an RPO of two.
	hook.hold(true)
	fake.Advance(3 * time.Hour)
	// Both raised; the webhook holds the first, the second waits behind
	// it in the sink's queue.
	poll.Until(t, 30*time.Second, func() error {
		if arrived, _, _ := hook.kinds(); len(arrived) < 1 {
			return fmt.Errorf("the webhook was offered %v", arrived)
		}
		als, err := srvs[old].store.Alerts()
		if err == nil && len(als) != 2 {
			err = fmt.Errorf("the catalog owes %d alerts", len(als))
		}
		return err
	})
	if err := srvs[old].Close(); err != nil {
		t.Logf("close the old leader: %v", err)
	}
	hook.hold(false)
	var survivors []*Server
	for i, s := range srvs {
		if i != old {
			survivors = append(survivors, s)
		}
	}
	owedNone := func() error {
		for _, s := range survivors {
			als, err := s.store.Alerts()
			if err != nil {
				return err
			}
			for _, al := range als {
				if al.Owed() {
					return fmt.Errorf("%s still owes the %s alert", s.cfg.Name, al.Kind)
				}
			}
		}
		return nil
	}
	poll.Until(t, 30*time.Second, func() error {
		if _, delivered, _ := hook.kinds(); len(delivered) < 2 {
			return fmt.Errorf("delivered %v", delivered)
		}
		return owedNone()
	})
	_, delivered, events := hook.kinds()
	slices.Sort(delivered)
	if !slices.Equal(delivered, []alert.Kind{alert.MissedRun, alert.RPOBreach}) {
		t.Fatalf("after the first leader died the webhook got %v, want one missed_run and one rpo_breach", delivered)
	}
	for _, e := range events {
		if e.ID == "" || e.Client != "web1" || e.Policy != "nightly" {
			t.Fatalf("alert %+v", e)
		}
	}

	// The leadership moves on while the breach goes on.
	lead := slices.IndexFunc(survivors, func(s *Server) bool { return s.deciding() })
	if lead < 0 {
		t.Fatal("no survivor leads")
	}
	if err := survivors[lead].raft.TransferLeadership(ctx); err != nil {
		t.Fatal(err)
	}
	next := survivors[1-lead]
	poll.Until(t, 30*time.Second, func() error {
		if !next.deciding() {
			return fmt.Errorf("%s does not lead yet", next.cfg.Name)
		}
		return nil
	})
	if _, err := next.orch.Apply(ctx, policy("marker", "23:30", 0)); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		fake.Advance(time.Hour) // past the marker's run and its window
	}
	// A fake ticker drops the ticks of a scheduler still deciding: on a
	// slow host its last decision may come before the window ended, and
	// no tick would follow. Nudge the clock a minute at a time, ten at
	// most: far from the repeat interval and from the next runs.
	nudges := 0
	poll.Until(t, 30*time.Second, func() error {
		_, _, events := hook.kinds()
		for _, e := range events {
			if e.Kind == alert.MissedRun && e.Policy == "marker" {
				return owedNone()
			}
		}
		if nudges < 10 {
			nudges++
			fake.Advance(time.Minute)
		}
		return fmt.Errorf("no missed_run of policy marker yet")
	})
	_, delivered, _ = hook.kinds()
	slices.Sort(delivered)
	if !slices.Equal(delivered, []alert.Kind{alert.MissedRun, alert.MissedRun, alert.RPOBreach}) {
		t.Fatalf("after the leadership moved the webhook got %v in all, want the rpo_breach once and two missed_run", delivered)
	}
}
