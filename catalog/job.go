package catalog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/schedule"
)

// Jobs: OpCreateJob makes a job (and a backup's Backup, its parent
// resolved here, from the catalog as of this log position), OpUpdateJob moves
// it through its states, OpAppendJobLog adds to its log. Dispatch and
// requeue are in dispatch.go, the cancel in cancel.go, accept and void in
// request.go.

func (a *applier) nextJobID() (uint64, error) {
	meta := a.tx.Bucket(bMeta)
	id := getU64(meta, keyNextJob)
	if id == 0 {
		id = 1
	}
	return id, meta.Put(keyNextJob, u64(id+1))
}

func (a *applier) createJob(j *Job, req *RequestKey) error {
	if j.Type != JobBackup && j.Type != JobRestore {
		return refuse(CodeInvalidArgument, "", "job type %q is not known: use backup or restore", j.Type)
	}
	c, err := a.client(j.Client)
	if err != nil {
		return err
	}
	if c == nil {
		return refuse(CodeUnknownClient, fmt.Sprintf("start 'cairn agent --name %s' on that host first", j.Client),
			"client %q is not known", j.Client)
	}
	job := *j
	job.Log, job.LogLines = nil, 0
	job.Started, job.Ended = time.Time{}, time.Time{}
	job.RequestID = ""
	if req != nil {
		job.RequestID = req.ID
	}
	switch job.State {
	case "":
		job.State = JobQueued
	case JobPending, JobQueued:
	case JobRunning:
		job.Started = a.now
	default:
		return refuse(CodeInvalidArgument, "", "a new job is pending, queued or running, not %s", job.State)
	}
	job.Created = a.now

	var backup *Backup
	var logLines []LogLine
	switch job.Type {
	case JobBackup:
		if job.Level == LevelSyntheticFull {
			if backup, logLines, err = a.consolidation(&job); err != nil {
				return err
			}
			break
		}
		if job.Level == "" {
			job.Level = LevelIncremental
		}
		if !job.Level.Valid() {
			return refuse(CodeInvalidArgument, "use full, incremental or differential", "backup level %q is not known", job.Level)
		}
		if len(job.Paths) == 0 {
			return refuse(CodeInvalidArgument, "give at least one path", "backup job for %s has no paths", job.Client)
		}
		pool, err := a.pool(job.Pool)
		if err != nil {
			return err
		}
		if pool == nil {
			return refuse(CodeNotFound, "list pools with 'cairn pool list'", "pool %q does not exist", job.Pool)
		}
		if job.Node != "" && !pool.Serves(job.Node) {
			return refuse(CodeInvalidArgument, "", "storage node %s does not serve pool %s", job.Node, pool.Name)
		}
		fs := FileSetOf(fileindex.Strings(job.Paths), fileindex.Strings(job.Excludes))
		chainPools, err := a.chainPools(&job, pool.Name)
		if err != nil {
			return err
		}
		var parent *Backup
		if job.Level != LevelFull {
			// As Bacula and Bareos do ("No prior Full backup Job record
			// found, upgrading to Full"): an incremental or differential
			// of a file set with no full in its pool is a full, by the
			// first rule of schedule.Promote, whose sentence the log gives.
			full, err := a.latestComplete(job.Client, fs, chainPools, true)
			if err != nil {
				return err
			}
			var chain schedule.Chain
			if full != nil {
				chain.LastFull = full.StartTime
			}
			if level, why := schedule.Promote(schedule.Level(job.Level), a.now, chain, schedule.Limits{}); level == schedule.Full {
				logLines = append(logLines, LogLine{Time: a.now, Level: "info", Msg: fmt.Sprintf(
					"%s in %s (%s %s builds only on a complete backup of the same file set, %s, in %s)",
					why, poolWords(chainPools), article(job.Level), job.Level, DescribeFileSet(fs, job.Paths, job.Excludes), chainWords(chainPools))})
				job.Level = LevelFull
			} else if parent, err = a.latestComplete(job.Client, fs, chainPools, job.Level == LevelDifferential); err != nil {
				return err
			}
		}
		backup = &Backup{
			Client: job.Client, FileSet: fs, Paths: job.Paths, Excludes: job.Excludes, Level: job.Level,
			StartTime: a.now, KeyID: pool.KeyID, Pool: pool.Name, Node: job.Node, State: BackupWriting,
		}
		if parent != nil {
			backup.Parent = parent.ID
		}
	case JobRestore:
		b, err := a.backup(job.BackupID)
		if err != nil {
			return err
		}
		if b == nil {
			return refuse(CodeNotFound, "list backups with 'cairn backup list'", "backup %d does not exist", job.BackupID)
		}
		if b.State != BackupComplete {
			return refuse(CodeWrongState, "choose a complete backup", "backup %d is %s, not complete", b.ID, b.State)
		}
		if job.Pool == "" {
			job.Pool = b.Pool
		}
		if job.Node == "" {
			job.Node = b.Node
		}
	}

	id, err := a.nextJobID()
	if err != nil {
		return err
	}
	job.ID = id
	if backup != nil {
		backup.ID = id
		job.BackupID = id
		if err := a.putBackup(nil, backup); err != nil {
			return err
		}
	}
	if err := a.appendLog(&job, logLines); err != nil {
		return err
	}
	if err := a.putJob(nil, &job); err != nil {
		return err
	}
	a.res.JobID = id
	return a.recordRequest(req, &Request{Op: OpCreateJob, JobID: id})
}

// consolidation makes the backup of a synthetic full: a full of the chain
// that ends with job.BackupID (or, when 0, the newest backup of the job's
// file set in its chain's pools), at that backup's point in time, written
// to job.Pool (the chain's full's pool when empty) by the storage node
// that holds the chain, which must serve that pool. It refuses what it
// could not run: a chain that is a full alone, or whose links are not all
// complete.
func (a *applier) consolidation(job *Job) (*Backup, []LogLine, error) {
	tip, err := a.backup(job.BackupID)
	if err != nil {
		return nil, nil, err
	}
	if job.BackupID == 0 {
		if len(job.Paths) == 0 {
			return nil, nil, refuse(CodeInvalidArgument, "name the backup or the file set to consolidate", "a synthetic full of %s names no chain", job.Client)
		}
		fs := FileSetOf(fileindex.Strings(job.Paths), fileindex.Strings(job.Excludes))
		pools := []string{job.Pool}
		if job.Pool == "" || job.Policy != "" {
			if pools, err = a.chainPools(job, job.Pool); err != nil {
				return nil, nil, err
			}
		}
		if tip, err = a.latestComplete(job.Client, fs, pools, false); err != nil {
			return nil, nil, err
		}
		if tip == nil {
			return nil, nil, refuse(CodeNotFound, fmt.Sprintf("run a full backup of %s first", job.Client),
				"client %s has no full backup of file set %s to consolidate", job.Client, DescribeFileSet(fs, job.Paths, job.Excludes))
		}
	}
	if tip == nil || tip.Client != job.Client {
		return nil, nil, refuse(CodeNotFound, "list backups with 'cairn backup list'", "client %s has no backup %d", job.Client, job.BackupID)
	}
	if tip.State != BackupComplete {
		return nil, nil, refuse(CodeWrongState, "consolidate a complete backup", "backup %d is %s, not complete", tip.ID, tip.State)
	}
	if tip.Parent == 0 {
		return nil, nil, refuse(CodeWrongState, "a synthetic full folds incrementals or differentials into their full: run backups first",
			"backup %d of client %s is a full with nothing after it to fold in", tip.ID, job.Client)
	}
	// Every link must be complete and present: the node reads them all.
	var full *Backup
	for id := tip.Parent; id != 0; {
		b, err := a.backup(id)
		if err != nil {
			return nil, nil, err
		}
		if b == nil || b.State != BackupComplete {
			return nil, nil, refuse(CodeWrongState, "", "backup %d builds on backup %d, which is not complete or no longer exists", tip.ID, id)
		}
		full, id = b, b.Parent
	}
	if job.Pool == "" {
		job.Pool = full.Pool
	}
	pool, err := a.pool(job.Pool)
	if err != nil {
		return nil, nil, err
	}
	if pool == nil {
		return nil, nil, refuse(CodeNotFound, "list pools with 'cairn pool list'", "pool %q does not exist", job.Pool)
	}
	if !pool.Serves(tip.Node) {
		return nil, nil, refuse(CodeInvalidArgument, fmt.Sprintf("give a pool of storage node %s, which reads the chain", tip.Node),
			"storage node %s, which holds the chain of backup %d, does not serve pool %s", tip.Node, tip.ID, pool.Name)
	}
	job.Node = tip.Node
	job.Paths, job.Excludes = tip.Paths, tip.Excludes
	b := &Backup{
		Client: job.Client, FileSet: tip.FileSet, Paths: tip.Paths, Excludes: tip.Excludes, Level: LevelFull,
		StartTime: tip.StartTime, KeyID: pool.KeyID, Pool: pool.Name, Node: tip.Node, State: BackupWriting, Consolidates: tip.ID,
	}
	return b, nil, nil
}

// chainPools are the pools a backup's chain may lie in. An ad hoc backup's
// chain lies in its own pool only: a tape pool's chain restores from its
// tapes alone once they are in the vault, and a backup sent to a pool that
// holds none of the file set yet starts there with a full rather than an
// incremental on a full in another pool, which would leave the tapes
// holding only changes. A policy's run chains across the pools its levels
// write to (Policy.Pools), as Bacula's Full, Differential and Incremental
// Backup Pools do: the administrator who sends fulls to tape and
// incrementals to disk asked for that chain, and an incremental that found
// no full in its own pool would otherwise be a full every time.
func (a *applier) chainPools(job *Job, pool string) ([]string, error) {
	if job.Policy == "" {
		return []string{pool}, nil
	}
	p, err := a.policy(job.Policy)
	if err != nil {
		return nil, err
	}
	if p == nil || !slices.Contains(p.Pools(), pool) {
		// The policy went, or changed its pools, since the run was
		// planned: the run's own pool is the one sure chain.
		return []string{pool}, nil
	}
	return p.Pools(), nil
}

func poolWords(pools []string) string {
	if len(pools) == 1 {
		return "pool " + pools[0]
	}
	return "pools " + strings.Join(pools, ", ")
}

func chainWords(pools []string) string {
	if len(pools) == 1 {
		return "the same pool"
	}
	return "the pools of its policy"
}

// latestComplete finds the base of an incremental (the latest complete backup
// of the file set in the chain's pools, any level) or of a differential (the
// latest complete full there). Latest means the latest point in time, not
// the highest id: two runs can complete out of order.
func (a *applier) latestComplete(client, fileSet string, pools []string, fullOnly bool) (*Backup, error) {
	return latestOf(a.tx, client, fileSet, time.Time{}, func(e *backupTime) bool {
		return e.State == BackupComplete && slices.Contains(pools, e.Pool) && (!fullOnly || e.Level == LevelFull)
	})
}

func (a *applier) updateJob(u *JobUpdate) error {
	j, err := a.job(u.ID)
	if err != nil {
		return err
	}
	if j == nil {
		return refuse(CodeNotFound, "list jobs with 'cairn job list'", "job %d does not exist", u.ID)
	}
	if j.State.Done() {
		return refuse(CodeWrongState, "", "job %d already ended (%s)", j.ID, j.State)
	}
	if err := j.isAttempt(u.Attempt); err != nil {
		return err
	}
	old := *j
	canceled := false
	if u.State != "" && u.State != j.State {
		if u.State.Valid() && j.Cancel != nil && j.endState(u.State) == JobCanceled {
			// The job stopped on its cancel's account.
			u2 := *u
			u2.State, u2.ErrorCode, u2.Error = JobCanceled, "", j.Cancel.Message()
			u, canceled = &u2, true
		}
		if !u.State.Valid() {
			return refuse(CodeInvalidArgument, "", "job state %q is not known", u.State)
		}
		if u.State == JobQueued || u.State == JobPending || u.State == JobVoid {
			return refuse(CodeWrongState, "", "job %d is %s and cannot be set to %s", j.ID, j.State, u.State)
		}
		if j.State == JobPending {
			// Only an accept (it may run) or a void (it never will) ends
			// pending: anything else could run a job whose caller was told
			// it failed.
			return refuse(CodeWrongState, "", "job %d is pending: its start was not confirmed yet", j.ID)
		}
		if j.Type == JobBackup && (u.State == JobSuccess || u.State == JobWarning) {
			return refuse(CodeWrongState, "a backup succeeds when its storage node commits the session",
				"job %d is a backup: it cannot be set to %s", j.ID, u.State)
		}
		j.State = u.State
		switch {
		case u.State == JobRunning:
			j.Started = a.now
		case u.State.Done():
			j.Ended = a.now
			j.Waiting = "" // an ended job waits for nothing
		}
	}
	if !u.Started.IsZero() {
		j.Started = u.Started
	}
	if !u.Ended.IsZero() {
		j.Ended = u.Ended
	}
	if u.Files != 0 {
		j.Files = u.Files
	}
	if u.Bytes != 0 {
		j.Bytes = u.Bytes
	}
	if u.StoredBytes != 0 {
		j.StoredBytes = u.StoredBytes
	}
	if u.Warnings != 0 {
		j.Warnings = u.Warnings
	}
	if u.Entries != 0 {
		j.Entries, j.Restored, j.Lost = u.Entries, u.Restored, u.Lost
	}
	if u.ErrorCode != "" || canceled {
		j.ErrorCode = u.ErrorCode
	}
	if u.Waiting != nil {
		j.Waiting = *u.Waiting
	}
	if u.Error != "" {
		j.Error = u.Error
	}
	if err := a.appendLog(j, u.Log); err != nil {
		return err
	}
	if j.Type == JobBackup {
		b, err := a.backup(j.BackupID)
		if err != nil {
			return err
		}
		if b != nil && b.State == BackupWriting {
			switch {
			case j.State.Done():
				// A backup job that ends without a commit leaves no half
				// backup behind.
				if err := a.dropBackup(b); err != nil {
					return err
				}
			case old.State != JobRunning && j.State == JobRunning && b.Consolidates == 0:
				// A synthetic full keeps the point in time of what it
				// folds.
				ob := *b
				b.StartTime = j.Started
				if err := a.putBackup(&ob, b); err != nil {
					return err
				}
			}
		}
	}
	return a.putJob(&old, j)
}

func (a *applier) appendJobLog(l *JobLog) error {
	j, err := a.job(l.JobID)
	if err != nil {
		return err
	}
	if j == nil {
		return refuse(CodeNotFound, "", "job %d does not exist", l.JobID)
	}
	old := *j
	if err := a.appendLog(j, l.Lines); err != nil {
		return err
	}
	return a.putJob(&old, j)
}

// escapeAll writes paths as fileindex.Escape does, for a log line.
// article is the indefinite article of a level's name.
func article(l Level) string {
	if strings.IndexByte("aeiou", string(l)[0]) >= 0 {
		return "an"
	}
	return "a"
}

func escapeAll(paths []fileindex.Path) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = fileindex.Escape(string(p))
	}
	return out
}

// JobsPrune drops the records and logs of ended jobs that nothing in the
// catalog needs any more: each listed job that ended before EndedBefore
// and has no backup in the catalog (it expired or was deleted, or the job
// made none: a restore), or only an aborted one (a failed or canceled
// backup), which goes with it. A job that does not qualify when the
// command applies is left as it is, so a list planned from a read a
// little old is safe. The leader plans the list (Store.PrunableJobs) and
// sends it in batches.
type JobsPrune struct {
	IDs         []uint64  `json:"ids"`
	EndedBefore time.Time `json:"ended_before"`
}

// MaxJobsPrune bounds the jobs of one JobsPrune: its transaction and its
// Raft entry stay small, as an expiry's do.
const MaxJobsPrune = 2000

func (a *applier) pruneJobs(p *JobsPrune) error {
	if p == nil {
		return missing(OpPruneJobs)
	}
	if len(p.IDs) > MaxJobsPrune {
		return refuse(CodeInvalidArgument, "", "a prune of %d jobs; at most %d a command", len(p.IDs), MaxJobsPrune)
	}
	for _, id := range p.IDs {
		j, err := a.job(id)
		if err != nil {
			return err
		}
		if j == nil {
			continue
		}
		ok, aborted, err := prunable(a.tx, j, p.EndedBefore)
		if err != nil || !ok {
			if err != nil {
				return err
			}
			continue
		}
		if aborted != nil {
			if err := a.deleteBackup(aborted); err != nil {
				return err
			}
		}
		if err := a.removeJob(j); err != nil {
			return err
		}
		a.res.Pruned++
	}
	return nil
}

// prunable says whether j may go: ended before endedBefore, and without a
// backup in the catalog but an aborted one, which it returns.
func prunable(tx *bbolt.Tx, j *Job, endedBefore time.Time) (bool, *Backup, error) {
	if !j.State.Done() || j.Ended.IsZero() || !j.Ended.Before(endedBefore) {
		return false, nil, nil
	}
	data := tx.Bucket(bBackups).Get(u64(j.ID))
	if data == nil {
		return true, nil, nil
	}
	var b Backup
	if err := jsonUnmarshal(bBackups, u64(j.ID), data, &b); err != nil {
		return false, nil, err
	}
	if b.State != BackupAborted {
		return false, nil, nil
	}
	return true, &b, nil
}

// removeJob deletes a job, its log and its index entries, and takes it
// out of the state counters.
func (a *applier) removeJob(j *Job) error {
	if err := a.tx.Bucket(bJobs).Delete(u64(j.ID)); err != nil {
		return err
	}
	if err := a.tx.Bucket(bJobsByClient).Delete(nameKey(j.Client, j.ID)); err != nil {
		return err
	}
	if err := a.tx.Bucket(bJobsActive).Delete(u64(j.ID)); err != nil {
		return err
	}
	logs := a.tx.Bucket(bJobLog)
	prefix := u64(j.ID)
	c := logs.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := logs.Delete(k); err != nil {
			return err
		}
	}
	return addCount(a.tx, "job", string(j.State), -1)
}

// PrunableJobs lists, in id order from after (exclusive), up to limit jobs
// a JobsPrune of endedBefore would drop, and the id to go on after (0 when
// the scan reached the end). One call reads at most scanLimit jobs, so its
// read transaction stays short however many jobs the catalog holds.
//
// The scan ends at the first job created at or after endedBefore: ids
// follow creation, and a job cannot end before it was created, so the
// job history's own jobs (90 days of every client's by default) are not
// decoded every day for nothing. A job whose time came out of order (a
// new leader's clock a little behind) waits for the next day's pass.
func (s *Store) PrunableJobs(endedBefore time.Time, after uint64, limit int) (ids []uint64, next uint64, err error) {
	const scanLimit = 100_000
	err = s.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bJobs).Cursor()
		scanned := 0
		for k, v := c.Seek(u64(after + 1)); k != nil; k, v = c.Next() {
			id := binary.BigEndian.Uint64(k)
			if len(ids) >= limit || scanned >= scanLimit {
				next = id - 1
				return nil
			}
			scanned++
			var j Job
			if err := jsonUnmarshal(bJobs, k, v, &j); err != nil {
				return err
			}
			if !j.Created.IsZero() && !j.Created.Before(endedBefore) {
				return nil // next 0: nothing after it ended in time
			}
			ok, _, err := prunable(tx, &j, endedBefore)
			if err != nil {
				return err
			}
			if ok {
				ids = append(ids, id)
			}
		}
		return nil
	})
	return ids, next, err
}
