package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/agent"
	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/internal/s3test"
	"github.com/cairnbackup/cairn/internal/sshdtest"
	"github.com/cairnbackup/cairn/media/s3vol"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/storagenode"
	"github.com/cairnbackup/cairn/wire"
)

// Policies scheduled on the leader's fake clock back up straight to an
// SFTP pool and to an S3 pool with object lock, on a real sshd and a real
// versitygw, both served by a storage node at site dr; the agent is at hq,
// beside a node of its own site that serves neither pool, so the dispatcher
// sends the runs across sites. Each run's volumes are on their target and
// nowhere else, and a restore of each backup reads them back from there,
// byte for byte.
func TestScheduledRunsToOffsitePoolsRestoreFromThem(t *testing.T) {
	sshd := sshdtest.Start(t)
	s3 := s3test.Start(t)
	s3.Bucket(t, "vault", true)
	creds := filepath.Join(t.TempDir(), "s3.json")
	if err := os.WriteFile(creds, fmt.Appendf(nil, `{"access_key": %q, "secret_key": %q}`, s3test.AccessKey, s3test.SecretKey), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newFakeClockHarness(t, func(c *Config) { c.ScheduleTick = time.Second })
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	url := h.srv.cfg.NATSURL

	node := func(id, site string, tune func(*storagenode.Config)) *storagenode.Node {
		c := storagenode.DefaultConfig()
		c.ID, c.Site, c.DataDir, c.NATSURL, c.DataAddr = id, site, t.TempDir(), url, "127.0.0.1:0"
		c.HeartbeatInterval = 100 * time.Millisecond
		// The leader's clock is the fake one, a minute or so ahead of the
		// node's when the runs' tickets are signed.
		c.ClockSkew = 5 * time.Minute
		tune(&c)
		n, err := storagenode.New(c, logger, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	near := node("sn0", "hq", func(c *storagenode.Config) {
		c.Pools = []storagenode.PoolConfig{{Name: "Local", Dir: t.TempDir()}}
	})
	far := node("sn1", "dr", func(c *storagenode.Config) {
		c.SFTPPools = []storagenode.SFTPPoolConfig{{Name: "Offsite", Host: sshd.Host, Port: sshd.Port, User: sshd.User,
			KeyFile: sshd.KeyFile, KnownHosts: sshd.KnownHosts, Dir: sshd.Dir}}
		c.S3Pools = []storagenode.S3PoolConfig{{Name: "Vault", Endpoint: s3.Endpoint(), Bucket: "vault", Region: "us-east-1",
			Prefix: "sn1/", CredentialsFile: creds, LockMode: s3vol.LockCompliance}}
	})
	ac := agent.DefaultConfig()
	ac.Name, ac.Site, ac.NATSURL = "web", "hq", url
	ac.HeartbeatInterval = 100 * time.Millisecond
	ag, err := agent.New(ac, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ag.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Close() })
	poll.Until(t, 30*time.Second, func() error {
		if !near.Registered() || !far.Registered() || !ag.Registered() {
			return fmt.Errorf("registered: sn0 %v, sn1 %v, agent %v", near.Registered(), far.Registered(), ag.Registered())
		}
		return nil
	})

	// The runs fall due a minute on the leader's clock.
	at := h.fake.Now().UTC().Truncate(time.Minute).Add(2 * time.Minute)
	trees := map[string]string{}
	for i, pool := range []string{"Offsite", "Vault"} {
		src := filepath.Join(t.TempDir(), pool)
		if err := sample.Generate(src, sample.Spec{TextFiles: 20, RandomFiles: 6, MaxFileSize: 300 << 10, Seed: uint64(150 + i)}); err != nil {
			t.Fatal(err)
		}
		trees[pool] = src
		p := wire.Policy{Name: "to-" + pool, Clients: []string{"web"}, Paths: []string{src}, Pool: pool, TimeZone: "UTC",
			Schedule: at.Format("daily 15:04") + " full", Retention: wire.PolicyRetention{All: wire.KeepRules{Within: 72 * time.Hour}}}
		h.must(h.api(wire.OpPolicyCreate, wire.PolicyPutReq{Policy: p}, nil))
	}
	h.fake.Advance(at.Sub(h.fake.Now()))
	// The leader's rounds (dispatch among them) tick on its clock: it
	// moves on a second at a time, each step once the node and the agent
	// were heard after it, so they stay online.
	tick := func() { h.advance(time.Second) }

	// Each run's backup, complete, on its pool's volumes, written by sn1.
	backups := map[string]*catalog.Backup{}
	poll.Until(t, 60*time.Second, func() error {
		tick()
		for _, pool := range []string{"Offsite", "Vault"} {
			r, err := h.srv.store.LastRun("to-"+pool, "web")
			if err != nil || r == nil || r.JobID == 0 {
				return fmt.Errorf("the run of to-%s: %+v, %v", pool, r, err)
			}
			j, err := h.srv.store.Job(r.JobID)
			if err != nil {
				return err
			}
			if j.State.Done() && j.State != catalog.JobSuccess {
				t.Fatalf("the run of to-%s ended %s: %s", pool, j.State, j.Error)
			}
			if j.State != catalog.JobSuccess {
				return fmt.Errorf("the run of to-%s is %s (%s)", pool, j.State, j.Waiting)
			}
			b, err := h.srv.store.Backup(j.BackupID)
			if err != nil {
				return err
			}
			if b.Node != "sn1" || b.Pool != pool || len(b.Parts) == 0 || !j.Scheduled.Equal(at) {
				t.Fatalf("the run of to-%s: backup %+v of job %+v", pool, b, j)
			}
			backups[pool] = b
		}
		return nil
	})
	// The only copies: on the target, and no other volume anywhere.
	vols, err := h.srv.store.Volumes(catalog.VolumeFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if v.Node != "sn1" || (v.Pool != "Offsite" && v.Pool != "Vault") {
			t.Fatalf("volume %s of pool %s on %s: the runs wrote elsewhere than their targets", v.Name, v.Pool, v.Node)
		}
		switch v.Pool {
		case "Offsite":
			if _, err := os.Stat(filepath.Join(sshd.Dir, v.Name+".cvol")); err != nil {
				t.Fatalf("volume %s is not on the SFTP target: %v", v.Name, err)
			}
		case "Vault":
			if ret, err := s3Pool(t, s3, creds).ObjectRetention(context.Background(), v.Name, 0); err != nil || ret.Mode != "COMPLIANCE" {
				t.Fatalf("volume %s in the bucket: %+v, %v", v.Name, ret, err)
			}
		}
	}

	for _, pool := range []string{"Offsite", "Vault"} {
		to := t.TempDir()
		var started wire.JobStarted
		h.must(h.api(wire.OpRestoreStart, wire.RestoreStartReq{PointInTime: wire.PointInTime{Client: "web", BackupID: backups[pool].ID}, To: to}, &started))
		poll.Until(t, 60*time.Second, func() error {
			tick()
			j, err := h.srv.store.Job(started.JobID)
			if err != nil {
				return err
			}
			if j.State.Done() && j.State != catalog.JobSuccess {
				t.Fatalf("the restore from %s ended %s: %s", pool, j.State, j.Error)
			}
			if j.State != catalog.JobSuccess {
				return fmt.Errorf("the restore from %s is %s", pool, j.State)
			}
			if j.Node != "sn1" {
				t.Fatalf("the restore from %s ran on %s", pool, j.Node)
			}
			return nil
		})
		sameFiles(t, trees[pool], filepath.Join(to, trees[pool]))
	}
}

func s3Pool(t *testing.T, s *s3test.Server, creds string) *s3vol.Pool {
	t.Helper()
	p, err := s3vol.New(s3vol.Config{Pool: "Vault", Endpoint: s.Endpoint(), Bucket: "vault", Region: "us-east-1", Prefix: "sn1/",
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sameFiles: every regular file under want is under got with the same
// bytes.
func sameFiles(t *testing.T, want, got string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		a, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(filepath.Join(got, rel))
		if err != nil {
			return fmt.Errorf("restored tree: %w", err)
		}
		if !bytes.Equal(a, b) {
			return fmt.Errorf("%s differs from its restore", rel)
		}
		n++
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("restore of %s: %d files compared: %v", want, n, err)
	}
}
