package catalog

import (
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/fileindex"
)

// Jobs whose backups expired, and failed ones with their aborted backups,
// go once they ended before the limit, with their logs, index entries and
// counts; a job whose backup is in the catalog, and a running one, stay.
// The plan pages through the jobs; the command checks each job again.
func TestPruneJobs(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	entries := []fileindex.Entry{dir("/srv"), file("/srv/a", 1)}
	kept := c.backup(LevelFull, entries)
	expired := c.backup(LevelFull, entries)
	c.must(&Command{Op: OpExpireBackups, Expire: &BackupsExpire{Backups: []ExpiringBackup{{ID: expired, Reason: "test"}}, By: "alice", Manual: true}})
	failed := c.startBackup(LevelFull)
	c.must(&Command{Op: OpAppendJobLog, JobLog: &JobLog{JobID: failed, Lines: []LogLine{{Level: "error", Msg: "disk on fire"}}}})
	c.must(&Command{Op: OpAbortBackup, Abort: &BackupAbort{BackupID: failed, Code: "io_error", Msg: "disk on fire"}})
	running := c.startBackup(LevelFull)
	limit := c.clock.Add(time.Minute)

	if ids, next, err := c.s.PrunableJobs(limit.Add(-time.Hour), 0, 10); err != nil || len(ids) != 0 || next != 0 {
		t.Fatalf("ended after the limit: %v, %d, %v", ids, next, err)
	}
	var ids []uint64
	for after := uint64(0); ; {
		page, next, err := c.s.PrunableJobs(limit, after, 1)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, page...)
		if next == 0 {
			break
		}
		after = next
	}
	if !slices.Equal(ids, []uint64{expired, failed}) {
		t.Fatalf("prunable %v, want %d and %d", ids, expired, failed)
	}
	before, err := c.s.Counts()
	if err != nil {
		t.Fatal(err)
	}
	res := c.must(&Command{Op: OpPruneJobs, PruneJobs: &JobsPrune{IDs: []uint64{kept, expired, failed, running}, EndedBefore: limit}})
	if res.Pruned != 2 {
		t.Fatalf("pruned %d, want 2", res.Pruned)
	}
	jobs, err := c.s.Jobs(JobFilter{Client: "web1"})
	if err != nil {
		t.Fatal(err)
	}
	var left []uint64
	for _, j := range jobs {
		left = append(left, j.ID)
	}
	slices.Sort(left)
	if !slices.Equal(left, []uint64{kept, running}) {
		t.Fatalf("jobs left %v, want %d and %d", left, kept, running)
	}
	for _, id := range []uint64{expired, failed} {
		if _, err := c.s.Job(id); err == nil {
			t.Fatalf("job %d is still there", id)
		}
		if _, err := c.s.Backup(id); err == nil {
			t.Fatalf("backup %d is still there", id)
		}
	}
	if err := c.s.view(func(tx *bbolt.Tx) error {
		k, _ := tx.Bucket(bJobLog).Cursor().Seek(u64(failed))
		if k != nil && binary.BigEndian.Uint64(k[:8]) == failed {
			t.Errorf("job %d's log is still there", failed)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	after, err := c.s.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if after.Jobs[JobSuccess] != before.Jobs[JobSuccess]-1 || after.Jobs[JobFailed] != before.Jobs[JobFailed]-1 ||
		after.Backups[BackupAborted] != before.Backups[BackupAborted]-1 {
		t.Fatalf("counts before %+v, after %+v", before, after)
	}
	checkTimeIndex(t, c.s)
	// Again: nothing left to prune, and the command changes nothing.
	if res := c.must(&Command{Op: OpPruneJobs, PruneJobs: &JobsPrune{IDs: []uint64{expired, failed}, EndedBefore: limit}}); res.Pruned != 0 {
		t.Fatalf("pruned %d again", res.Pruned)
	}
	c.refused(CodeInvalidArgument, &Command{Op: OpPruneJobs, PruneJobs: &JobsPrune{IDs: make([]uint64, MaxJobsPrune+1), EndedBefore: limit}})
}

// The scan ends at the first job created at or after the limit: no job
// made since can have ended before it, so the job history's own jobs are
// not read (a record past that point that does not decode shows it).
func TestPrunableJobsStopAtTheLimit(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	failed := c.startBackup(LevelFull)
	c.must(&Command{Op: OpAbortBackup, Abort: &BackupAbort{BackupID: failed, Code: "io_error", Msg: "disk on fire"}})
	limit := c.clock.Add(30 * time.Second)
	recent := c.startBackup(LevelFull) // created a minute after the limit
	c.must(&Command{Op: OpAbortBackup, Abort: &BackupAbort{BackupID: recent, Code: "io_error", Msg: "disk on fire"}})
	c.s.mu.RLock()
	err := c.s.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bJobs).Put(u64(recent+100), []byte("{not a job"))
	})
	c.s.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	ids, next, err := c.s.PrunableJobs(limit, 0, 10)
	if err != nil || !slices.Equal(ids, []uint64{failed}) || next != 0 {
		t.Fatalf("prunable %v, next %d, %v; want [%d], 0 and no error", ids, next, err, failed)
	}
}
