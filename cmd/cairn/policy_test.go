package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/devstack"
	"github.com/cairnbackup/cairn/wire"
)

// TestPolicyFlags: create's flags make a policy, set's change only what
// they name.
func TestPolicyFlags(t *testing.T) {
	parse := func(set bool, base wire.Policy, args ...string) (wire.Policy, error) {
		c := newPolicyPutCmd(&globals{}, !set)
		var o policyFlags
		c.ResetFlags()
		o.bind(c.Flags(), set)
		if err := c.Flags().Parse(args); err != nil {
			t.Fatal(err)
		}
		err := o.apply(c.Flags(), &base)
		return base, err
	}
	p, err := parse(false, wire.Policy{Name: "web"}, "--client", "web1", "--label", "role=web", "--path", "/srv/", "--schedule", "Sun 02:00 full",
		"--schedule", "daily 21:00", "--timezone", "UTC", "--pool", "disk", "--pool-full", "tape", "--rpo", "26h", "--max-full-age", "35d",
		"--keep-daily", "14", "--keep-last", "unlimited", "--keep", "full:monthly=12", "--keep", "incremental:within=2w",
		"--before", "/bin/true", "--command-source", "/db.sql=/usr/bin/pg_dump x")
	if err != nil {
		t.Fatal(err)
	}
	want := wire.Policy{
		Name: "web", Clients: []string{"web1"}, ClientLabels: map[string]string{"role": "web"}, Paths: []string{"/srv"},
		Schedule: "Sun 02:00 full\ndaily 21:00", TimeZone: "UTC", Pool: "disk", LevelPools: map[string]string{"full": "tape"},
		RPO: 26 * time.Hour, MaxFullAge: 35 * 24 * time.Hour,
		Retention: wire.PolicyRetention{All: wire.KeepRules{Daily: 14, Last: -1},
			Levels: map[string]wire.KeepRules{"full": {Monthly: 12}, "incremental": {Within: 14 * 24 * time.Hour}}},
		Application: &wire.Application{Before: []wire.AppStep{{Command: "/bin/true", Timeout: 10 * time.Minute, FailJob: true}},
			Sources: []wire.CommandSource{{Path: "/db.sql", Command: "/usr/bin/pg_dump x"}}},
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("create flags made\n%+v\nwant\n%+v", p, want)
	}
	q, err := parse(true, p, "--priority", "3", "--keep-daily", "0", "--keep", "full:monthly=0", "--pool-full", "", "--no-application")
	if err != nil {
		t.Fatal(err)
	}
	want.Priority, want.Retention.All.Daily, want.Application = 3, 0, nil
	delete(want.Retention.Levels, "full")
	delete(want.LevelPools, "full")
	if !reflect.DeepEqual(q, want) {
		t.Fatalf("set changed\n%+v\nwant\n%+v", q, want)
	}
	for _, bad := range [][]string{{"--keep", "weekly=3"}, {"--keep", "full:often=3"}, {"--keep-daily", "lots"}, {"--rpo", "a day"},
		{"--label", "role"}, {"--no-application", "--before", "/x"}} {
		if _, err := parse(true, p, bad...); !isUsage(err) {
			t.Errorf("%v: %v, want a usage error", bad, err)
		}
	}
}

// TestPolicyCommandsAgainstDevStack runs the policy commands as an
// administrator does, against a whole dev system: each bad input with its
// error and exit status, and a file applied, compared and pruned.
func TestPolicyCommandsAgainstDevStack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Config{Dir: t.TempDir(), Client: "web", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t.Setenv(devFileEnv, filepath.Join(t.TempDir(), "cairn", "dev.json"))
	t.Setenv("CAIRN_NATS", "")
	publishDevClientFile(st, slog.New(slog.NewTextHandler(io.Discard, nil)))

	create := []string{"policy", "create", "etc", "--client", "web", "--path", "/etc", "--schedule", "daily 02:00", "--schedule", "Sun 03:00 full",
		"--timezone", "UTC", "--pool", "Default", "--keep-daily", "7", "--keep", "full:monthly=12"}
	if code, out, stderr := cli(ctx, create...); code != 0 || !strings.Contains(out, "created policy etc") {
		t.Fatalf("create: %d %q %q", code, out, stderr)
	}
	// Without --timezone, the zone of the machine running the command,
	// said so: not an empty zone each leader would read as its own.
	t.Setenv("TZ", "Asia/Tokyo")
	if code, out, stderr := cli(ctx, "policy", "create", "tokyo", "--client", "web", "--path", "/srv", "--schedule", "daily 02:00",
		"--pool", "Default", "--keep-last", "3"); code != 0 || !strings.Contains(out, "time zone Asia/Tokyo (from the TZ variable)") {
		t.Fatalf("create without --timezone: %d %q %q", code, out, stderr)
	}
	var tokyo wire.Policy
	if code, out, _ := cli(ctx, "--json", "policy", "show", "tokyo"); code != 0 || json.Unmarshal([]byte(out), &tokyo) != nil || tokyo.TimeZone != "Asia/Tokyo" {
		t.Fatalf("show: %d %s", code, out)
	}
	if code, out, stderr := cli(ctx, "policy", "delete", "tokyo"); code != 0 {
		t.Fatalf("delete: %d %q %q", code, out, stderr)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{create, 1, "policy etc already exists"},
		{[]string{"policy", "create", "x", "--client", "web", "--path", "/etc", "--schedule", "daily 02:00", "--schedule", "Mon-Fri 2:61", "--pool", "Default", "--keep-last", "3"},
			1, "schedule: line 2, column 9"},
		{[]string{"policy", "create", "x", "--client", "ghost", "--path", "/etc", "--schedule", "daily 02:00", "--pool", "Default", "--keep-last", "3"},
			1, `client "ghost" is not known`},
		{[]string{"policy", "create", "x", "--client", "web", "--path", "/etc", "--schedule", "daily 02:00", "--pool", "Nosuch", "--keep-last", "3"},
			1, `pool "Nosuch" does not exist`},
		{[]string{"policy", "create", "x", "--client", "web", "--path", "/etc", "--schedule", "daily 02:00", "--pool", "Default"},
			1, "no keep rule"},
		{[]string{"policy", "set", "nosuch", "--priority", "3"}, 1, `policy "nosuch" does not exist`},
		{[]string{"policy", "delete", "nosuch"}, 1, `policy "nosuch" does not exist`},
		{[]string{"policy", "show"}, 2, "takes one argument"},
		{[]string{"policy", "apply"}, 2, "pass -f FILE"},
	} {
		code, _, stderr := cli(ctx, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "hint: ") {
			t.Errorf("%v: exit %d, %q; want %d saying %q, and a hint", tc.args, code, stderr, tc.code, tc.want)
		}
	}

	if code, out, stderr := cli(ctx, "policy", "set", "etc", "--priority", "3", "--keep-last", "unlimited"); code != 0 || !strings.Contains(out, "changed policy etc") {
		t.Fatalf("set: %d %q %q", code, out, stderr)
	}
	code, out, _ := cli(ctx, "--json", "policy", "show", "etc")
	var shown wire.Policy
	if code != 0 || json.Unmarshal([]byte(out), &shown) != nil || shown.Priority != 3 || shown.Retention.All.Last != -1 ||
		shown.Retention.All.Daily != 7 || shown.Schedule != "daily 02:00\nSun 03:00 full" {
		t.Fatalf("show --json after set: %d %s", code, out)
	}
	code, out, _ = cli(ctx, "policy", "show", "etc")
	if code != 0 {
		t.Fatalf("show: %d %s", code, out)
	}
	file := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	// What show prints is a policy file that changes nothing.
	if code, out, stderr := cli(ctx, "policy", "diff", "-f", file); code != 0 || !strings.Contains(out, "no change") {
		t.Fatalf("diff of what show printed: %d %q %q", code, out, stderr)
	}
	if code, out, _ := cli(ctx, "policy", "list"); code != 0 || !strings.Contains(out, "etc") || !strings.Contains(out, "daily 7") {
		t.Fatalf("list: %d %s", code, out)
	}
	// The first run of a fileset with no full is a full: promoted, unless
	// it is the schedule's own Sunday 03:00 full (a preview made on a
	// Sunday between 02:00 and 03:00 UTC).
	code, out, stderr := cli(ctx, "policy", "preview", "etc", "--days", "2")
	lines := strings.Split(out, "\n")
	var first []string
	if len(lines) > 2 {
		first = strings.Fields(lines[2])
	}
	scheduledFull := len(first) > 4 && first[0] == "Sun" && first[2] == "03:00" && first[4] == "full"
	if code != 0 || !(strings.Contains(out, "promoted to full: no full of this fileset yet") || scheduledFull) || !strings.Contains(out, "Default") {
		t.Fatalf("preview: %d %q %q", code, out, stderr)
	}

	data, _ := os.ReadFile(file)
	changed := strings.Replace(string(data), "priority: 3", "priority: 4", 1) + `  - name: by-label
    labels: {role: web}
    paths: [/srv]
    schedule: hourly
    pool: Default
    keep: {last: 24}
`
	os.WriteFile(file, []byte(changed), 0o644)
	code, out, stderr = cli(ctx, "policy", "diff", "-f", file)
	if code != exitDiffers || !strings.Contains(out, "+ by-label (new)") || !strings.Contains(out, "~ etc\n    priority: 3 -> 4") || stderr != "" {
		t.Fatalf("diff: exit %d, %q, %q; want %d and the changes", code, out, stderr, exitDiffers)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte(changed+"    retension: {daily: 3}\n"), 0o644)
	code, _, stderr = cli(ctx, "policy", "apply", "-f", bad)
	if code != 1 || !strings.Contains(stderr, bad+":") || !strings.Contains(stderr, "policy by-label: field retension is not known") {
		t.Fatalf("apply of a file with an unknown field: %d %q", code, stderr)
	}
	if code, out, stderr := cli(ctx, "policy", "apply", "-f", file); code != 0 || !strings.Contains(out, "created policy by-label") || !strings.Contains(out, "changed policy etc") {
		t.Fatalf("apply: %d %q %q", code, out, stderr)
	}
	if code, out, _ := cli(ctx, "policy", "diff", "-f", file); code != 0 || !strings.Contains(out, "no change") {
		t.Fatalf("diff after apply: %d %q", code, out)
	}
	// A policy the file lacks is no change, unless the diff is of a prune.
	extra := []string{"policy", "create", "extra", "--client", "web", "--path", "/var", "--schedule", "daily 02:00", "--pool", "Default", "--keep-last", "3"}
	if code, out, stderr := cli(ctx, extra...); code != 0 {
		t.Fatalf("create extra: %d %q %q", code, out, stderr)
	}
	if code, out, _ := cli(ctx, "policy", "diff", "-f", file); code != 0 || !strings.Contains(out, "no change") || !strings.Contains(out, "kept (apply --prune would delete them): extra") {
		t.Fatalf("diff with a policy the file lacks: %d %q", code, out)
	}
	if code, out, _ := cli(ctx, "policy", "diff", "-f", file, "--prune"); code != exitDiffers || !strings.Contains(out, "- extra (not in the file)") {
		t.Fatalf("diff --prune with a policy the file lacks: %d %q", code, out)
	}

	only := filepath.Join(t.TempDir(), "only.yaml")
	os.WriteFile(only, []byte(strings.SplitN(changed, "  - name: by-label", 2)[0]), 0o644)
	if code, _, stderr := cli(ctx, "policy", "apply", "-f", only, "--prune"); code != 2 || !strings.Contains(stderr, "by-label, extra") || !strings.Contains(stderr, "--yes") {
		t.Fatalf("apply --prune without --yes: %d %q", code, stderr)
	}
	if code, out, stderr := cli(ctx, "policy", "apply", "-f", only, "--prune", "--yes"); code != 0 || !strings.Contains(out, "deleted policy by-label\ndeleted policy extra") {
		t.Fatalf("apply --prune --yes: %d %q %q", code, out, stderr)
	}
	if code, out, stderr := cli(ctx, "policy", "delete", "etc"); code != 0 || !strings.Contains(out, "stay until deleted by hand") {
		t.Fatalf("delete: %d %q %q", code, out, stderr)
	}
}
