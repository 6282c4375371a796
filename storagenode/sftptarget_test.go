package storagenode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/internal/sshdtest"
	"github.com/cairnbackup/cairn/media/sftpvol"
	"github.com/cairnbackup/cairn/wire"
)

// sftpAppendOnly is pool P on an append-only sshd (the setup DESIGN.md
// gives the target's administrator), the pool told so.
func sftpAppendOnly(srv **sshdtest.Server) func(testing.TB, *Config) {
	return func(t testing.TB, cfg *Config) {
		s := sshdtest.StartWith(t, sshdtest.Options{AppendOnly: true})
		*srv = s
		cfg.SFTPPools = append(cfg.SFTPPools, SFTPPoolConfig{Name: "P", Host: s.Host, Port: s.Port, User: s.User, KeyFile: s.KeyFile,
			KnownHosts: s.KnownHosts, Dir: s.Dir, AppendOnly: true, Retry: sftpvol.Retry{Attempts: 3, Backoff: 20 * time.Millisecond}})
	}
}

// abortSays waits for the n-th failed session and checks its message.
func abortSays(t *testing.T, r *nodeRig, n int, code string, says ...string) wire.SessionAbortReq {
	t.Helper()
	var a wire.SessionAbortReq
	poll.Until(t, 20*time.Second, func() error {
		r.fake.mu.Lock()
		defer r.fake.mu.Unlock()
		if len(r.fake.aborts) < n {
			return errors.New("the failed session was not reported")
		}
		a = r.fake.aborts[n-1]
		if a.Error.Code != code {
			return fmt.Errorf("the session failed with code %s (%s), want %s", a.Error.Code, a.Error.Message, code)
		}
		for _, w := range says {
			if !strings.Contains(a.Error.Message, w) {
				return fmt.Errorf("the session failed with %q, which does not say %q", a.Error.Message, w)
			}
		}
		return nil
	})
	return a
}

// Backups to an append-only target: each session writes its own volumes
// once and seals them (the servers mark them full); a session cut off
// there fails, is not redone on the sealed file, and the next backup
// has the half-written volume marked error and goes to a new one; both
// good backups restore straight from the target; and expiry's order to
// delete a volume is refused while the file is there (the owner deletes
// it) and done once the owner has deleted it.
func TestSFTPAppendOnlyPool(t *testing.T) {
	var s *sshdtest.Server
	r := newMediaRig(t, mediumCase{name: "sftp", servers: sftpPoolP, pool: sftpAppendOnly(&s)})
	fs1 := randomFiles(21, 4, 100<<10)
	if _, err := r.sendFiles(1, fs1, sendOpts{}); err != nil {
		t.Fatal(err)
	}
	if c := r.fake.commit(t, 1); len(c.Sealed) != 1 || c.Sealed[0] != c.Parts[0].VolumeID {
		t.Fatalf("the first backup's commit seals %v, want its volume", c.Sealed)
	}
	killed := 0
	if err := backupCut(t, r, 2, randomFiles(22, 16, 400<<10), func() { killed = s.KillSessions(t) }); err == nil {
		t.Fatal("a backup cut on an append-only target succeeded")
	}
	if killed == 0 {
		t.Fatal("no SSH session to kill: the cut did not happen")
	}
	abortSays(t, r, 1, wire.CodeIO, "append-only")
	fs3 := randomFiles(23, 4, 100<<10)
	if _, err := r.sendFiles(3, fs3, sendOpts{}); err != nil {
		t.Fatal(err)
	}
	r.fake.mu.Lock()
	var states []string
	for _, v := range r.fake.vols {
		states = append(states, v.name+" "+v.state)
	}
	r.fake.mu.Unlock()
	if want := "P-0001 full, P-0002 bad, P-0003 full"; strings.Join(states, ", ") != want {
		t.Fatalf("the volumes are %s, want %s", strings.Join(states, ", "), want)
	}
	for job, fs := range map[uint64][]testFile{1: fs1, 3: fs3} {
		rr := r.fake.readRequest(t, job)
		r.restore(10+job, rr).check(t, rr, fs, noLoss, "")
	}

	// Expiry.
	v := r.fake.vols[0]
	order := wire.VolumeDeleteOrder{Pool: "P", Volume: v.name, VolumeID: v.id}
	err := r.node.deleteVolume(context.Background(), order)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeWrongState || !strings.Contains(we.Hint, "owner") {
		t.Fatalf("the order to delete a volume on an append-only target gave %v, want wrong_state naming the owner", err)
	}
	file := filepath.Join(s.Dir, v.name+".cvol")
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("the volume is gone from the target: %v", err)
	}
	if err := os.Remove(file); err != nil { // the owner, on the target
		t.Fatal(err)
	}
	if err := r.node.deleteVolume(context.Background(), order); err != nil {
		t.Fatalf("the order to delete a volume its owner deleted: %v", err)
	}
}

// Expiry's order deletes a volume's file on an ordinary target, and
// keeps a file that holds another volume than the catalog's.
func TestSFTPExpiryDeletesTheFile(t *testing.T) {
	r := newMediaRig(t, mediumCase{name: "sftp", servers: sftpPoolP, pool: sftpCase})
	if _, err := r.sendFiles(1, randomFiles(31, 2, 10<<10), sendOpts{}); err != nil {
		t.Fatal(err)
	}
	v := r.fake.vols[0]
	file := filepath.Join(r.node.cfg.SFTPPools[0].Dir, v.name+".cvol")
	err := r.node.deleteVolume(context.Background(), wire.VolumeDeleteOrder{Pool: "P", Volume: v.name, VolumeID: uuid.New()})
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeInvalidArgument {
		t.Fatalf("the order to delete another volume's file gave %v, want invalid_argument", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("the file was deleted: %v", err)
	}
	order := wire.VolumeDeleteOrder{Pool: "P", Volume: v.name, VolumeID: v.id}
	for range 2 { // the second time, the file already gone is success
		if err := r.node.deleteVolume(context.Background(), order); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the volume's file is still on the target: %v", err)
	}
}

// A target whose disk fills up fails the backup with pool_full and a
// reason that says so, nothing is committed, and the volume is cut back
// to its committed end.
func TestSFTPTargetFullFailsTheBackup(t *testing.T) {
	r := newMediaRig(t, mediumCase{name: "sftp", servers: sftpPoolP, pool: sftpOn(nil, func(t testing.TB, s *sshdtest.Server, p *SFTPPoolConfig) {
		p.Dir = s.SmallDir(t, "small", 2<<20)
	})})
	if _, err := r.sendFiles(1, randomFiles(41, 16, 400<<10), sendOpts{}); err == nil {
		t.Fatal("a 6 MiB backup to a 2 MiB target succeeded")
	}
	a := abortSays(t, r, 1, wire.CodePoolFull, "is full", r.node.cfg.SFTPPools[0].Dir)
	t.Log(a.Error.Message)
	r.fake.mu.Lock()
	commits := len(r.fake.commits)
	r.fake.mu.Unlock()
	if commits != 0 {
		t.Fatalf("%d commits from a backup to a full target", commits)
	}
	sftpRolledBack(t, r)
}

// The node reports each SFTP target's state: reachable, bytes and time
// written and read, and errors, in its pool usage (pool list) and its
// metrics; and unreachable once the target is gone, an outage counted
// once however many heartbeats ask the target while it lasts.
func TestSFTPTargetStateIsReported(t *testing.T) {
	var s *sshdtest.Server
	r := newMediaRig(t, mediumCase{name: "sftp", servers: sftpPoolP, pool: sftpOn(&s, retry(sftpvol.Retry{Attempts: 2, Backoff: 10 * time.Millisecond}))})
	fs := randomFiles(51, 4, 100<<10)
	if _, err := r.sendFiles(1, fs, sendOpts{}); err != nil {
		t.Fatal(err)
	}
	rr := r.fake.readRequest(t, 1)
	r.restore(2, rr).check(t, rr, fs, noLoss, "")
	m := r.node.byPool["P"]
	u, ok := m.usage()
	if tg := u.Target; !ok || tg == nil || !tg.Reachable || tg.Addr != s.Addr() || tg.BytesWritten < 400<<10 || tg.BytesRead == 0 || tg.WriteRate() <= 0 || tg.Errors != 0 {
		t.Fatalf("the pool's state after a backup and a restore: %+v", u.Target)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(&poolCollector{n: r.node})
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range mt.GetLabel() {
				if l.GetName() == "direction" {
					name += "/" + l.GetValue()
				}
			}
			got[name] = mt.GetGauge().GetValue() + mt.GetCounter().GetValue()
		}
	}
	if got["cairn_node_pool_target_up"] != 1 || got["cairn_node_pool_target_bytes_total/write"] < 400<<10 || got["cairn_node_pool_target_bytes_total/read"] == 0 ||
		got["cairn_node_pool_target_transfer_seconds_total/write"] <= 0 {
		t.Fatalf("metrics %v", got)
	}
	s.Stop()
	poll.Until(t, 20*time.Second, func() error {
		u, _ := m.usage()
		if tg := u.Target; tg.Reachable || tg.Errors == 0 || tg.LastError == "" {
			return fmt.Errorf("the state with the target gone: %+v", tg)
		}
		return nil
	})
	// What every heartbeat's probe does, while the target stays away.
	for range 5 {
		if _, _, ok := m.(*sftpPool).target.Usage(context.Background()); ok {
			t.Fatal("the target answered a probe after it stopped")
		}
	}
	if u, _ := m.usage(); u.Target.Errors != 1 || u.Target.Reachable {
		t.Fatalf("after the target stopped and was probed 5 times more: %+v; want one error, the outage", u.Target)
	}
}

// A backup over several streams to one target, with every connection
// cut in the middle, goes on over new ones and restores whole; the node
// dialled three connections each time.
func TestSFTPBackupOverSeveralStreams(t *testing.T) {
	var s *sshdtest.Server
	r := newMediaRig(t, mediumCase{name: "sftp", servers: sftpPoolP, pool: sftpOn(&s, func(_ testing.TB, _ *sshdtest.Server, p *SFTPPoolConfig) {
		p.Streams = 3
		p.Retry = sftpvol.Retry{Backoff: 50 * time.Millisecond}
	})})
	backupKilledRestores(t, r, s, randomFiles(61, 16, 400<<10), func() {
		if n := len(s.Sessions(t)); n < 6 { // a monitor and a child per connection
			t.Errorf("%d sshd session processes during the backup, want those of three connections", n)
		}
	})
}
