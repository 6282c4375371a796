package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/server"
	"github.com/cairnbackup/cairn/storagenode"
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

// FuzzConfigFile feeds a role's config file loader arbitrary files: comment
// lines, and only they, become spaces of the same length (so decode errors
// point into the file as written), the role-wide fields come out whatever
// the rest is, and the role's decoder never panics on what is left.
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
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data)
		out := blankComments(data)
		if len(out) != len(in) {
			t.Fatalf("%d bytes became %d", len(in), len(out))
		}
		inLines, outLines := bytes.Split(in, []byte("\n")), bytes.Split(out, []byte("\n"))
		for i, l := range inLines {
			comment := bytes.HasPrefix(bytes.TrimLeft(l, " \t\r"), []byte("//"))
			switch {
			case comment && len(bytes.Trim(outLines[i], " ")) != 0:
				t.Fatalf("comment line %d %q left as %q", i+1, l, outLines[i])
			case !comment && !bytes.Equal(l, outLines[i]):
				t.Fatalf("line %d %q changed to %q", i+1, l, outLines[i])
			}
		}
		rest, err := withoutRoleFields(out)
		if err != nil {
			t.Fatal(err)
		}
		var fields map[string]json.RawMessage
		if json.Unmarshal(out, &fields) == nil && fields != nil {
			var left map[string]json.RawMessage
			if err := json.Unmarshal(rest, &left); err != nil {
				t.Fatalf("an object without its role fields does not decode: %v", err)
			}
			for _, name := range roleFieldNames {
				if _, ok := left[name]; ok {
					t.Fatalf("%s left in for the role's decoder: %s", name, rest)
				}
			}
		}
		cfg := storagenode.DefaultConfig()
		dec := json.NewDecoder(bytes.NewReader(rest))
		dec.DisallowUnknownFields()
		_ = dec.Decode(&cfg)
	})
}
