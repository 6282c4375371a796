package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/cairnbackup/cairn/internal/configfile"
	"github.com/cairnbackup/cairn/storagenode"
)

var updateConfigDocs = flag.Bool("update-config-docs", false, "write configdocs.go again from the config structs' doc comments")

const module = "github.com/cairnbackup/cairn"

// repoDir is the directory of a package of this module.
func repoDir(pkgPath string) string {
	return filepath.Join("..", "..", strings.TrimPrefix(strings.TrimPrefix(pkgPath, module), "/"))
}

// TestConfigDocs holds configdocs.go, the doc comments 'cairn config
// example' writes above each field, to the Go source of the config
// structs: a comment changed there and not generated again fails here.
func TestConfigDocs(t *testing.T) {
	var schemas []*configfile.Struct
	for _, r := range configRoles {
		for _, target := range r.defaults().targets() {
			schemas = append(schemas, configfile.SchemaOf(reflect.TypeOf(target)))
		}
	}
	src, err := configfile.DocsSource(module+"/cmd/cairn", "main", "configDocs", "'go generate ./cmd/cairn' (TestConfigDocs)", repoDir, schemas...)
	if err != nil {
		t.Fatal(err)
	}
	if *updateConfigDocs {
		if err := os.WriteFile("configdocs.go", src, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	have, err := os.ReadFile("configdocs.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, src) {
		t.Fatal("configdocs.go is not what the config structs' doc comments say: run 'go generate ./cmd/cairn' and commit it")
	}
}

// TestConfigExamples writes every role's example: every field has a doc
// comment (Write fails on one that has none), the example reads back as
// the role's defaults with its live fields set, and with every field
// uncommented it is a valid config of the role, holding the example's
// values.
func TestConfigExamples(t *testing.T) {
	for _, r := range configRoles {
		t.Run(r.name, func(t *testing.T) {
			ex := r.example(r.defaults())
			out, err := ex.Write()
			if err != nil {
				t.Fatal(err)
			}
			rc := r.defaults()
			if warns, err := configfile.Decode(out, rc.targets()...); err != nil || len(warns) > 0 {
				t.Fatalf("the example does not read back: %v %v", warns, err)
			}
			all := uncommentAll(out)
			rc = r.defaults()
			if warns, err := configfile.Decode(all, rc.targets()...); err != nil || len(warns) > 0 {
				t.Fatalf("the example uncommented does not read back: %v %v\n%s", warns, err, all)
			}
			for i, v := range ex.Values {
				if got := rc.targets()[i]; !reflect.DeepEqual(got, v) {
					t.Errorf("the example uncommented reads as\n%+v\nwant\n%+v", got, v)
				}
			}
		})
	}
}

// uncommentAll makes the commented-out fields of an example live.
func uncommentAll(example []byte) []byte {
	lines := strings.Split(string(example), "\n")
	for i, l := range lines {
		if body, ok := strings.CutPrefix(l, "\t// "); ok && body != "" && strings.ContainsRune("\"\t]", rune(body[0])) {
			lines[i] = "\t" + body
		}
	}
	return []byte(strings.Join(lines, "\n"))
}

// TestEveryFlagHasAField walks each role's flags and the fields of its
// config file: each flag is a field of the same name (with _ for -), and
// each field a flag, unless it is a list of objects only a file can give.
func TestEveryFlagHasAField(t *testing.T) {
	// Flags that are no setting of the role.
	notSettings := map[string]string{
		"config": "names the file", "help": "cobra's",
		"json": "admin output", "timeout": "admin requests", "nats-admin": "names an admin's inbox",
		"group": "the group admin requests are for (a storage node's and an agent's own --group is a setting)",
	}
	for _, r := range configRoles {
		t.Run(r.name, func(t *testing.T) {
			cmd := r.command(&globals{})
			root := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
			// The global flags are the role's too, as on the command
			// line.
			cmd.Flags().AddFlagSet(root.PersistentFlags())
			fields := map[string]*configfile.Field{}
			for _, target := range r.defaults().targets() {
				for _, f := range configfile.SchemaOf(reflect.TypeOf(target)).Fields {
					fields[f.Flag] = f
				}
			}
			cmd.Flags().VisitAll(func(fl *pflag.Flag) {
				if notSettings[fl.Name] != "" || r.name == "dev" && (fl.Name == "nats" || strings.HasPrefix(fl.Name, "nats-")) && fl.Name != "nats-port" {
					// cairn dev runs its own NATS.
					return
				}
				if fields[fl.Name] == nil {
					t.Errorf("flag --%s has no field %s in the config file", fl.Name, strings.ReplaceAll(fl.Name, "-", "_"))
				}
			})
			for name, f := range fields {
				if f.FileOnly {
					continue
				}
				if cmd.Flags().Lookup(name) == nil {
					t.Errorf("field %s has no flag --%s", f.Name, name)
				}
			}
		})
	}
}

func TestConfigCommands(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	code, out, stderr := cli(ctx, "config", "example", "--role", "storagenode")
	if code != 0 || !strings.Contains(out, "\t// \"libraries\": [\n") || !strings.Contains(out, `"volume_size": "50G"`) {
		t.Fatalf("config example: %d %q %q", code, out, stderr)
	}
	code, _, stderr = cli(ctx, "config", "example", "--role", "nosuch")
	if code != 2 || !strings.Contains(stderr, `--role "nosuch": use server, storagenode, agent, dev`) {
		t.Fatalf("config example --role nosuch: %d %q", code, stderr)
	}
	// What example prints, check accepts, under any name with --role.
	code, out, stderr = cli(ctx, "config", "check", "--role", "storagenode", write("node-example.json", out))
	if code != 0 || !strings.Contains(out, "a valid storagenode config file\n") {
		t.Fatalf("config check of the example: %d %q %q", code, out, stderr)
	}

	// Every bad field named, with its line and the fix.
	bad := write("storagenode.json", `{
	"id": "sn1",
	"data": "/var/lib/cairn/node",
	"wrokers": 4,
	"heartbeat_interval": "5 s",
	"pools": [{"name": "Default", "dir": "relative/pool", "volume_size": "50G"}],
	"libraries": [{"name": "lib1", "changer": "/dev/sg3"}],
}`)
	code, out, stderr = cli(ctx, "config", "check", bad)
	if code != 1 {
		t.Fatalf("config check of a bad file: exit %d, %q %q", code, out, stderr)
	}
	for _, want := range []string{
		"line 4: wrokers: no such field: did you mean workers?",
		`line 5: heartbeat_interval: "5 s" is not a duration: use a number with a unit`,
		"hint: correct each field named; 'cairn config example --role storagenode' shows every field",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("config check of a bad file says no %q:\n%s", want, stderr)
		}
	}
	// Once it reads, the role's own checks: the values it needs.
	bad = write("storagenode.json", `{
	"id": "sn1",
	"data": "/var/lib/cairn/node",
	"pools": [{"name": "Default", "dir": "relative/pool", "volume_size": "50G"}],
	"libraries": [{"name": "lib1", "changer": "/dev/sg3"}],
	"log_level": "loud",
}`)
	code, out, stderr = cli(ctx, "config", "check", bad)
	for _, want := range []string{
		`pools[0].dir: pool Default: directory "relative/pool" is not absolute`,
		"libraries[0].drives: library lib1: changer /dev/sg3 has no drives",
		`log_level: "loud" is no log level`,
	} {
		if code != 1 || !strings.Contains(stderr, want) {
			t.Errorf("config check: exit %d, no %q:\n%s", code, want, stderr)
		}
	}
	if !strings.Contains(out, "warning: line 2: id: id is the older name of name: rename it\n") {
		t.Errorf("config check does not warn of the older name id: %q", out)
	}

	// --json: the findings, each with its line and field.
	code, out, _ = cli(ctx, "--json", "config", "check", bad)
	var res configCheckResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 1 || res.Valid || res.Role != "storagenode" || len(res.Warnings) != 1 || res.Warnings[0].Line != 2 {
		t.Fatalf("config check --json: %d %q %v", code, out, err)
	}
	fields := []string{}
	for _, e := range res.Errors {
		fields = append(fields, e.Field)
	}
	sort.Strings(fields)
	if want := []string{"libraries[0].drives", "log_level", "pools[0].dir"}; !slices.Equal(fields, want) {
		t.Errorf("config check --json names %q, want %q", fields, want)
	}

	// The role from the file's fields when its name says nothing.
	code, out, stderr = cli(ctx, "config", "check", write("a.json", `{"data": "/d", "raft_addr": "127.0.0.1:7010", "bootstrap": true}`))
	if code != 0 || !strings.Contains(out, "a valid server config file") {
		t.Errorf("a server's file by its fields: %d %q %q", code, out, stderr)
	}
	code, out, stderr = cli(ctx, "config", "check", write("b.json", `{"name": "x", "log_level": "debug"}`))
	if code != 2 || !strings.Contains(stderr, "cannot tell the role") {
		t.Errorf("a file any role could read: %d %q %q", code, out, stderr)
	}
	// cairn dev reads its file too (it read only log_level from it).
	code, _, stderr = cli(ctx, "dev", "--config", write("dev.json", `{"nats_prot": 4223}`))
	if code != 1 || !strings.Contains(stderr, "line 1: nats_prot: no such field: did you mean nats_port?") {
		t.Errorf("cairn dev --config with a misspelt field: %d %q", code, stderr)
	}
	code, _, stderr = cli(ctx, "config", "check", write("agent.json", "{\n\t\"name\": \"web1\" // the client\n}"))
	if code != 1 || !strings.Contains(stderr, "line 2, column 17: invalid character '/' after object key:value pair: a // comment must be on a line of its own") {
		t.Errorf("a comment after a value: %d %q", code, stderr)
	}
}

// TestConfigFileOlderNamesStillLoad: a file written for an older Cairn
// (nats_url, the storage node's id, data_dir, the object nats_auth,
// nanoseconds, max_volume_bytes) still starts its role, each older form
// warned of.
func TestConfigFileOlderNamesStillLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "storagenode.json")
	os.WriteFile(path, []byte(`{
	"id": "sn1",
	"data_dir": "/srv/node",
	"nats_url": "nats://nats:4222",
	"nats_auth": {"nkey_file": "/etc/cairn/node.nk"},
	"heartbeat_interval": 300000000,
	"pools": [{"name": "Default", "dir": "/srv/pool", "max_volume_bytes": 53687091200}],
	"tape_pools": [{"name": "Weekly", "library": "lib1", "spool_chunk_bytes": 67108864}]
}`), 0o600)
	cfg := storagenode.DefaultConfig()
	var common roleFields
	warns, err := loadConfig(newStorageNodeCmd(&globals{}), path, &cfg, &common)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ID != "sn1" || cfg.DataDir != "/srv/node" || cfg.NATSURL != "nats://nats:4222" || cfg.NATSAuth.NkeyFile != "/etc/cairn/node.nk" ||
		cfg.HeartbeatInterval.String() != "300ms" || cfg.Pools[0].MaxVolumeBytes != 50<<30 || cfg.TapePools[0].SpoolChunkBytes != 64<<20 {
		t.Errorf("an older file read as %+v", cfg)
	}
	var said []string
	for _, w := range warns {
		said = append(said, w.Field)
	}
	if want := []string{"id", "data_dir", "nats_url", "nats_auth", "nats_auth.nkey_file", "heartbeat_interval",
		"pools[0].max_volume_bytes", "pools[0].max_volume_bytes", "tape_pools[0].spool_chunk_bytes", "tape_pools[0].spool_chunk_bytes"}; !slices.Equal(said, want) {
		t.Errorf("warnings of %q, want %q", said, want)
	}
	// The role logs them when it starts (here it stops at once: workers 0).
	_, _, stderr := cli(context.Background(), "storagenode", "--config", path, "--workers", "0")
	if !strings.Contains(stderr, "config file: line 2: id: id is the older name of name: rename it") {
		t.Errorf("the storage node does not warn of an older name when it starts: %q", stderr)
	}
}

// TestREADMEConfigSnippets checks every config file the README shows (a
// ```jsonc block whose first line names the file, as // /etc/cairn/ROLE.json)
// with 'cairn config check', the role from the file's name, as a reader who
// copies it would; and that the tape setup outside cairn dev and an SFTP
// pool are among them.
func TestREADMEConfigSnippets(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(readme), "```jsonc\n")[1:]
	if len(blocks) == 0 {
		t.Fatal("the README shows no config file (a ```jsonc block)")
	}
	tape, sftp, s3 := false, false, false
	for i, b := range blocks {
		body, _, ok := strings.Cut(b, "```")
		if !ok {
			t.Fatalf("config snippet %d has no end", i+1)
		}
		first, _, _ := strings.Cut(body, "\n")
		name, ok := strings.CutPrefix(first, "// ")
		if !ok || !strings.HasSuffix(name, ".json") {
			t.Fatalf("config snippet %d does not start with the file's path (// /etc/cairn/ROLE.json): %q", i+1, first)
		}
		path := filepath.Join(t.TempDir(), filepath.Base(name))
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out, stderr := cli(context.Background(), "config", "check", path)
		if code != 0 || strings.Contains(out, "warning") {
			t.Errorf("the README's %s does not pass 'cairn config check' as it is: %d\n%s%s", name, code, out, stderr)
		}
		if strings.Contains(body, `"libraries"`) && strings.Contains(body, `"changer"`) && strings.Contains(body, `"tape_pools"`) {
			tape = true
		}
		sftp = sftp || strings.Contains(body, `"sftp_pools"`)
		s3 = s3 || strings.Contains(body, `"s3_pools"`)
	}
	if !s3 {
		t.Error("no config snippet of the README sets up an S3 pool (s3_pools)")
	}
	if !sftp {
		t.Error("no config snippet of the README sets up an SFTP pool (sftp_pools)")
	}
	if !tape {
		t.Error("no config snippet of the README sets up a tape library (libraries with a changer and drives, tape_pools)")
	}
}
