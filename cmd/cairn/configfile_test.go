package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/internal/configfile"
	"github.com/cairnbackup/cairn/server"
)

func TestConfigFileComments(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.json")
	os.WriteFile(path, []byte("// a comment\n{\n  // \"name\": \"commented\",\n\t\t// another\n  \"name\": \"s1\",\r\n  \"data\": \"/d // not a comment\",\n}\n// trailing"), 0o600)
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
	if _, err := loadConfig(cmd, path, &cfg); err == nil || !strings.Contains(err.Error(), "line 2, column 16: invalid character '/'") {
		t.Fatalf("a comment after a value: %v", err)
	}
}

// FuzzConfigFile feeds every role's config file loader arbitrary files:
// it never panics, says what is wrong as fields on lines of the file, and
// a config it read, written out as an example with every field live (as
// 'cairn config example' writes one), reads back to the same config.
// (FuzzDecode in internal/configfile holds the comment blanking and the
// decoder's other promises.)
func FuzzConfigFile(f *testing.F) {
	for _, name := range []string{"server.json", "storagenode.json", "agent.json"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "packaging", "etc", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		`{"log_format":"json","workers":2}`, "// only a comment", `{"dir":"//not a comment"}`,
		"\r\n  //\r\n{}\n//", `{"log_format":7}`, `[1,2]`, `{"pools":[{"name":"A","dir":"/p"}]} // after`,
		`{"id": "sn1", "nats_url": "nats://x", "nats_auth": {"ca_file": "/c"}, "heartbeat_interval": 300000000}`,
		`{"libraries": [{"name": "lib1", "emulated": {"dir": "/l", "slots": 4, "cartridge_size": "4G"}, "mount_poll": "1s"}], "tape_pools": [{"name": "W", "library": "lib1", "spool_chunk_size": "64M"}]}`,
		`{"max_bytes_per_second": "20M", "progress_interval": "100ms", "nats_ca": "/ca"}`,
		`{"data": "/d", "nats_port": 4223, "max_volume_size": "4G", "raft_snapshot_interval": "1h"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := bytes.Count(data, []byte("\n")) + 1
		for _, r := range configRoles {
			rc := r.defaults()
			_, err := configfile.Decode(data, rc.targets()...)
			if err != nil {
				for _, p := range configfile.Problems(err) {
					var fe *configfile.FieldError
					if !errors.As(p, &fe) || fe.Line < 0 || fe.Line > lines {
						t.Fatalf("%s: %v is no FieldError on a line of the file's %d", r.name, p, lines)
					}
				}
				continue
			}
			write := func(rc roleConfig) []byte {
				ex := r.example(r.defaults())
				ex.Values = rc.targets()
				ex.Live = nil
				for _, target := range rc.targets() {
					for _, fl := range configfile.SchemaOf(reflect.TypeOf(target)).Fields {
						ex.Live = append(ex.Live, fl.Name)
					}
				}
				out, err := ex.Write()
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			first := write(rc)
			again := r.defaults()
			if warns, err := configfile.Decode(first, again.targets()...); err != nil || len(warns) > 0 {
				t.Fatalf("%s: a config written out does not read back: %v %v\n%s", r.name, warns, err, first)
			}
			if second := write(again); !bytes.Equal(first, second) {
				t.Fatalf("%s: a config written out reads back as another:\n%s\n%s", r.name, first, second)
			}
		}
	})
}
