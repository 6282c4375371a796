package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/wire"
)

// TestPolicyFileExample loads the example file README.md points to, and
// what it reads is what the README says of it.
func TestPolicyFileExample(t *testing.T) {
	path := filepath.Join("..", "..", "examples", "policies.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := parsePolicyFile(path, data)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 {
		t.Fatalf("%d policies", len(ps))
	}
	web, db := ps[0], ps[1]
	if web.Name != "web" || web.ClientLabels["role"] != "web" || !reflect.DeepEqual(web.Paths, []string{"/srv", "/etc"}) ||
		web.MaxFullAge != 35*24*time.Hour || web.LevelPools["full"] != "Weekly" || web.RPO != 26*time.Hour ||
		web.Retention.Levels["incremental"].Within != 14*24*time.Hour || web.Retention.Levels["full"].Monthly != 12 ||
		strings.Count(web.Schedule, "\n") != 2 {
		t.Errorf("web: %+v", web)
	}
	if db.Schedule != "daily 01:30 incremental\nSun 01:30 full" || db.Retention.All.Monthly != -1 || db.Priority != 10 ||
		db.Application == nil || len(db.Application.Before) != 1 || !db.Application.Before[0].FailJob || db.Application.Before[0].Timeout != 5*time.Minute ||
		db.Application.After[0].FailJob || db.Application.Sources[0].Timeout != 2*time.Hour {
		t.Errorf("databases: %+v %+v", db, db.Application)
	}
	// What show prints reads back as the same policies.
	out, err := marshalPolicies(ps)
	if err != nil {
		t.Fatal(err)
	}
	again, err := parsePolicyFile("shown", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !reflect.DeepEqual(again, []wire.Policy{db, web}) {
		t.Errorf("show's form reads back as\n%+v\nnot\n%+v\n%s", again, ps, out)
	}
}

// TestPolicyFileErrors: each mistake names the file, the line, the policy
// and the field.
func TestPolicyFileErrors(t *testing.T) {
	head := "policies:\n  - name: web\n    paths: [/srv]\n    schedule: daily 02:00\n"
	for _, tc := range []struct {
		name, text, want string
	}{
		{"unknown field", head + "    keep: {daily: 7}\n    retension: {daily: 7}\n", "p.yaml:6: policy web: field retension is not known"},
		{"unknown field of the second", head + "  - name: db\n    paths: [/x]\n    pool_ful: x\n", "p.yaml:7: policy db: field pool_ful is not known"},
		{"unknown nested field", head + "    keep: {dayly: 7}\n", "p.yaml:5: policy web: field dayly is not known"},
		{"bad duration", head + "    max_full_age: 35 days\n", `p.yaml:5: policy web: max_full_age: "35 days" is not a duration`},
		{"bad count", head + "    keep_full: {monthly: many}\n", `p.yaml:5: policy web: keep_full.monthly: "many" is not a count`},
		{"bad on_failure", head + "    before:\n      - {command: /x, on_failure: ignore}\n", `p.yaml:5: policy web: before.1.on_failure: "ignore": give fail or warn`},
		{"twice", head + "  - name: web\n    paths: [/y]\n", "p.yaml:5: policy web: name: the file has this policy twice (line 2 too)"},
		{"no name", head + "  - paths: [/y]\n", "p.yaml:5: policy #2: name: every policy needs a name"},
		{"syntax", "policies:\n  - name: [web\n", "p.yaml:"},
		{"not a list", "policies: web\n", "p.yaml:1: !!str `web` where a list of policies belongs"},
		{"labels not a mapping", head + "    labels: [role]\n", "p.yaml:5: policy web: !!seq where labels ({KEY: VALUE}) belongs"},
		{"top-level typo", "policy:\n  - name: web\n", "p.yaml:1: field policy is not known"},
		{"empty", "", "p.yaml: the file is empty"},
		{"no policy", "policies: []\n", "p.yaml: policies: no policy"},
		{"two documents", head + "---\npolicies: []\n", "more than one YAML document"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parsePolicyFile("p.yaml", []byte(tc.text))
			var pe *policyFileError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestParseAge(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"14d": 14 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "26h": 26 * time.Hour, "1d12h": 36 * time.Hour, "90m": 90 * time.Minute, "1h30m": 90 * time.Minute,
	} {
		if got, err := parseAge(in); err != nil || got != want {
			t.Errorf("parseAge(%q) = %v, %v; want %v", in, got, err, want)
		}
		if got, _ := parseAge(formatAge(want)); got != want {
			t.Errorf("formatAge(%v) = %q does not read back", want, formatAge(want))
		}
	}
	for _, bad := range []string{"", "14", "d", "14 days", "-1h", "3y"} {
		if _, err := parseAge(bad); err == nil {
			t.Errorf("parseAge(%q) accepted", bad)
		}
	}
}

// FuzzParsePolicyFile reads arbitrary bytes as a policy file. It never
// panics; what it refuses it refuses with a policyFileError, which names
// the file; what it reads, 'policy show' writes back in a form that reads
// as the same policies.
func FuzzParsePolicyFile(f *testing.F) {
	if data, err := os.ReadFile(filepath.Join("..", "..", "examples", "policies.yaml")); err == nil {
		f.Add(data)
	}
	f.Add([]byte("policies:\n  - name: web\n    paths: [/srv]\n    schedule: daily 02:00\n    keep: {last: unlimited}\n"))
	f.Add([]byte("policies:\n  - name: a\n    schedule: [x, y]\n    keep_full: {within: 1d2h}\n    before: [{command: /x, on_failure: warn}]\n"))
	f.Add([]byte("policies: []\n"))
	f.Add([]byte("- a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := parsePolicyFile("fuzz.yaml", data)
		if err != nil {
			var pe *policyFileError
			if !errors.As(err, &pe) || pe.File != "fuzz.yaml" {
				t.Fatalf("error %T %v does not name the file", err, err)
			}
			return
		}
		out, err := marshalPolicies(ps)
		if err != nil {
			t.Fatalf("policies read do not write: %v", err)
		}
		again, err := parsePolicyFile("shown", out)
		if err != nil {
			t.Fatalf("the written form does not read: %v\n%s", err, out)
		}
		sorted := slices.SortedFunc(slices.Values(ps), func(a, b wire.Policy) int { return strings.Compare(a.Name, b.Name) })
		b1, _ := json.Marshal(sorted)
		b2, _ := json.Marshal(again)
		if !bytes.Equal(b1, b2) {
			t.Fatalf("read back differently:\n%s\n%s\n%s", b1, b2, out)
		}
	})
}

// TestReadmePolicyFiles: every policy file README.md shows (a yaml block
// that starts 'policies:') reads.
func TestReadmePolicyFiles(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, block := range strings.Split(string(readme), "```yaml\n")[1:] {
		text, _, _ := strings.Cut(block, "```")
		if !strings.HasPrefix(text, "policies:") {
			continue
		}
		n++
		if _, err := parsePolicyFile("README.md", []byte(text)); err != nil {
			t.Errorf("a policy file of README.md: %v", err)
		}
	}
	if n == 0 {
		t.Error("README.md shows no policy file")
	}
}
