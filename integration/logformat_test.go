package integration

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestLogFormatJSON runs every role with JSON logs (the server and the agent
// by --log-format, the storage node by log_format in its config file)
// through a backup, a restore and a stop, and checks that every line each
// process wrote is one JSON object with a time, a level and a message:
// what a log shipper needs, including the lines of the libraries bridged
// into the role's logger (Raft's, NATS's).
func TestLogFormatJSON(t *testing.T) {
	s := newStack(t, stackOpts{logFormat: "json"})
	src := makeTree(t, smallSpec(7))
	snap := snapshot(t, src)
	s.backup("full", src)
	to := t.TempDir() + "/restore"
	s.restore(to)
	checkRestored(t, snap, to, src)
	for _, p := range []*proc{s.agent, s.storage, s.server} {
		p.stop()
	}

	for _, p := range []*proc{s.server, s.storage, s.agent} {
		data, err := os.ReadFile(p.logPath)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		components := map[string]bool{}
		for _, line := range strings.Split(string(data), "\n") {
			if line == "" || strings.HasPrefix(line, "---- ") { // the harness's header of each run
				continue
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Errorf("%s wrote a line that is not a JSON object (%v): %q", p.name, err, line)
				continue
			}
			for _, k := range []string{"time", "level", "msg"} {
				if _, ok := rec[k]; !ok {
					t.Errorf("%s: a line without %q: %q", p.name, k, line)
				}
			}
			if c, ok := rec["component"].(string); ok {
				components[c] = true
			}
			n++
		}
		if n < 3 {
			t.Errorf("%s wrote %d log lines; a backup and a restore should have said more", p.name, n)
		}
		t.Logf("%s: %d JSON lines, components %v", p.name, n, components)
	}
}
