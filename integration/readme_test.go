package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// TestReadme follows README.md as a newcomer does, so that it cannot drift
// from the code: in a clean copy of the tree, with a home directory of its
// own, it runs every ```sh block in the order of the file, each in its own
// `bash -euo pipefail`: the block that builds the binary (go install, into
// a directory first on PATH), then `cairn dev` in the background, on
// reserved ports, until the end, then the walkthrough's admin commands
// against it. A block that fails, or any command of it, fails the test at
// that block, with its output.
//
// The rules a block of the README follows (readmeBlockKind):
//   - ```sh (or bash, shell) runs. It must work as written on a Linux
//     machine with Go, as root or not, in a fresh clone; a path under ~ is
//     the test's own home.
//   - ```sh-notest REASON does not run, and says why on its fence line:
//     a step of a deployment on other hosts, a package installed as root,
//     a command run elsewhere (the demo, make test). Keep them few, and
//     covered by another test where they can be.
//   - The one block whose command is `cairn dev` runs in the background
//     until the end; it must be a block of its own.
//   - Anything else (ini, json, yaml, text, output) is not a command and
//     says so with its language; a block with no language is an error, so
//     that a command never goes unchecked for want of a label.
func TestReadme(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := readmeBlocks(string(readme))
	if err != nil {
		t.Fatal(err)
	}
	var runnable []readmeBlock
	devBlocks := 0
	for _, b := range blocks {
		kind, why := readmeBlockKind(b.info)
		switch kind {
		case blockBad:
			t.Errorf("README.md:%d: ```%s: %s", b.line, b.info, why)
		case blockRun:
			if isDevBlock(b.text) {
				devBlocks++
				if n := len(commandLines(b.text)); n != 1 {
					t.Errorf("README.md:%d: 'cairn dev' runs until Ctrl-C: give it a block of its own (this one has %d commands)", b.line, n)
				}
			}
			runnable = append(runnable, b)
		}
	}
	if devBlocks != 1 {
		t.Errorf("README.md has %d blocks that start 'cairn dev', want 1 for the walkthrough to run against", devBlocks)
	}
	if t.Failed() {
		t.FailNow()
	}

	work := t.TempDir()
	clone, home, bin := filepath.Join(work, "clone"), filepath.Join(work, "home"), filepath.Join(work, "bin")
	for _, d := range []string{home, bin} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyTree(t, root, clone)
	env := readmeEnv(t, home, bin, filepath.Join(work, "dev.json"))
	l := &logs{}
	l.printOnFailure(t)

	var dev *proc
	for _, b := range runnable {
		if !isDevBlock(b.text) {
			runReadmeBlock(t, b, clone, env)
			continue
		}
		// A shell function named cairn gives the README's own command line
		// (its ~ expanded, its comment dropped, by bash) the test's ports
		// and runs the binary in the shell's place, so the process stopped
		// at the end is cairn dev itself.
		script := fmt.Sprintf("cairn() { exec cairn \"$@\" --nats-port %d --raft-addr %s --metrics-addr %s; }\n%s",
			freeport.Loopback(t), freeport.LoopbackAddr(t), anyAddr, b.text)
		dev = newProc(t, l, work, "dev", "-c", script)
		dev.bin, dev.env, dev.dir = "bash", env, clone
		t.Cleanup(dev.stop)
		dev.start()
		waitReadmeDev(t, dev, filepath.Join(bin, "cairn"), clone, env)
	}
	if dev != nil {
		dev.stop()
	}
}

// readmeBlock is one fenced code block of a Markdown file.
type readmeBlock struct {
	line int    // the line of its opening fence, from 1
	info string // the fence's info string: language, and what follows it
	text string // its content, without the fence's indentation
}

// readmeBlocks finds the fenced code blocks of a Markdown text (``` or
// ~~~, indented or not, as in a list item).
func readmeBlocks(text string) ([]readmeBlock, error) {
	lines := strings.Split(text, "\n")
	var blocks []readmeBlock
	for i := 0; i < len(lines); i++ {
		body := strings.TrimLeft(lines[i], " ")
		indent := len(lines[i]) - len(body)
		fence := fenceOf(body)
		if fence == "" {
			continue
		}
		b := readmeBlock{line: i + 1, info: strings.TrimSpace(body[len(fence):])}
		var content []string
		closed := false
		for i++; i < len(lines); i++ {
			l := lines[i]
			if f := fenceOf(strings.TrimLeft(l, " ")); f != "" && f[0] == fence[0] && len(f) >= len(fence) &&
				strings.TrimSpace(strings.TrimLeft(l, " ")[len(f):]) == "" {
				closed = true
				break
			}
			for n := 0; n < indent && strings.HasPrefix(l, " "); n++ {
				l = l[1:]
			}
			content = append(content, l)
		}
		if !closed {
			return nil, fmt.Errorf("README.md:%d: the code block opened here is never closed", b.line)
		}
		b.text = strings.Join(content, "\n") + "\n"
		blocks = append(blocks, b)
	}
	return blocks, nil
}

// fenceOf is the fence a line opens with (``` or ~~~, or longer), or "".
func fenceOf(line string) string {
	for _, c := range []string{"`", "~"} {
		n := len(line) - len(strings.TrimLeft(line, c))
		if n >= 3 {
			return line[:n]
		}
	}
	return ""
}

type blockKind int

const (
	blockOther blockKind = iota // not a command: ini, json, text...
	blockRun                    // a command block TestReadme runs
	blockSkip                   // a command block marked not to run, with a reason
	blockBad                    // a block the rules do not allow
)

var shellLanguages = map[string]bool{"sh": true, "bash": true, "shell": true}

// readmeBlockKind says what TestReadme does with a block whose fence has
// the info string info, and why when it is refused.
func readmeBlockKind(info string) (blockKind, string) {
	lang, rest, _ := strings.Cut(info, " ")
	rest = strings.TrimSpace(rest)
	reason := strings.TrimSpace(strings.TrimLeft(rest, ":"))
	if base, ok := strings.CutSuffix(lang, "-notest"); ok && shellLanguages[base] {
		if reason == "" {
			return blockBad, "say on the fence line why this block does not run: ```" + lang + " REASON"
		}
		return blockSkip, reason
	}
	if notest, ok := strings.CutPrefix(rest, "notest"); ok && shellLanguages[lang] && (notest == "" || notest[0] == ':' || notest[0] == ' ') {
		if reason = strings.TrimSpace(strings.TrimPrefix(notest, ":")); reason == "" {
			return blockBad, "say on the fence line why this block does not run: ```" + lang + "-notest REASON"
		}
		return blockSkip, reason
	}
	switch {
	case shellLanguages[lang] && rest != "":
		return blockBad, "a block that runs has nothing after its language; to keep it from running, ```" + lang + "-notest REASON"
	case shellLanguages[lang]:
		return blockRun, ""
	case lang == "":
		return blockBad, "a code block needs a language: ```sh runs in TestReadme, ```sh-notest REASON does not, ```text (ini, json...) is not a command"
	case lang == "console" || lang == "shell-session" || lang == "zsh" || lang == "fish":
		return blockBad, "write commands as ```sh (without prompts), so that TestReadme runs them"
	}
	return blockOther, ""
}

// commandLines are the lines of a shell block that are not blank or
// comments.
func commandLines(text string) []string {
	var cmds []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			cmds = append(cmds, l)
		}
	}
	return cmds
}

// isDevBlock reports whether a shell block runs 'cairn dev'.
func isDevBlock(text string) bool {
	for _, l := range commandLines(text) {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "cairn" && f[1] == "dev" {
			return true
		}
	}
	return false
}

// copyTree copies the files of the repository at root that git tracks or
// would (not the ignored ones: bin/, dist/) to dir: a clean clone, with
// the working tree's changes.
func copyTree(t *testing.T, root, dir string) {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	need(t, "git, to list the files of the tree", err)
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src, dst := filepath.Join(root, name), filepath.Join(dir, name)
		st, err := os.Lstat(src)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted in the working tree
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case st.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(src)
			if err == nil {
				err = os.Symlink(target, dst)
			}
			if err != nil {
				t.Fatal(err)
			}
		case st.Mode().IsRegular():
			if err := copyFile(src, dst, st.Mode().Perm()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// readmeEnv is the environment of the README's commands: this process's,
// with a home of its own (where ~ in the README points), bin first on PATH
// and as GOBIN (where go install puts cairn), a client file of 'cairn dev'
// of its own (not /run/cairn/dev.json, which root's 'cairn dev' elsewhere
// on the machine may own), no CAIRN_* of the caller's, and the Go caches
// and settings of this user, which a new HOME would otherwise hide. Builds
// are -trimpath, so that the copy of the tree, in a new directory each
// run, compiles from the build cache.
func readmeEnv(t *testing.T, home, bin, devFile string) []string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOCACHE", "GOMODCACHE", "GOPATH", "GOENV", "GOFLAGS").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	goenv := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(goenv) != 5 {
		t.Fatalf("go env printed %q", out)
	}
	drop := map[string]bool{"HOME": true, "PATH": true, "GOBIN": true, "GOCACHE": true, "GOMODCACHE": true, "GOPATH": true, "GOENV": true, "GOFLAGS": true}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if drop[k] || strings.HasPrefix(k, "CAIRN_") || strings.HasPrefix(k, "XDG_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "GOBIN="+bin,
		"CAIRN_DEV_FILE="+devFile, "GOCACHE="+goenv[0], "GOMODCACHE="+goenv[1], "GOPATH="+goenv[2], "GOENV="+goenv[3],
		"GOFLAGS="+strings.TrimSpace(goenv[4]+" -trimpath"))
}

// runReadmeBlock runs one block of the README in bash, stopping at the
// first command that fails.
func runReadmeBlock(t *testing.T, b readmeBlock, dir string, env []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euxo", "pipefail", "-c", b.text)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env, cmd.Dir = env, dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("did not end within 5 minutes")
	}
	if err != nil {
		t.Fatalf("README.md:%d: the block\n%s\nfailed (%v); its output (each command after a +):\n%s", b.line, b.text, err, out.String())
	}
	t.Logf("README.md:%d ran in %s:\n%s", b.line, time.Since(start).Round(time.Millisecond), out.String())
}

// waitReadmeDev waits, as a newcomer waits for the banner, until the
// admin commands of the README's environment reach 'cairn dev' and its
// agent is online.
func waitReadmeDev(t *testing.T, dev *proc, cairn, dir string, env []string) {
	t.Helper()
	poll.Until(t, 2*time.Minute, func() error {
		failIfCrashed(t, dev)
		cmd := exec.Command(cairn, "client", "list", "--json")
		cmd.Env, cmd.Dir = env, dir
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("cairn client list: %v %s", err, out)
		}
		var clients []wire.ClientInfo
		if err := json.Unmarshal(out, &clients); err != nil || len(clients) == 0 || !clients[0].Online {
			return fmt.Errorf("the agent of cairn dev is not online yet: %s (%v)", out, err)
		}
		return nil
	})
}

// TestReadmeBlocks checks the rules TestReadme holds the README to, on
// blocks as other sections may add them.
func TestReadmeBlocks(t *testing.T) {
	md := strings.Join([]string{
		"# x",
		"```sh",
		"cairn status   # comment",
		"```",
		"1. A step:",
		"",
		"   ```sh-notest needs three hosts",
		"   cairn cert ca --out /etc/cairn/ca",
		"   ```",
		"````bash",
		"echo '```'",
		"````",
		"```ini",
		"[Service]",
		"```",
		"```sh notest: a deployment step",
		"systemctl start cairn-server",
		"```",
		"~~~",
		"no language",
		"~~~",
		"```sh-notest",
		"x",
		"```",
		"```console",
		"$ cairn status",
		"```",
		"```sh --run",
		"x",
		"```",
	}, "\n")
	blocks, err := readmeBlocks(md)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		line int
		kind blockKind
		text string
	}
	wants := []want{
		{2, blockRun, "cairn status   # comment\n"},
		{7, blockSkip, "cairn cert ca --out /etc/cairn/ca\n"},
		{10, blockRun, "echo '```'\n"},
		{13, blockOther, "[Service]\n"},
		{16, blockSkip, "systemctl start cairn-server\n"},
		{19, blockBad, "no language\n"},
		{22, blockBad, "x\n"},
		{25, blockBad, "$ cairn status\n"},
		{28, blockBad, "x\n"},
	}
	if len(blocks) != len(wants) {
		t.Fatalf("found %d blocks, want %d: %+v", len(blocks), len(wants), blocks)
	}
	for i, w := range wants {
		b := blocks[i]
		kind, why := readmeBlockKind(b.info)
		if b.line != w.line || kind != w.kind || b.text != w.text {
			t.Errorf("block %d: line %d, kind %d (%s), text %q; want line %d, kind %d, text %q", i, b.line, kind, why, b.text, w.line, w.kind, w.text)
		}
	}
	if _, why := readmeBlockKind("sh-notest needs three hosts"); why != "needs three hosts" {
		t.Errorf("the reason of a block that does not run: %q", why)
	}
	if _, err := readmeBlocks("```sh\ncairn status\n"); err == nil || !strings.Contains(err.Error(), "README.md:1") {
		t.Errorf("an unclosed block: %v", err)
	}
	if !isDevBlock("cairn dev --data ~/d   # until Ctrl-C\n") || isDevBlock("cairn status\n# cairn dev\n") ||
		len(commandLines("# x\n\ncairn a\n  cairn b\n")) != 2 {
		t.Error("isDevBlock or commandLines")
	}
}
