package server

import (
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/wire"
)

// TestDuplicateOf tells a restarted agent (the old process silent before
// the new one was first heard from) from two processes alive at once.
func TestDuplicateOf(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	old := &wire.AgentInstance{ID: "old", Hostname: "web1", PID: 10, FirstSeen: at(0), LastSeen: at(10)}
	for _, tc := range []struct {
		name  string
		other *wire.AgentInstance
		dup   bool
	}{
		{"restarted: the old one fell silent first", &wire.AgentInstance{ID: "new", Hostname: "web1", PID: 11, FirstSeen: at(11), LastSeen: at(20)}, false},
		{"a clone: the old one still heard from after the new one came", &wire.AgentInstance{ID: "new", Hostname: "web1-clone", PID: 12, FirstSeen: at(5), LastSeen: at(20)}, true},
		{"the old one heard from once after the new one's first word", &wire.AgentInstance{ID: "new", Hostname: "web1-clone", PID: 12, FirstSeen: at(9), LastSeen: at(9)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := duplicateOf("web1", map[string]*wire.AgentInstance{"old": old, tc.other.ID: tc.other})
			if (d != nil) != tc.dup {
				t.Fatalf("duplicate %+v, want %v", d, tc.dup)
			}
			if d == nil {
				return
			}
			for _, want := range []string{"host web1 (pid 10)", "host web1-clone (pid 12)", "client web1"} {
				if !strings.Contains(d.Message, want) {
					t.Errorf("the message does not say %q: %s", want, d.Message)
				}
			}
			if d.Hint == "" || len(d.Instances) != 2 || d.Instances[0].ID != "old" {
				t.Errorf("duplicate %+v", d)
			}
		})
	}
}
