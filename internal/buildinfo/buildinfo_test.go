package buildinfo_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const pkg = "github.com/cairnbackup/cairn/internal/buildinfo"

// build compiles testdata/show in dir with extra go build flags and returns
// what it prints.
func build(t *testing.T, dir string, flags ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "show")
	args := append([]string{"build", "-o", bin}, flags...)
	args = append(args, "./internal/buildinfo/testdata/show")
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func TestStampWins(t *testing.T) {
	got := build(t, "../..", "-ldflags", "-X "+pkg+".version=9.8.7 -X "+pkg+".commit=c0ffee")
	if got != "9.8.7 c0ffee" {
		t.Fatalf("stamped build says %q, want %q", got, "9.8.7 c0ffee")
	}
}

// An unstamped build in a checkout still names its commit, from what the
// toolchain records, so a bug report from a 'go build' binary can be traced.
// The toolchain records nothing in a git worktree (its .git is a file), so
// the package is built in a repository of its own.
func TestUnstampedBuildNamesItsCommit(t *testing.T) {
	repo := t.TempDir()
	files := map[string]string{
		"go.mod":                          "module " + strings.TrimSuffix(pkg, "/internal/buildinfo") + "\n\ngo 1.22\n",
		"internal/buildinfo/buildinfo.go": "buildinfo.go",
		"internal/buildinfo/testdata/show/main.go": "testdata/show/main.go",
	}
	for dst, src := range files {
		data := []byte(src)
		if dst != "go.mod" {
			var err error
			if data, err = os.ReadFile(src); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(repo, dst)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(repo, dst), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.net"}, args...)...)
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", ".")
	git("commit", "-q", "-m", "test")
	head := git("rev-parse", "HEAD")

	// The toolchain makes a pseudo-version of the commit, v0.0.0-TIME-SHA.
	version, commit, _ := strings.Cut(build(t, repo, "-buildvcs=true"), " ")
	if !strings.HasPrefix(version, "0.0.0-") || !strings.HasSuffix(version, head[:12]) || commit != head {
		t.Errorf("unstamped build says version %q commit %q, want 0.0.0-TIME-%s and %s", version, commit, head[:12], head)
	}
	if err := os.WriteFile(filepath.Join(repo, "go.mod"), []byte("module "+strings.TrimSuffix(pkg, "/internal/buildinfo")+"\n\ngo 1.23\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	version, commit, _ = strings.Cut(build(t, repo, "-buildvcs=true"), " ")
	if !strings.HasSuffix(version, head[:12]+"+dirty") || commit != head+"-dirty" {
		t.Errorf("unstamped build of a changed tree says version %q commit %q, want both marked dirty", version, commit)
	}
	if got := build(t, repo, "-buildvcs=false"); got != "devel unknown" {
		t.Errorf("a build with no VCS information says %q, want %q", got, "devel unknown")
	}
}
