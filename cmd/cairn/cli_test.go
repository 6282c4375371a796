package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/devstack"
	"github.com/cairnbackup/cairn/server"
	"github.com/cairnbackup/cairn/wire"
)

// TestParsePool: --pool says that its size caps each volume file
// (volume-size=), and the older NAME=DIR:SIZE, which looked like the
// pool's size, still reads with a warning that says what to write.
func TestParsePool(t *testing.T) {
	p, warning, err := parsePool("Default=/srv/pool,volume-size=50G")
	if err != nil || warning != "" || p.Name != "Default" || p.Dir != "/srv/pool" || p.MaxVolumeBytes != 50<<30 {
		t.Fatalf("%+v %q %v", p, warning, err)
	}
	p, warning, err = parsePool("Default=/srv/pool:50G")
	if err != nil || p.Dir != "/srv/pool" || p.MaxVolumeBytes != 50<<30 ||
		warning != "--pool Default=/srv/pool:50G: NAME=DIR:SIZE is deprecated, since SIZE caps each volume file and not the pool: write --pool Default=/srv/pool,volume-size=50G" {
		t.Fatalf("the older form: %+v %q %v", p, warning, err)
	}
	if p, warning, err := parsePool("Weekly=/srv/weekly"); err != nil || warning != "" || p.MaxVolumeBytes != 0 {
		t.Fatalf("%+v %q %v", p, warning, err)
	}
	// A colon that is no size is the directory's.
	if p, warning, err := parsePool("A=/srv/a:b"); err != nil || warning != "" || p.Dir != "/srv/a:b" {
		t.Fatalf("%+v %q %v", p, warning, err)
	}
	for bad, want := range map[string]string{
		"nodir":                       "no NAME=DIR",
		"A=":                          "no NAME=DIR",
		"A=,volume-size=1G":           "no DIR",
		"A=/p,volume-size=lots":       `volume-size: "lots" is not a size`,
		"A=/p,size=50G":               `"size=50G" is no option of a pool (volume-size is)`,
		"A=/p,volume-size=1G,compact": `"compact" is no option of a pool`,
	} {
		_, _, err := parsePool(bad)
		var ue *usageError
		if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "NAME=DIR,volume-size=SIZE") {
			t.Errorf("--pool %s: %v, want a usage error saying %q", bad, err, want)
		}
	}
}

// The application flags make the request's steps and sources: the
// failure policies default to Bacula's (a before-step fails the job, an
// after-step warns), the timeouts go to each command.
func TestApplicationFlags(t *testing.T) {
	o := appOpts{before: []string{"/a", "/b"}, after: []string{"/c"}, stepTimeout: time.Minute, afterFailure: "fail",
		sources: []string{"/db/x.sql=/usr/bin/pg_dump -h /run/postgresql x=y"}, sourceTimeout: time.Hour}
	app, err := o.application()
	if err != nil {
		t.Fatal(err)
	}
	want := wire.Application{
		Before:  []wire.AppStep{{Command: "/a", Timeout: time.Minute, FailJob: true}, {Command: "/b", Timeout: time.Minute, FailJob: true}},
		After:   []wire.AppStep{{Command: "/c", Timeout: time.Minute, FailJob: true}},
		Sources: []wire.CommandSource{{Path: "/db/x.sql", Command: "/usr/bin/pg_dump -h /run/postgresql x=y", Timeout: time.Hour}},
	}
	if !reflect.DeepEqual(app, want) {
		t.Fatalf("got %+v\nwant %+v", app, want)
	}
	if app, err := (&appOpts{}).application(); err != nil || !reflect.DeepEqual(app, wire.Application{}) {
		t.Fatalf("no flags: %+v %v", app, err)
	}
}

func TestModeString(t *testing.T) {
	for _, c := range []struct {
		typ  string
		mode uint32
		want string
	}{{"file", 0o644, "-rw-r--r--"}, {"dir", 0o1777, "drwxrwxrwt"}, {"file", 0o4755, "-rwsr-xr-x"}, {"symlink", 0o777, "lrwxrwxrwx"}, {"file", 0o2640, "-rw-r-S---"}} {
		if got := modeString(c.typ, c.mode); got != c.want {
			t.Errorf("modeString(%s, %o) = %s, want %s", c.typ, c.mode, got, c.want)
		}
	}
}

// cli runs one command line in-process.
func cli(ctx context.Context, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsageErrorsExitTwoWithHint(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		{"backup", "--no-such-flag"},
		{"backup", "--path", "/x"},
		{"no-such-command"},
		{"job", "show", "twelve"},
		{"restore", "--client", "c", "--to", "/x", "--at", "when pigs fly"},
		{"media", "label", "--pool", "Weekly"},
		{"media", "label", "--slots", "1-3"},
		{"library", "load", "--drive", "0"},
		{"library", "export", "--slot", "1", "--barcode", "CRN001L9"},
		{"library", "transfer", "--from", "1"},
		{"backup", "--client", "c", "--path", "/x", "--command-source", "pg_dump mydb"},
		{"backup", "--client", "c", "--path", "/x", "--command-source", "db.sql=/usr/bin/pg_dump mydb"},
		{"backup", "--client", "c", "--path", "/x", "--command-source", "/db.sql="},
		{"backup", "--client", "c", "--path", "/x", "--before", "/bin/true", "--before-failure", "ignore"},
		{"backup", "--client", "c", "--path", "/x", "--after", "/bin/true", "--step-timeout", "0s"},
		{"backup", "--client", "c", "--path", "/x", "--command-source", "/db.sql=/bin/x", "--source-timeout", "-1s"},
		{"pool", "set", "Default", "--compression", "lz4"},
		{"pool", "set", "Default"},
	} {
		code, _, stderr := cli(ctx, args...)
		if code != 2 || !strings.Contains(stderr, "error: ") || !strings.Contains(stderr, "hint: ") {
			t.Errorf("%v: exit %d, stderr %q; want 2 with error and hint", args, code, stderr)
		}
	}
}

func TestNoServerIsAClearError(t *testing.T) {
	code, _, stderr := cli(context.Background(), "--nats", "nats://127.0.0.1:1", "client", "list")
	if code != 1 || !strings.Contains(stderr, "cannot reach") || !strings.Contains(stderr, "hint: ") {
		t.Fatalf("exit %d, %q", code, stderr)
	}
}

func TestConfigFileAndFlags(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "server.json")
	os.WriteFile(cfgFile, []byte(`{"name":"from-file","data":"/from/file","raft_addr":"127.0.0.1:1","queue_timeout":"5m","metrics_addr":""}`), 0o600)
	cmd := newServerCmd(&globals{})
	if err := cmd.ParseFlags([]string{"--config", cfgFile, "--raft-addr", "127.0.0.1:2", "--liveness-timeout", "7s"}); err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	common := roleFields{MetricsAddr: "127.0.0.1:9464"}
	if _, err := loadConfig(cmd, cfgFile, &cfg, &common); err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "from-file" || cfg.DataDir != "/from/file" || cfg.QueueTimeout != 5*time.Minute || common.MetricsAddr != "" {
		t.Fatalf("file not applied: %+v %+v", cfg, common)
	}
	if got, _ := cmd.Flags().GetString("raft-addr"); got != "127.0.0.1:2" {
		t.Fatalf("flag given on the command line lost to the file: %s", got)
	}
	os.WriteFile(cfgFile, []byte(`{"nmae":"typo"}`), 0o600)
	if _, err := loadConfig(cmd, cfgFile, &cfg, &common); err == nil || !strings.Contains(err.Error(), "line 1: nmae: no such field: did you mean name?") {
		t.Fatalf("a misspelt field was accepted: %v", err)
	}
	// log_level is every role's, beside the role's own fields.
	os.WriteFile(cfgFile, []byte(`{"name":"again","log_level":"debug"}`), 0o600)
	if _, err := loadConfig(cmd, cfgFile, &cfg, &common); err != nil || common.LogLevel != "debug" || cfg.Name != "again" {
		t.Fatalf("log_level in a config file: level %q, %+v, %v", common.LogLevel, cfg, err)
	}
}

func TestAdminCommandsAgainstDevStack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Config{Dir: t.TempDir(), Client: "web", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	os.WriteFile(filepath.Join(src, "etc", "hosts"), []byte("127.0.0.1 localhost\n"), 0o644)
	// A name that would clear the terminal and forge a line of output.
	os.WriteFile(filepath.Join(src, "etc", "evil\x1b[2J\nroot.txt"), nil, 0o644)
	// As 'cairn dev' does: the client file where this user's admin
	// commands look, so that they need no flags.
	t.Setenv(devFileEnv, filepath.Join(t.TempDir(), "cairn", "dev.json"))
	t.Setenv("CAIRN_NATS", "")
	if got := publishDevClientFile(st, slog.New(slog.NewTextHandler(io.Discard, nil))); got != os.Getenv(devFileEnv) {
		t.Fatalf("the client file went to %q, want $%s", got, devFileEnv)
	}
	var n []string

	code, out, stderr := cli(ctx, append(n, "backup", "--client", "web", "--path", src, "--wait")...)
	// No level given and nothing to build on: the summary says it ran a full.
	if code != 0 || !strings.Contains(out, "backup job 1 success: full, ") {
		t.Fatalf("backup: %d %q %q", code, out, stderr)
	}
	code, out, _ = cli(ctx, append(n, "--json", "client", "list")...)
	var clients []wire.ClientInfo
	if code != 0 || json.Unmarshal([]byte(out), &clients) != nil || len(clients) != 1 || !clients[0].Online || clients[0].Backups != 1 {
		t.Fatalf("client list --json: %d %s", code, out)
	}
	code, out, _ = cli(ctx, append(n, "ls", "--client", "web", filepath.Join(src, "etc"))...)
	if code != 0 || !strings.Contains(out, "hosts") || !strings.Contains(out, "-rw-r--r--") {
		t.Fatalf("ls: %d %s", code, out)
	}
	if strings.Contains(out, "\x1b") || !strings.Contains(out, `evil\x1b[2J\nroot.txt`) {
		t.Fatalf("ls printed a hostile name raw: %q", out)
	}
	code, out, _ = cli(ctx, append(n, "job", "show", "1")...)
	if code != 0 || !strings.Contains(out, "LOG") || !strings.Contains(out, "backup committed") {
		t.Fatalf("job show: %d %s", code, out)
	}
	for _, args := range [][]string{{"pool", "list"}, {"volume", "list"}, {"job", "list"}, {"backup", "list"}, {"status"}} {
		if code, out, stderr := cli(ctx, append(n, args...)...); code != 0 || len(strings.Split(out, "\n")) < 3 {
			t.Errorf("%v: %d %q %q", args, code, out, stderr)
		}
	}
	// Errors from the server reach the user with their hint.
	code, _, stderr = cli(ctx, append(n, "backup", "--client", "ghost", "--path", "/x")...)
	if code != 1 || !strings.Contains(stderr, `client "ghost" is not known`) || !strings.Contains(stderr, "hint: start 'cairn agent") {
		t.Fatalf("unknown client: %d %q", code, stderr)
	}
	code, stdout, stderr := cli(ctx, append(n, "--json", "backup", "--client", "ghost", "--path", "/x")...)
	if e := decodeJSONError(t, stderr); code != 1 || stdout != "" || e == nil || e.Code != wire.CodeUnknownClient || e.Hint == "" {
		t.Fatalf("unknown client with --json: %d %q %q", code, stdout, stderr)
	}
	code, _, stderr = cli(ctx, append(n, "backup", "--client", "web", "--path", "/no/such/dir", "--wait")...)
	if code != 1 || !strings.Contains(stderr, "does not exist on client web") {
		t.Fatalf("missing path: %d %q", code, stderr)
	}
	to := t.TempDir()
	os.WriteFile(filepath.Join(to, "already-here"), nil, 0o644)
	code, _, stderr = cli(ctx, append(n, "restore", "--client", "web", "--to", to)...)
	if code != 1 || !strings.Contains(stderr, "not empty") || !strings.Contains(stderr, "--force") {
		t.Fatalf("non-empty target: %d %q", code, stderr)
	}
	code, out, stderr = cli(ctx, append(n, "restore", "--client", "web", "--to", to, "--force", filepath.Join(src, "etc", "hosts"))...)
	if code != 0 {
		t.Fatalf("restore --force: %d %q %q", code, out, stderr)
	}
	if b, err := os.ReadFile(filepath.Join(to, src, "etc", "hosts")); err != nil || string(b) != "127.0.0.1 localhost\n" {
		t.Fatalf("restored %q %v", b, err)
	}

	// A job waited for that ends with warnings exits 3, and says so; with
	// --json, stdout has the job and stderr nothing. An exclude pattern
	// that leaves nothing out is the warning (a socket, once, is only an
	// info line now).
	warned := t.TempDir()
	os.WriteFile(filepath.Join(warned, "file"), []byte("data\n"), 0o644)
	code, out, stderr = cli(ctx, append(n, "backup", "--client", "web", "--path", warned, "--exclude", "*.nosuch", "--level", "full", "--wait")...)
	if code != exitWarnings || !strings.Contains(out, "warning") || !strings.Contains(stderr, "warning: backup job") || !strings.Contains(stderr, "1 warning;") {
		t.Fatalf("a backup that ended with warnings: exit %d, %q, %q; want exit %d and a warning", code, out, stderr, exitWarnings)
	}
	code, out, stderr = cli(ctx, append(n, "--json", "backup", "--client", "web", "--path", warned, "--exclude", "*.nosuch", "--wait")...)
	var warnedJob wire.JobInfo
	if code != exitWarnings || json.Unmarshal([]byte(out), &warnedJob) != nil || warnedJob.State != "warning" || stderr != "" {
		t.Fatalf("a backup that ended with warnings, --json: exit %d, %q, %q; want exit %d, the job, and nothing on stderr", code, out, stderr, exitWarnings)
	}

	// --nats with the stack's own URL still finds its credentials; the
	// dev stack's admin is a key admin.
	code, out, stderr = cli(ctx, "--nats", st.URL(), "key", "export", "--to", filepath.Join(t.TempDir(), "keys.json"))
	if code != 0 || !strings.Contains(out, "wrote") {
		t.Fatalf("key export with --nats and the client file: %d %q %q", code, out, stderr)
	}
	// A key file goes into a directory that exists, or nowhere.
	noDir := filepath.Join(t.TempDir(), "no", "such", "dir")
	code, out, stderr = cli(ctx, "key", "export", "--to", filepath.Join(noDir, "keys.json"))
	if code != 1 || out != "" || !strings.Contains(stderr, "directory "+noDir+" does not exist") {
		t.Fatalf("key export into a directory that does not exist: %d %q %q", code, out, stderr)
	}
	if _, err := os.Stat(filepath.Dir(filepath.Dir(noDir))); !os.IsNotExist(err) {
		t.Fatalf("key export made directories: %v", err)
	}

	// Without the client file, nothing gets in anonymously.
	// It says where it looked, and to wait for a 'cairn dev' that starts.
	none := filepath.Join(t.TempDir(), "none.json")
	t.Setenv(devFileEnv, none)
	code, _, stderr = cli(ctx, "--nats", st.URL(), "--timeout", "5s", "status")
	if code != 1 || !strings.Contains(stderr, "refused this role's credentials") || !strings.Contains(stderr, "no client file of 'cairn dev' is in "+none) ||
		!strings.Contains(stderr, "hint: if 'cairn dev' is starting on this machine, run the command again once it prints 'cairn dev is running'") {
		t.Fatalf("HOLE or unclear: an anonymous admin command against the dev stack: exit %d, %q", code, stderr)
	}
}

// TestAdminName: the admin's inbox is named from --nats-admin, else the
// seed file's name, else the user, else the certificate, else admin.
func TestAdminName(t *testing.T) {
	for _, c := range []struct {
		g    globals
		want string
	}{
		{globals{natsAdmin: "bob", natsAuth: wire.NATSAuth{NkeyFile: "/x/admin-alice.nk"}}, "bob"},
		{globals{natsAuth: wire.NATSAuth{NkeyFile: "/x/admin-alice.nk"}}, "alice"},
		{globals{natsAuth: wire.NATSAuth{NkeyFile: "/x/alice.seed", User: "carol"}}, "carol"},
		{globals{}, "admin"},
	} {
		if got, err := c.g.adminName(); err != nil || got != c.want {
			t.Errorf("%+v: admin name %q, %v; want %q", c.g, got, err, c.want)
		}
	}
	bad := globals{natsAdmin: "a.b"}
	if _, err := bad.adminName(); err == nil {
		t.Error("--nats-admin a.b was taken as a name: it would widen the inbox subject")
	}
}

// TestDevClientFilePlaces: root's 'cairn dev' writes its client file to
// /run/cairn, anyone else's to their config directory; the admin
// commands of anyone but root look in both, so that root's file they may
// not read gives "permission denied" rather than silence.
func TestDevClientFilePlaces(t *testing.T) {
	t.Setenv(devFileEnv, "")
	t.Setenv("XDG_CONFIG_HOME", "/home/u/.config")
	if os.Geteuid() == 0 {
		if got := devClientFile(); got != systemDevClientFile {
			t.Errorf("root's client file: %s", got)
		}
		if got := devClientFiles(); !slices.Equal(got, []string{systemDevClientFile}) {
			t.Errorf("root looks in %v", got)
		}
	} else {
		if got := devClientFile(); got != "/home/u/.config/cairn/dev.json" {
			t.Errorf("a user's client file: %s", got)
		}
		if got := devClientFiles(); !slices.Equal(got, []string{"/home/u/.config/cairn/dev.json", systemDevClientFile}) {
			t.Errorf("a user looks in %v", got)
		}
	}
	t.Setenv(devFileEnv, "/tmp/x.json")
	if got := devClientFiles(); !slices.Equal(got, []string{"/tmp/x.json"}) {
		t.Errorf("with $%s set, the admin commands look in %v", devFileEnv, got)
	}
}

// TestLayering holds the dependency rules: media knows nothing of the
// catalog, the server, the storage node or the agent; the server and the
// storage node never import each other.
func TestLayering(t *testing.T) {
	deps := func(pkg string) string {
		out, err := exec.Command("go", "list", "-deps", "github.com/cairnbackup/cairn/"+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v %s", pkg, err, out)
		}
		return string(out)
	}
	for pkg, forbidden := range map[string][]string{
		"media/volume": {"/catalog", "/server", "/storagenode", "/agent"},
		"media/disk":   {"/catalog", "/server", "/storagenode", "/agent"},
		"storagenode":  {"cairn/server", "cairn/catalog", "cairn/agent"},
		"server":       {"cairn/storagenode", "cairn/agent"},
		"agent":        {"cairn/server", "cairn/storagenode", "cairn/catalog"},
		"catalog":      {"cairn/server", "cairn/storagenode", "cairn/agent", "cairn/media"},
	} {
		list := deps(pkg)
		for _, f := range forbidden {
			for _, line := range strings.Split(list, "\n") {
				if strings.HasPrefix(line, "github.com/cairnbackup/cairn") && strings.Contains(line, f) && line != "github.com/cairnbackup/cairn/"+pkg {
					t.Errorf("%s imports %s", pkg, line)
				}
			}
		}
	}
}

func TestParseSlots(t *testing.T) {
	for in, want := range map[string][]int{"3": {3}, "1-4": {1, 2, 3, 4}, "1-3,7, 2": {1, 2, 3, 7}, "10-10": {10}} {
		got, err := parseSlots(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("parseSlots(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "5-3", "a", "1-", "-2", "1,,2"} {
		if _, err := parseSlots(bad); err == nil {
			t.Errorf("parseSlots(%q) accepted", bad)
		}
	}
}

// TestServerRefusesPlainRaftOnTheNetwork: 'cairn server' with a Raft
// address other machines reach and no TLS does not start, and says what to
// do; on loopback it would.
func TestServerRefusesPlainRaftOnTheNetwork(t *testing.T) {
	code, _, stderr := cli(context.Background(), "server", "--data", t.TempDir(), "--raft-addr", "10.0.0.1:7010", "--metrics-addr", "")
	if code != 1 || !strings.Contains(stderr, "Raft has no TLS") || !strings.Contains(stderr, "--insecure-raft") || !strings.Contains(stderr, "hint: ") {
		t.Fatalf("plain Raft on 10.0.0.1: exit %d, %q", code, stderr)
	}
}
