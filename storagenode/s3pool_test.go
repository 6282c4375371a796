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
	"github.com/cairnbackup/cairn/internal/s3test"
	"github.com/cairnbackup/cairn/media/s3vol"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// s3Case is pool P in a bucket with object lock on a real versitygw on
// loopback, every object locked in compliance mode.
func s3Case(t testing.TB, cfg *Config) { s3On(nil, nil)(t, cfg) }

// s3On is s3Case that hands the test its server and lets it change the
// pool's configuration.
func s3On(srv **s3test.Server, tweak func(testing.TB, *s3test.Server, *S3PoolConfig)) func(testing.TB, *Config) {
	return func(t testing.TB, cfg *Config) {
		s := s3test.Start(t)
		if srv != nil {
			*srv = s
		}
		s.Bucket(t, "offsite", true)
		p := S3PoolConfig{Name: "P", Endpoint: s.Endpoint(), Bucket: "offsite", Region: "us-east-1", Prefix: "cairn/",
			CredentialsFile: writeS3Credentials(t, s3test.AccessKey, s3test.SecretKey),
			LockMode:        s3vol.LockCompliance, DefaultLock: time.Hour}
		if tweak != nil {
			tweak(t, s, &p)
		}
		cfg.S3Pools = append(cfg.S3Pools, p)
	}
}

// writeS3Credentials writes a credentials file of mode 0600.
func writeS3Credentials(t testing.TB, access, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "s3.json")
	if err := os.WriteFile(p, fmt.Appendf(nil, `{"access_key": %q, "secret_key": %q}`, access, secret), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// s3PoolP is how the fake servers grant pool P's volumes: as a disk
// pool's, which the node labels, with the s3 medium type.
var s3PoolP = fakePool{name: "P", mediaType: "s3", compression: true, newVolumes: true}

// s3RolledBack: every volume ends, as a reader of the bucket sees it, at
// its committed end, and no upload is left open.
func s3RolledBack(t testing.TB, r *nodeRig) {
	p := r.node.byPool["P"].(*s3Pool)
	r.fake.mu.Lock()
	defer r.fake.mu.Unlock()
	for _, v := range r.fake.vols {
		rd, err := p.target.OpenRead(context.Background(), v.name)
		if err != nil {
			t.Fatal(err)
		}
		if rd.Size() != v.end {
			t.Fatalf("volume %s reads %d bytes long; %d are committed", v.name, rd.Size(), v.end)
		}
	}
}

// The node refuses an S3 pool whose credentials file its group or others
// may read, and one with no credentials at all, saying what to do.
func TestS3CredentialsNeverLoose(t *testing.T) {
	loose := writeS3Credentials(t, "a", "b")
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(s3vol.EnvAccessKey, "")
	t.Setenv(s3vol.EnvSecretKey, "")
	for _, c := range []struct {
		file string
		want string
	}{
		{loose, "chmod 600"},
		{"", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"},
	} {
		_, err := newS3Pool(S3PoolConfig{Name: "P", Endpoint: "http://127.0.0.1:9", Bucket: "b", CredentialsFile: c.file})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("credentials file %q: %v; want it to say %q", c.file, err, c.want)
		}
	}
	t.Setenv(s3vol.EnvAccessKey, "from-env")
	t.Setenv(s3vol.EnvSecretKey, "secret")
	p, err := newS3Pool(S3PoolConfig{Name: "P", Endpoint: "http://127.0.0.1:9", Bucket: "b"})
	if err != nil || p.target.Config().AccessKey != "from-env" {
		t.Fatalf("credentials from the environment: %v", err)
	}
}

// The servers' order to delete an expired volume of an S3 pool is
// refused as wrong_state while the store holds its objects locked, and
// carried out, every object gone, once the lock's date has passed; a
// repeat is done.
func TestS3VolumeDeleteWaitsForTheLock(t *testing.T) {
	var srv *s3test.Server
	r := newMediaRig(t, mediumCase{name: "s3", servers: s3PoolP, pool: s3On(&srv, func(_ testing.TB, _ *s3test.Server, c *S3PoolConfig) {
		c.DefaultLock = 2 * time.Second
	})})
	p := r.node.byPool["P"].(*s3Pool)
	ctx := context.Background()
	id := uuid.New()
	if err := p.target.Create(ctx, "P-0001", volume.Label{VolumeID: id, BlockSize: volume.MinBlockSize, Created: time.Now()}, p.lock(wire.VolumeGrant{}, time.Now())); err != nil {
		t.Fatal(err)
	}
	order := func() error {
		return wire.Request(ctx, r.nc, wire.NodeSubject("sn1", wire.OpNodeVolumeDelete), wire.VolumeDeleteOrder{Pool: "P", Volume: "P-0001", VolumeID: id}, nil)
	}
	if err := order(); wire.CodeOf(err) != wire.CodeWrongState || !strings.Contains(err.Error(), "locked until") {
		t.Fatalf("order while locked: %v; want wrong_state naming the lock", err)
	}
	if _, err := p.target.OpenRead(ctx, "P-0001"); err != nil {
		t.Fatalf("the volume after a refused order: %v", err)
	}
	poll.Until(t, 15*time.Second, order)
	if _, err := p.target.OpenRead(ctx, "P-0001"); !errors.Is(err, s3vol.ErrNoVolume) {
		t.Fatalf("the volume after the order: %v", err)
	}
	if err := order(); err != nil {
		t.Fatalf("a repeat of the order: %v", err)
	}
}

// A backup to a store that refuses the node's credentials, to a bucket
// that does not exist, or to a bucket without object lock for a pool
// that locks, fails at once with the reason and what to do, and no
// volume is granted.
func TestS3BackupSaysWhatIsWrongWithTheStore(t *testing.T) {
	for _, c := range []struct {
		name  string
		tweak func(testing.TB, *s3test.Server, *S3PoolConfig)
		want  []string
	}{
		{"credentials", func(t testing.TB, _ *s3test.Server, c *S3PoolConfig) {
			c.CredentialsFile = writeS3Credentials(t, s3test.AccessKey, "not-the-secret")
		}, []string{"refused the node's credentials", "credentials file"}},
		{"bucket", func(_ testing.TB, _ *s3test.Server, c *S3PoolConfig) { c.Bucket = "no-such-bucket" },
			[]string{"bucket no-such-bucket", "create the bucket"}},
		{"no lock", func(t testing.TB, s *s3test.Server, c *S3PoolConfig) {
			s.Bucket(t, "plain", false)
			c.Bucket = "plain"
		}, []string{"does not have object lock enabled", "set no lock mode"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newMediaRig(t, mediumCase{name: "s3", servers: s3PoolP, pool: s3On(nil, c.tweak)})
			if _, err := r.sendFiles(1, randomFiles(9, 2, 10<<10), sendOpts{}); err == nil {
				t.Fatal("the backup succeeded")
			}
			poll.Until(t, 20*time.Second, func() error {
				r.fake.mu.Lock()
				defer r.fake.mu.Unlock()
				if len(r.fake.aborts) == 0 {
					return errors.New("the failed session was not reported")
				}
				for _, w := range c.want {
					if msg := r.fake.aborts[0].Error.Message; !strings.Contains(msg, w) {
						return fmt.Errorf("the session failed with %q, which does not say %q", msg, w)
					}
				}
				return nil
			})
			r.fake.mu.Lock()
			defer r.fake.mu.Unlock()
			if len(r.fake.vols) != 0 {
				t.Fatalf("volumes were granted: %+v", r.fake.vols)
			}
		})
	}
}

// The node reports how its S3 store fares, in its pool usage and its
// metrics: reachable with the bytes a backup sent and the time it took,
// then unreachable with the error once the store is killed, the outage
// counted once however often the store is probed while it lasts.
func TestS3TargetReachabilityThroughputErrors(t *testing.T) {
	var srv *s3test.Server
	r := newMediaRig(t, mediumCase{name: "s3", servers: s3PoolP, pool: s3On(&srv, nil)})
	target := func() *wire.TargetStatus {
		for _, u := range r.node.usage() {
			if u.Name == "P" {
				if u.FreeBytes != 0 || u.TotalBytes != 0 {
					t.Fatalf("an S3 pool reports a size: %+v", u)
				}
				return u.Target
			}
		}
		t.Fatal("no usage of pool P")
		return nil
	}
	if _, err := r.sendFiles(1, randomFiles(21, 4, 300<<10), sendOpts{}); err != nil {
		t.Fatal(err)
	}
	r.fake.commit(t, 1)
	if ts := target(); !ts.Tried || !ts.Reachable || ts.BytesWritten < 4*300<<10/2 || ts.WriteRate() <= 0 || ts.Errors != 0 {
		t.Fatalf("target after a backup: %+v", ts)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(&poolCollector{n: r.node})
	up := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "cairn_node_pool_target_up" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no cairn_node_pool_target_up")
		return 0
	}
	if up() != 1 {
		t.Fatal("cairn_node_pool_target_up is not 1 for a store that answers")
	}
	srv.Stop()
	if _, err := r.sendFiles(2, randomFiles(22, 2, 10<<10), sendOpts{}); err == nil {
		t.Fatal("a backup to a store that is gone succeeded")
	}
	poll.Until(t, 30*time.Second, func() error {
		if ts := target(); ts.Reachable || ts.Errors == 0 || !strings.Contains(ts.LastError, "did not answer") {
			return fmt.Errorf("target with the store gone: %+v", ts)
		}
		return nil
	})
	if up() != 0 {
		t.Fatal("cairn_node_pool_target_up is not 0 for a store that is gone")
	}
	errs := target().Errors
	for range 3 { // the probes of a pool list every 30 s
		if err := r.node.byPool["P"].(*s3Pool).target.Check(context.Background()); err == nil {
			t.Fatal("a store that is gone answered")
		}
	}
	if ts := target(); ts.Errors != errs {
		t.Fatalf("errors %d after three probes of the store that is gone, %d before: an outage counts once", ts.Errors, errs)
	}
}
