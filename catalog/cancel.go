package catalog

import (
	"fmt"
	"time"
)

// JobCancel is an administrator's cancel of a job (OpCancelJob), and what
// the job keeps of it: who asked, why, and when.
//
// A queued or pending job ends as canceled in the command itself. A
// running one only records the cancel: the job runs on a storage node and
// an agent, which the leader must stop first, so the cancel is a fact in
// the catalog that whichever server leads acts on (it stops the job and
// ends it as canceled), not an order that dies with the leader that took
// it. Until then, however else the job ends (its node aborts the session,
// it fails, it is requeued) it ends as canceled; only a commit that got in
// first wins.
type JobCancel struct {
	JobID  uint64    `json:"job_id"`
	By     string    `json:"by"`
	Reason string    `json:"reason,omitempty"`
	Time   time.Time `json:"time"`
}

// Message says who canceled and why, for the job's error and log.
func (c *JobCancel) Message() string {
	msg := "canceled by " + c.By
	if c.By == "" {
		msg = "canceled"
	}
	if c.Reason != "" {
		msg += ": " + c.Reason
	}
	return msg
}

func (a *applier) cancelJob(c *JobCancel) error {
	j, err := a.job(c.JobID)
	if err != nil {
		return err
	}
	if j == nil {
		return refuse(CodeNotFound, "list jobs with 'cairn job list'", "job %d does not exist", c.JobID)
	}
	if j.State == JobCanceled || (j.Cancel != nil && !j.State.Done()) {
		// A repeated cancel (a caller's retry across a change of leader):
		// the job is canceled, or the first cancel is being carried out.
		return nil
	}
	if j.State.Done() {
		return refuse(CodeWrongState, fmt.Sprintf("see how it ended with 'cairn job show %d'", j.ID),
			"job %d already ended (%s); there is nothing to cancel", j.ID, j.State)
	}
	old := *j
	rec := *c
	rec.Time = a.now
	j.Cancel = &rec
	line := LogLine{Time: a.now, Level: "warning", Msg: rec.Message()}
	if j.State == JobRunning {
		line.Msg = fmt.Sprintf("cancel asked by %s; stopping the job at its storage node and agent", rec.By)
		if rec.Reason != "" {
			line.Msg += " (" + rec.Reason + ")"
		}
	}
	if err := a.appendLog(j, []LogLine{line}); err != nil {
		return err
	}
	if j.State == JobQueued || j.State == JobPending {
		// Neither ever ran: a pending job's start is not even confirmed
		// yet, and its accept, should it come, leaves it canceled.
		if err := a.endCanceled(j); err != nil {
			return err
		}
	}
	return a.putJob(&old, j)
}

// endCanceled ends j, whose cancel was asked, as canceled: a backup that
// was being written leaves nothing behind (its index goes, its volumes are
// released). The caller puts j.
func (a *applier) endCanceled(j *Job) error {
	j.State, j.Ended, j.Waiting = JobCanceled, a.now, ""
	j.ErrorCode, j.Error = "", j.Cancel.Message()
	if j.Type != JobBackup {
		return nil
	}
	b, err := a.backup(j.BackupID)
	if err != nil || b == nil || b.State != BackupWriting {
		return err
	}
	return a.dropBackup(b)
}

// endState is the state a job ending as s ends in: canceled, whatever way
// it stopped, once its cancel was asked.
func (j *Job) endState(s JobState) JobState {
	if j.Cancel != nil && s.Done() && s != JobSuccess && s != JobWarning {
		return JobCanceled
	}
	return s
}
