package catalog

import (
	"bytes"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/bbolt"
)

// applier applies one command inside one write transaction. Everything it
// writes depends only on the command and the catalog: never on the clock,
// randomness or the server it runs on.
type applier struct {
	tx  *bbolt.Tx
	now time.Time
	res *ApplyResult
}

func (a *applier) apply(c *Command) error {
	switch c.Op {
	case OpRegisterClient:
		return a.registerClient(c.Client)
	case OpRegisterNode:
		return a.registerNode(c.Node)
	case OpCreatePool:
		return a.createPool(c.Pool)
	case OpPutKey:
		return a.putKey(c.Key)
	case OpCreateJob:
		if rec, err := a.knownRequest(c.Request, OpCreateJob); err != nil || rec != nil {
			return err
		}
		return a.createJob(c.Job, c.Request)
	case OpUpdateJob:
		return a.updateJob(c.JobUpdate)
	case OpAppendJobLog:
		return a.appendJobLog(c.JobLog)
	case OpCreateVolume:
		return a.createVolume(c.Volume)
	case OpUpdateVolume:
		return a.updateVolume(c.VolumeUpdate)
	case OpAddIndexSegment:
		return a.addIndexSegment(c.Segment)
	case OpCommitBackup:
		return a.commitBackup(c.Commit)
	case OpAbortBackup:
		return a.abortBackup(c.Abort)
	case OpDispatchJob:
		return a.dispatchJob(c.Dispatch)
	case OpRequeueJob:
		return a.requeueJob(c.Requeue)
	case OpLabelTape:
		if rec, err := a.knownRequest(c.Request, OpLabelTape); err != nil || rec != nil {
			return err
		}
		return a.labelTape(c.TapeLabel, c.Request)
	case OpMoveTape:
		return a.moveTape(c.TapeMove)
	case OpAssignTape:
		return a.assignTape(c.TapeAssign)
	case OpInitGroup:
		return a.initGroup(c.Group)
	case OpCancelJob:
		return a.cancelJob(c.Cancel)
	case OpRotateSecrets:
		return a.rotateSecrets(c.Rotation)
	case OpAcceptJob:
		return a.acceptJob(c.Accept)
	case OpVoidJobs:
		return a.voidJobs(c.Void)
	case OpForgetRequests:
		return a.forgetRequests(c.Forget)
	case OpPutPolicy:
		return a.putPolicy(c.PolicyPut)
	case OpDeletePolicy:
		return a.deletePolicy(c.PolicyDelete)
	case OpApplyPolicies:
		return a.applyPolicies(c.PolicyApply)
	case OpRecordRuns:
		return a.recordRuns(c.Runs)
	case OpUpdateRun:
		return a.updateRun(c.RunUpdate)
	case OpHold:
		return a.hold(c.Hold)
	case OpRelease:
		return a.release(c.Hold)
	case OpExpireBackups:
		return a.expireBackups(c.Expire)
	case OpForgetVolume:
		return a.forgetVolume(c.VolumeForget)
	case OpRecycleTape, OpRenewTape:
		// Two ops: a server that does not know the new id's meaning
		// stops at an op it does not know rather than apply the command
		// without it.
		if (c.Op == OpRenewTape) != (c.TapeRecycle != nil && c.TapeRecycle.NewID != uuid.Nil) {
			return refuse(CodeInvalidArgument, "", "%s takes a new volume id with %s only", c.Op, OpRenewTape)
		}
		return a.recycleTape(c.TapeRecycle)
	case OpRaiseAlert:
		return a.raiseAlert(c.Alert, true)
	case OpAlertSent:
		return a.alertSent(c.AlertSent)
	case OpPruneJobs:
		return a.pruneJobs(c.PruneJobs)
	case OpSetPoolCompression:
		return a.setPoolCompression(c.PoolCompression)
	}
	return refuse(CodeInvalidArgument, "upgrade this server to the leader's version", "unknown catalog operation %q", c.Op)
}

func missing(op Op) error {
	return refuse(CodeInvalidArgument, "", "catalog operation %s without its payload", op)
}

// validName refuses names that cannot be keys: empty, too long, or holding
// the 0 byte that separates a name from an id in the indexes.
func validName(kind, name string) error {
	switch {
	case name == "":
		return refuse(CodeInvalidArgument, "", "%s name is empty", kind)
	case len(name) > 255:
		return refuse(CodeInvalidArgument, "use a name of at most 255 bytes", "%s name %.40q… is too long", kind, name)
	case strings.ContainsRune(name, 0):
		return refuse(CodeInvalidArgument, "", "%s name %q holds a NUL byte", kind, name)
	}
	return nil
}

// ---- gets and puts that keep the indexes ----

func (a *applier) client(name string) (*Client, error) {
	var c Client
	ok, err := getJSON(a.tx, bClients, []byte(name), &c)
	if err != nil || !ok {
		return nil, err
	}
	return &c, nil
}

func (a *applier) pool(name string) (*Pool, error) {
	var p Pool
	ok, err := getJSON(a.tx, bPools, []byte(name), &p)
	if err != nil || !ok {
		return nil, err
	}
	return &p, nil
}

func (a *applier) job(id uint64) (*Job, error) {
	var j Job
	ok, err := getJSON(a.tx, bJobs, u64(id), &j)
	if err != nil || !ok {
		return nil, err
	}
	return &j, nil
}

func (a *applier) backup(id uint64) (*Backup, error) {
	var b Backup
	ok, err := getJSON(a.tx, bBackups, u64(id), &b)
	if err != nil || !ok {
		return nil, err
	}
	return &b, nil
}

func (a *applier) volume(id uuid.UUID) (*Volume, error) {
	var v Volume
	ok, err := getJSON(a.tx, bVolumes, id[:], &v)
	if err != nil || !ok {
		return nil, err
	}
	return &v, nil
}

// putJob stores j (old is its previous version, nil for a new job) and keeps
// the client index, the active index and the state counters.
func (a *applier) putJob(old, j *Job) error {
	stored := *j
	stored.Log = nil
	if err := putJSON(a.tx, bJobs, u64(j.ID), &stored); err != nil {
		return err
	}
	if old == nil {
		if err := a.tx.Bucket(bJobsByClient).Put(nameKey(j.Client, j.ID), nil); err != nil {
			return err
		}
	}
	if old != nil && old.State == j.State {
		return nil
	}
	active := a.tx.Bucket(bJobsActive)
	if j.State.Done() {
		if err := active.Delete(u64(j.ID)); err != nil {
			return err
		}
	} else if err := active.Put(u64(j.ID), nil); err != nil {
		return err
	}
	if old != nil {
		if err := addCount(a.tx, "job", string(old.State), -1); err != nil {
			return err
		}
	}
	return addCount(a.tx, "job", string(j.State), 1)
}

func (a *applier) putBackup(old, b *Backup) error {
	if err := putJSON(a.tx, bBackups, u64(b.ID), b); err != nil {
		return err
	}
	if old == nil {
		if err := a.tx.Bucket(bBackupsByClient).Put(nameKey(b.Client, b.ID), nil); err != nil {
			return err
		}
	}
	var oldParts []Part
	if old != nil {
		oldParts = old.Parts
	}
	if err := indexParts(a.tx, b.ID, oldParts, b.Parts); err != nil {
		return err
	}
	if err := indexBackupTime(a.tx, old, b); err != nil {
		return err
	}
	if old != nil && old.State == b.State {
		return nil
	}
	if old != nil {
		if err := addCount(a.tx, "backup", string(old.State), -1); err != nil {
			return err
		}
	}
	return addCount(a.tx, "backup", string(b.State), 1)
}

// volBackupKey indexes the backups with a part on a volume, so that the
// expiry of a backup tells without a scan whether its volumes hold anything
// else.
func volBackupKey(vol uuid.UUID, backup uint64) []byte {
	return append(bytes.Clone(vol[:]), u64(backup)...)
}

// indexParts moves a backup's entries in the volume_backups index from the
// volumes of its old parts to those of its new ones.
func indexParts(tx *bbolt.Tx, backup uint64, old, parts []Part) error {
	idx := tx.Bucket(bVolumeBackups)
	for _, p := range old {
		if !slices.ContainsFunc(parts, func(q Part) bool { return q.VolumeID == p.VolumeID }) {
			if err := idx.Delete(volBackupKey(p.VolumeID, backup)); err != nil {
				return err
			}
		}
	}
	for _, p := range parts {
		if err := idx.Put(volBackupKey(p.VolumeID, backup), nil); err != nil {
			return err
		}
	}
	return nil
}

// indexVolumeBackups fills the volume_backups index of a catalog written
// before it existed (format 3).
func indexVolumeBackups(tx *bbolt.Tx) error {
	return tx.Bucket(bBackups).ForEach(func(k, v []byte) error {
		var b Backup
		if err := jsonUnmarshal(bBackups, k, v, &b); err != nil {
			return err
		}
		return indexParts(tx, b.ID, nil, b.Parts)
	})
}

// heldKey indexes the volumes a job holds, so releasing them needs no scan.
func heldKey(job uint64, vol uuid.UUID) []byte { return append(u64(job), vol[:]...) }

func (a *applier) putVolume(old, v *Volume) error {
	if err := putJSON(a.tx, bVolumes, v.ID[:], v); err != nil {
		return err
	}
	if old == nil || old.Name != v.Name {
		if old != nil {
			if err := a.tx.Bucket(bVolumeNames).Delete([]byte(old.Name)); err != nil {
				return err
			}
		}
		if err := a.tx.Bucket(bVolumeNames).Put([]byte(v.Name), v.ID[:]); err != nil {
			return err
		}
	}
	held := a.tx.Bucket(bVolumesHeld)
	if old != nil && old.WriterJob != 0 && old.WriterJob != v.WriterJob {
		if err := held.Delete(heldKey(old.WriterJob, v.ID)); err != nil {
			return err
		}
	}
	if v.WriterJob != 0 {
		return held.Put(heldKey(v.WriterJob, v.ID), nil)
	}
	return nil
}

// releaseVolumes drops every claim job has on volumes.
func (a *applier) releaseVolumes(job uint64) error {
	var ids []uuid.UUID
	c := a.tx.Bucket(bVolumesHeld).Cursor()
	prefix := u64(job)
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		ids = append(ids, uuid.UUID(k[8:]))
	}
	for _, id := range ids {
		v, err := a.volume(id)
		if err != nil {
			return err
		}
		if v == nil || v.WriterJob != job {
			if err := a.tx.Bucket(bVolumesHeld).Delete(heldKey(job, id)); err != nil {
				return err
			}
			continue
		}
		old := *v
		v.WriterJob = 0
		if err := a.putVolume(&old, v); err != nil {
			return err
		}
	}
	return nil
}

// appendLog adds lines to a job's log, dropping the oldest beyond
// MaxJobLogLines.
func (a *applier) appendLog(j *Job, lines []LogLine) error {
	b := a.tx.Bucket(bJobLog)
	for _, l := range lines {
		if l.Time.IsZero() {
			l.Time = a.now
		}
		seq := uint64(j.LogLines)
		if err := putJSON(a.tx, bJobLog, append(u64(j.ID), u64(seq)...), &l); err != nil {
			return err
		}
		if seq >= MaxJobLogLines {
			if err := b.Delete(append(u64(j.ID), u64(seq-MaxJobLogLines)...)); err != nil {
				return err
			}
		}
		j.LogLines++
	}
	return nil
}
