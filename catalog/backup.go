package catalog

import (
	"fmt"
	"slices"

	"github.com/google/uuid"
)

// Backups: a session that is durable on its volumes is committed
// (OpCommitBackup: its parts, the volumes' committed ends, the job's end),
// or aborted (OpAbortBackup), which drops everything it wrote. DESIGN.md,
// "Backups, parents and chains".

func (a *applier) commitBackup(cm *BackupCommit) error {
	b, err := a.backup(cm.BackupID)
	if err != nil {
		return err
	}
	if b == nil {
		return refuse(CodeNotFound, "", "backup %d does not exist", cm.BackupID)
	}
	if b.State == BackupComplete && b.SessionID == cm.SessionID {
		return nil // a retried commit
	}
	if b.State != BackupWriting {
		return refuse(CodeWrongState, "", "backup %d is %s and cannot be committed", b.ID, b.State)
	}
	if cm.Node != "" && cm.Node != b.Node {
		return refuse(CodeWrongState, "", "backup %d is not being written on storage node %s", b.ID, cm.Node)
	}
	j, err := a.job(b.ID)
	if err != nil {
		return err
	}
	if j == nil {
		return fmt.Errorf("backup %d has no job", b.ID)
	}
	if cm.Segments != b.Segments {
		return refuse(CodeInvalidArgument, "send every index segment before the commit",
			"the commit of backup %d names %d index segments, the catalog holds %d", b.ID, cm.Segments, b.Segments)
	}
	if len(cm.Parts) == 0 {
		return refuse(CodeInvalidArgument, "", "the commit of backup %d names no volume parts", b.ID)
	}
	parts := slices.Clone(cm.Parts)
	slices.SortFunc(parts, func(x, y Part) int { return x.Part - y.Part })
	ends := map[uuid.UUID]int64{}
	starts := map[uuid.UUID][]int64{}
	var order []uuid.UUID
	for _, p := range parts {
		if _, ok := ends[p.VolumeID]; !ok {
			order = append(order, p.VolumeID)
		}
		ends[p.VolumeID] = max(ends[p.VolumeID], p.End)
		starts[p.VolumeID] = append(starts[p.VolumeID], p.VolumeStart)
	}
	for _, id := range cm.Full {
		if _, ok := ends[id]; !ok {
			return refuse(CodeInvalidArgument, "", "the commit of backup %d marks volume %s full, which holds none of its parts", b.ID, id)
		}
	}
	endTime := cm.EndTime
	if endTime.IsZero() {
		endTime = a.now
	}
	for _, id := range order {
		v, err := a.volume(id)
		if err != nil {
			return err
		}
		if v == nil {
			return refuse(CodeNotFound, "", "backup %d: volume %s does not exist", b.ID, id)
		}
		if v.Pool != b.Pool {
			return refuse(CodeInvalidArgument, "", "backup %d writes to pool %s, but volume %s is in pool %s", b.ID, b.Pool, v.Name, v.Pool)
		}
		if ends[id] < v.Bytes {
			return refuse(CodeWrongState, "", "backup %d ends at byte %d of volume %s, before its committed end %d",
				b.ID, ends[id], v.Name, v.Bytes)
		}
		old := *v
		if v.MediaType.Sequential() {
			// Parts on tape are files after file marks: a reader needs every
			// part's start to find the block of an offset.
			for _, st := range starts[id] {
				if st < v.Bytes {
					return refuse(CodeWrongState, "", "backup %d starts a part at byte %d of tape volume %s, before its committed end %d",
						b.ID, st, v.Name, v.Bytes)
				}
			}
			v.PartStarts = append(slices.Clone(v.PartStarts), starts[id]...)
		}
		v.Bytes = ends[id]
		v.Sessions++
		v.LastWritten = endTime
		if v.WriterJob == j.ID {
			v.WriterJob = 0
		}
		if v.State == VolumeLabeling {
			v.State = VolumeAppend
		}
		// A tape marked error during the session (a medium error after
		// its part was written) stays error: full would let it be
		// recycled and written again.
		if slices.Contains(cm.Full, id) && v.State != VolumeError {
			v.State = VolumeFull
		}
		if err := a.putVolume(&old, v); err != nil {
			return err
		}
	}
	if err := a.releaseVolumes(j.ID); err != nil {
		return err
	}

	oldB := *b
	b.Parts = parts
	b.SessionID = cm.SessionID
	b.Files, b.Bytes, b.StoredBytes = cm.Files, cm.Bytes, cm.StoredBytes
	b.EndTime = endTime
	b.State = BackupComplete
	if cm.LockedUntil.After(b.LockedUntil) {
		b.LockedUntil = cm.LockedUntil
	}
	if err := a.putBackup(&oldB, b); err != nil {
		return err
	}
	if err := a.extendChainLocks(b); err != nil {
		return err
	}

	oldJ := *j
	var lines []LogLine
	if cm.Entries != 0 && cm.Entries != b.Entries {
		lines = append(lines, LogLine{Time: a.now, Level: "warning", Msg: fmt.Sprintf(
			"the session reports %d entries but its index segments hold %d; the catalog keeps the index", cm.Entries, b.Entries)})
	}
	j.Files, j.Bytes, j.StoredBytes = cm.Files, cm.Bytes, cm.StoredBytes
	j.Tape = cm.Tape
	j.Waiting = ""
	j.Warnings = max(j.Warnings, cm.Warnings) + len(lines)
	j.State = JobSuccess
	if j.Warnings > 0 {
		j.State = JobWarning
	}
	if j.Started.IsZero() {
		j.Started = b.StartTime
	}
	j.Ended = endTime
	if err := a.appendLog(j, append(lines, cm.Log...)); err != nil {
		return err
	}
	return a.putJob(&oldJ, j)
}

func (a *applier) abortBackup(ab *BackupAbort) error {
	b, err := a.backup(ab.BackupID)
	if err != nil {
		return err
	}
	if b == nil {
		return refuse(CodeNotFound, "", "backup %d does not exist", ab.BackupID)
	}
	switch b.State {
	case BackupAborted:
		return nil // a retried abort
	case BackupComplete:
		return refuse(CodeWrongState, "", "backup %d is complete; it cannot be aborted", b.ID)
	}
	if ab.Attempt != 0 {
		j, err := a.job(b.ID)
		if err != nil {
			return err
		}
		if j != nil {
			if err := j.isAttempt(ab.Attempt); err != nil {
				return err
			}
		}
	}
	if err := a.dropBackup(b); err != nil {
		return err
	}
	j, err := a.job(b.ID)
	if err != nil || j == nil || j.State.Done() {
		return err
	}
	old := *j
	j.State = j.endState(JobFailed)
	j.Ended = a.now
	j.Waiting = ""
	j.ErrorCode, j.Error = ab.Code, ab.Msg
	if j.State == JobCanceled {
		j.ErrorCode, j.Error = "", j.Cancel.Message()
	}
	return a.putJob(&old, j)
}

// dropBackup ends a writing backup as aborted: its index goes, and its job's
// claims on volumes are released. What it wrote beyond the volumes'
// committed ends is overwritten by the next session.
func (a *applier) dropBackup(b *Backup) error {
	if err := a.deleteSegments(b.ID); err != nil {
		return err
	}
	if err := a.releaseVolumes(b.ID); err != nil {
		return err
	}
	old := *b
	b.State = BackupAborted
	b.Segments, b.Entries = 0, 0
	b.EndTime = a.now
	return a.putBackup(&old, b)
}
