package storagenode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/corrupt"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/internal/sshdtest"
	"github.com/cairnbackup/cairn/media/sftpvol"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/ticket"
	"golang.org/x/crypto/ssh"
)

// sftpCase is pool P on a real sshd on loopback; the target is this
// machine, so a test checks its files where sshd writes them.
func sftpCase(t testing.TB, cfg *Config) { sftpOn(nil, nil)(t, cfg) }

// sftpOn is sftpCase that hands the test its sshd and lets it change the
// pool's configuration.
func sftpOn(srv **sshdtest.Server, tweak func(testing.TB, *sshdtest.Server, *SFTPPoolConfig)) func(testing.TB, *Config) {
	return func(t testing.TB, cfg *Config) {
		s := sshdtest.Start(t)
		if srv != nil {
			*srv = s
		}
		dir := filepath.Join(s.Dir, "P")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		p := SFTPPoolConfig{Name: "P", Host: s.Host, Port: s.Port, User: s.User, KeyFile: s.KeyFile, KnownHosts: s.KnownHosts, Dir: dir}
		if tweak != nil {
			tweak(t, s, &p)
		}
		cfg.SFTPPools = append(cfg.SFTPPools, p)
	}
}

// sftpPoolP is how the fake servers grant pool P's volumes: as a disk
// pool's, which the node labels, with the sftp medium type.
var sftpPoolP = fakePool{name: "P", mediaType: "sftp", compression: true, newVolumes: true}

func retry(r sftpvol.Retry) func(testing.TB, *sshdtest.Server, *SFTPPoolConfig) {
	return func(_ testing.TB, _ *sshdtest.Server, c *SFTPPoolConfig) { c.Retry = r }
}

// A backup to a target whose host key changed, or that refuses the
// node's user key, fails at once with the reason (the fingerprints seen
// and expected; the key refused), and writes nothing there.
func TestSFTPBackupRefusesAWrongHostKeyOrUserKey(t *testing.T) {
	for _, c := range []struct {
		name  string
		tweak func(testing.TB, *sshdtest.Server, *SFTPPoolConfig)
		want  func(s *sshdtest.Server, c SFTPPoolConfig) []string
	}{
		{"host key", func(t testing.TB, s *sshdtest.Server, c *SFTPPoolConfig) { c.KnownHosts, _ = s.WrongKnownHosts(t) },
			func(s *sshdtest.Server, _ SFTPPoolConfig) []string {
				return []string{"host key of " + s.Addr() + " changed", ssh.FingerprintSHA256(s.HostKey)}
			}},
		{"user key", func(t testing.TB, _ *sshdtest.Server, c *SFTPPoolConfig) { c.KeyFile = sshdtest.NewKey(t) },
			func(s *sshdtest.Server, c SFTPPoolConfig) []string {
				return []string{s.Addr() + " refused user " + s.User, c.KeyFile}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var s *sshdtest.Server
			r := newMediaRig(t, mediumCase{name: "sftp", servers: sftpPoolP, pool: sftpOn(&s, func(t testing.TB, s *sshdtest.Server, p *SFTPPoolConfig) {
				c.tweak(t, s, p)
				p.Retry.Backoff = time.Hour // a retry would hang the test
			})})
			if _, err := r.sendFiles(1, randomFiles(9, 2, 10<<10), sendOpts{}); err == nil {
				t.Fatal("the backup succeeded")
			}
			poll.Until(t, 20*time.Second, func() error {
				r.fake.mu.Lock()
				defer r.fake.mu.Unlock()
				if len(r.fake.aborts) == 0 {
					return errors.New("the failed session was not reported")
				}
				for _, w := range c.want(s, r.node.cfg.SFTPPools[0]) {
					if msg := r.fake.aborts[0].Error.Message; !strings.Contains(msg, w) {
						return fmt.Errorf("the session failed with %q, which does not say %q", msg, w)
					}
				}
				return nil
			})
			if ents, _ := os.ReadDir(r.node.cfg.SFTPPools[0].Dir); len(ents) != 0 {
				t.Fatalf("the target holds %d files", len(ents))
			}
			t.Log(r.fake.aborts[0].Error.Message)
		})
	}
}

// backupCut backs fs up as job, and calls cut once the target holds
// some of the stream (more than a label and a MiB), with half the files
// still to send. It returns what the node answers at the end.
func backupCut(t *testing.T, r *nodeRig, job uint64, fs []testFile, cut func()) error {
	conn, err := r.open(r.ticket(job, ticket.OpBackup))
	if err != nil {
		return err
	}
	defer conn.Close()
	dir := r.node.cfg.SFTPPools[0].Dir
	for i, f := range fs {
		if i == len(fs)/2 {
			poll.Until(t, 20*time.Second, func() error {
				var n int64
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					if info, err := e.Info(); err == nil {
						n += info.Size()
					}
				}
				if n < int64(r.fake.bs)+1<<20 {
					return fmt.Errorf("the target holds %d bytes", n)
				}
				return nil
			})
			cut()
		}
		if err := conn.WriteFrame(dataplane.FrameRecords, appendFile(nil, f)); err != nil {
			return err
		}
	}
	_, err = endBackup(conn, len(fs))
	return err
}

// The target's session process killed in the middle of a backup (the
// SSH connection drops under the upload) does not lose the backup: the
// node redials and writes on where it was, and the backup restores whole
// straight from the SFTP pool.
func TestSFTPBackupGoesOnAfterTheConnectionIsCut(t *testing.T) {
	var s *sshdtest.Server
	r := newMediaRig(t, mediumCase{name: "sftp", servers: sftpPoolP, pool: sftpOn(&s, retry(sftpvol.Retry{Backoff: 50 * time.Millisecond}))})
	backupKilledRestores(t, r, s, randomFiles(7, 16, 400<<10), func() {})
}

// backupKilledRestores backs fs up as job 1, killing the target's session
// processes mid-way (after before, which sees them), and checks that the
// backup committed, restores whole, and that the volume ends at its
// committed end.
func backupKilledRestores(t *testing.T, r *nodeRig, s *sshdtest.Server, fs []testFile, before func()) {
	t.Helper()
	killed := 0
	if err := backupCut(t, r, 1, fs, func() {
		before()
		killed = s.KillSessions(t)
	}); err != nil {
		t.Fatal(err)
	}
	if killed == 0 {
		t.Fatal("no SSH session to kill: the cut did not happen")
	}
	r.fake.commit(t, 1)
	rr := r.fake.readRequest(t, 1)
	r.restore(2, rr).check(t, rr, fs, noLoss, "")
	sftpRolledBack(t, r)
}

// A target that goes away in the middle of a backup and stays away fails
// the backup with a reason that names it, and nothing of the backup is
// committed.
func TestSFTPTargetGoneFailsTheBackupClearly(t *testing.T) {
	var s *sshdtest.Server
	r := newMediaRig(t, mediumCase{name: "sftp", servers: sftpPoolP, pool: sftpOn(&s, retry(sftpvol.Retry{Attempts: 3, Backoff: 20 * time.Millisecond}))})
	err := backupCut(t, r, 1, randomFiles(8, 16, 400<<10), s.Stop)
	if err == nil {
		t.Fatal("the backup succeeded with its target gone")
	}
	poll.Until(t, 20*time.Second, func() error {
		r.fake.mu.Lock()
		defer r.fake.mu.Unlock()
		if len(r.fake.aborts) == 0 {
			return errors.New("the failed session was not reported")
		}
		if msg := r.fake.aborts[0].Error.Message; !strings.Contains(msg, "unreachable") || !strings.Contains(msg, s.Addr()) {
			return fmt.Errorf("the session failed with %q, which does not say that %s is unreachable", msg, s.Addr())
		}
		return nil
	})
	r.fake.mu.Lock()
	defer r.fake.mu.Unlock()
	if len(r.fake.commits) != 0 {
		t.Fatalf("commits %+v with the target gone", r.fake.commits)
	}
	t.Log(r.fake.aborts[0].Error.Message)
}

// A volume file changed on the target behind Cairn's back is found when
// it is read: the entries of the changed block are named lost with the
// block, and the others come back whole.
func TestSFTPVolumeChangedOnTheTargetIsFoundOnRead(t *testing.T) {
	r := newMediaRig(t, mediumCase{name: "sftp", servers: sftpPoolP, pool: sftpCase})
	fs := mixedFiles()
	if _, err := r.sendFiles(1, fs, sendOpts{}); err != nil {
		t.Fatal(err)
	}
	rr := r.fake.readRequest(t, 1)
	const bad = 3
	path := filepath.Join(r.node.cfg.SFTPPools[0].Dir, rr.Parts[0].Volume+".cvol")
	corrupt.FlipByte(t, path, blockOffset(t, path, rr.Parts[0], bad)+volume.HeaderSize+100)
	res := r.restore(2, rr)
	res.check(t, rr, fs, func(l fileindex.Location) bool { return l.Seq <= bad && bad <= l.EndSeq }, fmt.Sprintf("block seq %d", bad))
	if len(res.lost) == 0 {
		t.Fatal("nothing was found changed")
	}
	t.Logf("lost: %v", res.lost)
}

// sftpRolledBack: every remote volume file ends at its committed end, and
// no file is left under a temporary name.
func sftpRolledBack(t testing.TB, r *nodeRig) {
	dir := r.node.cfg.SFTPPools[0].Dir
	r.fake.mu.Lock()
	defer r.fake.mu.Unlock()
	for _, v := range r.fake.vols {
		st, err := os.Stat(filepath.Join(dir, v.name+".cvol"))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != v.end {
			t.Fatalf("volume %s is %d bytes long on the target; %d are committed", v.name, st.Size(), v.end)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(r.fake.vols) {
		t.Fatalf("the target holds %d files for %d volumes", len(ents), len(r.fake.vols))
	}
}

// The heartbeat asks every pool for its usage: an SFTP pool answers at
// once, with its target's figures once it has them, and still at once
// when the target is gone and redialling it would wait an hour.
func TestSFTPUsageNeverHoldsTheHeartbeat(t *testing.T) {
	var s *sshdtest.Server
	r := newMediaRig(t, mediumCase{name: "sftp", servers: sftpPoolP, pool: sftpOn(&s, func(_ testing.TB, _ *sshdtest.Server, p *SFTPPoolConfig) {
		p.Retry = sftpvol.Retry{Attempts: 10, Backoff: time.Hour}
	})})
	m := r.node.byPool["P"]
	poll.Until(t, 10*time.Second, func() error {
		if u, ok := m.usage(); !ok || u.TotalBytes == 0 || u.Name != "P" {
			return fmt.Errorf("usage %+v, %v", u, ok)
		}
		return nil
	})
	s.Stop()
	for range 3 {
		done := make(chan struct{})
		go func() {
			m.usage()
			close(done)
		}()
		poll.Until(t, 5*time.Second, func() error {
			select {
			case <-done:
				return nil
			default:
				return errors.New("usage is waiting on the gone target")
			}
		})
	}
}
