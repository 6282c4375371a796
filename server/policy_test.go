package server

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/wire"
)

// jsonFields lists the JSON names of t's fields, and of the structs inside
// them, as "Type.name".
func jsonFields(t reflect.Type, into map[string]string, prefix string) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.PkgPath() == "time" {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		into[prefix+name] = f.Type.Kind().String()
		jsonFields(f.Type, into, prefix+name+".")
	}
}

// A policy crosses the wire and the catalog every field of it: the two
// types hold the same JSON fields, and a whole policy converts there and
// back unchanged.
func TestPolicyIsCarried(t *testing.T) {
	w, c := map[string]string{}, map[string]string{}
	jsonFields(reflect.TypeOf(wire.Policy{}), w, "")
	jsonFields(reflect.TypeOf(catalog.Policy{}), c, "")
	if !reflect.DeepEqual(w, c) {
		t.Fatalf("wire.Policy and catalog.Policy differ:\nwire    %v\ncatalog %v", w, c)
	}
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	p := catalog.Policy{
		Name: "web", Description: "d", Disabled: true, Clients: []string{"web1"}, ClientLabels: map[string]string{"role": "web"},
		Paths: []string{"/srv"}, Excludes: []string{"*.tmp"}, OneFileSystem: true,
		Application: &catalog.Application{Before: []catalog.AppStep{{Command: "a", Timeout: 1, FailJob: true}}, After: []catalog.AppStep{{Command: "b"}},
			Sources: []catalog.CommandSource{{Path: "/db.sql", Command: "c", Timeout: 2}}},
		Schedule: "daily 02:00", TimeZone: "UTC", CatchUpWindow: 3, MaxFullAge: 4, MaxDifferentialAge: 5,
		Pool: "p", LevelPools: map[catalog.Level]string{catalog.LevelFull: "t"}, Priority: 6, RPO: 7,
		Retention: catalog.PolicyRetention{All: catalog.KeepRules{Within: 8, Last: 9, Hourly: 10, Daily: 11, Weekly: 12, Monthly: 13, Yearly: 14},
			Levels: map[catalog.Level]catalog.KeepRules{catalog.LevelIncremental: {Within: 15}}},
		Created: at, Updated: at.Add(time.Hour),
	}
	wp, err := wirePolicy(p)
	if err != nil {
		t.Fatal(err)
	}
	back, err := catalogPolicy(wp)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, p) {
		t.Fatalf("round trip\n got %+v\nwant %+v", back, p)
	}
}

func testWirePolicy() wire.Policy {
	return wire.Policy{
		Name: "web", Clients: []string{"web"}, Paths: []string{"/srv"}, Schedule: "daily 02:00 incremental\nSun 03:00 full",
		TimeZone: "UTC", Pool: "Default", Retention: wire.PolicyRetention{All: wire.KeepRules{Daily: 7}},
	}
}

// TestPolicyAPI: create, set, show, list and delete through the leader, and
// each refusal with its code.
func TestPolicyAPI(t *testing.T) {
	h := newHarness(t)
	h.setup()
	var got wire.Policy
	h.must(h.api(wire.OpPolicyCreate, wire.PolicyPutReq{Policy: testWirePolicy()}, &got))
	if got.Name != "web" || got.Created.IsZero() || !got.Created.Equal(got.Updated) {
		t.Fatalf("created %+v", got)
	}
	wantCode(t, h.api(wire.OpPolicyCreate, wire.PolicyPutReq{Policy: testWirePolicy()}, nil), wire.CodeAlreadyExists)

	missing := testWirePolicy()
	missing.Name = "nosuch"
	wantCode(t, h.api(wire.OpPolicySet, wire.PolicyPutReq{Policy: missing}, nil), wire.CodeNotFound)
	wantCode(t, h.api(wire.OpPolicyDelete, wire.PolicyNameReq{Name: "nosuch"}, nil), wire.CodeNotFound)
	wantCode(t, h.api(wire.OpPolicyShow, wire.PolicyNameReq{Name: "nosuch"}, nil), wire.CodeNotFound)

	bad := testWirePolicy()
	bad.Name, bad.Clients = "bad", []string{"nosuch"}
	wantCode(t, h.api(wire.OpPolicyCreate, wire.PolicyPutReq{Policy: bad}, nil), wire.CodeUnknownClient)
	bad.Clients, bad.Pool = []string{"web"}, "nosuch"
	wantCode(t, h.api(wire.OpPolicyCreate, wire.PolicyPutReq{Policy: bad}, nil), wire.CodeNotFound)
	bad.Pool, bad.Schedule = "Default", "daily 02:00\nMon-Fri 2:61"
	err := h.api(wire.OpPolicyCreate, wire.PolicyPutReq{Policy: bad}, nil)
	wantCode(t, err, wire.CodeInvalidArgument)
	if !strings.Contains(err.Error(), "line 2, column") {
		t.Errorf("a bad schedule's error %q does not say where", err)
	}
	bad.Name = "bad.name"
	wantCode(t, h.api(wire.OpPolicyCreate, wire.PolicyPutReq{Policy: bad}, nil), wire.CodeInvalidArgument)

	// A set made to an old read is refused, not lost.
	changed := got
	changed.Priority = 5
	var set wire.Policy
	h.must(h.api(wire.OpPolicySet, wire.PolicyPutReq{Policy: changed, IfUpdated: got.Updated}, &set))
	if set.Priority != 5 || !set.Created.Equal(got.Created) {
		t.Fatalf("after set: %+v", set)
	}
	changed.Priority = 6
	wantCode(t, h.api(wire.OpPolicySet, wire.PolicyPutReq{Policy: changed, IfUpdated: got.Updated}, nil), wire.CodeWrongState)

	var shown wire.Policy
	h.must(h.api(wire.OpPolicyShow, wire.PolicyNameReq{Name: "web"}, &shown))
	if !reflect.DeepEqual(shown, set) {
		t.Errorf("show\n%+v\nset answered\n%+v", shown, set)
	}
	// What 'policy set' changes is read from the leader: a follower's copy
	// may lag the last change, and the set's IfUpdated would refuse it.
	var got2 wire.Policy
	h.must(h.api(wire.OpPolicyGet, wire.PolicyNameReq{Name: "web"}, &got2))
	if !reflect.DeepEqual(got2, set) || !needsLeader(wire.APISubject(wire.OpPolicyGet)) || needsLeader(wire.APISubject(wire.OpPolicyShow)) {
		t.Errorf("policy.get answered %+v; only it needs the leader: %v", got2, needsLeader(wire.APISubject(wire.OpPolicyGet)))
	}
	var list wire.PolicyListResp
	h.must(h.api(wire.OpPolicyList, wire.Empty{}, &list))
	if len(list.Policies) != 1 || list.Policies[0].Name != "web" {
		t.Fatalf("list %+v", list)
	}

	var del wire.PolicyDeleteResp
	h.must(h.api(wire.OpPolicyDelete, wire.PolicyNameReq{Name: "web"}, &del))
	if del.Name != "web" {
		t.Fatalf("delete answered %+v", del)
	}
	h.must(h.api(wire.OpPolicyList, wire.Empty{}, &list))
	if len(list.Policies) != 0 {
		t.Fatalf("list after delete %+v", list)
	}
}

// TestPolicyApplyAndLabels: a file's policies go in together or not at
// all; a policy selects the clients whose agent reports its labels, and
// client.list shows them.
func TestPolicyApplyAndLabels(t *testing.T) {
	h := newHarness(t)
	h.setup()
	h.must(h.agent(wire.OpAgentRegister, wire.AgentRegisterReq{Name: "web", Hostname: "web.example", Labels: map[string]string{"role": "web"}, ReportsLabels: true}, nil))
	var clients wire.ClientListResp
	h.must(h.api(wire.OpClientList, wire.ClientListReq{}, &clients))
	if len(clients.Clients) != 1 || clients.Clients[0].Labels["role"] != "web" {
		t.Fatalf("client list %+v", clients)
	}

	byLabel := testWirePolicy()
	byLabel.Name, byLabel.Clients, byLabel.ClientLabels = "by-label", nil, map[string]string{"role": "web"}
	bad := testWirePolicy()
	bad.Name, bad.Pool = "bad", "nosuch"
	err := h.api(wire.OpPolicyApply, wire.PolicyApplyReq{Policies: []wire.Policy{byLabel, bad}}, nil)
	wantCode(t, err, wire.CodeNotFound)
	var list wire.PolicyListResp
	h.must(h.api(wire.OpPolicyList, wire.Empty{}, &list))
	if len(list.Policies) != 0 {
		t.Fatalf("a refused apply stored %+v", list.Policies)
	}

	var resp wire.PolicyApplyResp
	h.must(h.api(wire.OpPolicyApply, wire.PolicyApplyReq{Policies: []wire.Policy{byLabel, testWirePolicy()}}, &resp))
	if !reflect.DeepEqual(resp.Created, []string{"by-label", "web"}) {
		t.Fatalf("apply answered %+v", resp)
	}
	byLabel.Priority = 3
	resp = wire.PolicyApplyResp{}
	h.must(h.api(wire.OpPolicyApply, wire.PolicyApplyReq{Policies: []wire.Policy{byLabel}, Prune: true}, &resp))
	if !reflect.DeepEqual(resp, wire.PolicyApplyResp{Changed: []string{"by-label"}, Deleted: []string{"web"}}) {
		t.Fatalf("apply with prune answered %+v", resp)
	}
	resp = wire.PolicyApplyResp{}
	h.must(h.api(wire.OpPolicyApply, wire.PolicyApplyReq{Policies: []wire.Policy{byLabel}}, &resp))
	if !reflect.DeepEqual(resp, wire.PolicyApplyResp{Unchanged: []string{"by-label"}}) {
		t.Fatalf("the same apply again answered %+v", resp)
	}

	var prev wire.PolicyPreviewResp
	h.must(h.api(wire.OpPolicyPreview, wire.PolicyPreviewReq{Name: "by-label", Days: 2}, &prev))
	if !reflect.DeepEqual(prev.Clients, []string{"web"}) {
		t.Fatalf("the policy selecting role=web covers %v", prev.Clients)
	}

	// The agent restarted with no labels in its config: the client no
	// longer has any, and the policy selecting role=web covers nobody.
	h.must(h.agent(wire.OpAgentRegister, wire.AgentRegisterReq{Name: "web", Hostname: "web.example", ReportsLabels: true}, nil))
	prev = wire.PolicyPreviewResp{}
	h.must(h.api(wire.OpPolicyPreview, wire.PolicyPreviewReq{Name: "by-label", Days: 2}, &prev))
	if len(prev.Clients) != 0 {
		t.Fatalf("once the agent dropped its labels the policy selecting role=web covers %v", prev.Clients)
	}
}

// TestPolicyPreview foresees a policy's runs from the client's backups: the
// first run chains onto the full the catalog holds, the expiry after each
// run expires what the retention says, and the deletion of the policy
// leaves the backup and says so.
func TestPolicyPreview(t *testing.T) {
	h := newHarness(t)
	tkKey, orders := h.setup()
	full, _ := h.commitBackup(tkKey, orders, []fileindex.Entry{{Path: "/srv", Type: fileindex.TypeDir, Mode: 0o755}})

	p := testWirePolicy()
	p.Schedule = "daily 02:00 incremental"
	p.Retention = wire.PolicyRetention{All: wire.KeepRules{Last: 2}}
	p.LevelPools = map[string]string{"incremental": "Default"}
	h.must(h.api(wire.OpPolicyCreate, wire.PolicyPutReq{Policy: p}, nil))

	var prev wire.PolicyPreviewResp
	h.must(h.api(wire.OpPolicyPreview, wire.PolicyPreviewReq{Name: "web", Days: 3, Client: "web"}, &prev))
	if len(prev.Runs) != 3 {
		t.Fatalf("3 days of a daily schedule: %+v", prev.Runs)
	}
	first := prev.Runs[0]
	if first.Level != "incremental" || first.Promoted != "" || first.Pool != "Default" || first.Time.Hour() != 2 {
		t.Errorf("first run %+v, want an incremental at 02:00 onto the full the catalog holds", first)
	}
	if len(first.Expires) != 0 {
		t.Errorf("keep-last 2 expires %+v after the first run", first.Expires)
	}
	for _, r := range prev.Runs {
		if r.Backup <= full {
			t.Errorf("foreseen backup %d is numbered among the real ones", r.Backup)
		}
		for _, e := range r.Expires {
			if e.Why == "" {
				t.Errorf("expiry of %d says no why", e.Backup)
			}
		}
	}

	// Fulls every day, the last two kept: the second run's expiry takes
	// the real full, the third's the first foreseen one.
	fulls := p
	fulls.Name, fulls.Schedule = "fulls", "daily 02:00 full"
	h.must(h.api(wire.OpPolicyCreate, wire.PolicyPutReq{Policy: fulls}, nil))
	prev = wire.PolicyPreviewResp{}
	h.must(h.api(wire.OpPolicyPreview, wire.PolicyPreviewReq{Name: "fulls", Days: 3}, &prev))
	if len(prev.Runs) != 3 || len(prev.Runs[0].Expires) != 0 {
		t.Fatalf("runs %+v", prev.Runs)
	}
	if e := prev.Runs[1].Expires; len(e) != 1 || e[0].Backup != full || e[0].Foreseen || e[0].Why == "" {
		t.Errorf("the second run expires %+v, want the real full %d, and why", e, full)
	}
	if e := prev.Runs[2].Expires; len(e) != 1 || e[0].Backup != prev.Runs[0].Backup || !e[0].Foreseen {
		t.Errorf("the third run expires %+v, want the first run's backup %d", e, prev.Runs[0].Backup)
	}

	fulls.Disabled = true
	h.must(h.api(wire.OpPolicySet, wire.PolicyPutReq{Policy: fulls}, nil))
	prev = wire.PolicyPreviewResp{}
	h.must(h.api(wire.OpPolicyPreview, wire.PolicyPreviewReq{Name: "fulls", Days: 1}, &prev))
	if !prev.Disabled || len(prev.Runs) != 1 {
		t.Errorf("preview of a disabled policy: %+v", prev)
	}

	wantCode(t, h.api(wire.OpPolicyPreview, wire.PolicyPreviewReq{Name: "web", Days: 3, Client: "other"}, nil), wire.CodeNotFound)
	wantCode(t, h.api(wire.OpPolicyPreview, wire.PolicyPreviewReq{Name: "web", Days: 9999}, nil), wire.CodeInvalidArgument)

	var del wire.PolicyDeleteResp
	h.must(h.api(wire.OpPolicyDelete, wire.PolicyNameReq{Name: "web"}, &del))
	if del.Backups != 1 {
		t.Errorf("delete says %d backups are kept, want the 1 full", del.Backups)
	}
}
