package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestManPages(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := cli(context.Background(), "man", "--dir", dir); code != 0 {
		t.Fatalf("man: exit %d: %s", code, stderr)
	}
	host, _ := os.Hostname()
	want := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if !c.IsAvailableCommand() && c.HasParent() {
			return
		}
		name := strings.ReplaceAll(c.CommandPath(), " ", "-") + ".1"
		want[name] = true
		page, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("no man page for %q: %v", c.CommandPath(), err)
		} else {
			if !strings.Contains(string(page), `.TH "`+strings.ToUpper(strings.ReplaceAll(c.CommandPath(), " ", "-"))+`"`) {
				t.Errorf("%s has no title header", name)
			}
			if short := strings.Fields(c.Short); len(short) > 0 && !strings.Contains(string(page), short[0]) {
				t.Errorf("%s does not describe the command: %q", name, c.Short)
			}
			if host != "" && strings.Contains(string(page), `="`+host+`"`) {
				t.Errorf("%s gives this host's name %q as a default", name, host)
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	root := newRootCmd(nil, nil)
	root.InitDefaultCompletionCmd() // as Execute does
	walk(root)
	for _, must := range []string{"cairn.1", "cairn-server.1", "cairn-storagenode.1", "cairn-agent.1", "cairn-backup.1", "cairn-volume-ls.1"} {
		if !want[must] {
			t.Errorf("%s is not among the pages: %v", must, want)
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !want[e.Name()] {
			t.Errorf("page %s is for no command (a hidden one?)", e.Name())
		}
	}
	if want["cairn-man.1"] {
		t.Error("the hidden man command has a page")
	}
}
