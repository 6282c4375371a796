package catalog

import (
	"fmt"
)

// Dispatch and requeue: a queued job starts on a storage node
// (OpDispatchJob), recorded before the agent gets its order so a new leader
// never sends it twice, and a running one goes back to the queue
// (OpRequeueJob) when its node died. A change for an attempt that is over is
// refused.

// isAttempt refuses a change meant for attempt n (when not 0) of a job that
// no longer runs it.
func (j *Job) isAttempt(n int) error {
	if n != 0 && (j.State != JobRunning || j.Attempt != n) {
		return refuse(CodeWrongState, "", "job %d is %s at attempt %d; the change concerned attempt %d", j.ID, j.State, j.Attempt, n)
	}
	return nil
}

func (a *applier) dispatchJob(d *JobDispatch) error {
	j, err := a.job(d.JobID)
	if err != nil {
		return err
	}
	if j == nil {
		return refuse(CodeNotFound, "", "job %d does not exist", d.JobID)
	}
	if j.State == JobRunning && j.Node == d.Node {
		return nil // a retried dispatch
	}
	if j.State != JobQueued {
		return refuse(CodeWrongState, "", "job %d is %s, not queued: it cannot be dispatched", j.ID, j.State)
	}
	old := *j
	j.State, j.Node, j.Waiting = JobRunning, d.Node, ""
	j.Attempt++
	if j.Started.IsZero() {
		j.Started = a.now
	}
	if j.Type == JobBackup {
		b, err := a.backup(j.BackupID)
		if err != nil {
			return err
		}
		if b == nil || b.State != BackupWriting {
			return refuse(CodeWrongState, "", "backup %d of job %d is not being written", j.BackupID, j.ID)
		}
		p, err := a.pool(b.Pool)
		if err != nil {
			return err
		}
		if p == nil || !p.Serves(d.Node) {
			return refuse(CodeInvalidArgument, "", "storage node %s does not serve pool %s", d.Node, b.Pool)
		}
		ob := *b
		b.Node = d.Node
		if old.Started.IsZero() && b.Consolidates == 0 {
			// The point in time a backup represents is when it started;
			// a synthetic full's is that of the chain it folds.
			b.StartTime = a.now
		}
		if err := a.putBackup(&ob, b); err != nil {
			return err
		}
	}
	if j.Attempt > 1 {
		if err := a.appendLog(j, []LogLine{{Time: a.now, Level: "info", Msg: fmt.Sprintf("attempt %d on storage node %s", j.Attempt, d.Node)}}); err != nil {
			return err
		}
	}
	return a.putJob(&old, j)
}

func (a *applier) requeueJob(r *JobRequeue) error {
	j, err := a.job(r.JobID)
	if err != nil {
		return err
	}
	if j == nil {
		return refuse(CodeNotFound, "", "job %d does not exist", r.JobID)
	}
	if r.Attempt != 0 && r.Attempt != j.Attempt {
		return refuse(CodeWrongState, "", "job %d is at attempt %d; attempt %d is over", j.ID, j.Attempt, r.Attempt)
	}
	if j.State == JobQueued {
		return nil // a retried requeue
	}
	if j.State != JobRunning {
		return refuse(CodeWrongState, "", "job %d is %s: only a running job goes back to the queue", j.ID, j.State)
	}
	old := *j
	if j.Cancel != nil {
		// A canceled job does not run again.
		if err := a.endCanceled(j); err != nil {
			return err
		}
		return a.putJob(&old, j)
	}
	node := j.Node
	j.State, j.Node, j.Waiting = JobQueued, "", r.Reason
	if j.Type == JobBackup {
		b, err := a.backup(j.BackupID)
		if err != nil {
			return err
		}
		if b != nil && b.State == BackupWriting {
			// Nothing of the interrupted session was committed; its index
			// segments go, and the next attempt writes a new session.
			if err := a.deleteSegments(b.ID); err != nil {
				return err
			}
			if err := a.releaseVolumes(b.ID); err != nil {
				return err
			}
			ob := *b
			b.Node, b.Parts, b.Segments, b.Entries = "", nil, 0, 0
			if err := a.putBackup(&ob, b); err != nil {
				return err
			}
		}
	}
	msg := fmt.Sprintf("back in the queue after attempt %d on storage node %s: %s", j.Attempt, node, r.Reason)
	if err := a.appendLog(j, []LogLine{{Time: a.now, Level: "warning", Msg: msg}}); err != nil {
		return err
	}
	return a.putJob(&old, j)
}
