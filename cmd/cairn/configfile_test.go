package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/server"
)

func TestConfigFileComments(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.json")
	os.WriteFile(path, []byte("// a comment\n{\n  // \"name\": \"commented\",\n\t\t// another\n  \"name\": \"s1\",\r\n  \"data_dir\": \"/d // not a comment\"\n}\n// trailing"), 0o600)
	cmd := newServerCmd(&globals{})
	cfg := server.DefaultConfig()
	if _, err := loadConfig(cmd, path, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "s1" || cfg.DataDir != "/d // not a comment" {
		t.Fatalf("read %q, %q", cfg.Name, cfg.DataDir)
	}
	// A comment after a value is not one: the error says where it is.
	os.WriteFile(path, []byte("{\n  \"name\": \"s1\" // here\n}\n"), 0o600)
	if _, err := loadConfig(cmd, path, &cfg); err == nil || !strings.Contains(err.Error(), "invalid character '/'") {
		t.Fatalf("a comment after a value: %v", err)
	}
}
