package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/devstack"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// makeLongPathTree makes, below src, files whose absolute paths are exactly
// 199 bytes (files of them, a hundred to a directory) and files whose paths
// are exactly 4,000 bytes (deep of them, PATH_MAX is 4,096), built from
// components of 200 bytes, each with a 3 KB extended attribute.
func makeLongPathTree(t *testing.T, src string, files, deep int) {
	t.Helper()
	for i := range files {
		dir := filepath.Join(src, fmt.Sprintf("d%02d", i/100))
		if i%100 == 0 {
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		name := fmt.Sprintf("/f%04d-", i)
		p := dir + name + strings.Repeat("n", 199-len(dir)-len(name))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("file %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(src, "deep")
	for c := 0; len(dir)+201 < 4000-16; c++ {
		dir += "/" + strings.Repeat(string(rune('a'+c)), 200)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range deep {
		name := fmt.Sprintf("/g%03d-", i)
		p := dir + name + strings.Repeat("x", 4000-len(dir)-len(name))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("deep %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "user.cairn-test", []byte(strings.Repeat("v", 3000)), 0); err != nil {
			t.Fatalf("set an extended attribute on a file in %s: %v", src, err)
		}
	}
}

// A backup of 4,500 files with 199-byte paths and of files with 4,000-byte
// paths restores whole through the server, and 'cairn ls -R' lists it. The
// restore plan used to go in pages of 4,000 entries, over NATS's 1 MiB:
// the page was dropped, and the restore failed after a minute with no file
// and a hint to check that a server runs; 'ls -R' timed out the same way.
func TestLongPathsRestoreAndListThroughTheServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Config{Dir: t.TempDir(), Client: "web", NoTape: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	const files, deep = 4500, 300
	makeLongPathTree(t, src, files, deep)
	want, err := sample.Snapshot(src)
	if err != nil {
		t.Fatal(err)
	}
	n := []string{"--nats", st.URL(), "--nats-nkey", st.AdminAuth.NkeyFile}

	code, out, stderr := cli(ctx, append(n, "backup", "--client", "web", "--path", src, "--level", "full", "--wait")...)
	if code != 0 || !strings.Contains(out, "success") {
		t.Fatalf("backup: %d %q %q", code, out, stderr)
	}
	to := filepath.Join(t.TempDir(), "r")
	start := time.Now()
	code, out, stderr = cli(ctx, append(n, "restore", "--client", "web", "--to", to, "--wait")...)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("%d files", files+deep)) {
		t.Fatalf("restore after %s: %d %q %q", time.Since(start).Round(time.Second), code, out, stderr)
	}
	got, err := sample.Snapshot(filepath.Join(to, src))
	if err != nil {
		t.Fatal(err)
	}
	if d := sample.Compare(want, got); len(d) > 0 {
		t.Fatalf("the restore differs in %d ways, first: %.300s", len(d), d[0])
	}

	code, out, stderr = cli(ctx, append(n, "--json", "ls", "-R", "--client", "web", src)...)
	var ls struct {
		Entries []wire.EntryInfo `json:"entries"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &ls) != nil {
		t.Fatalf("ls -R: %d %.300q %q", code, out, stderr)
	}
	var listed []string
	for _, e := range ls.Entries {
		listed = append(listed, string(e.Path))
	}
	wantListed := []string{src} // -R lists the directory itself too
	for rel := range want.Items {
		wantListed = append(wantListed, filepath.Join(src, rel))
	}
	slices.Sort(listed)
	slices.Sort(wantListed)
	if !slices.Equal(listed, wantListed) {
		t.Fatalf("ls -R lists %d entries, the tree holds %d", len(listed), len(wantListed))
	}
	// The table, printed a page at a time: the backup's line, the header
	// once, and a row per entry.
	code, out, stderr = cli(ctx, append(n, "ls", "-R", "--client", "web", src)...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) != 2+len(wantListed) || !strings.HasPrefix(lines[0], "backup ") || !strings.HasPrefix(lines[1], "MODE ") {
		t.Fatalf("ls -R: %d, %d lines for %d entries, %q", code, len(lines), len(wantListed), stderr)
	}
	if strings.Count(out, "MODE ") != 1 {
		t.Fatal("ls -R printed its header more than once")
	}
}
