package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/storagenode"
)

func TestLogFormat(t *testing.T) {
	var buf bytes.Buffer
	o := roleOpts{roleFields: roleFields{LogLevel: "info", LogFormat: "json"}}
	log, err := o.logger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	log.With("component", "server").Info("started", "node", "sn1")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil || rec["msg"] != "started" || rec["component"] != "server" || rec["node"] != "sn1" || rec["level"] != "INFO" {
		t.Fatalf("a JSON log line: %q, %v", buf.String(), err)
	}
	buf.Reset()
	o.LogFormat = "text"
	if log, err = o.logger(&buf); err != nil {
		t.Fatal(err)
	}
	log.Info("started")
	if !strings.HasPrefix(buf.String(), "time=") {
		t.Fatalf("a text log line: %q", buf.String())
	}
	if _, err := (&roleOpts{roleFields: roleFields{LogLevel: "info", LogFormat: "xml"}}).logger(&buf); err == nil {
		t.Fatal("--log-format xml accepted")
	}

	// A bad value is a usage error, said before the role starts.
	code, _, stderr := cli(context.Background(), "agent", "--name", "a1", "--log-format", "xml", "--nats", "nats://127.0.0.1:1")
	if code != 2 || !strings.Contains(stderr, `log format "xml": use text or json`) || !strings.Contains(stderr, "hint: ") {
		t.Fatalf("--log-format xml: exit %d, %q", code, stderr)
	}

	// log_format in a config file is every role's, beside the role's own
	// fields, which still refuse what they do not know.
	path := filepath.Join(t.TempDir(), "storagenode.json")
	os.WriteFile(path, []byte("{\n// JSON for the shipper\n\"log_format\": \"json\",\n\"workers\": 3\n}\n"), 0o600)
	cfg := storagenode.DefaultConfig()
	var rf roleFields
	if _, err := loadConfig(newStorageNodeCmd(&globals{}), path, &cfg, &rf); err != nil || cfg.Workers != 3 || rf.LogFormat != "json" {
		t.Fatalf("a config file with log_format: %v, workers %d, %+v", err, cfg.Workers, rf)
	}
	os.WriteFile(path, []byte(`{"log_format": "json", "wrokers": 3}`), 0o600)
	if _, err := loadConfig(newStorageNodeCmd(&globals{}), path, &cfg, &rf); err == nil || !strings.Contains(err.Error(), "wrokers") {
		t.Fatalf("a misspelt field beside log_format was accepted: %v", err)
	}
}
