package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// pgCluster is a throwaway PostgreSQL cluster of Debian's packages,
// listening on a unix socket in a directory of its own only.
type pgCluster struct {
	t    *testing.T
	bin  string // the server's bin directory (initdb, pg_ctl, pg_dump, psql)
	sock string
	data string
	// cred runs the server's programs as an unprivileged user when the
	// test runs as root: postgres refuses to run as root.
	cred *syscall.Credential
}

// startPostgres starts a cluster, stopped when the test ends.
func startPostgres(t *testing.T) *pgCluster {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	var err error
	if len(bins) == 0 {
		err = errors.New("no /usr/lib/postgresql/*/bin/initdb: apt-get install postgresql")
	}
	need(t, "PostgreSQL's server programs (Debian's postgresql package, 'make deps')", err)
	slices.Sort(bins)
	pg := &pgCluster{t: t, bin: filepath.Dir(bins[len(bins)-1])}
	// Not t.TempDir: the unprivileged user must reach it.
	dir, err := os.MkdirTemp("", "cairn-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pg.sock, pg.data = filepath.Join(dir, "sock"), filepath.Join(dir, "data")
	for _, d := range []string{pg.sock, pg.data} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if os.Geteuid() == 0 {
		pg.cred = &syscall.Credential{Uid: 65534, Gid: 65534} // nobody
		for _, d := range []string{pg.sock, pg.data} {
			if err := os.Chown(d, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}
	}
	pg.run(nil, "initdb", "-D", pg.data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale", "C")
	pg.run(nil, "pg_ctl", "-D", pg.data, "-l", filepath.Join(pg.sock, "server.log"), "-w", "-t", "60",
		"-o", fmt.Sprintf("-k %s -c listen_addresses='' -c fsync=off", pg.sock), "start")
	t.Cleanup(func() {
		cmd := pg.cmd(nil, "pg_ctl", "-D", pg.data, "-m", "immediate", "-w", "stop")
		_ = cmd.Run()
	})
	return pg
}

func (pg *pgCluster) cmd(stdin []byte, prog string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(pg.bin, prog), args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	return cmd
}

// run runs one of the server's programs, which must succeed, and returns
// its stdout.
func (pg *pgCluster) run(stdin []byte, prog string, args ...string) string {
	pg.t.Helper()
	cmd := pg.cmd(stdin, prog, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		pg.t.Fatalf("%s %s: %v\n%s%s", prog, strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// sql runs SQL in database db with psql and returns its unaligned output.
func (pg *pgCluster) sql(db string, stdin []byte, args ...string) string {
	pg.t.Helper()
	return pg.run(stdin, "psql", append([]string{"-h", pg.sock, "-U", "postgres", "-d", db, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"}, args...)...)
}

// checksum sums what the test database holds, rows and schema.
func (pg *pgCluster) checksum(db string) string {
	pg.t.Helper()
	return strings.TrimSpace(pg.sql(db, nil, "-c",
		`SELECT (SELECT count(*) FROM items) || ' ' || (SELECT md5(string_agg(i::text, ',' ORDER BY i.id)) FROM items i)
		 || ' ' || (SELECT md5(string_agg(n::text, ',' ORDER BY n.item, n.note)) FROM notes n)
		 || ' ' || (SELECT last_value FROM items_id_seq) || ' ' || (SELECT count(*) FROM big_items)`))
}

// A database dumped by a command source comes back whole: PostgreSQL's
// pg_dump stored as a file of a backup (with a before- and an after-step
// around it), restored, loaded with psql into a fresh database, holds what
// the first held. A dump that fails fails the backup, which commits
// nothing, and the job log gives the exit status and what pg_dump said;
// a command the agent does not allow is refused, with a hint that names
// the agent's setting and file.
func TestCommandSourcePostgres(t *testing.T) {
	pg := startPostgres(t)
	pg.sql("postgres", nil, "-c", "CREATE DATABASE app")
	pg.sql("app", []byte(`
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price numeric(10,2), tags text[], data bytea, created timestamptz);
INSERT INTO items (name, price, tags, data, created)
  SELECT 'item ' || g || ' ' || chr(233) || chr(8364), g * 1.25, ARRAY['t' || (g % 7), 'x'], sha256(g::text::bytea), '2026-01-01'::timestamptz + g * interval '1 minute'
  FROM generate_series(1, 50000) g;
INSERT INTO items (name) VALUES (E'quote '' and tab \t and newline \n');
CREATE TABLE notes (item int REFERENCES items(id), note text);
INSERT INTO notes SELECT g, repeat('n', g % 100) FROM generate_series(1, 50000, 3) g;
CREATE VIEW big_items AS SELECT * FROM items WHERE price > 1000;
`))
	want := pg.checksum("app")

	pgDump := filepath.Join(pg.bin, "pg_dump")
	s := newStack(t, stackOpts{agentConfig: map[string]any{"allowed_command_dirs": []string{pg.bin}}})
	tree := t.TempDir()
	if err := os.WriteFile(filepath.Join(tree, "app.conf"), []byte("db=app\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The agent runs as the test does (root or not); pg_dump connects as
	// the database's user postgres.
	dump := fmt.Sprintf("%s -h %s -U postgres app", pgDump, pg.sock)
	var j wire.JobInfo
	s.json(&j, "backup", "--client", s.client, "--path", tree, "--level", "full", "--wait",
		"--before", filepath.Join(pg.bin, "pg_isready")+" -h "+pg.sock,
		"--after", filepath.Join(pg.bin, "psql")+" -h "+pg.sock+" -U postgres -d app -X -A -t -c 'SELECT count(*) FROM items'",
		"--command-source", "/db/app.sql="+dump)
	if j.State != "success" {
		t.Fatalf("backup job %d ended %s: %s", j.ID, j.State, j.Error)
	}
	log := logText(s.job(j.ID))
	for _, w := range []string{"before-step 1: " + pg.sock + ":", "accepting connections", "command source /db/app.sql", "after-step 1: 50001"} {
		if !strings.Contains(log, w) {
			t.Errorf("the job log does not say %q:\n%s", w, log)
		}
	}

	to := filepath.Join(t.TempDir(), "r")
	s.restore(to, "/db/app.sql")
	file := filepath.Join(to, "db", "app.sql")
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Size() < 1<<20 {
		t.Fatalf("restored dump: mode %v, %d bytes", st.Mode(), st.Size())
	}
	if os.Geteuid() == 0 && st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("restored dump owned by %d, want root", st.Sys().(*syscall.Stat_t).Uid)
	}
	sqlText, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pg.sql("postgres", nil, "-c", "CREATE DATABASE app2")
	pg.sql("app2", sqlText)
	if got := pg.checksum("app2"); got != want {
		t.Fatalf("the database loaded from the restored dump sums to %q, the original to %q", got, want)
	}

	// A dump that fails: the backup fails, and commits nothing.
	var before []wire.BackupInfo
	s.json(&before, "backup", "list")
	r := s.cairn("backup", "--client", s.client, "--path", tree, "--level", "full", "--wait", "--json",
		"--command-source", fmt.Sprintf("/db/gone.sql=%s -h %s -U postgres nosuchdb", pgDump, pg.sock))
	if r.code == 0 {
		t.Fatalf("a backup whose dump failed succeeded:\n%s", r)
	}
	failed := lastJob(t, s)
	if failed.State != "failed" || failed.ErrorCode != wire.CodeCommandFailed || !strings.Contains(failed.Error, "exited with status 1") ||
		!strings.Contains(failed.Error, `database \"nosuchdb\" does not exist`) && !strings.Contains(failed.Error, `database "nosuchdb" does not exist`) {
		t.Fatalf("failed dump's job: %s %s %s", failed.State, failed.ErrorCode, failed.Error)
	}
	if log := logText(s.job(failed.ID)); !strings.Contains(log, "exited with status 1") || !strings.Contains(log, "nosuchdb") {
		t.Fatalf("the job log of the failed dump:\n%s", log)
	}
	var after []wire.BackupInfo
	s.json(&after, "backup", "list")
	for _, b := range after {
		if b.ID == failed.BackupID && b.State == "complete" {
			t.Fatalf("the failed dump's backup was committed: %+v", b)
		}
	}
	var complete int
	for _, b := range after {
		if b.State == "complete" {
			complete++
		}
	}
	if complete != 1 {
		t.Fatalf("%d complete backups, want the first only: %+v", complete, after)
	}

	// A command the agent does not allow.
	r = s.cairn("backup", "--client", s.client, "--path", tree, "--wait",
		"--command-source", "/db/x.sql=/bin/cat /etc/shadow")
	refused := lastJob(t, s)
	if r.code == 0 || refused.State != "failed" || refused.ErrorCode != wire.CodeCommandRefused ||
		!strings.Contains(refused.Error, "/bin/cat") || !strings.Contains(refused.Hint, "allowed_command_dirs") || !strings.Contains(refused.Hint, s.agentCfg) {
		t.Fatalf("the refused command's job: %s %s %s (hint %s)\n%s", refused.State, refused.ErrorCode, refused.Error, refused.Hint, r)
	}
}

// lastJob is the newest job of the stack, as job show gives it.
func lastJob(t *testing.T, s *stack) wire.JobInfo {
	t.Helper()
	var jobs []wire.JobInfo
	s.json(&jobs, "job", "list")
	var newest uint64
	for _, j := range jobs {
		newest = max(newest, j.ID)
	}
	var j wire.JobInfo
	poll.Until(t, 30*time.Second, func() error {
		j = s.job(newest)
		if j.State != "failed" && j.State != "success" && j.State != "warning" && j.State != "canceled" {
			return fmt.Errorf("job %d is %s", newest, j.State)
		}
		return nil
	})
	return j
}

func logText(j wire.JobInfo) string {
	var b strings.Builder
	for _, l := range j.Log {
		b.WriteString(l.Level + " " + l.Msg + "\n")
	}
	return b.String()
}
