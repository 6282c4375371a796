package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/agent"
	"github.com/cairnbackup/cairn/server"
	"github.com/cairnbackup/cairn/storagenode"
)

// packagedExample reads packaging/etc/NAME, the example the Debian package
// installs in /etc/cairn and the role's unit reads.
func packagedExample(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join("..", "..", "packaging", "etc", name)
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// uncommentFields makes the commented-out fields of an example live, so that
// a field the example only suggests is checked too: a line whose comment
// text starts like JSON ("name": ..., {, }, ]) is uncommented.
func uncommentFields(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	n := 0
	for i, l := range lines {
		body, ok := strings.CutPrefix(strings.TrimLeft(l, " \t"), "//")
		if body = strings.TrimLeft(body, " \t"); ok && body != "" && strings.ContainsRune(`"{}[]`, rune(body[0])) {
			lines[i] = body
			n++
		}
	}
	if n == 0 {
		t.Fatalf("%s suggests no field in a comment", path)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(out, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPackagedConfigExamples loads each role's example through the role's
// own loader (unknown fields refused) into its real Config and validates
// it, as the unit's 'cairn ROLE --config /etc/cairn/ROLE.json' does; and
// loads it again with its suggested fields uncommented, which must all be
// fields of the role.
func TestPackagedConfigExamples(t *testing.T) {
	for _, c := range []struct {
		file   string
		cmd    func(*globals) *cobra.Command
		config func() (any, func() error)
	}{
		{"server.json", newServerCmd, func() (any, func() error) {
			cfg := server.DefaultConfig()
			return &cfg, cfg.Validate
		}},
		{"storagenode.json", newStorageNodeCmd, func() (any, func() error) {
			cfg := storagenode.DefaultConfig()
			return &cfg, cfg.Validate
		}},
		{"agent.json", newAgentCmd, func() (any, func() error) {
			cfg := agent.DefaultConfig()
			return &cfg, cfg.Validate
		}},
	} {
		t.Run(c.file, func(t *testing.T) {
			path := packagedExample(t, c.file)
			cmd := c.cmd(&globals{})
			cfg, validate := c.config()
			if _, err := loadConfig(cmd, path, cfg); err != nil {
				t.Fatal(err)
			}
			if err := validate(); err != nil {
				t.Fatalf("%s does not validate: %v", path, err)
			}
			all, _ := c.config()
			if _, err := loadConfig(cmd, uncommentFields(t, path), all); err != nil {
				t.Fatalf("%s with its suggested fields uncommented: %v", path, err)
			}
		})
	}
	// The storage node's example serves a pool, the server's names the
	// same one as the default.
	var node storagenode.Config
	if _, err := loadConfig(newStorageNodeCmd(&globals{}), packagedExample(t, "storagenode.json"), &node); err != nil {
		t.Fatal(err)
	}
	srv := server.DefaultConfig()
	if _, err := loadConfig(newServerCmd(&globals{}), packagedExample(t, "server.json"), &srv); err != nil {
		t.Fatal(err)
	}
	if len(node.Pools) != 1 || node.Pools[0].Name != srv.DefaultPool {
		t.Errorf("the storage node's example pools %+v do not hold the server's default pool %q", node.Pools, srv.DefaultPool)
	}
}
