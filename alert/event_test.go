package alert

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// goldenEvents are one event of each kind, and their variants, at fixed
// times.
func goldenEvents() []Event {
	now := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	e := []Event{
		NewJobFailed(now, 4711, "web1", "nightly", "incremental", "agent web1 went offline during the backup"),
		NewJobFailed(now, 12, "db1", "", "", ""),
		NewRPOBreach(now, "web1", "nightly", now.Add(-51*time.Hour), 24*time.Hour),
		NewRPOBreach(now, "new1", "nightly", time.Time{}, 24*time.Hour),
		NewRPOResolved(now, "web1", "nightly", now.Add(-10*time.Minute), 24*time.Hour),
		NewMissedRun(now, "nightly", "web1", now.Add(-3*time.Hour-30*time.Minute), 1, "the previous run of the policy was still going"),
		NewMissedRun(now, "nightly", "", now.Add(-3*time.Hour-30*time.Minute), 6, "no server led from 2026-11-26T02:00:00Z to 2026-12-02T05:58:00Z"),
		NewPoolShort(now, "Disk", "nightly", now.Add(20*time.Hour+30*time.Minute), 300<<30, 120<<30, ""),
		NewPoolShort(now, "LTO", "monthly", now.Add(44*time.Hour), 0, 0, "no scratch or appendable tape in the pool"),
	}
	e[2].Suppressed = 3
	return e
}

// The JSON of each kind, field names and values, is the contract with every
// receiver an administrator wrote: testdata/events.golden holds it (run
// with -update to rewrite it, and read the diff: a renamed or removed field
// needs a new Version).
func TestEventJSON(t *testing.T) {
	var b bytes.Buffer
	for _, e := range goldenEvents() {
		j, err := json.MarshalIndent(e, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		b.Write(j)
		b.WriteString("\n")
	}
	golden := filepath.Join("testdata", "events.golden")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("the events' JSON differs from %s (run with -update and read git diff):\n%s", golden, b.String())
	}
	// Every event reads back as it was, and decodes with no field unknown.
	dec := json.NewDecoder(bytes.NewReader(want))
	dec.DisallowUnknownFields()
	for i, e := range goldenEvents() {
		var got Event
		if err := dec.Decode(&got); err != nil {
			t.Fatal(err)
		}
		a, _ := json.Marshal(got)
		c, _ := json.Marshal(e)
		if !bytes.Equal(a, c) {
			t.Errorf("event %d read back as %s, want %s", i, a, c)
		}
	}
}

// The package doc's example event and its field list say what the events
// carry.
func TestDocListsEveryField(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range jsonFields() {
		if !strings.Contains(string(doc), "//\t"+f+" ") {
			t.Errorf("doc.go does not list the field %q", f)
		}
	}
	for _, k := range Kinds {
		if !strings.Contains(string(doc), string(k)) {
			t.Errorf("doc.go does not name the kind %s", k)
		}
	}
}

func jsonFields() []string {
	var out []string
	t := reflectTypeOfEvent()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		out = append(out, name)
	}
	return out
}

func TestSummaries(t *testing.T) {
	want := []string{
		"job 4711 (incremental backup) of client web1 failed (policy nightly): agent web1 went offline during the backup",
		"job 12 of client db1 failed: no reason given",
		"RPO breach: client web1's last good restore point (policy nightly) is 2d3h old, target 1d",
		"RPO breach: client new1 has no good restore point (policy nightly), target 1d",
		"RPO met again: client web1's last good restore point (policy nightly) is 10m old, target 1d",
		"missed run of policy nightly for client web1 scheduled 2026-12-02T02:30:00Z: the previous run of the policy was still going",
		"missed 6 runs of policy nightly, the last scheduled 2026-12-02T02:30:00Z: no server led from 2026-11-26T02:00:00Z to 2026-12-02T05:58:00Z",
		"pool Disk cannot take the run of policy nightly at 2026-12-03T02:30:00Z: it needs about 300.0 GiB and has 120.0 GiB free",
		"pool LTO cannot take the run of policy monthly at 2026-12-04T02:00:00Z: no scratch or appendable tape in the pool",
	}
	for i, e := range goldenEvents() {
		if e.Summary != want[i] {
			t.Errorf("summary %d:\n got %s\nwant %s", i, e.Summary, want[i])
		}
	}
}

// TestPure holds the package to the standard library, Prometheus's client
// (and what it imports) and Cairn's internal packages: the scheduler, the RPO check and the
// orchestrator call it, and it calls none of them.
func TestPure(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/cairnbackup/cairn/alert").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		first, _, _ := strings.Cut(dep, "/")
		if !strings.Contains(first, ".") {
			continue
		}
		switch {
		case strings.HasPrefix(dep, "github.com/cairnbackup/cairn/"):
			if dep != "github.com/cairnbackup/cairn/alert" && !strings.HasPrefix(dep, "github.com/cairnbackup/cairn/internal/") {
				t.Errorf("alert depends on %s", dep)
			}
		case strings.HasPrefix(dep, "github.com/prometheus/"), strings.HasPrefix(dep, "github.com/beorn7/"),
			strings.HasPrefix(dep, "github.com/cespare/"), strings.HasPrefix(dep, "github.com/munnerz/"),
			strings.HasPrefix(dep, "google.golang.org/protobuf"), strings.HasPrefix(dep, "golang.org/x/sys"):
		default:
			t.Errorf("alert depends on %s", dep)
		}
	}
}

func reflectTypeOfEvent() reflect.Type { return reflect.TypeFor[Event]() }
