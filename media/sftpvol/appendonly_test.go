package sftpvol

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pkg/sftp"

	"github.com/cairnbackup/cairn/internal/sshdtest"
	"github.com/cairnbackup/cairn/media/volume"
)

// rawClient logs in to s as the pool does, with the node's own key, for
// a test to try what a compromised backup server would.
func rawClient(t *testing.T, s *sshdtest.Server) *sftp.Client {
	t.Helper()
	c, err := sftp.NewClient(s.Dial(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// appendOnlyPool is a pool on an append-only sshd, told so.
func appendOnlyPool(t *testing.T) (*sshdtest.Server, *Pool) {
	s := sshdtest.StartWith(t, sshdtest.Options{AppendOnly: true})
	cfg := testConfig(s, s.Dir)
	cfg.AppendOnly = true
	return s, testPool(t, cfg)
}

// On an append-only target (sshd set up as DESIGN.md tells the target's
// administrator) a volume is written whole, once, under its name; then
// neither the pool nor anyone with the node's key can delete, rename,
// cut or overwrite it, and the pool leaves its deletion to the owner.
func TestAppendOnlyTargetKeepsAWrittenVolume(t *testing.T) {
	s, p := appendOnlyPool(t)
	ctx := context.Background()
	a := newVolume(t, p, "Vault-0001")
	id := a.VolumeID()
	data := bytes.Repeat([]byte("offsite!"), 3*volume.MinBlockSize/8)
	if _, err := a.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := a.Truncate(volume.MinBlockSize); !errors.Is(err, ErrSealed) {
		t.Fatalf("cutting back a volume on an append-only target gave %v, want ErrSealed", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(s.Dir, "Vault-0001.cvol")
	want, err := os.ReadFile(local)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want[volume.MinBlockSize:], data) {
		t.Fatal("the volume on the target does not hold what was written")
	}
	if ents, _ := os.ReadDir(s.Dir); len(ents) != 1 {
		t.Fatalf("the target holds %d files, want the volume alone (no temporary name)", len(ents))
	}

	// The pool itself: no second opening, no deletion, no re-creation.
	if _, err := p.OpenAppend(ctx, "Vault-0001", id, int64(volume.MinBlockSize+len(data))); !errors.Is(err, ErrSealed) {
		t.Fatalf("reopening a written volume for appending gave %v, want ErrSealed", err)
	}
	if err := p.Delete(ctx, "Vault-0001", id); !errors.Is(err, ErrOwnerReclaims) {
		t.Fatalf("deleting on an append-only target gave %v, want ErrOwnerReclaims", err)
	}
	if err := p.Create(ctx, "Vault-0001", volume.Label{VolumeID: uuid.New(), BlockSize: volume.MinBlockSize, MediaType: "sftp", Created: time.Now()}); err == nil {
		t.Fatal("creating a volume over a written one succeeded")
	}

	// Anyone holding the node's key, over plain SFTP: the server refuses.
	c := rawClient(t, s)
	remote := path.Join(s.Dir, "Vault-0001.cvol")
	tries := map[string]func() error{
		"remove":            func() error { return c.Remove(remote) },
		"rename":            func() error { return c.Rename(remote, remote+".old") },
		"posix-rename":      func() error { return c.PosixRename(remote, remote+".old") },
		"truncate":          func() error { return c.Truncate(remote, 0) },
		"chmod":             func() error { return c.Chmod(remote, 0o644) },
		"open for writing":  func() error { f, err := c.OpenFile(remote, os.O_WRONLY); closeIf(f); return err },
		"open and truncate": func() error { f, err := c.OpenFile(remote, os.O_WRONLY|os.O_TRUNC); closeIf(f); return err },
		"create over it":    func() error { f, err := c.Create(remote); closeIf(f); return err },
		"link over it":      func() error { return c.Link(remote, remote+".link") },
	}
	for what, try := range tries {
		if err := try(); err == nil {
			t.Errorf("%s of a written volume with the node's own key: the target allowed it", what)
		}
	}
	got, err := os.ReadFile(local)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the volume changed on the target")
	}
	if ents, _ := os.ReadDir(s.Dir); len(ents) != 1 {
		t.Fatalf("the target holds %d files after the attempts, want the volume alone", len(ents))
	}
	// Reading is what the node still may do, for restores.
	r, err := p.OpenRead(ctx, "Vault-0001")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	back := make([]byte, len(data))
	if _, err := r.ReadAt(back, volume.MinBlockSize); err != nil || !bytes.Equal(back, data) {
		t.Fatalf("reading the volume back: %v", err)
	}
}

func closeIf(f *sftp.File) {
	if f != nil {
		f.Close()
	}
}

// The connection cut while a volume is written on an append-only target
// is not redone there (no one may reopen the file for writing): the write
// fails with ErrSealed, and the caller's session fails rather than
// leaving a half volume recorded.
func TestAppendOnlyCutSealsTheVolume(t *testing.T) {
	s, p := appendOnlyPool(t)
	a := newVolume(t, p, "Vault-0001")
	if _, err := a.Write(make([]byte, volume.MinBlockSize)); err != nil {
		t.Fatal(err)
	}
	if s.KillSessions(t) == 0 {
		t.Fatal("no session process to kill")
	}
	if _, err := a.Write(make([]byte, volume.MinBlockSize)); !errors.Is(err, ErrSealed) {
		t.Fatalf("a write after the cut gave %v, want ErrSealed", err)
	}
}
