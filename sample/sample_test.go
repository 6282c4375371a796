package sample

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSnapshotSeesCopyEqualAndChangesDifferent(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	os.Mkdir(src, 0o755)
	spec := DemoSpec()
	spec.SparseSize = 32 << 20
	if err := Generate(src, spec); err != nil {
		t.Fatal(err)
	}
	want, err := Snapshot(src)
	if err != nil {
		t.Fatal(err)
	}
	if want.Files() < 200 {
		t.Fatalf("only %d files", want.Files())
	}
	again, _ := Snapshot(src)
	if d := Compare(want, again); len(d) > 0 {
		t.Fatalf("snapshot changed the tree: %v", d)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v %s", err, out)
	}
	got, err := Snapshot(dst)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(want, got); len(d) > 0 {
		t.Fatalf("cp -a copy differs: %v", d)
	}
	// Each kind of damage is seen.
	os.WriteFile(filepath.Join(dst, "misc", "empty-file"), []byte("x"), 0o644)
	os.Chmod(filepath.Join(dst, "misc", "script.sh"), 0o700)
	os.Remove(filepath.Join(dst, "links", "zz-hard-third"))
	os.WriteFile(filepath.Join(dst, "links", "zz-hard-third"), []byte("not a link"), 0o644)
	got, _ = Snapshot(dst)
	d := strings.Join(Compare(want, got), "\n")
	for _, w := range []string{"misc/empty-file: size", "misc/script.sh: mode", "zz-hard-third: hard link group"} {
		if !strings.Contains(d, w) {
			t.Errorf("difference %q not reported in:\n%s", w, d)
		}
	}
}

func TestChange(t *testing.T) {
	src := t.TempDir()
	spec := DemoSpec()
	spec.SparseSize = 16 << 20
	if err := Generate(src, spec); err != nil {
		t.Fatal(err)
	}
	before, _ := Snapshot(src)
	if err := Change(src, 2); err != nil {
		t.Fatal(err)
	}
	after, _ := Snapshot(src)
	d := Compare(before, after)
	if len(d) < 20 {
		t.Fatalf("Change made only %d differences", len(d))
	}
}
