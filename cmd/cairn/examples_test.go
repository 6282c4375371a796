package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairnbackup/cairn/server"
	"github.com/cairnbackup/cairn/storagenode"
)

var updatePackagedExamples = flag.Bool("update-packaged-examples", false, "write packaging/etc/*.json again from 'cairn config example'")

// packagedExample is packaging/etc/NAME.json, the example the Debian
// package installs in /etc/cairn and the role's unit reads.
func packagedExample(name string) string {
	return filepath.Join("..", "..", "packaging", "etc", name+".json")
}

// packagedRoles are the roles the package has a unit and a config for.
var packagedRoles = []string{"server", "storagenode", "agent"}

// TestPackagedConfigExamples holds the examples the package installs to
// what 'cairn config example' prints (go generate writes them again), and
// 'cairn config check' accepts each, as the role's unit reads it.
func TestPackagedConfigExamples(t *testing.T) {
	ctx := context.Background()
	for _, role := range packagedRoles {
		t.Run(role, func(t *testing.T) {
			code, want, stderr := cli(ctx, "config", "example", "--role", role)
			if code != 0 {
				t.Fatalf("config example --role %s: %d %s", role, code, stderr)
			}
			path := packagedExample(role)
			if *updatePackagedExamples {
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			have, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(have, []byte(want)) {
				t.Fatalf("%s is not what 'cairn config example --role %s' prints: run 'go generate ./cmd/cairn' and commit it", path, role)
			}
			code, out, stderr := cli(ctx, "config", "check", path)
			if code != 0 || out != path+": a valid "+role+" config file\n" {
				t.Fatalf("config check %s: %d %q %q", path, code, out, stderr)
			}
		})
	}
	// The storage node's example serves a pool, the server's names the
	// same one as the default.
	node := storagenode.DefaultConfig()
	if _, err := loadConfig(newStorageNodeCmd(&globals{}), packagedExample("storagenode"), &node, &roleFields{}); err != nil {
		t.Fatal(err)
	}
	srv := server.DefaultConfig()
	if _, err := loadConfig(newServerCmd(&globals{}), packagedExample("server"), &srv, &roleFields{}); err != nil {
		t.Fatal(err)
	}
	if len(node.Pools) != 1 || node.Pools[0].Name != srv.DefaultPool {
		t.Errorf("the storage node's example pools %+v do not hold the server's default pool %q", node.Pools, srv.DefaultPool)
	}
}
