package orchestrator

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/wire"
)

// How a running job ends when its storage node or agent says so. The
// server's handlers check that the job is the sender's, then call these.

// Commit ends a running backup whose storage node committed its session:
// the catalog takes the session's parts, index and figures, and the job
// ends as success or warning.
func (o *Orchestrator) Commit(ctx context.Context, job *catalog.Job, req wire.SessionCommitReq) error {
	for _, n := range req.Notes {
		o.jobLog(ctx, job.ID, "info", "%s", n)
	}
	for _, w := range req.Warnings {
		o.jobLog(ctx, job.ID, "warning", "%s", w)
	}
	var parts []catalog.Part
	var names []string
	var full []uuid.UUID
	for _, p := range req.Parts {
		if !p.Final {
			full = append(full, p.VolumeID) // the session went on to another volume
		}
		parts = append(parts, catalog.Part(p))
		names = append(names, o.VolumeName(p.VolumeID))
	}
	for _, id := range req.Sealed {
		if !slices.Contains(full, id) && slices.ContainsFunc(req.Parts, func(p wire.SessionPart) bool { return p.VolumeID == id }) {
			full = append(full, id)
		}
	}
	st := req.Stats
	ratio := 0.0
	if st.StoredBytes > 0 {
		ratio = float64(st.StreamBytes) / float64(st.StoredBytes)
	}
	var lines []catalog.LogLine
	if t := req.Tape; t != nil {
		lines = append(lines, o.logLine("info", "tape: %s written in %.2f s of drive time (%s), %d stops, %d tapes%s",
			HumanBytes(t.DriveBytes), t.DriveSeconds, driveRate(t), t.Stops, t.Tapes, map[bool]string{true: ", spooled to disk first"}[t.Spooled]))
	}
	lines = append(lines, o.logLine("info", "backup committed: %d entries, %d files, %s content, %s stored (ratio %.2f) on %s",
		st.Entries, st.Files, HumanBytes(st.ContentBytes), HumanBytes(st.StoredBytes), ratio, strings.Join(names, ", ")))
	_, err := o.apply(ctx, &catalog.Command{Op: catalog.OpCommitBackup, Commit: &catalog.BackupCommit{
		BackupID: job.BackupID, SessionID: req.SessionID, Node: job.Node, Parts: parts, Segments: req.Segments,
		Entries: st.Entries, Files: st.Files, Bytes: st.ContentBytes, StoredBytes: st.StoredBytes,
		Warnings: len(req.Warnings), EndTime: o.clock.Now().UTC(), Full: full, Tape: tapeStats(req.Tape),
		Log: lines, LockedUntil: req.LockedUntil,
	}})
	if err != nil {
		return err
	}
	o.logged(job.ID, lines)
	if done, err := o.store.Job(job.ID); err == nil {
		o.Ended(done)
	} else {
		o.finishRun(job.ID)
	}
	return nil
}

// NodeAborted ends the attempt of a running job whose storage node failed
// its session: a backup whose agent went away or whose node stopped goes on
// with its next attempt, anything else fails the job.
func (o *Orchestrator) NodeAborted(ctx context.Context, job *catalog.Job, req wire.SessionAbortReq) {
	if req.Attempt != 0 && (job.State != catalog.JobRunning || job.Attempt != req.Attempt) {
		// A session that outlived its attempt (it waited on a request
		// while its agent died and the job moved on): the attempt it
		// concerns is over, and the one running now is not its to end.
		o.log.Info("a storage node's session of an attempt that is over failed", "job", job.ID, "attempt", req.Attempt,
			"now", job.Attempt, "state", job.State, "err", req.Error.Message)
		return
	}
	e := req.Error
	switch e.Code {
	case wire.CodeAgentLost, wire.CodeHandedBack:
		// Nothing of the session is kept, and nothing was wrong with
		// the data: the agent went away, or the node stopped. A backup
		// goes on with its next attempt.
		o.requeueOrFail(ctx, job.ID, &e)
		return
	}
	o.failJob(ctx, job.ID, &e)
}

// AgentRestarted takes back the jobs a restarted agent's old process was
// running (those the new process does not list in running): a backup goes
// on with its next attempt, a restore fails; what says which process
// replaced which, for the jobs' logs.
func (o *Orchestrator) AgentRestarted(ctx context.Context, client, what string, running []uint64) {
	jobs, err := o.store.Jobs(catalog.JobFilter{Client: client, States: []catalog.JobState{catalog.JobRunning, catalog.JobQueued}})
	if err != nil {
		o.log.Warn("list the jobs of a restarted agent", "client", client, "err", err)
		return
	}
	for i := range jobs {
		j := &jobs[i]
		switch {
		case isConsolidation(j):
			// Runs on its storage node alone: the agent has no part in it.
		case j.State == catalog.JobRunning && !slices.Contains(running, j.ID):
			hint := ""
			if j.Type == catalog.JobRestore {
				hint = fmt.Sprintf("rerun the restore; pass --force to restore over what is in %s", j.Target)
			}
			e := errorf(ErrAgentLost, hint, "%s and no longer runs the %s", what, j.Type)
			o.requeueOrFail(ctx, j.ID, e)
		case j.State == catalog.JobQueued && j.Attempt > 0:
			o.jobLog(ctx, j.ID, "info", "%s; the job goes on with attempt %d", what, j.Attempt+1)
		}
	}
}

// AgentDone takes an agent's report that its part of a job ended: a
// restore ends with it (success, warning, or failed with what it lost); a
// backup ends with its node's commit, so only its failure counts here.
func (o *Orchestrator) AgentDone(ctx context.Context, job *catalog.Job, req wire.JobDoneReq) error {
	if job.State.Done() {
		return nil // the node's commit or abort ended it already
	}
	if req.Attempt != 0 && (req.Attempt != job.Attempt || job.State != catalog.JobRunning) {
		// An attempt that is over: the job went on to another one, or
		// back to the queue (its storage node handed it back, and the
		// servers stopped the agent's side too, which reports that it
		// was stopped) to wait for its next. Dispatch makes a job
		// running before its order goes out, so the report of the
		// attempt running now never finds it queued.
		o.log.Info("ignoring the report of an attempt that is over", "job", job.ID, "attempt", req.Attempt, "current", job.Attempt, "state", job.State)
		return nil
	}
	if job.Type == catalog.JobRestore {
		o.logLost(ctx, job, req)
		// What it left out, and why, whether it ended or failed.
		for _, w := range req.Warnings {
			o.jobLog(ctx, job.ID, "warning", "%s", w)
		}
	}
	if req.Error != nil {
		if job.Type == catalog.JobRestore && req.Entries > 0 {
			o.recordAccount(ctx, job, req)
		}
		if req.Error.Code == wire.CodeNodeLost {
			// The storage node is gone or unreachable from the client: a
			// backup goes to another node of its pool.
			var e error = req.Error
			if o.live.Node(job.Node).Draining {
				// It stopped and cut the stream off: the agent may tell
				// before the node's own report of it comes in.
				e = errorf(ErrHandedBack, "", "storage node %s stopped during the %s and handed it back (%s)", job.Node, job.Type, req.Error.Message)
			}
			o.live.Suspect(job.Node)
			o.requeueOrFail(ctx, job.ID, e)
			return nil
		}
		if req.Error.Code == wire.CodeHandedBack {
			o.live.AgentStopped(job.Client) // no order until it is back
			// The agent stopped (SIGTERM) and gave the job back: a
			// backup starts over with its next attempt once the agent
			// is back; a restore fails, saying so (requeueOrFail).
			o.requeueOrFail(ctx, job.ID, req.Error)
			return nil
		}
		o.failJob(ctx, job.ID, req.Error)
		return nil
	}
	if job.Type != catalog.JobRestore {
		// A backup ends when its storage node commits the session.
		return nil
	}
	lost := lostCount(req)
	upd := &catalog.JobUpdate{ID: job.ID, State: catalog.JobSuccess, Files: req.Files, Bytes: req.Bytes, Warnings: len(req.Warnings),
		Entries: req.Entries, Restored: req.Restored, Lost: lost, Ended: o.clock.Now().UTC()}
	switch {
	case lost > 0:
		// A restore that did not bring back everything asked for failed,
		// whatever it did bring back.
		upd.State = catalog.JobFailed
		upd.ErrorCode = wire.CodeCorrupt
		leftOut := ""
		if req.Refused > 0 {
			leftOut = fmt.Sprintf(", %d left out (the warnings say why)", req.Refused)
		}
		upd.Error = fmt.Sprintf("%d of %s entries could not be restored: their data is lost on the volumes (damaged, cut off or unreadable); %d were restored%s, and the job log names every one lost",
			lost, ofEntries(req.Entries), req.Restored, leftOut)
		upd.Log = append(upd.Log, o.logLine("error", "%s", upd.Error))
	case req.Refused > 0:
		// Left out, not lost: the job fails so that the command that
		// waits for it exits non-zero, and says how many.
		upd.State = catalog.JobFailed
		upd.ErrorCode = wire.CodeRefused
		upd.Error = fmt.Sprintf("%d entries were not restored (refused, or the target would not take them); every other entry was restored, and the warnings name each and why", req.Refused)
		upd.Log = append(upd.Log, o.logLine("error", "%s", upd.Error))
	case len(req.Warnings) > 0:
		upd.State = catalog.JobWarning
	}
	upd.Log = append(upd.Log, o.logLine("info", "restore ended: %d of %s entries restored (%d files, %s), %d lost, %d left out",
		req.Restored, ofEntries(req.Entries), req.Files, HumanBytes(req.Bytes), lost, req.Refused))
	if _, err := o.apply(ctx, &catalog.Command{Op: catalog.OpUpdateJob, JobUpdate: upd}); err != nil {
		return err
	}
	o.logged(job.ID, upd.Log)
	if done, err := o.store.Job(job.ID); err == nil {
		o.Ended(done)
	} else {
		o.finishRun(job.ID)
	}
	return nil
}

// lostCount is how many entries a restore lost; an agent that sends no
// count lists them all.
func lostCount(req wire.JobDoneReq) int64 {
	listed := int64(0)
	for _, d := range req.Damaged {
		if !strings.HasPrefix(d, "... and ") {
			listed++
		}
	}
	return max(req.Lost, listed)
}

func ofEntries(n int64) string {
	if n == 0 {
		return "the"
	}
	return fmt.Sprint(n)
}

// logLost names a restore's lost entries in its job log, in one change:
// every one the agent listed, and how many more there are when the list
// had to stop (the job log and a report are bounded).
func (o *Orchestrator) logLost(ctx context.Context, job *catalog.Job, req wire.JobDoneReq) {
	lost := lostCount(req)
	if lost == 0 {
		return
	}
	now := o.clock.Now().UTC()
	lines := make([]catalog.LogLine, 0, len(req.Damaged)+1)
	for _, d := range req.Damaged {
		if strings.HasPrefix(d, "... and ") {
			continue // a count of what the list left out: the line below says it
		}
		lines = append(lines, catalog.LogLine{Time: now, Level: "error", Msg: "lost: " + d})
	}
	if more := lost - int64(len(lines)); more > 0 {
		lines = append(lines, catalog.LogLine{Time: now, Level: "error", Msg: fmt.Sprintf(
			"... and %d more lost entries not listed here (the job log keeps %d lines): the log of the agent on client %s names every one",
			more, catalog.MaxJobLogLines, job.Client)})
	}
	if _, err := o.apply(ctx, &catalog.Command{Op: catalog.OpAppendJobLog, JobLog: &catalog.JobLog{JobID: job.ID, Lines: lines}}); err != nil {
		o.log.Warn("the lost entries of a restore were not logged", "job", job.ID, "lost", lost, "err", err)
	}
}

// recordAccount keeps what a restore that failed did restore and lose.
func (o *Orchestrator) recordAccount(ctx context.Context, job *catalog.Job, req wire.JobDoneReq) {
	upd := &catalog.JobUpdate{ID: job.ID, Files: req.Files, Bytes: req.Bytes, Entries: req.Entries, Restored: req.Restored,
		Lost: lostCount(req), Attempt: job.Attempt}
	if _, err := o.apply(ctx, &catalog.Command{Op: catalog.OpUpdateJob, JobUpdate: upd}); err != nil {
		o.log.Warn("record what a failed restore restored", "job", job.ID, "err", err)
	}
	done := fmt.Sprintf("before it failed, the restore restored %d of %s entries (%d files, %s)",
		req.Restored, ofEntries(req.Entries), req.Files, HumanBytes(req.Bytes))
	if req.Refused > 0 {
		o.jobLog(ctx, job.ID, "info", "%s, lost %d and left %d out (the warnings say why)", done, lostCount(req), req.Refused)
		return
	}
	o.jobLog(ctx, job.ID, "info", "%s and lost %d", done, lostCount(req))
}

func tapeStats(t *wire.TapeStats) *catalog.TapeStats {
	if t == nil {
		return nil
	}
	return &catalog.TapeStats{DriveBytes: t.DriveBytes, DriveSeconds: t.DriveSeconds, Stops: t.Stops, Tapes: t.Tapes, Spooled: t.Spooled}
}

func driveRate(t *wire.TapeStats) string {
	if t.DriveSeconds <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MB/s", float64(t.DriveBytes)/1e6/t.DriveSeconds)
}

// VolumeName is a volume's name for a log line, its id if the catalog does
// not know it.
func (o *Orchestrator) VolumeName(id uuid.UUID) string {
	if v, err := o.store.Volume(id); err == nil {
		return v.Name
	}
	return id.String()
}
