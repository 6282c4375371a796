package catalog

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/fileindex"
)

// policySetup is setup plus a tape pool and a client that reports labels.
func (c *testCatalog) policySetup() {
	c.t.Helper()
	c.setup()
	c.must(&Command{Op: OpCreatePool, Pool: &Pool{Name: "tape1", Type: PoolTypeTape}})
	c.must(&Command{Op: OpRegisterClient, Client: &Client{Name: "db1", Labels: map[string]string{"role": "db", "env": "prod"}}})
}

func testPolicy() Policy {
	return Policy{
		Name: "web", Clients: []string{"web1"}, Paths: []string{"/srv", "/etc"}, Excludes: []string{"*.tmp"},
		Schedule: "Sun 1st 02:00 full\nMon-Sat 21:00 incremental", TimeZone: "Europe/Berlin",
		Pool: "disk1", LevelPools: map[Level]string{LevelFull: "tape1"},
		Retention: PolicyRetention{All: KeepRules{Daily: 14}, Levels: map[Level]KeepRules{LevelFull: {Monthly: 12}}},
	}
}

func putPolicy(mode PutMode, p Policy) *Command {
	return &Command{Op: OpPutPolicy, PolicyPut: &PolicyPut{Mode: mode, Policy: p}}
}

func TestPolicyCreateSetDelete(t *testing.T) {
	c := newTestCatalog(t)
	c.policySetup()
	c.must(putPolicy(PutCreate, testPolicy()))
	created := c.clock
	got, err := c.s.Policy("web")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Created.Equal(created) || !got.Updated.Equal(created) {
		t.Errorf("created %v, updated %v, want both %v (the command's time)", got.Created, got.Updated, created)
	}
	want := testPolicy()
	want.Created, want.Updated = got.Created, got.Updated
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("read back\n got %+v\nwant %+v", *got, want)
	}

	// A create of a name that exists, a set of one that does not.
	e := c.refused(CodeAlreadyExists, putPolicy(PutCreate, testPolicy()))
	if !strings.Contains(e.Hint, "policy set") {
		t.Errorf("hint %q does not say how to change the policy", e.Hint)
	}
	other := testPolicy()
	other.Name = "nosuch"
	c.refused(CodeNotFound, putPolicy(PutReplace, other))
	c.refused(CodeNotFound, &Command{Op: OpDeletePolicy, PolicyDelete: &PolicyDelete{Name: "nosuch"}})

	// A set keeps when the policy was created, and stamps the change;
	// the same policy again changes nothing.
	changed := testPolicy()
	changed.Priority = 5
	c.must(putPolicy(PutReplace, changed))
	setAt := c.clock
	got, _ = c.s.Policy("web")
	if got.Priority != 5 || !got.Created.Equal(created) || !got.Updated.Equal(setAt) {
		t.Errorf("after set: priority %d, created %v, updated %v", got.Priority, got.Created, got.Updated)
	}
	c.must(putPolicy(PutAny, changed))
	if got, _ = c.s.Policy("web"); !got.Updated.Equal(setAt) {
		t.Errorf("putting the same policy again moved its update time to %v", got.Updated)
	}

	// A set based on an old read is refused rather than lost.
	stale := &Command{Op: OpPutPolicy, PolicyPut: &PolicyPut{Mode: PutReplace, Policy: testPolicy(), IfUpdated: created}}
	c.refused(CodeWrongState, stale)
	c.must(&Command{Op: OpPutPolicy, PolicyPut: &PolicyPut{Mode: PutReplace, Policy: testPolicy(), IfUpdated: setAt}})

	// Sorted by name.
	db := testPolicy()
	db.Name, db.Clients, db.ClientLabels = "a-db", nil, map[string]string{"role": "db"}
	c.must(putPolicy(PutCreate, db))
	all, err := c.s.Policies()
	if err != nil || len(all) != 2 || all[0].Name != "a-db" || all[1].Name != "web" {
		t.Fatalf("Policies = %v, %v", all, err)
	}

	c.must(&Command{Op: OpDeletePolicy, PolicyDelete: &PolicyDelete{Name: "web"}})
	if _, err := c.s.Policy("web"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted policy reads %v", err)
	}
}

func TestPoliciesOfAClient(t *testing.T) {
	c := newTestCatalog(t)
	c.policySetup()
	byName := testPolicy()
	byName.Name, byName.Clients = "named", []string{"web1", "db1"}
	byLabel := testPolicy()
	byLabel.Name, byLabel.Clients, byLabel.ClientLabels = "dbs", nil, map[string]string{"role": "db"}
	twoLabels := testPolicy()
	twoLabels.Name, twoLabels.Clients, twoLabels.ClientLabels = "staging-dbs", nil, map[string]string{"role": "db", "env": "staging"}
	for _, p := range []Policy{byName, byLabel, twoLabels} {
		c.must(putPolicy(PutCreate, p))
	}
	names := func(client string) []string {
		ps, err := c.s.PoliciesOf(client)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range ps {
			out = append(out, p.Name)
		}
		return out
	}
	if got := names("db1"); !reflect.DeepEqual(got, []string{"dbs", "named"}) {
		t.Errorf("policies of db1 = %v, want dbs and named (staging-dbs needs env=staging too)", got)
	}
	if got := names("web1"); !reflect.DeepEqual(got, []string{"named"}) {
		t.Errorf("policies of web1 = %v", got)
	}
	if got := names("stranger"); got != nil {
		t.Errorf("policies of an unknown client = %v", got)
	}
}

// An agent's labels are its config's: a registration that reports them
// replaces the stored ones, none clearing them, while a registration by
// an agent older than labels (which reports nothing) keeps them.
func TestClientLabelsFollowTheAgent(t *testing.T) {
	c := newTestCatalog(t)
	c.policySetup()
	c.must(&Command{Op: OpRegisterClient, Client: &Client{Name: "db1", Version: "older"}})
	if cl, _ := c.s.Client("db1"); cl.Labels["role"] != "db" {
		t.Errorf("labels after a registration by an older agent: %v", cl.Labels)
	}
	c.must(&Command{Op: OpRegisterClient, Client: &Client{Name: "db1", Labels: map[string]string{"role": "web"}, LabelsReported: true}})
	cl, _ := c.s.Client("db1")
	if !reflect.DeepEqual(cl.Labels, map[string]string{"role": "web"}) {
		t.Errorf("labels the agent reports do not replace the old: %v", cl.Labels)
	}
	if cl.LabelsReported {
		t.Error("the registration's LabelsReported was stored")
	}
	c.must(&Command{Op: OpRegisterClient, Client: &Client{Name: "db1", LabelsReported: true}})
	if cl, _ := c.s.Client("db1"); cl.Labels != nil {
		t.Errorf("an agent whose config lost its labels left %v", cl.Labels)
	}
	c.refused(CodeInvalidArgument, &Command{Op: OpRegisterClient, Client: &Client{Name: "db1", Labels: map[string]string{"bad key": "x"}, LabelsReported: true}})
}

// TestPolicyRefusals holds every check of a policy, each refused with a code
// and a message that says what is wrong, and each changing nothing.
func TestPolicyRefusals(t *testing.T) {
	c := newTestCatalog(t)
	c.policySetup()
	for _, tc := range []struct {
		name   string
		change func(p *Policy)
		code   string
		msg    string
		hint   string
	}{
		{"empty name", func(p *Policy) { p.Name = "" }, CodeInvalidArgument, "policy name is empty", ""},
		{"no client", func(p *Policy) { p.Clients = nil }, CodeInvalidArgument, "names no client", "--label"},
		{"unknown client", func(p *Policy) { p.Clients = []string{"web1", "nosuch"} }, CodeUnknownClient, `client "nosuch" is not known`, "--label"},
		{"client twice", func(p *Policy) { p.Clients = []string{"web1", "web1"} }, CodeInvalidArgument, "named twice", ""},
		{"bad label", func(p *Policy) { p.ClientLabels = map[string]string{"a b": "c"} }, CodeInvalidArgument, `label key "a b"`, "KEY=VALUE"},
		{"no path", func(p *Policy) { p.Paths = nil }, CodeInvalidArgument, "has no path", "--path"},
		{"relative path", func(p *Policy) { p.Paths = []string{"srv"} }, CodeInvalidArgument, `path "srv" is not a clean absolute path`, ""},
		{"unclean path", func(p *Policy) { p.Paths = []string{"/srv/"} }, CodeInvalidArgument, "not a clean absolute path", ""},
		{"bad exclude", func(p *Policy) { p.Excludes = []string{"[a"} }, CodeInvalidArgument, "exclude", ""},
		{"step without command", func(p *Policy) { p.Application = &Application{Before: []AppStep{{}}} }, CodeInvalidArgument, "application step has no command", ""},
		{"source in a path", func(p *Policy) {
			p.Application = &Application{Sources: []CommandSource{{Path: "/srv/db.sql", Command: "pg_dump"}}}
		}, CodeInvalidArgument, "lie one inside the other", ""},
		{"bad schedule", func(p *Policy) { p.Schedule = "daily 02:00 full\nMon-Sat 25:00" }, CodeInvalidArgument, "schedule: line 2, column 9", "cairn policy"},
		{"empty schedule", func(p *Policy) { p.Schedule = "" }, CodeInvalidArgument, "schedule", ""},
		{"unknown zone", func(p *Policy) { p.TimeZone = "Mars/Olympus" }, CodeInvalidArgument, `time zone "Mars/Olympus" is not known`, "IANA"},
		{"negative age", func(p *Policy) { p.MaxFullAge = -time.Hour }, CodeInvalidArgument, "maximum full age -1h0m0s is negative", ""},
		{"no pool", func(p *Policy) { p.Pool = "" }, CodeInvalidArgument, "no pool for differential", "--pool"},
		{"unknown pool", func(p *Policy) { p.Pool = "nosuch" }, CodeNotFound, `pool "nosuch" does not exist`, "pool list"},
		{"unknown level pool", func(p *Policy) { p.LevelPools = map[Level]string{LevelIncremental: "nosuch"} }, CodeNotFound, `pool "nosuch"`, ""},
		{"pool of no level", func(p *Policy) { p.LevelPools = map[Level]string{"weekly": "disk1"} }, CodeInvalidArgument, `level "weekly"`, ""},
		{"keeps nothing", func(p *Policy) { p.Retention = PolicyRetention{} }, CodeInvalidArgument, "no keep rule", "--keep-last unlimited"},
		{"negative count", func(p *Policy) { p.Retention.All.Daily = -3 }, CodeInvalidArgument, "keep-daily", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPolicy()
			tc.change(&p)
			before, _ := c.s.Policies()
			e := c.refused(tc.code, putPolicy(PutAny, p))
			if !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("message %q does not say %q", e.Msg, tc.msg)
			}
			if tc.name != "empty name" && !strings.HasPrefix(e.Msg, "policy web: ") {
				t.Errorf("message %q does not name the policy", e.Msg)
			}
			if !strings.Contains(e.Hint, tc.hint) {
				t.Errorf("hint %q does not say %q", e.Hint, tc.hint)
			}
			if after, _ := c.s.Policies(); len(after) != len(before) {
				t.Error("a refused policy was stored")
			}
		})
	}

	// Every backup kept until deleted by hand is a rule said out loud.
	p := testPolicy()
	p.Retention = PolicyRetention{All: KeepRules{Last: -1}}
	c.must(putPolicy(PutCreate, p))
	// Clients selected by label alone need not be registered yet.
	p = testPolicy()
	p.Name, p.Clients, p.ClientLabels = "future", nil, map[string]string{"role": "cache"}
	c.must(putPolicy(PutCreate, p))
}

// TestDeletingAPolicyKeepsItsBackups: the backups of a deleted policy stay
// until an administrator deletes them.
func TestDeletingAPolicyKeepsItsBackups(t *testing.T) {
	c := newTestCatalog(t)
	c.policySetup()
	c.must(putPolicy(PutCreate, testPolicy()))
	job := c.backup(LevelFull, []fileindex.Entry{dir("/srv"), file("/srv/a", 1)})
	c.must(&Command{Op: OpDeletePolicy, PolicyDelete: &PolicyDelete{Name: "web"}})
	if b, err := c.s.Backup(job); err != nil || b.State != BackupComplete {
		t.Fatalf("backup of the deleted policy: %+v, %v", b, err)
	}
}

// TestFormat2CatalogGetsThePolicies: a catalog written before policies is
// read as it is, and upgraded when opened for writing.
func TestFormat2CatalogGetsThePolicies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.RLock()
	err = s.db.Update(func(tx *bbolt.Tx) error {
		if err := tx.DeleteBucket(bPolicies); err != nil {
			return err
		}
		return tx.Bucket(bMeta).Put(keyFormat, u64(2))
	})
	s.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	ro, err := OpenReadOnly(path)
	if err != nil {
		t.Fatalf("read-only open of a format 2 catalog: %v", err)
	}
	ro.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ps, err := s.Policies(); err != nil || len(ps) != 0 {
		t.Fatalf("policies of an upgraded catalog: %v, %v", ps, err)
	}
}

// TestApplyPoliciesIsAllOrNothing: one refused policy of a file stores none
// of them; with Prune, the policies not given go in the same change.
func TestApplyPoliciesIsAllOrNothing(t *testing.T) {
	c := newTestCatalog(t)
	c.policySetup()
	old := testPolicy()
	old.Name = "old"
	c.must(putPolicy(PutCreate, old))

	good := testPolicy()
	bad := testPolicy()
	bad.Name, bad.Pool = "bad", "nosuch"
	e := c.refused(CodeNotFound, &Command{Op: OpApplyPolicies, PolicyApply: &PolicyApply{Policies: []Policy{good, bad}, Prune: true}})
	if !strings.Contains(e.Msg, "policy bad") {
		t.Errorf("refusal %q does not name the policy", e.Msg)
	}
	if ps, _ := c.s.Policies(); len(ps) != 1 || ps[0].Name != "old" {
		t.Fatalf("after a refused apply: %v", ps)
	}
	c.refused(CodeInvalidArgument, &Command{Op: OpApplyPolicies, PolicyApply: &PolicyApply{Policies: []Policy{good, good}}})

	c.must(&Command{Op: OpApplyPolicies, PolicyApply: &PolicyApply{Policies: []Policy{good}}})
	if ps, _ := c.s.Policies(); len(ps) != 2 {
		t.Fatalf("apply without prune: %v", ps)
	}
	c.must(&Command{Op: OpApplyPolicies, PolicyApply: &PolicyApply{Policies: []Policy{good}, Prune: true}})
	if ps, _ := c.s.Policies(); len(ps) != 1 || ps[0].Name != "web" {
		t.Fatalf("apply with prune: %v", ps)
	}
}
