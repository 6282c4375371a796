package s3vol

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"

	"github.com/cairnbackup/cairn/internal/s3test"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/media/volume/volumetest"
)

func testConfig(s *s3test.Server, bucket string) Config {
	return Config{Pool: "Offsite", Endpoint: s.Endpoint(), Bucket: bucket, Region: "us-east-1",
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, PartSize: 5 << 20}
}

func testPool(t testing.TB, cfg Config) *Pool {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	return p
}

// lockedPool is a pool locking in mode, in a new bucket with object lock
// of a real versitygw of its own.
func lockedPool(t testing.TB, bucket, mode string) (*Pool, Config) {
	t.Helper()
	s := s3test.Start(t)
	s.Bucket(t, bucket, true)
	cfg := testConfig(s, bucket)
	cfg.LockMode = mode
	return testPool(t, cfg), cfg
}

func newVolume(t testing.TB, p *Pool, name string, lock Lock) *Appender {
	t.Helper()
	ctx := context.Background()
	id := uuid.New()
	if err := p.Create(ctx, name, volume.Label{VolumeID: id, BlockSize: volume.MinBlockSize, MediaType: "s3", Created: time.Now()}, lock); err != nil {
		t.Fatal(err)
	}
	a, err := p.OpenAppend(ctx, name, id, volume.MinBlockSize, lock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// An S3 volume keeps the Appender contract the session writer relies
// on, written as objects and read back with range reads from a real S3
// server, in a bucket with object lock and every object locked.
func TestAppenderContract(t *testing.T) {
	s := s3test.Start(t)
	s.Bucket(t, "vols", true)
	pools := map[int64]*Pool{}
	byID := map[uuid.UUID]struct {
		p    *Pool
		name string
	}{}
	n := 0
	lock := Lock{Until: time.Now().Add(time.Hour)}
	volumetest.TestAppender(t, volumetest.Medium{
		New: func(t *testing.T, limit int64) volume.Appender {
			p := pools[limit]
			if p == nil {
				cfg := testConfig(s, "vols")
				cfg.Prefix = fmt.Sprintf("limit%d/", limit)
				cfg.MaxVolumeBytes = limit
				cfg.LockMode = LockCompliance
				p = testPool(t, cfg)
				pools[limit] = p
			}
			n++
			name := fmt.Sprintf("Contract-%04d", n)
			a := newVolume(t, p, name, lock)
			byID[a.VolumeID()] = struct {
				p    *Pool
				name string
			}{p, name}
			return a
		},
		Read: func(t *testing.T, id uuid.UUID) (io.ReaderAt, int64) {
			v := byID[id]
			r, err := v.p.OpenRead(context.Background(), v.name)
			if err != nil {
				t.Fatal(err)
			}
			return r, r.Size()
		},
	})
}

// writeSession writes one session of files on a and syncs it, as the
// session writer does at a part's end.
func writeSession(t testing.TB, a *Appender, size int) []byte {
	t.Helper()
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{byte(size)}).Read(data)
	if _, err := a.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	return data
}

// Every object of a volume in a locked pool is locked on the server: a
// delete or an overwrite with the node's own credentials is refused, or
// leaves the first version to read; the label's lock is extended to the
// latest part's; and the volume reads back byte for byte with range
// reads, across objects and across the multipart upload's parts.
func TestLockedObjectsResistDeleteAndOverwrite(t *testing.T) {
	p, cfg := lockedPool(t, "locked", LockCompliance)
	ctx := context.Background()
	early := Lock{Until: time.Now().Add(time.Hour)}
	a := newVolume(t, p, "Vault-0001", early)
	start := a.Offset()
	first := writeSession(t, a, 11<<20+123) // three upload parts
	late := Lock{Until: time.Now().Add(48 * time.Hour)}
	a.lock = late
	second := writeSession(t, a, 4096)

	ret, err := p.ObjectRetention(ctx, "Vault-0001", start)
	if err != nil || ret.Mode != "COMPLIANCE" || ret.Until.Before(early.Until) {
		t.Fatalf("first part's lock %+v, %v; want COMPLIANCE until %s", ret, err, early.Until)
	}
	ret, err = p.ObjectRetention(ctx, "Vault-0001", 0)
	if err != nil || ret.Until.Before(late.Until) {
		t.Fatalf("label's lock %+v, %v; want it extended to %s", ret, err, late.Until)
	}

	// The node's own credentials cannot delete a locked version.
	prefix, _ := p.Prefix("Vault-0001")
	objs, err := p.list(ctx, prefix)
	if err != nil || len(objs) != 3 {
		t.Fatalf("objects %+v, %v", objs, err)
	}
	for _, o := range objs {
		err := p.remove(ctx, o)
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("delete of locked %s: %v, want ErrLocked", o.key, err)
		}
		err = p.c.RemoveObject(ctx, cfg.Bucket, o.key, minio.RemoveObjectOptions{VersionID: o.version, GovernanceBypass: true})
		if err == nil {
			t.Fatalf("delete of %s in compliance mode with the governance bypass succeeded", o.key)
		}
	}
	if err := p.Delete(ctx, "Vault-0001"); !errors.Is(err, ErrLocked) {
		t.Fatalf("Delete of a locked volume: %v, want ErrLocked", err)
	}
	// An overwrite of the first part, and a delete marker on the
	// second, behind Cairn's back: the store keeps the first versions,
	// and the volume reads as written.
	junk := bytes.Repeat([]byte("X"), int(objs[1].size))
	if _, err := p.c.PutObject(ctx, cfg.Bucket, objs[1].key, bytes.NewReader(junk), int64(len(junk)), minio.PutObjectOptions{}); err != nil {
		t.Logf("overwrite refused: %v", err)
	}
	if err := p.c.RemoveObject(ctx, cfg.Bucket, objs[2].key, minio.RemoveObjectOptions{}); err != nil {
		t.Logf("delete marker refused: %v", err)
	}
	// What a reader of the latest versions would see now.
	latest, err := p.c.GetObject(ctx, cfg.Bucket, objs[1].key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(latest); !bytes.Equal(b, junk) {
		t.Fatal("the overwrite did not land as the latest version: this test no longer shows that the reader reads first versions")
	}
	if _, err := p.c.StatObject(ctx, cfg.Bucket, objs[2].key, minio.StatObjectOptions{}); err == nil {
		t.Fatal("the delete marker did not land: this test no longer shows that the reader passes over it")
	}

	r, err := p.OpenRead(ctx, "Vault-0001")
	if err != nil {
		t.Fatal(err)
	}
	if r.Size() != a.Offset() {
		t.Fatalf("volume reads %d bytes, %d were written", r.Size(), a.Offset())
	}
	got := make([]byte, len(first)+len(second))
	if _, err := r.ReadAt(got, start); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(append([]byte{}, first...), second...)) {
		t.Fatal("the volume does not read back as written")
	}
	// A range across the boundary of two objects, and one past the end.
	mid := make([]byte, 100)
	if _, err := r.ReadAt(mid, start+int64(len(first))-50); err != nil || !bytes.Equal(mid, got[len(first)-50:len(first)+50]) {
		t.Fatalf("range across objects: %v", err)
	}
	if n, err := r.ReadAt(mid, r.Size()-10); n != 10 || err != io.EOF {
		t.Fatalf("read past the end: %d, %v", n, err)
	}
}

// A session that fails leaves nothing that counts: its upload is never
// completed, and a part it completed but never committed is deleted by
// the next OpenAppend when unlocked, or passed over when locked, the
// next session's object taking its offset.
func TestUncommittedPartsNeverCount(t *testing.T) {
	s := s3test.Start(t)
	s.Bucket(t, "bkt", true)
	ctx := context.Background()
	for _, locked := range []bool{false, true} {
		t.Run(fmt.Sprint("locked=", locked), func(t *testing.T) {
			cfg := testConfig(s, "bkt")
			cfg.Prefix = fmt.Sprintf("l%v/", locked)
			var lock Lock
			if locked {
				cfg.LockMode, lock = LockGovernance, Lock{Until: time.Now().Add(time.Hour)}
			}
			p := testPool(t, cfg)
			a := newVolume(t, p, "V", lock)
			id, committed := a.VolumeID(), a.Offset()
			// Completed, never committed.
			writeSession(t, a, 8192)
			// Begun, never completed.
			if _, err := a.Write(make([]byte, 6<<20)); err != nil {
				t.Fatal(err)
			}
			a.Close()
			prefix, _ := p.Prefix("V")
			ups, err := p.core.ListMultipartUploads(ctx, cfg.Bucket, prefix, "", "", "", 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(ups.Uploads) != 0 {
				t.Fatalf("uploads left open after Close: %+v", ups.Uploads)
			}

			b, err := p.OpenAppend(ctx, "V", id, committed, lock)
			if err != nil {
				t.Fatal(err)
			}
			if b.TornBytes != 8192 || (b.TornLocked != 0) != locked {
				t.Fatalf("torn %d bytes, %d locked", b.TornBytes, b.TornLocked)
			}
			next := writeSession(t, b, 4096)
			r, err := p.OpenRead(ctx, "V")
			if err != nil {
				t.Fatal(err)
			}
			if r.Size() != committed+4096 {
				t.Fatalf("volume is %d bytes; want %d", r.Size(), committed+4096)
			}
			got := make([]byte, 4096)
			if _, err := r.ReadAt(got, committed); err != nil || !bytes.Equal(got, next) {
				t.Fatalf("the next session does not read back: %v", err)
			}
			objs, _ := p.list(ctx, prefix)
			if want := 2 + map[bool]int{false: 0, true: 1}[locked]; len(objs) != want {
				t.Fatalf("%d objects (%+v); want %d", len(objs), objs, want)
			}
		})
	}
}

// A rollback deletes what its session completed when unlocked.
func TestRollbackDeletesUnlocked(t *testing.T) {
	s := s3test.Start(t)
	s.Bucket(t, "plain", false)
	p := testPool(t, testConfig(s, "plain"))
	a := newVolume(t, p, "V", Lock{})
	start := a.Offset()
	writeSession(t, a, 5000)
	if err := a.Rollback(); err != nil {
		t.Fatal(err)
	}
	if a.Offset() != start {
		t.Fatalf("offset %d after rollback; want %d", a.Offset(), start)
	}
	r, err := p.OpenRead(context.Background(), "V")
	if err != nil || r.Size() != start {
		t.Fatalf("volume %v bytes after rollback, %v; want %d", r, err, start)
	}
	if err := p.Delete(context.Background(), "V"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.OpenRead(context.Background(), "V"); !errors.Is(err, ErrNoVolume) {
		t.Fatalf("after Delete: %v", err)
	}
}

// Wrong credentials, a missing bucket and a bucket without object lock
// for a locking pool are each said so, with what to do.
func TestCheckSaysWhatIsWrong(t *testing.T) {
	s := s3test.Start(t)
	s.Bucket(t, "nolock", false)
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		tweak func(*Config)
		want  []string
	}{
		{"credentials", func(c *Config) { c.SecretKey = "wrong-secret" }, []string{"refused the node's credentials"}},
		{"bucket", func(c *Config) { c.Bucket = "missing" }, []string{"bucket missing", "create the bucket"}},
		{"lock", func(c *Config) { c.LockMode = LockCompliance }, []string{"does not have object lock enabled", "set no lock mode"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(s, "nolock")
			c.tweak(&cfg)
			p, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = p.Check(ctx)
			if err == nil {
				t.Fatal("Check passed")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	cfg := testConfig(s, "nolock")
	cfg.Endpoint = "http://127.0.0.1:1"
	p, _ := New(cfg)
	var se *StoreError
	if err := p.Check(ctx); !errors.As(err, &se) || !se.Unreachable() {
		t.Fatalf("a store that is not there: %v", err)
	}
}

func TestValidate(t *testing.T) {
	good := Config{Pool: "P", Endpoint: "https://s3.example.com", Bucket: "b", AccessKey: "a", SecretKey: "s"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []func(*Config){
		func(c *Config) { c.Endpoint = "s3.example.com" },
		func(c *Config) { c.Endpoint = "https://s3.example.com/bucket" },
		func(c *Config) { c.Bucket = "" },
		func(c *Config) { c.LockMode = "strict" },
		func(c *Config) { c.Prefix = "no-slash" },
		func(c *Config) { c.PartSize = 1 << 20 },
	} {
		c := good
		bad(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%+v validates", c)
		}
	}
}

// The store killed with SIGKILL in the middle of an upload leaves
// nothing recorded: the write fails, the volume still ends at its
// committed end once the store is back, and the next OpenAppend aborts
// the upload that was never completed.
func TestStoreKilledMidUpload(t *testing.T) {
	s := s3test.Start(t)
	s.Bucket(t, "cut", true)
	cfg := testConfig(s, "cut")
	cfg.LockMode = LockCompliance
	p := testPool(t, cfg)
	ctx := context.Background()
	lock := Lock{Until: time.Now().Add(time.Hour)}
	a := newVolume(t, p, "V", lock)
	id, committed := a.VolumeID(), a.Offset()
	if _, err := a.Write(make([]byte, 6<<20)); err != nil { // one part up
		t.Fatal(err)
	}
	s.Stop()
	_, err := a.Write(make([]byte, 5<<20))
	if err == nil {
		err = a.Sync()
	}
	var se *StoreError
	if !errors.As(err, &se) || !se.Unreachable() {
		t.Fatalf("writing with the store killed: %v; want an unreachable *StoreError", err)
	}
	s.Restart(t)
	prefix, _ := p.Prefix("V")
	ups, err := p.core.ListMultipartUploads(ctx, cfg.Bucket, prefix, "", "", "", 100)
	if err != nil || len(ups.Uploads) != 1 {
		t.Fatalf("uploads after the cut: %+v, %v; want the one cut off", ups.Uploads, err)
	}
	r, err := p.OpenRead(ctx, "V")
	if err != nil || r.Size() != committed {
		t.Fatalf("volume after the cut: %v, %v; want %d bytes", r, err, committed)
	}
	b, err := p.OpenAppend(ctx, "V", id, committed, lock)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.TornBytes != 0 {
		t.Fatalf("%d torn bytes: the cut upload was completed", b.TornBytes)
	}
	ups, err = p.core.ListMultipartUploads(ctx, cfg.Bucket, prefix, "", "", "", 100)
	if err != nil || len(ups.Uploads) != 0 {
		t.Fatalf("uploads after OpenAppend: %+v, %v; want none", ups.Uploads, err)
	}
}

// Of two versions of a key written within one second (an overwrite behind
// Cairn's back right after the upload), the one the store calls latest is
// the later, in whatever order it lists them; times decide otherwise.
func TestOlderVersion(t *testing.T) {
	sec := time.Date(2026, 12, 2, 13, 0, 0, 0, time.UTC)
	orig := object{key: "k", version: "a", modified: sec}
	junk := object{key: "k", version: "b", modified: sec, latest: true}
	if !older(orig, junk) || older(junk, orig) {
		t.Fatal("within one second, the latest version was taken for the first")
	}
	later := object{key: "k", version: "c", modified: sec.Add(time.Second)}
	if older(later, orig) || !older(orig, later) || older(orig, orig) {
		t.Fatal("modification times do not decide")
	}
	// The store stamped the pushed-aside version when it moved it, a
	// second after the overwrite's time: the latest is still the newer.
	pushed := object{key: "k", version: "a", modified: sec.Add(time.Second)}
	if !older(pushed, junk) || older(junk, pushed) {
		t.Fatal("a latest version listed a second before the one it replaced was taken for the first")
	}
}
