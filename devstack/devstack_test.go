package devstack

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

type env struct {
	t   *testing.T
	st  *Stack
	nc  *nats.Conn
	ctx context.Context
}

func start(t *testing.T, maxVolume int64) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	st, err := Start(ctx, Config{
		Dir: t.TempDir(), Client: "web", MaxVolumeBytes: maxVolume,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	opts, err := wire.ConnectOptions("devstack-test", st.AdminAuth, wire.Inbox(wire.KindAdmin, st.Admin))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(st.URL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return &env{t: t, st: st, nc: nc, ctx: ctx}
}

func (e *env) api(op string, req, resp any) error {
	return wire.Request(e.ctx, e.nc, wire.APISubject(op), req, resp)
}

// wait follows a job to its end.
func (e *env) wait(id uint64) wire.JobInfo {
	e.t.Helper()
	var j wire.JobInfo
	poll.Until(e.t, 2*time.Minute, func() error {
		j = wire.JobInfo{}
		if err := e.api(wire.OpJobShow, wire.JobShowReq{ID: id}, &j); err != nil {
			e.t.Fatal(err)
		}
		if j.State == "queued" || j.State == "running" {
			return fmt.Errorf("job %d is %s", id, j.State)
		}
		return nil
	})
	return j
}

func (e *env) backup(paths []string, level string) wire.JobInfo {
	e.t.Helper()
	var s wire.JobStarted
	if err := e.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: fileindex.Paths(paths), Level: level}, &s); err != nil {
		e.t.Fatal(err)
	}
	j := e.wait(s.JobID)
	if j.State != "success" {
		e.t.Fatalf("backup %d: %s: %s", j.ID, j.State, j.Error)
	}
	return j
}

func (e *env) restore(backup uint64, to string, paths ...string) wire.JobInfo {
	e.t.Helper()
	var s wire.JobStarted
	if err := e.api(wire.OpRestoreStart, wire.RestoreStartReq{PointInTime: wire.PointInTime{Client: "web", BackupID: backup}, To: to, Paths: fileindex.Paths(paths)}, &s); err != nil {
		e.t.Fatal(err)
	}
	return e.wait(s.JobID)
}

func (e *env) verify(want *sample.Manifest, root string) {
	e.t.Helper()
	got, err := sample.Snapshot(root)
	if err != nil {
		e.t.Fatal(err)
	}
	if d := sample.Compare(want, got); len(d) > 0 {
		e.t.Fatalf("restore differs:\n%s", strings.Join(d, "\n"))
	}
}

func smallSpec() sample.Spec {
	return sample.Spec{TextFiles: 30, RandomFiles: 12, MaxFileSize: 128 << 10, SparseSize: 16 << 20, Seed: 7}
}

func TestBackupIncrementalDifferentialRestore(t *testing.T) {
	e := start(t, 0)
	src := filepath.Join(t.TempDir(), "src")
	os.Mkdir(src, 0o755)
	if err := sample.Generate(src, smallSpec()); err != nil {
		t.Fatal(err)
	}
	snap1, _ := sample.Snapshot(src)
	full := e.backup([]string{src}, "full")
	if err := sample.Change(src, 3); err != nil {
		t.Fatal(err)
	}
	snap2, _ := sample.Snapshot(src)
	incr := e.backup([]string{src}, "incremental")
	if incr.Files >= full.Files {
		t.Fatalf("incremental sent %d files, the full %d", incr.Files, full.Files)
	}
	os.WriteFile(filepath.Join(src, "after-incr.txt"), []byte("differential sees me\n"), 0o644)
	snap3, _ := sample.Snapshot(src)
	diff := e.backup([]string{src}, "differential")
	var bl wire.BackupListResp
	if err := e.api(wire.OpBackupList, wire.BackupListReq{Client: "web"}, &bl); err != nil {
		t.Fatal(err)
	}
	parents := map[uint64]uint64{}
	for _, b := range bl.Backups {
		parents[b.ID] = b.Parent
	}
	if parents[incr.ID] != full.ID || parents[diff.ID] != full.ID {
		t.Fatalf("parents %v: incremental and differential must build on the full %d", parents, full.ID)
	}
	for _, c := range []struct {
		job  wire.JobInfo
		want *sample.Manifest
	}{{full, snap1}, {incr, snap2}, {diff, snap3}} {
		to := filepath.Join(t.TempDir(), "r")
		if j := e.restore(c.job.ID, to); j.State != "success" {
			t.Fatalf("restore of %d: %s %s", c.job.ID, j.State, j.Error)
		}
		e.verify(c.want, filepath.Join(to, src))
	}
	// A subtree from the incremental's chain.
	to := filepath.Join(t.TempDir(), "sub")
	sub := filepath.Join(src, "links")
	if j := e.restore(incr.ID, to, sub); j.State != "success" {
		t.Fatalf("subtree restore: %s %s", j.State, j.Error)
	}
	e.verify(snap2.Sub("links"), filepath.Join(to, sub))
}

// TestTapePoolStartsWithItsOwnFull runs the README's tape walkthrough on
// the real stack: after a full and an incremental to the disk pool, a
// backup to the tape pool with no level is a full of the whole tree on
// tape, as Bareos upgrades a job with no prior full (rather than an
// incremental of nothing on the disk full, which left the tape sent to the
// vault holding no file); the next one is an incremental on it, and the
// tape pool's chain restores from tapes alone.
func TestTapePoolStartsWithItsOwnFull(t *testing.T) {
	e := start(t, 0)
	src := filepath.Join(t.TempDir(), "src")
	os.Mkdir(src, 0o755)
	if err := sample.Generate(src, smallSpec()); err != nil {
		t.Fatal(err)
	}
	diskFull := e.backup([]string{src}, "full")
	e.backup([]string{src}, "")
	for slot := 1; slot <= 2; slot++ {
		if err := e.api(wire.OpMediaLabel, wire.MediaLabelReq{Library: Library, Slot: slot, Pool: e.st.Config.TapePool}, nil); err != nil {
			t.Fatal(err)
		}
	}

	toTape := func() (wire.JobStarted, wire.JobInfo) {
		t.Helper()
		var s wire.JobStarted
		if err := e.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{fileindex.Path(src)}, Pool: e.st.Config.TapePool}, &s); err != nil {
			t.Fatal(err)
		}
		j := e.wait(s.JobID)
		if j.State != "success" {
			t.Fatalf("backup %d to tape: %s: %s", j.ID, j.State, j.Error)
		}
		return s, j
	}
	started, tapeFull := toTape()
	if started.Level != "full" || tapeFull.Level != "full" || tapeFull.Files != diskFull.Files || tapeFull.Bytes != diskFull.Bytes {
		t.Fatalf("first backup to pool %s: started %s, ran %s with %d files, %d bytes; want a full of %d files, %d bytes",
			e.st.Config.TapePool, started.Level, tapeFull.Level, tapeFull.Files, tapeFull.Bytes, diskFull.Files, diskFull.Bytes)
	}
	said := false
	for _, l := range tapeFull.Log {
		said = said || strings.HasPrefix(l.Msg, "promoted to full: no full of this fileset yet in pool "+e.st.Config.TapePool)
	}
	if !said {
		t.Errorf("the job log does not say why it ran a full: %+v", tapeFull.Log)
	}
	if len(tapeFull.Volumes) == 0 || !strings.HasPrefix(tapeFull.Volumes[0], "CRN") {
		t.Fatalf("the tape pool's full is on volumes %v", tapeFull.Volumes)
	}

	if err := os.WriteFile(filepath.Join(src, "after-tape-full.txt"), []byte("incremental\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, _ := sample.Snapshot(src)
	_, tapeInc := toTape()
	var bl wire.BackupListResp
	if err := e.api(wire.OpBackupList, wire.BackupListReq{Client: "web"}, &bl); err != nil {
		t.Fatal(err)
	}
	for _, b := range bl.Backups {
		if b.ID == tapeInc.ID && (b.Level != "incremental" || b.Parent != tapeFull.ID) {
			t.Fatalf("second backup to tape: %s on %d, want an incremental on %d", b.Level, b.Parent, tapeFull.ID)
		}
		for _, v := range b.Volumes {
			if (b.ID == tapeFull.ID || b.ID == tapeInc.ID) && !strings.HasPrefix(v, "CRN") {
				t.Fatalf("backup %d of the tape pool's chain is on volume %s", b.ID, v)
			}
		}
	}
	to := filepath.Join(t.TempDir(), "r")
	if j := e.restore(tapeInc.ID, to); j.State != "success" {
		t.Fatalf("restore from tape: %s %s", j.State, j.Error)
	}
	e.verify(snap, filepath.Join(to, src))
}

func TestSessionSpansVolumes(t *testing.T) {
	e := start(t, 6<<20) // volumes of 6 MiB: the backup below needs several
	src := t.TempDir()
	spec := sample.Spec{TextFiles: 10, RandomFiles: 30, MaxFileSize: 1 << 20, Seed: 9}
	if err := sample.Generate(src, spec); err != nil {
		t.Fatal(err)
	}
	snap, _ := sample.Snapshot(src)
	j := e.backup([]string{src}, "full")
	if len(j.Volumes) < 3 {
		t.Fatalf("backup of %d bytes on %v: expected it to span at least 3 volumes", j.Bytes, j.Volumes)
	}
	var vols wire.VolumeListResp
	if err := e.api(wire.OpVolumeList, wire.VolumeListReq{}, &vols); err != nil {
		t.Fatal(err)
	}
	full := 0
	for _, v := range vols.Volumes {
		if v.Bytes > 6<<20 {
			t.Fatalf("volume %s has %d bytes, over its maximum", v.Name, v.Bytes)
		}
		if v.State == "full" {
			full++
		}
	}
	if full != len(j.Volumes)-1 {
		t.Fatalf("%d volumes full, want %d: %+v", full, len(j.Volumes)-1, vols.Volumes)
	}
	to := t.TempDir()
	if r := e.restore(j.ID, filepath.Join(to, "r")); r.State != "success" {
		t.Fatalf("restore: %s %s", r.State, r.Error)
	}
	e.verify(snap, filepath.Join(to, "r", src))
	// A second backup appends to the last volume or starts a new one.
	e.backup([]string{src}, "full")
}

// dataHello presents a ticket on the node's data port and returns the
// node's answer.
func (e *env) dataHello(tk string) error {
	conn, err := dataplane.Dial(e.ctx, e.st.Node.DataAddr(), e.fingerprint())
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.WriteJSON(dataplane.FrameHello, dataplane.Hello{V: dataplane.Version, Ticket: tk, Client: "web"}); err != nil {
		e.t.Fatal(err)
	}
	var acc dataplane.Accept
	return conn.ReadJSON(dataplane.FrameAccept, &acc)
}

func (e *env) fingerprint() string {
	_, fp, err := dataplane.LoadOrCreateCert(filepath.Join(e.st.Config.Dir, "node"), "dev-node")
	if err != nil {
		e.t.Fatal(err)
	}
	return fp
}

func TestDataPortRefusesBadTickets(t *testing.T) {
	e := start(t, 0)
	signer, err := keyring.LoadOrCreateSigningKey(filepath.Join(e.st.Config.Dir, "server", "ticket.key"))
	if err != nil {
		t.Fatal(err)
	}
	_, forger, _ := ed25519.GenerateKey(nil)
	now := time.Now()
	valid := ticket.Ticket{JobID: 4242, Client: "web", Node: "dev-node", Op: ticket.OpRestore, Issued: now, Expires: now.Add(time.Minute)}
	sign := func(tk ticket.Ticket, key ed25519.PrivateKey) string {
		s, err := ticket.Sign(tk, key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	expired := valid
	expired.Issued, expired.Expires = now.Add(-time.Hour), now.Add(-10*time.Minute)
	otherNode := valid
	otherNode.Node = "sn-elsewhere"
	reused := sign(valid, signer)

	if err := e.dataHello(reused); err != nil {
		t.Fatalf("a valid ticket was refused: %v", err)
	}
	for _, c := range []struct {
		name, ticket, want string
	}{
		{"missing", "", "no job ticket"},
		{"garbage", "garbage", "not a Cairn job ticket"},
		{"forged", sign(valid, forger), "invalid signature"},
		{"expired", sign(expired, signer), "expired"},
		{"replayed", reused, "already used"},
		{"wrong node", sign(otherNode, signer), "sn-elsewhere"},
	} {
		err := e.dataHello(c.ticket)
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != wire.CodeTicketRejected || !strings.Contains(we.Message, c.want) || we.Hint == "" {
			t.Errorf("%s ticket: %v, want a %s error mentioning %q", c.name, err, wire.CodeTicketRejected, c.want)
		}
	}
}

// TestStackIsClosedToOthers: the stack's NATS server refuses a connection
// with no credential, its credentials are its owner's alone on disk, the
// client file names the admin's seed, and each role's credential is held
// to its role: the agent's cannot ask the servers for the keys.
func TestStackIsClosedToOthers(t *testing.T) {
	e := start(t, 0)
	if nc, err := nats.Connect(e.st.URL(), nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("HOLE: the dev stack's NATS server let in a connection with no credential")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous connection: %v, want an authorization error", err)
	}
	if u := e.st.URL(); !strings.HasPrefix(u, "nats://127.0.0.1:") {
		t.Errorf("the dev stack's NATS server is on %s, want 127.0.0.1 only", u)
	}

	creds := CredentialsDir(e.st.Config.Dir)
	mode := func(path string) os.FileMode {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Mode().Perm()
	}
	if m := mode(creds); m != 0o700 {
		t.Errorf("%s has mode %v, want 0700", creds, m)
	}
	ents, err := os.ReadDir(creds)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) < 5 {
		t.Errorf("%s holds %d files, want 4 seeds and the client file", creds, len(ents))
	}
	for _, ent := range ents {
		if m := mode(filepath.Join(creds, ent.Name())); m != 0o600 {
			t.Errorf("%s has mode %v, want 0600", ent.Name(), m)
		}
	}
	f, err := ReadClientFile(ClientFilePath(e.st.Config.Dir))
	if err != nil {
		t.Fatal(err)
	}
	if f != e.st.ClientFile() || f.URL != e.st.URL() || f.NkeyFile != e.st.AdminAuth.NkeyFile || f.Admin != AdminName {
		t.Errorf("client file %+v, want %+v", f, e.st.ClientFile())
	}

	// The agent's own credential: its subjects work, the admin API does not.
	opts, err := wire.ConnectOptions("as-agent", wire.NATSAuth{NkeyFile: filepath.Join(creds, "agent-web.nk")}, wire.Inbox(wire.KindAgent, "web"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(e.st.URL(), opts...)
	if err != nil {
		t.Fatalf("the agent's credential: %v", err)
	}
	defer nc.Close()
	err = wire.Request(e.ctx, nc, wire.APISubject(wire.OpKeyExport), wire.Empty{}, nil)
	if wire.CodeOf(err) != wire.CodePermissionDenied {
		t.Fatalf("HOLE: the agent's credential asked for the keys: %v", err)
	}
	var keys wire.KeyExportResp
	if err := e.api(wire.OpKeyExport, wire.Empty{}, &keys); err != nil || len(keys.Keys) == 0 {
		t.Fatalf("the stack's admin exports the keys: %d keys, %v", len(keys.Keys), err)
	}
}

// TestOneRegistryForEveryRole: the roles of one stack export some metrics
// of the same name (their NATS connection's); with one registry, as
// 'cairn dev' has, each carries its role's label and none collides.
func TestOneRegistryForEveryRole(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	reg := prometheus.NewRegistry()
	st, err := Start(ctx, Config{Dir: t.TempDir(), Client: "web", NoTape: true, Registry: reg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather the stack's metrics: %v", err)
	}
	roles := map[string]bool{}
	for _, f := range families {
		if f.GetName() != "cairn_nats_connected" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "role" && m.GetGauge().GetValue() == 1 {
					roles[l.GetValue()] = true
				}
			}
		}
	}
	if len(roles) != 3 {
		t.Errorf("cairn_nats_connected is 1 for roles %v, want server, storagenode and agent", roles)
	}
}
