package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/wire"
)

func TestStatusNamesTheClientsThatBreachTheirRPO(t *testing.T) {
	var out bytes.Buffer
	if err := printRPOSummary(&out, wire.StatusResp{}); err != nil || out.Len() != 0 {
		t.Fatalf("no policy with an RPO: printed %q, %v", out.String(), err)
	}
	if err := printRPOSummary(&out, wire.StatusResp{RPOTargets: 3}); err != nil || !strings.Contains(out.String(), "every one of 3") {
		t.Fatalf("no breach: printed %q, %v", out.String(), err)
	}
	out.Reset()
	st := wire.StatusResp{RPOTargets: 3, RPOBreaches: []wire.RPOStatus{
		{Client: "db1", Policy: "nightly", Target: 26 * time.Hour, Backup: 412, LastGood: time.Now().Add(-50 * time.Hour), Age: 50 * time.Hour, Breach: true},
		{Client: "web2", Policy: "nightly", Target: 26 * time.Hour, Age: 30 * time.Hour, Breach: true},
	}}
	if err := printRPOSummary(&out, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"2 of 3 client policies BREACH", "db1", "backup 412", "2 days 2 hours", "1 day 2 hours", "web2", "none yet"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
}

func TestClientListShowsEachPolicysRPO(t *testing.T) {
	if got := rpoCell(nil); got != "-" {
		t.Errorf("no target: %q", got)
	}
	got := rpoCell([]wire.RPOStatus{
		{Policy: "nightly", Target: 26 * time.Hour, Backup: 7, Age: 3 * time.Hour},
		{Policy: "hourly", Target: 2 * time.Hour, Age: 5 * time.Hour, Breach: true},
	})
	want := "nightly ok (3 hours of 1 day 2 hours); hourly BREACH (none for 5 hours of 2 hours)"
	if got != want {
		t.Errorf("cell = %q\nwant   %q", got, want)
	}
}

// The status names an offline node and the offline agents, the first
// wire.MaxOfflineNamed of them and how many more.
func TestStatusLiveness(t *testing.T) {
	st := wire.StatusResp{
		Nodes: []wire.NodeLiveness{
			{ID: "sn1", Online: true, Streams: 2, Version: "1.2"},
			{ID: "sn2", LastSeen: time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)},
			{ID: "sn3", Online: true, Draining: true},
		},
		Agents: &wire.AgentsSummary{Online: 5, Offline: 22, Named: []string{"a", "b"}},
	}
	var out strings.Builder
	if err := printLiveness(&out, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"sn1           online    -                    2        1.2",
		"sn2           OFFLINE   2026-01-02 03:04:05  0        -",
		"sn3           draining",
		"agents: 5 online, 22 offline (a, b and 20 more; 'cairn client list' shows when each was last seen)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("no %q in:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := printLiveness(&out, wire.StatusResp{Agents: &wire.AgentsSummary{}}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "storage nodes: none has registered\nagents: 0 online, 0 offline\n" {
		t.Fatalf("empty status:\n%s", out.String())
	}
	// A server older than the liveness in a status says nothing of it.
	out.Reset()
	if err := printLiveness(&out, wire.StatusResp{}); err != nil || out.Len() != 0 {
		t.Fatalf("status of an older server: %q, %v", out.String(), err)
	}
}
