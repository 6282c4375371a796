package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestVersionScript checks scripts/version.sh in a repository of its own
// through a history (no tag, a tag, commits after it, uncommitted changes),
// and that dpkg orders the versions it gives as the history goes.
func TestVersionScript(t *testing.T) {
	needTools(t, "git", "dpkg")
	script, err := filepath.Abs(filepath.Join(repoRoot, "scripts", "version.sh"))
	if err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(run(t, repo, "git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.net"}, args...)...))
	}
	version := func() string {
		t.Helper()
		cmd := exec.Command(script)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CAIRN_VERSION=")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("version.sh: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	commit := func(msg string) string {
		t.Helper()
		if err := os.WriteFile(filepath.Join(repo, "f"), []byte(msg), 0o644); err != nil {
			t.Fatal(err)
		}
		git("add", "f")
		git("commit", "-q", "-m", msg)
		return git("rev-parse", "--short=12", "HEAD")
	}
	git("init", "-q")

	var history []string
	expect := func(want string) {
		t.Helper()
		got := version()
		if !regexp.MustCompile("^" + want + "$").MatchString(got) {
			t.Errorf("version %q, want %s", got, want)
		}
		history = append(history, got)
	}
	sha := commit("one")
	expect(`0\.0\.0\+1\.g` + sha)
	sha = commit("two")
	expect(`0\.0\.0\+2\.g` + sha)
	os.WriteFile(filepath.Join(repo, "f"), []byte("changed"), 0o644)
	expect(`0\.0\.0\+2\.g` + sha + `\.dirty`)
	git("checkout", "-q", "f")
	git("tag", "v1.2.3")
	expect(`1\.2\.3`)
	os.WriteFile(filepath.Join(repo, "f"), []byte("changed"), 0o644)
	expect(`1\.2\.3\+0\.dirty`)
	sha = commit("three")
	expect(`1\.2\.3\+1\.g` + sha)
	sha = commit("four")
	expect(`1\.2\.3\+2\.g` + sha)
	git("tag", "v1.10.0")
	expect(`1\.10\.0`)
	git("tag", "not-a-version") // other tags are not versions
	expect(`1\.10\.0`)
	commit("five")
	git("tag", "v2.0.0-rc1")
	expect(`2\.0\.0~rc1`)
	commit("six")
	git("tag", "v2.0.0")
	expect(`2\.0\.0`)

	for i := 1; i < len(history); i++ {
		a, b := history[i-1], history[i]
		if a == b {
			continue
		}
		if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg does not order %s before %s", a, b)
		}
	}

	// CAIRN_VERSION wins: a build from a tarball, or a release build.
	cmd := exec.Command(script)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CAIRN_VERSION=2.0.0")
	if out, err := cmd.Output(); err != nil || strings.TrimSpace(string(out)) != "2.0.0" {
		t.Errorf("with CAIRN_VERSION=2.0.0: %q, %v", out, err)
	}
}
