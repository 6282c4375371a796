package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// objectLock is one object's lock as the store reports it.
type objectLock struct {
	until time.Time
	hold  bool
}

// s3Locks are the locks of every object under prefix in bucket, by key.
func s3Locks(ctx context.Context, t *testing.T, mc *minio.Client, bucket, prefix string) (map[string]objectLock, error) {
	out := map[string]objectLock{}
	for o := range mc.ListObjectsIter(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true, WithVersions: true}) {
		if o.Err != nil {
			return nil, o.Err
		}
		st, err := mc.StatObject(ctx, bucket, o.Key, minio.StatObjectOptions{VersionID: o.VersionID})
		if err != nil {
			return nil, err
		}
		until, _ := time.Parse(time.RFC3339, st.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date"))
		out[o.Key] = objectLock{until: until, hold: st.Metadata.Get("X-Amz-Object-Lock-Legal-Hold") == "ON"}
	}
	return out, nil
}

// The store's object locks follow the catalog on a real versitygw: an
// incremental committed with a later retain-until date extends the locks
// of the full it builds on; a legal hold on the incremental puts its
// objects, the full's and the volume's label under legal hold, and its
// release lifts them; a hold placed while the storage node is down is set
// once the node is back.
func TestS3LocksFollowTheCatalog(t *testing.T) {
	s, s3, _ := newS3Stack(t, "governance")
	src := makeTree(t, sample.Spec{TextFiles: 10, RandomFiles: 5, MaxFileSize: 64 << 10, Seed: 15})
	s.ok("policy", "create", "offsite", "--client", s.client, "--path", src, "--schedule", "daily 02:00", "--pool", "Vault", "--keep-within", "3d")
	backup := func(level string) wire.JobInfo {
		var j wire.JobInfo
		s.json(&j, "backup", "--client", s.client, "--path", src, "--level", level, "--pool", "Vault", "--wait")
		if j.State != "success" {
			t.Fatalf("%s backup to the S3 pool: %+v", level, j)
		}
		return j
	}
	full := backup("full")
	var vol string
	for _, v := range s.volumes() {
		if v.Pool == "Vault" {
			vol = v.Name
		}
	}
	ctx := context.Background()
	mc := s3.Client(t)
	prefix := "sn1/" + vol + "/"
	locks := func() map[string]objectLock {
		l, err := s3Locks(ctx, t, mc, "cairn-vault", prefix)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	fullKeys := locks() // the label and the full's part
	if len(fullKeys) != 2 {
		t.Fatalf("after the full the volume has objects %v; want its label and the full's part", fullKeys)
	}

	// A longer retention for what comes next: the incremental's objects
	// are locked ten days, and so must the full's be, which it needs.
	s.ok("policy", "set", "offsite", "--keep-within", "10d")
	if err := os.WriteFile(filepath.Join(src, "new.txt"), []byte("written after the full\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	incr := backup("incremental")
	tenDays := time.Now().Add(10*24*time.Hour - time.Hour)
	poll.Until(t, 15*time.Second, func() error {
		for k, l := range locks() {
			if l.until.Before(tenDays) {
				return fmt.Errorf("object %s is locked until %s; want ten days on, as the incremental that needs it", k, l.until)
			}
		}
		return nil
	})

	every := func(hold bool) func() error {
		return func() error {
			l := locks()
			if len(l) != 3 {
				return fmt.Errorf("objects %v; want the label and two parts", l)
			}
			for k, o := range l {
				if o.hold != hold {
					return fmt.Errorf("object %s legal hold %v; want %v", k, o.hold, hold)
				}
			}
			return nil
		}
	}
	// A hold on the incremental covers the full it builds on, and the label.
	incrID := strconv.FormatUint(incr.BackupID, 10)
	s.ok("backup", "hold", incrID, "--reason", "case 15")
	poll.Until(t, 15*time.Second, every(true))
	s.ok("backup", "release", incrID)
	poll.Until(t, 15*time.Second, every(false))

	// A hold on the full while the node is down is set once it is back;
	// the incremental's part stays free.
	s.storage.kill()
	s.ok("backup", "hold", strconv.FormatUint(full.BackupID, 10), "--reason", "case 16")
	s.storage.start()
	s.waitReady()
	poll.Until(t, 20*time.Second, func() error {
		l := locks()
		for k := range fullKeys {
			if !l[k].hold {
				return fmt.Errorf("object %s of the held full is not held", k)
			}
		}
		for k, o := range l {
			if _, ok := fullKeys[k]; !ok && o.hold {
				return fmt.Errorf("object %s of the incremental is held; only the full is", k)
			}
		}
		return nil
	})

	// Released while the node is down, and deleted before it is back: the
	// holds are lifted all the same, or the store refuses the volume's
	// deletion for ever once its dates have passed.
	s.storage.kill()
	s.ok("backup", "release", strconv.FormatUint(full.BackupID, 10))
	s.ok("backup", "delete", strconv.FormatUint(full.BackupID, 10), "--with-dependents", "--yes")
	s.storage.start()
	s.waitReady()
	poll.Until(t, 20*time.Second, func() error {
		for k, o := range locks() {
			if o.hold {
				return fmt.Errorf("object %s of a released and deleted backup is still under legal hold", k)
			}
		}
		return nil
	})
}
