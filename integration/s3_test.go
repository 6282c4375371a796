package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/internal/s3test"
	"github.com/cairnbackup/cairn/media/s3vol"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// A backup to an S3 pool on a real versitygw, in a bucket with object
// lock, goes through the whole system: every object is locked in
// compliance mode until the backup's time plus what the retention that
// governs it may keep it, which the store enforces against the node's own
// credentials; 'cairn pool list' counts the bytes locked; a restore reads
// the volume back from the bucket byte for byte with range reads;
// 'cairn volume ls' reads it there with no server; and once the backup is
// deleted, the expiry pass waits for the lock rather than asking for a
// deletion the store would refuse.
func TestS3PoolEndToEnd(t *testing.T) {
	s, s3, creds := newS3Stack(t, "compliance")
	src := makeTree(t, sample.Spec{TextFiles: 40, RandomFiles: 30, MaxFileSize: 256 << 10, SparseSize: 1 << 20, Seed: 16})
	snap := snapshot(t, src)
	s.ok("policy", "create", "offsite", "--client", s.client, "--path", src, "--schedule", "daily 02:00", "--pool", "Vault", "--keep-within", "3d")
	// The README's lines, with its names for the test's.
	keys := filepath.Join(t.TempDir(), "keys.json")
	readme := readmeS3Lines(t, strings.NewReplacer("/etc/cairn/s3/vault.json", creds, "web1", s.client, "/etc", src,
		"example-cairn-vault", "cairn-vault", "https://s3.eu-central-1.amazonaws.com", s3.Endpoint(), "keys.json", keys))
	var job wire.JobInfo
	s.json(&job, readme[0]...)
	if job.State != "success" || len(job.Volumes) != 1 {
		t.Fatalf("backup to the S3 pool: %+v", job)
	}
	var vault *wire.VolumeInfo
	for _, v := range s.volumes() {
		if v.Pool == "Vault" {
			vault = &v
		}
	}
	if vault == nil || vault.MediaType != "s3" || !strings.HasSuffix(vault.Path, "/cairn-vault/sn1/"+vault.Name+"/") {
		t.Fatalf("no s3 volume in pool Vault: %+v", s.volumes())
	}

	// Every object of the volume is locked until at least 3 days on, and
	// the node's own credentials cannot delete one.
	ctx := context.Background()
	mc := s3.Client(t)
	n := 0
	for o := range mc.ListObjectsIter(ctx, "cairn-vault", minio.ListObjectsOptions{Prefix: "sn1/" + vault.Name + "/", Recursive: true, WithVersions: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		n++
		st, err := mc.StatObject(ctx, "cairn-vault", o.Key, minio.StatObjectOptions{VersionID: o.VersionID})
		if err != nil {
			t.Fatal(err)
		}
		until, err := time.Parse(time.RFC3339, st.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date"))
		if mode := st.Metadata.Get("X-Amz-Object-Lock-Mode"); err != nil || mode != "COMPLIANCE" || until.Before(time.Now().Add(71*time.Hour)) {
			t.Fatalf("lock of %s: mode %q until %v (%v); want compliance until 3 days on", o.Key, mode, until, err)
		}
		if err := mc.RemoveObject(ctx, "cairn-vault", o.Key, minio.RemoveObjectOptions{VersionID: o.VersionID}); err == nil {
			t.Fatalf("the store deleted locked object %s", o.Key)
		}
	}
	if n != 2 {
		t.Fatalf("the volume has %d objects; want its label and the session's part", n)
	}
	var pools []wire.PoolInfo
	s.json(&pools, readme[1]...)
	for _, pl := range pools {
		if pl.Name == "Vault" && pl.LockedBytes != vault.Bytes {
			t.Fatalf("pool list: Vault has %d bytes locked; its volume holds %d", pl.LockedBytes, vault.Bytes)
		}
	}

	to := filepath.Join(t.TempDir(), "restore")
	s.restore(to, "--backup", strconv.FormatUint(job.BackupID, 10))
	checkRestored(t, snap, to, src)

	// The pool's target, as the node's heartbeat tells the servers.
	poll.Until(t, 10*time.Second, func() error {
		s.json(&pools, "pool", "list")
		for _, pl := range pools {
			if pl.Name != "Vault" {
				continue
			}
			if tg := pl.Nodes[0].Target; tg == nil || !tg.Reachable || tg.BytesWritten == 0 || tg.BytesRead == 0 || tg.Errors != 0 {
				return fmt.Errorf("pool list: Vault's target %+v", tg)
			}
			return nil
		}
		return errors.New("pool list has no Vault")
	})
	if out := s.ok("pool", "list").stdout; !strings.Contains(out, s3.Endpoint()+"/cairn-vault reachable, write ") {
		t.Errorf("pool list does not say the target is reachable and how fast it took the backup:\n%s", out)
	}
	s.ok(readme[2]...)
	var listing volumeListing
	s.json(&listing, readme[3]...)
	if len(listing.Sessions) != 1 || len(listing.Sessions[0].Entries) == 0 {
		t.Fatalf("cairn volume ls of the volume in the bucket: %+v", listing)
	}

	s.ok("backup", "delete", strconv.FormatUint(job.BackupID, 10))
	var pr wire.PruneResp
	s.json(&pr, "prune")
	if len(pr.Pending) != 1 || !strings.Contains(pr.Pending[0], "locked in the store until") {
		t.Fatalf("prune of a locked volume: %+v", pr)
	}
	p, err := s3vol.New(s3vol.Config{Pool: "Vault", Endpoint: s3.Endpoint(), Bucket: "cairn-vault", Region: "us-east-1", Prefix: "sn1/",
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.OpenRead(ctx, vault.Name); err != nil {
		t.Fatalf("the locked volume after prune: %v", err)
	}
}

// newS3Stack is a stack whose node has pool Vault in bucket cairn-vault
// (object lock enabled) of a real versitygw, under prefix sn1/, locking in
// mode; and the store, and the node's credentials file.
func newS3Stack(t *testing.T, mode string) (*stack, *s3test.Server, string) {
	s3 := s3test.Start(t)
	s3.Bucket(t, "cairn-vault", true)
	creds := filepath.Join(t.TempDir(), "s3.json")
	if err := os.WriteFile(creds, fmt.Appendf(nil, `{"access_key": %q, "secret_key": %q}`, s3test.AccessKey, s3test.SecretKey), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStack(t, stackOpts{nodeConfig: map[string]any{"s3_pools": []map[string]any{{
		"name": "Vault", "endpoint": s3.Endpoint(), "bucket": "cairn-vault", "region": "us-east-1", "prefix": "sn1/",
		"credentials_file": creds, "lock_mode": mode,
	}}}})
	return s, s3, creds
}

// readmeS3Lines are the cairn commands of the README's S3 pool block (the
// one TestReadme does not run, for want of a store), each as its
// arguments after "cairn", with repl's names for the README's.
func readmeS3Lines(t *testing.T, repl *strings.Replacer) [][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(b), "```sh-notest needs an S3 store: TestS3PoolEndToEnd runs these lines")
	block, _, _ = strings.Cut(block, "```")
	var out [][]string
	for _, l := range commandLines(block)[1:] { // past the fence line's end
		f := strings.Fields(repl.Replace(l))
		if f[0] != "cairn" {
			t.Fatalf("README's S3 block: %q is not a cairn command", l)
		}
		out = append(out, f[1:])
	}
	if !ok || len(out) != 4 {
		t.Fatalf("README's S3 block: want its 4 cairn commands (backup, pool list, key export, volume ls), found %d", len(out))
	}
	return out
}
