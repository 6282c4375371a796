package integration

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// The tests that cut a backup off in its middle (a role killed with
// SIGKILL, or stopped with a signal, and started again) share these: a
// tree that takes long enough to stream, the wait until the backup
// streams, the kill and the wait until the job is back in the queue, the
// wait for its next attempt, and the restore that checks it.

// randomFilesTree writes n files of size random bytes into a new
// directory, and returns it with its snapshot.
func randomFilesTree(t *testing.T, n, size int, seed uint64) (string, *sample.Manifest) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "big")
	writeRandomFiles(t, dir, n, size, seed)
	return dir, snapshot(t, dir)
}

// startBackup starts a full backup of dir (extra: more arguments of
// 'cairn backup') without waiting for it.
func (s *stack) startBackup(dir string, extra ...string) uint64 {
	s.t.Helper()
	var started wire.JobStarted
	s.json(&started, append([]string{"backup", "--client", s.client, "--path", dir, "--level", "full"}, extra...)...)
	return started.JobID
}

// startStreaming starts a full backup of dir, and waits until it streams.
func (s *stack) startStreaming(dir string) uint64 {
	s.t.Helper()
	id := s.startBackup(dir)
	s.waitStreaming(id, 30*time.Second, nil)
	return id
}

// waitJob waits until ok says yes of job id as 'job show' tells it (a
// 'job show' that fails, while a server is away, is asked again), and
// returns the job.
func (s *stack) waitJob(id uint64, timeout time.Duration, ok func(wire.JobInfo) error) wire.JobInfo {
	s.t.Helper()
	var j wire.JobInfo
	poll.Until(s.t, timeout, func() error {
		if err := s.tryJSON(&j, "job", "show", strconv.FormatUint(id, 10)); err != nil {
			return err
		}
		return ok(j)
	})
	return j
}

// waitStreaming waits until backup id runs and has streamed something,
// and ready (when not nil) says yes of it. A backup that ended first fails
// the test: its tree was too small, or its agent too fast, to cut it off
// in its middle.
func (s *stack) waitStreaming(id uint64, timeout time.Duration, ready func(wire.JobInfo) error) wire.JobInfo {
	s.t.Helper()
	return s.waitJob(id, timeout, func(j wire.JobInfo) error {
		switch j.State {
		case "running":
		case "queued":
			return fmt.Errorf("job %d is queued: %s", id, j.Waiting)
		default:
			s.t.Fatalf("job %d ended (%s: %s) before it could be interrupted; make its tree bigger or the agent slower: %+v", id, j.State, j.Error, j)
		}
		if j.Progress == nil || j.Progress.Bytes == 0 {
			return fmt.Errorf("job %d shows no progress yet", id)
		}
		if ready != nil {
			return ready(j)
		}
		return nil
	})
}

// waitEnded waits for a job to leave the queue and the running state.
func (s *stack) waitEnded(id uint64, timeout time.Duration) wire.JobInfo {
	s.t.Helper()
	return s.waitJob(id, timeout, func(j wire.JobInfo) error {
		if j.State == "queued" || j.State == "running" {
			return fmt.Errorf("job %d is %s (attempt %d, waiting %q)", id, j.State, j.Attempt, j.Waiting)
		}
		return nil
	})
}

// killMidBackup kills p with SIGKILL in the middle of backup id, and
// waits until the job is back in the queue, saying what it waits for; it
// returns the job then and when p was killed.
func (s *stack) killMidBackup(p *proc, id uint64) (wire.JobInfo, time.Time) {
	s.t.Helper()
	kill(p)
	killed := time.Now()
	j := s.waitJob(id, 20*time.Second, func(j wire.JobInfo) error {
		if j.State != "queued" || j.Waiting == "" {
			return fmt.Errorf("job %d is %s (waiting %q) %s after %s was killed", id, j.State, j.Waiting, time.Since(killed).Round(time.Millisecond), p.name)
		}
		return nil
	})
	s.t.Logf("job %d requeued %s after %s was killed, waiting: %s", id, time.Since(killed).Round(time.Millisecond), p.name, j.Waiting)
	return j, killed
}

// waitRetried waits for the next attempt of backup id, whose first was cut
// off, to end, and fails the test unless it succeeded as attempt 2.
func (s *stack) waitRetried(id uint64, timeout time.Duration) wire.JobInfo {
	s.t.Helper()
	j := s.waitEnded(id, timeout)
	if j.State != "success" || j.Attempt != 2 {
		s.t.Fatalf("backup %d, cut off in its first attempt, ended %s at attempt %d: %s\n%s", id, j.State, j.Attempt, j.Error, jobLogText(j))
	}
	return j
}

// checkNoneComplete fails the test if a backup of the stack's client is
// complete, but those of keep: what was cut off (what, to the reader) must
// never be.
func (s *stack) checkNoneComplete(what string, keep ...uint64) {
	s.t.Helper()
	var backups []wire.BackupInfo
	s.json(&backups, "backup", "list", "--client", s.client)
	for _, b := range backups {
		if !slices.Contains(keep, b.ID) && b.State == "complete" {
			s.t.Errorf("%s is listed as complete: %+v", what, b)
		}
	}
}

// checkBackupRestores restores backup id and holds what comes back to
// want, the snapshot of src.
func (s *stack) checkBackupRestores(backupID uint64, want *sample.Manifest, src string) {
	s.t.Helper()
	to := filepath.Join(s.t.TempDir(), "restored")
	s.restore(to, "--backup", strconv.FormatUint(backupID, 10))
	checkRestored(s.t, want, to, src)
}
