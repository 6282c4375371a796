package volume

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies holds the line of STYLE.md: media knows nothing of the
// roles that use it.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/cairnbackup/cairn/media/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"catalog", "server", "storagenode", "agent"} {
			if p := "github.com/cairnbackup/cairn/" + banned; dep == p || strings.HasPrefix(dep, p+"/") {
				t.Errorf("media depends on %s", dep)
			}
		}
	}
}
