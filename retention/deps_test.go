package retention

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPure holds what the scheduler and the expiry pass rely on: schedule and
// retention are pure, importing the standard library, robfig/cron (for cron
// fields) and each other only, never the catalog, NATS, Raft or a role, so
// that a preview, a test and the leader compute the same answer from the same
// inputs.
func TestPure(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps",
		"github.com/cairnbackup/cairn/schedule", "github.com/cairnbackup/cairn/retention").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	allowed := map[string]bool{
		"github.com/cairnbackup/cairn/schedule":  true,
		"github.com/cairnbackup/cairn/retention": true,
		"github.com/robfig/cron/v3":              true,
	}
	for _, dep := range strings.Fields(string(out)) {
		first, _, _ := strings.Cut(dep, "/")
		if strings.Contains(first, ".") && !allowed[dep] {
			t.Errorf("schedule or retention depends on %s", dep)
		}
	}
}
