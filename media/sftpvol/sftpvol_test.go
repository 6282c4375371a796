package sftpvol

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/internal/sshdtest"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/media/volume/volumetest"
)

// fastRetry keeps a test of an absent target short.
var fastRetry = Retry{Attempts: 4, Backoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, DialTimeout: 5 * time.Second}

func testConfig(s *sshdtest.Server, dir string) Config {
	return Config{Pool: "Offsite", Host: s.Host, Port: s.Port, User: s.User, KeyFile: s.KeyFile, KnownHosts: s.KnownHosts, Dir: dir, Retry: fastRetry}
}

func testPool(t *testing.T, cfg Config) *Pool {
	t.Helper()
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func newVolume(t *testing.T, p *Pool, name string) *Appender {
	t.Helper()
	ctx := context.Background()
	id := uuid.New()
	if err := p.Create(ctx, name, volume.Label{VolumeID: id, BlockSize: volume.MinBlockSize, MediaType: "sftp", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	a, err := p.OpenAppend(ctx, name, id, volume.MinBlockSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// An SFTP volume keeps the Appender contract the session writer relies
// on, written and read back over SFTP from a real sshd.
func TestAppenderContract(t *testing.T) {
	s := sshdtest.Start(t)
	outer := t // the pools outlive the subtest that makes each
	pools := map[int64]*Pool{}
	byID := map[uuid.UUID]struct {
		p    *Pool
		name string
	}{}
	n := 0
	volumetest.TestAppender(t, volumetest.Medium{
		New: func(t *testing.T, limit int64) volume.Appender {
			p := pools[limit]
			if p == nil {
				cfg := testConfig(s, filepath.Join(s.Dir, fmt.Sprint(limit)))
				cfg.MaxVolumeBytes = limit
				p = testPool(outer, cfg)
				pools[limit] = p
			}
			n++
			name := fmt.Sprintf("Contract-%04d", n)
			a := newVolume(t, p, name)
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
			t.Cleanup(func() { r.Close() })
			return r, r.Size()
		},
	})
}

// Create leaves a whole volume under its name and nothing under a
// temporary one, and never replaces a volume that exists.
func TestCreateRenamesAndNeverOverwrites(t *testing.T) {
	s := sshdtest.Start(t)
	p := testPool(t, testConfig(s, filepath.Join(s.Dir, "vols")))
	a := newVolume(t, p, "Offsite-0001")
	if _, err := a.Write(bytes.Repeat([]byte{7}, volume.MinBlockSize)); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	err := p.Create(context.Background(), "Offsite-0001", volume.Label{VolumeID: uuid.New(), BlockSize: volume.MinBlockSize, Created: time.Now()})
	if err == nil {
		t.Fatal("Create replaced a volume that exists")
	}
	ents, _ := os.ReadDir(filepath.Join(s.Dir, "vols"))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"Offsite-0001.cvol"}) {
		t.Fatalf("the remote directory holds %v", names)
	}
	if st, _ := os.Stat(filepath.Join(s.Dir, "vols", "Offsite-0001.cvol")); st.Size() != 2*volume.MinBlockSize {
		t.Fatalf("the existing volume is %d bytes after a refused Create", st.Size())
	}
}

// A target whose host key known_hosts does not vouch for is refused, with
// the fingerprint it showed and the one expected; a target known_hosts
// does not name is refused with the fingerprint to check.
func TestHostKeyChecked(t *testing.T) {
	s := sshdtest.Start(t)
	seen := ssh.FingerprintSHA256(s.HostKey)

	cfg := testConfig(s, filepath.Join(s.Dir, "vols"))
	var other ssh.PublicKey
	cfg.KnownHosts, other = s.WrongKnownHosts(t)
	_, err := testPool(t, cfg).OpenRead(context.Background(), "X")
	var hk *HostKeyError
	if !errors.As(err, &hk) {
		t.Fatalf("a changed host key gave %v, want a *HostKeyError", err)
	}
	if hk.Seen != seen || !slices.Equal(hk.Expected, []string{ssh.FingerprintSHA256(other)}) {
		t.Fatalf("host key error saw %s expecting %v; the target's key is %s, known_hosts names %s", hk.Seen, hk.Expected, seen, ssh.FingerprintSHA256(other))
	}
	t.Log(err)

	cfg.KnownHosts = filepath.Join(t.TempDir(), "empty_known_hosts")
	if err := os.WriteFile(cfg.KnownHosts, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = testPool(t, cfg).OpenRead(context.Background(), "X")
	if !errors.As(err, &hk) || hk.Seen != seen || len(hk.Expected) != 0 {
		t.Fatalf("an unknown host gave %v, want a *HostKeyError naming %s", err, seen)
	}
	t.Log(err)

	// A known_hosts file that is not there is said so at once, not taken
	// for an absent target.
	cfg.KnownHosts = filepath.Join(t.TempDir(), "missing")
	cfg.Retry.Backoff = time.Hour
	_, err = testPool(t, cfg).OpenRead(context.Background(), "X")
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), cfg.KnownHosts) {
		t.Fatalf("a missing known_hosts file gave %v", err)
	}
}

// A user key the target does not authorize is refused at once, not
// retried as an absent target.
func TestWrongUserKeyRefused(t *testing.T) {
	s := sshdtest.Start(t)
	cfg := testConfig(s, filepath.Join(s.Dir, "vols"))
	cfg.KeyFile = sshdtest.NewKey(t)
	cfg.Retry.Backoff = time.Hour // a retry would hang the test
	_, err := testPool(t, cfg).OpenRead(context.Background(), "X")
	var ae *AuthError
	if !errors.As(err, &ae) || ae.KeyFile != cfg.KeyFile {
		t.Fatalf("a wrong user key gave %v, want an *AuthError naming the key", err)
	}
	t.Log(err)
}

// The target's session process killed between two writes (the connection
// drops) does not fail the upload: the next write redials and goes on at
// the same offset, and the file holds exactly what was written.
func TestWriteResumesAfterSessionKilled(t *testing.T) {
	s := sshdtest.Start(t)
	p := testPool(t, testConfig(s, filepath.Join(s.Dir, "vols")))
	a := newVolume(t, p, "Offsite-0001")
	rnd := rand.NewChaCha8([32]byte{'c', 'u', 't'})
	var written []byte
	write := func() {
		t.Helper()
		b := make([]byte, 3*volume.MinBlockSize)
		rnd.Read(b)
		if _, err := a.Write(b); err != nil {
			t.Fatal(err)
		}
		written = append(written, b...)
	}
	write()
	write()
	if s.KillSessions(t) == 0 {
		t.Fatal("no session process to kill")
	}
	write()
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	if p.dials.Load() < 2 {
		t.Fatalf("the pool dialled %d times: the connection was not cut", p.dials.Load())
	}
	got, err := os.ReadFile(filepath.Join(s.Dir, "vols", "Offsite-0001.cvol"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[volume.MinBlockSize:], written) {
		t.Fatalf("the remote volume holds %d bytes past its label, not the %d written", len(got)-volume.MinBlockSize, len(written))
	}
}

// A target that goes away and stays away fails the write with an
// *UnreachableError naming it, after the retries.
func TestTargetGoneFailsClearly(t *testing.T) {
	s := sshdtest.Start(t)
	p := testPool(t, testConfig(s, filepath.Join(s.Dir, "vols")))
	a := newVolume(t, p, "Offsite-0001")
	s.Stop()
	_, err := a.Write(make([]byte, volume.MinBlockSize))
	var ue *UnreachableError
	if !errors.As(err, &ue) || ue.Addr != s.Addr() {
		t.Fatalf("writing to a stopped target gave %v, want an *UnreachableError naming %s", err, s.Addr())
	}
	t.Log(err)
}

// Opening a volume for appending cuts off what an unfinished session left
// past the committed end, and refuses a file shorter than it.
func TestOpenAppendKeepsTheCommittedEnd(t *testing.T) {
	s := sshdtest.Start(t)
	p := testPool(t, testConfig(s, filepath.Join(s.Dir, "vols")))
	a := newVolume(t, p, "Offsite-0001")
	id := a.VolumeID()
	if _, err := a.Write(make([]byte, 3*volume.MinBlockSize)); err != nil {
		t.Fatal(err)
	}
	a.Close()
	ctx := context.Background()
	b, err := p.OpenAppend(ctx, "Offsite-0001", id, 2*volume.MinBlockSize)
	if err != nil {
		t.Fatal(err)
	}
	if b.TornBytes != 2*volume.MinBlockSize || b.Offset() != 2*volume.MinBlockSize {
		t.Fatalf("torn %d at %d", b.TornBytes, b.Offset())
	}
	b.Close()
	if st, _ := os.Stat(filepath.Join(s.Dir, "vols", "Offsite-0001.cvol")); st.Size() != 2*volume.MinBlockSize {
		t.Fatalf("the volume is %d bytes after the torn tail was cut", st.Size())
	}
	if _, err := p.OpenAppend(ctx, "Offsite-0001", id, 4*volume.MinBlockSize); !errors.Is(err, ErrMissingData) {
		t.Fatalf("a volume shorter than its committed end gave %v", err)
	}
	if _, err := p.OpenAppend(ctx, "Offsite-0001", uuid.New(), 2*volume.MinBlockSize); !errors.Is(err, ErrWrongVolume) {
		t.Fatalf("another volume's id gave %v", err)
	}
}

// Close stops a redial that waits out its backoff: a node that stops does
// not wait for a target that is gone.
func TestCloseStopsARedial(t *testing.T) {
	s := sshdtest.Start(t)
	cfg := testConfig(s, filepath.Join(s.Dir, "vols"))
	cfg.Retry.Backoff = time.Hour
	p := testPool(t, cfg)
	a := newVolume(t, p, "Offsite-0001")
	s.Stop()
	failed := make(chan error, 1)
	go func() {
		_, err := a.Write(make([]byte, volume.MinBlockSize))
		failed <- err
	}()
	// The write is in its backoff once the pool's lock is held.
	poll.Until(t, 10*time.Second, func() error {
		if p.links[0].mu.TryLock() {
			p.links[0].mu.Unlock()
			return errors.New("the write is not redialling")
		}
		return nil
	})
	closed := make(chan struct{})
	go func() {
		p.Close()
		close(closed)
	}()
	var err error
	poll.Until(t, 5*time.Second, func() error {
		select {
		case err = <-failed:
		default:
			return errors.New("the write still waits")
		}
		<-closed
		return nil
	})
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("the write cut off by Close failed with %v", err)
	}
}

// With no key file, the pool logs in with the keys of the ssh-agent at
// $SSH_AUTH_SOCK (a real OpenSSH ssh-agent): one that holds the user's key
// is let in; one that holds only another key is refused as a wrong key
// is, naming the agent; no agent at all says to configure one.
func TestSSHAgentLogsIn(t *testing.T) {
	s := sshdtest.Start(t)
	cfg := testConfig(s, filepath.Join(s.Dir, "vols"))
	cfg.KeyFile = ""
	cfg.Retry.Backoff = time.Hour // a retry would hang the test

	t.Setenv("SSH_AUTH_SOCK", sshdtest.Agent(t, s.KeyFile))
	p := testPool(t, cfg)
	a := newVolume(t, p, "Offsite-0001")
	data := bytes.Repeat([]byte("agent"), volume.MinBlockSize)
	if _, err := a.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	// A second connection (a dropped one redialled) logs in the same way.
	if s.KillSessions(t) == 0 {
		t.Fatal("no session process to kill")
	}
	if _, err := a.Write(data); err != nil {
		t.Fatalf("a redial through the agent: %v", err)
	}
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}

	t.Setenv("SSH_AUTH_SOCK", sshdtest.Agent(t, sshdtest.NewKey(t)))
	_, err := testPool(t, cfg).OpenRead(context.Background(), "X")
	var ae *AuthError
	if !errors.As(err, &ae) || ae.KeyFile != "" || !strings.Contains(err.Error(), "ssh-agent") {
		t.Fatalf("an agent without the user's key gave %v, want an *AuthError naming the agent", err)
	}
	t.Log(err)

	t.Setenv("SSH_AUTH_SOCK", "")
	_, err = testPool(t, cfg).OpenRead(context.Background(), "X")
	if !errors.As(err, &ae) || !ae.NoAgent || !strings.Contains(err.Error(), "set key_file") {
		t.Fatalf("no agent gave %v, want an *AuthError saying to set key_file or run an agent", err)
	}
	t.Log(err)
}
