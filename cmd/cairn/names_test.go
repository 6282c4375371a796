package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
)

// TestNamesThatAreNotUTF8EndToEnd: files named with bytes that are not
// UTF-8 (Latin-1 é, 0xff) and with a newline and a terminal escape are
// backed up through a dev stack, listed in the table and in JSON each in
// one unambiguous form, and restored by the name as listed, byte for byte.
// A socket in the tree is an info line of the job log, not a warning; and a
// file restored alone comes with its parents' mode and owner.
func TestNamesThatAreNotUTF8EndToEnd(t *testing.T) {
	ctx := devCLI(t)

	src := t.TempDir()
	dir := filepath.Join(src, "dir")
	names := map[string][]byte{ // raw name -> content
		"caf\xe9.txt":                    []byte("Latin-1 e acute\n"),
		"caf\xc3\xa9.txt":                []byte("the same name in UTF-8, another file\n"),
		"\xff\xfe bin":                   {0, 1, 2, 0xff},
		"evil\x1b]0;owned\x07\nline.txt": []byte("a newline and an escape sequence\n"),
		`back\slash`:                     []byte("a backslash\n"),
	}
	for n, content := range names {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), content, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("caf\xe9.txt", filepath.Join(dir, "link-\xe9")); err != nil {
		t.Fatal(err)
	}
	sock, err := net.Listen("unix", filepath.Join(dir, "app.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	bob := filepath.Join(src, "home", "bob")
	if err := os.MkdirAll(filepath.Join(bob, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(bob, ".ssh", "authorized_keys"), []byte("ssh-ed25519 AAAA bob\n"), 0o600)
	for _, p := range []string{bob, filepath.Join(bob, ".ssh"), filepath.Join(bob, ".ssh", "authorized_keys")} {
		if err := os.Lchown(p, 1234, 1234); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(bob, 0o700)
	// Times last: writing below a directory changes its mtime.
	for _, p := range []string{filepath.Join(bob, ".ssh"), bob} {
		if err := unix.UtimesNano(p, []unix.Timespec{{Sec: 1500000000}, {Sec: 1400000000, Nsec: 123456789}}); err != nil {
			t.Fatal(err)
		}
	}

	// The socket does not make the backup end with warnings; the job log
	// names it, at level info.
	code, out, stderr := cli(ctx, "backup", "--client", "web", "--path", src, "--wait")
	if code != 0 || !strings.Contains(out, "backup job 1 success") {
		t.Fatalf("backup: %d %q %q", code, out, stderr)
	}
	code, out, _ = cli(ctx, "job", "show", "1")
	if code != 0 || !strings.Contains(out, "info     left out 1 sockets") || !strings.Contains(out, filepath.Join(dir, "app.sock")) {
		t.Fatalf("job show: the socket is not an info line: %d %s", code, out)
	}

	// The table: each name in its escaped form, which reads back to it.
	code, out, stderr = cli(ctx, "ls", "--client", "web", dir)
	if code != 0 || strings.ContainsAny(out, "\x1b\x07\ufffd") || !utf8.ValidString(out) {
		t.Fatalf("ls: %d %q %q", code, out, stderr)
	}
	printed := map[string]string{} // raw name -> as printed
	for n := range names {
		p := fileindex.Escape(filepath.Join(dir, n))
		if !strings.Contains(out, p) {
			t.Fatalf("ls does not show %q as %q:\n%s", n, p, out)
		}
		printed[n] = p
	}
	for _, want := range []string{`caf\xe9.txt`, `\xff\xfe bin`, `evil\x1b]0;owned\a\nline.txt`, `back\\slash`, `link-\xe9 -> caf\xe9.txt`} {
		if !strings.Contains(out, want) {
			t.Errorf("ls does not show %s:\n%s", want, out)
		}
	}

	// JSON: a name that is UTF-8 is itself; one that is not is its printed
	// form, with its bytes in base64 beside it.
	code, out, _ = cli(ctx, "--json", "ls", "--client", "web", dir)
	var ls struct {
		Entries []struct {
			Path      string `json:"path"`
			PathB64   []byte `json:"path_b64"`
			Target    string `json:"target"`
			TargetB64 []byte `json:"target_b64"`
		} `json:"entries"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &ls) != nil {
		t.Fatalf("ls --json: %d %s", code, out)
	}
	seen := map[string]bool{}
	for _, e := range ls.Entries {
		raw := e.Path
		if e.PathB64 != nil {
			raw = string(e.PathB64)
			if e.Path != fileindex.Escape(raw) {
				t.Errorf("JSON path %q beside the bytes %q", e.Path, raw)
			}
		} else if strings.ContainsRune(raw, '\ufffd') {
			t.Errorf("JSON lost bytes of a name: %q", raw)
		}
		seen[raw] = true
		if filepath.Base(raw) == "link-\xe9" && (string(e.TargetB64) != "caf\xe9.txt" || e.Target != `caf\xe9.txt`) {
			t.Errorf("JSON symlink target %q / %q", e.Target, e.TargetB64)
		}
	}
	for n := range names {
		if !seen[filepath.Join(dir, n)] {
			t.Errorf("JSON listing lacks %q", n)
		}
	}

	// Restored by the name as printed, byte for byte; ls takes it too.
	for n, content := range names {
		code, out, _ := cli(ctx, "ls", "--client", "web", printed[n])
		if code != 0 || !strings.Contains(out, printed[n]) {
			t.Errorf("ls of %s: %d %s", printed[n], code, out)
		}
		to := t.TempDir()
		code, out, stderr := cli(ctx, "restore", "--client", "web", "--to", to, printed[n])
		if code != 0 {
			t.Fatalf("restore %s: %d %q %q", printed[n], code, out, stderr)
		}
		got, err := os.ReadFile(filepath.Join(to, dir, n))
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("restored %q: %q, %v; want %q", n, got, err, content)
		}
		entries, _ := os.ReadDir(filepath.Join(to, dir))
		if len(entries) != 1 {
			t.Fatalf("restore of %q brought %d entries", n, len(entries))
		}
	}
	code, _, stderr = cli(ctx, "restore", "--client", "web", "--to", t.TempDir(), dir+`/caf\q`)
	if code != 2 || !strings.Contains(stderr, `\\`) {
		t.Fatalf("a path with a bad escape: %d %q", code, stderr)
	}

	// A file restored alone: its parents come with their mode, owner and
	// times, not as 0755 root:root directories made on the way.
	to := t.TempDir()
	if code, out, stderr := cli(ctx, "restore", "--client", "web", "--to", to, filepath.Join(bob, ".ssh", "authorized_keys")); code != 0 {
		t.Fatalf("restore of authorized_keys: %d %q %q", code, out, stderr)
	}
	for _, p := range []string{bob, filepath.Join(bob, ".ssh")} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(to, p), &st); err != nil || st.Mode&0o7777 != 0o700 || st.Uid != 1234 ||
			st.Mtim.Nano() != 1400000000123456789 {
			t.Fatalf("%s restored as %o uid %d mtime %d (%v), want 700 uid 1234 mtime 1400000000123456789",
				p, st.Mode&0o7777, st.Uid, st.Mtim.Nano(), err)
		}
	}

	// A backup root that is not UTF-8, given raw as a shell passes it:
	// the servers ask the agent whether it exists before they make the
	// job, and the name must reach it as it is.
	latin1 := filepath.Join(t.TempDir(), "d\xe9j\xe0 vu")
	if err := os.MkdirAll(latin1, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(latin1, "f"), []byte("under a Latin-1 root\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = cli(ctx, "backup", "--client", "web", "--path", latin1, "--level", "full", "--wait")
	if code != 0 || !strings.Contains(out, "success") {
		t.Fatalf("backup of a root that is not UTF-8: %d %q %q", code, out, stderr)
	}
	to = t.TempDir()
	if code, out, stderr := cli(ctx, "restore", "--client", "web", "--to", to, fileindex.Escape(latin1)); code != 0 {
		t.Fatalf("restore of %s: %d %q %q", fileindex.Escape(latin1), code, out, stderr)
	}
	if got, err := os.ReadFile(filepath.Join(to, latin1, "f")); err != nil || string(got) != "under a Latin-1 root\n" {
		t.Fatalf("restored %q, %v", got, err)
	}
}
