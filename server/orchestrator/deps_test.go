package orchestrator

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies holds the line of the package doc: the orchestrator
// reaches the server through its interfaces and the roles through Roles,
// and knows nothing of the server, the storage node or the agent. (It
// speaks the wire's messages and errors, and package wire brings in the
// NATS client, which it does not use.)
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/cairnbackup/cairn/server/orchestrator").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case dep == "github.com/cairnbackup/cairn/server",
			strings.HasPrefix(dep, "github.com/cairnbackup/cairn/storagenode"),
			strings.HasPrefix(dep, "github.com/cairnbackup/cairn/agent"):
			t.Errorf("the orchestrator depends on %s", dep)
		}
	}
}
