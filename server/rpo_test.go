package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/alert"
	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/wire"
)

// A client under a policy with an RPO of 26 hours: not in breach while the
// policy is new, in breach once 26 hours pass with no good backup (status,
// client list, metrics and one alert say so), and out of it with the next
// good backup of the policy's paths (one resolved alert). A backup of other
// paths does not count.
func TestRPOBreachIsShownAndAlertedOnceEachWay(t *testing.T) {
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
	_, orders := h.setup()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := h.srv.apply(ctx, &catalog.Command{Op: catalog.OpPutPolicy, PolicyPut: &catalog.PolicyPut{Mode: catalog.PutCreate, Policy: catalog.Policy{
		// The leader's scheduler runs the policy: a schedule that falls
		// due only on a 29 February keeps its runs out of this test, which
		// makes its backups itself (and a missed run's alert, should the
		// test run then, is not what it waits for).
		Name: "nightly", Clients: []string{"web"}, Paths: []string{"/srv"}, Schedule: "Feb 29 day 02:00 incremental",
		Pool: "Default", RPO: 26 * time.Hour, Retention: catalog.PolicyRetention{All: catalog.KeepRules{Last: 7}},
	}}})
	h.must(err)

	status := func() wire.StatusResp {
		var st wire.StatusResp
		h.must(h.api(wire.OpStatus, wire.Empty{}, &st))
		return st
	}
	clientRPO := func() wire.RPOStatus {
		var cl wire.ClientListResp
		h.must(h.api(wire.OpClientList, wire.ClientListReq{}, &cl))
		if len(cl.Clients) != 1 || len(cl.Clients[0].RPO) != 1 {
			t.Fatalf("client list: %+v", cl.Clients)
		}
		return cl.Clients[0].RPO[0]
	}
	noAlert := func() {
		t.Helper()
		for {
			select {
			case e := <-alerts:
				if e.Kind == alert.MissedRun {
					continue
				}
				t.Fatalf("unexpected alert %+v", e)
			default:
				return
			}
		}
	}
	waitAlert := func(kind alert.Kind) alert.Event {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case e := <-alerts:
				if e.Kind == alert.MissedRun {
					continue
				}
				if e.Kind != kind || e.Client != "web" || e.Policy != "nightly" {
					t.Fatalf("alert %+v, want %s of web under nightly", e, kind)
				}
				t.Logf("alert: %s", e.Summary)
				return e
			case <-deadline:
				t.Fatalf("no %s alert", kind)
			}
		}
	}

	if st := status(); st.RPOTargets != 1 || len(st.RPOBreaches) != 0 {
		t.Fatalf("new policy: status %+v", st)
	}
	h.advance(25 * time.Hour)
	if r := clientRPO(); r.Breach || r.Backup != 0 || r.Target != 26*time.Hour {
		t.Fatalf("25 h in: %+v", r)
	}
	noAlert()

	// A backup of other paths is no restore point of this policy.
	h.committedBackupOf([]fileindex.Path{"/etc"}, orders, []fileindex.Entry{{Path: "/etc", Type: fileindex.TypeDir, Mode: 0o755}})
	h.advance(2 * time.Hour)
	waitAlert(alert.RPOBreach)
	st := status()
	if len(st.RPOBreaches) != 1 || st.RPOBreaches[0].Client != "web" || st.RPOBreaches[0].Age < 26*time.Hour {
		t.Fatalf("27 h in: status %+v", st)
	}
	if v, ok := webGauge(t, h, "cairn_client_rpo_breach"); !ok || v != 1 {
		t.Fatalf("cairn_client_rpo_breach = %v (present %v), want 1", v, ok)
	}
	h.advance(10 * time.Minute)
	noAlert() // said once, not at every assessment

	h.committedBackup(orders, []fileindex.Entry{{Path: "/srv", Type: fileindex.TypeDir, Mode: 0o755}})
	if r := clientRPO(); r.Breach || r.Backup == 0 || r.Age != 0 {
		t.Fatalf("after a good backup: %+v", r)
	}
	h.advance(time.Minute)
	waitAlert(alert.RPOResolved)
	if st := status(); len(st.RPOBreaches) != 0 {
		t.Fatalf("after a good backup: status %+v", st)
	}
	if v, ok := webGauge(t, h, "cairn_client_rpo_breach"); !ok || v != 0 {
		t.Errorf("cairn_client_rpo_breach = %v (present %v), want 0", v, ok)
	}
	if v, _ := webGauge(t, h, "cairn_client_rpo_target_seconds"); v != 26*3600 {
		t.Errorf("cairn_client_rpo_target_seconds = %v", v)
	}
	if v, ok := webGauge(t, h, "cairn_client_last_good_backup_timestamp_seconds"); !ok || v < float64(h.fake.Now().Add(-2*time.Minute).Unix()) {
		t.Errorf("cairn_client_last_good_backup_timestamp_seconds = %v (present %v)", v, ok)
	}
}

// webGauge is the value of a gauge of client web under policy nightly.
func webGauge(t *testing.T, h *harness, name string) (float64, bool) {
	t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["client"] == "web" && labels["policy"] == "nightly" {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}
