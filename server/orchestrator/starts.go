package orchestrator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/server/cluster"
	"github.com/cairnbackup/cairn/wire"
)

// Starts. A client names every start (backup, restore, tape label, library
// move) with a request id. A backup or restore is created pending under that
// id, then accepted just before the answer goes out; only an accepted job is
// ever dispatched, and the leader voids a job nobody accepted within
// StartConfirmTimeout. So an answer of "failed" is only given when no accept
// of the job was proposed, and then the job never runs; when the create or
// the accept may have been committed without this server seeing it applied,
// the answer is outcome_unknown, and a repeat of the request (same id)
// answers the same job, accepting it if it is still pending. catalog/
// DESIGN.md, "Starts", has the whole argument.

// VoidReason is what a voided job's log and error say.
const VoidReason = "its start was not confirmed to the caller"

// outcome is what became of a proposed command, as far as this server can
// tell.
type outcome int

const (
	applied     outcome = iota // applied here; a refusal is in the result
	notProposed                // never in the log: it will not take effect
	committed                  // in the log, but this server's catalog stopped before it
	unknown                    // perhaps in the log
)

func outcomeOf(err error) outcome {
	switch {
	case err == nil:
		return applied
	case errors.Is(err, cluster.ErrCommittedNotApplied):
		return committed
	case errors.Is(err, cluster.ErrOutcomeUnknown):
		return unknown
	case errors.Is(err, cluster.ErrNotLeader), errors.Is(err, cluster.ErrTimeout), errors.Is(err, cluster.ErrShutdown),
		errors.Is(err, catalog.ErrFSMStopped), errors.Is(err, catalog.ErrBadCommand),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return notProposed
	}
	var full *catalog.DiskFullError
	if errors.As(err, &full) {
		return notProposed // the leader's own Raft log refused it
	}
	return unknown
}

// RequestDigest identifies a start request's parameters, so that the same
// request id with other parameters is refused instead of answered with a
// job that does something else. The request id itself is left out.
func RequestDigest(op string, req any) string {
	data, err := json.Marshal(req)
	if err != nil {
		return ""
	}
	h := sha256.New()
	h.Write([]byte(op + "\x00"))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// RequestID checks a client's request id, or makes one for a client that
// sent none (an older CLI): such a request cannot be repeated.
func RequestID(st wire.Start) (string, bool, error) {
	if st.RequestID == "" {
		return uuid.NewString(), false, nil
	}
	if err := wire.ValidateRequestID(st.RequestID); err != nil {
		return "", false, relay(err)
	}
	return st.RequestID, st.Retry, nil
}

// UnknownOutcome says a start may or may not have taken effect, and how to
// find out without doing it twice.
func UnknownOutcome(what, rid string, cause error) error {
	return errorf(ErrOutcomeUnknown,
		fmt.Sprintf("run the same command again with --request-id %s (it never starts a second one), or look for it with 'cairn job list --request-id %s'", rid, rid),
		"the servers could not confirm whether %s (request %s) took effect; it may still: %w", what, rid, cause)
}

// startJobOnce serialises the tries of one request id on this server, so
// that what one try finds in the catalog no concurrent try of the same
// request changes behind it.
func (o *Orchestrator) startJobOnce(ctx context.Context, what string, st wire.Start, digest string, job func() (*catalog.Job, func(uint64), error)) (wire.JobStarted, error) {
	if st.RequestID == "" {
		st.RequestID, st.Retry = uuid.NewString(), false // an older client: the request cannot be repeated
	}
	if err := wire.ValidateRequestID(st.RequestID); err != nil {
		return wire.JobStarted{}, relay(err)
	}
	return Shared(o, ctx, "job/"+st.RequestID, func() (wire.JobStarted, error) {
		// A try that may repeat an earlier one reads the request index
		// once everything committed before it is applied here; then what
		// it finds there is all there is, and no accept of its job can be
		// in the log unseen.
		sure := !st.Retry
		if st.Retry {
			err := o.raft.Barrier(ctx)
			sure = err == nil && o.mem.CatalogStopped() == nil
			if err != nil {
				o.log.Debug("barrier before a repeated start", "request", st.RequestID, "err", err)
			}
		}
		if rec, err := o.store.Request(st.RequestID); err == nil {
			if rec.Op != catalog.OpCreateJob || (rec.Digest != "" && rec.Digest != digest) {
				return wire.JobStarted{}, errorf(ErrAlreadyExists, "give each request its own id: only a repeat of the very same command may reuse one",
					"request id %s was used for another request", st.RequestID)
			}
			return o.confirm(ctx, what, st.RequestID, rec.JobID, true)
		}
		j, note, err := job()
		if err != nil {
			return wire.JobStarted{}, err
		}
		return o.startJob(ctx, what, st.RequestID, sure, digest, j, note)
	})
}

// startJob carries out a new start request: create the job pending under
// its request id, accept it, dispatch it. note runs once a new job is
// accepted. sure is false when an earlier try of the request may be in the
// log unseen here: a failure is then an unknown outcome.
func (o *Orchestrator) startJob(ctx context.Context, what, rid string, sure bool, digest string, job *catalog.Job, note func(id uint64)) (wire.JobStarted, error) {
	if err := o.mem.Admit(); err != nil {
		if !sure {
			return wire.JobStarted{}, UnknownOutcome(what, rid, err)
		}
		return wire.JobStarted{}, NotStarted(o.mem.ApplyError(err), what)
	}
	job.State = catalog.JobPending
	res, err := o.propose(ctx, &catalog.Command{Op: catalog.OpCreateJob, Job: job,
		Request: &catalog.RequestKey{ID: rid, Digest: digest}})
	switch outcomeOf(err) {
	case applied:
		if res.Err != nil {
			return wire.JobStarted{}, CatalogError(res.Err)
		}
	case notProposed:
		if !sure {
			return wire.JobStarted{}, UnknownOutcome(what, rid, err)
		}
		return wire.JobStarted{}, NotStarted(o.mem.ApplyError(err), what)
	case committed:
		// In the log, so every member holds the job, pending. Nobody
		// accepts it unless this request is repeated: it is voided, and
		// never runs.
		if !sure {
			return wire.JobStarted{}, UnknownOutcome(what, rid, err)
		}
		return wire.JobStarted{}, NotStarted(o.mem.ApplyError(err), what)
	default:
		return wire.JobStarted{}, UnknownOutcome(what, rid, err)
	}
	if note != nil && !res.Repeat {
		note(res.JobID)
	}
	return o.confirm(ctx, what, rid, res.JobID, res.Repeat)
}

// confirm accepts a job created by a start and answers it: the same answer
// to a repeat of the request, whatever became of the job since, except a
// job that was voided, which never ran.
func (o *Orchestrator) confirm(ctx context.Context, what, rid string, id uint64, repeated bool) (wire.JobStarted, error) {
	job, err := o.store.Job(id)
	if err != nil {
		return wire.JobStarted{}, CatalogError(err)
	}
	accepted := false
	if job.State == catalog.JobPending {
		res, err := o.propose(ctx, &catalog.Command{Op: catalog.OpAcceptJob, Accept: &catalog.JobAccept{JobID: id}})
		switch outcomeOf(err) {
		case applied:
			if res.Err != nil {
				return wire.JobStarted{}, voided(CatalogError(res.Err), what, rid)
			}
			accepted = true
		case notProposed:
			// Still pending: voided in time unless a repeat accepts it.
			// No other accept of it is in the log: its create was applied
			// here, after anything before it, and the tries of its
			// request run one at a time.
			return wire.JobStarted{}, NotStarted(o.mem.ApplyError(err), what)
		default:
			// The accept may be (or is) in the log: the job may run.
			return wire.JobStarted{}, UnknownOutcome(what, rid, err)
		}
		if job, err = o.store.Job(id); err != nil {
			return wire.JobStarted{}, CatalogError(err)
		}
	}
	if job.State == catalog.JobVoid {
		return wire.JobStarted{}, voided(errorf(ErrWrongState, "", "job %d was voided: %s", job.ID, job.Error), what, rid)
	}
	if accepted {
		o.publishEvent(wire.JobEvent{JobID: id, State: string(job.State)})
		if err := o.tryDispatch(ctx, job, nil); err != nil {
			if j, jerr := o.store.Job(id); jerr == nil && j.State.Done() {
				return wire.JobStarted{}, err // the agent refused the order: the job failed
			}
			// The job is accepted; the next round tries again.
			o.log.Warn("dispatch of a job just started", "job", id, "err", err)
		}
		if job, err = o.store.Job(id); err != nil {
			return wire.JobStarted{}, CatalogError(err)
		}
	}
	started := wire.JobStarted{JobID: job.ID, Level: string(job.Level), Waiting: job.Waiting, State: string(job.State),
		RequestID: rid, Repeated: repeated}
	if job.Type == catalog.JobRestore {
		// Which backup "the latest" was, and of which file set.
		started.BackupID = job.BackupID
		if b, err := o.store.Backup(job.BackupID); err == nil {
			started.FileSet = FileSetInfo(b)
		}
	}
	return started, nil
}

// NotStarted says a start failed, with the code and hint of err, why:
// nothing of it will run.
func NotStarted(err error, what string) error {
	code, msg, hint := failure(err)
	return &Error{Code: code, Msg: fmt.Sprintf("%s; %s was not started", msg, what), Hint: hint, Err: err}
}

// voided says a start failed for good: its job was voided and never ran.
func voided(err error, what, rid string) error {
	code, msg, _ := failure(err)
	return &Error{Code: code, Msg: fmt.Sprintf("%s (request %s) did not start: %s; nothing of it ran", what, rid, msg),
		Hint: "start it again without --request-id, or with a new one", Err: err}
}

// sweepStarts voids the jobs whose start nobody confirmed in time, and
// forgets request ids older than RequestIDTTL. The leader runs it.
func (o *Orchestrator) sweepStarts(ctx context.Context) {
	if o.mem.CatalogStopped() != nil {
		return // it would propose nothing; another leader sweeps, or this one once it resumes
	}
	now := o.clock.Now().UTC()
	cutoff := now.Add(-o.cfg.StartConfirmTimeout)
	pending, err := o.store.Jobs(catalog.JobFilter{States: []catalog.JobState{catalog.JobPending}})
	if err != nil {
		return
	}
	var stale []uint64
	for _, j := range pending {
		if !j.Created.After(cutoff) {
			stale = append(stale, j.ID)
		}
	}
	if len(stale) > 0 {
		if _, err := o.apply(ctx, &catalog.Command{Op: catalog.OpVoidJobs, Time: now, Void: &catalog.JobsVoid{
			JobIDs: stale, CreatedBefore: cutoff, Reason: VoidReason,
		}}); err != nil {
			o.log.Warn("void jobs whose start was not confirmed", "jobs", stale, "err", err)
		} else {
			for _, id := range stale {
				if j, err := o.store.Job(id); err == nil && j.State == catalog.JobVoid {
					o.log.Warn("voided a job whose start was not confirmed to its caller; it never ran", "job", id, "request", j.RequestID)
					o.mem.JobEnded(j)
					o.publishEvent(wire.JobEvent{JobID: id, State: string(j.State), Message: j.Error})
				}
			}
		}
	}
	forget := now.Add(-o.cfg.RequestIDTTL)
	if oldest, err := o.store.OldestRequest(); err == nil && !oldest.IsZero() && oldest.Before(forget) {
		if _, err := o.apply(ctx, &catalog.Command{Op: catalog.OpForgetRequests, Time: now, Forget: &catalog.RequestsForget{Before: forget}}); err != nil {
			o.log.Warn("forget old request ids", "err", err)
		}
	}
}
