package scheduler

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/alert"
	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/clock"
	"github.com/cairnbackup/cairn/schedule"
	"github.com/cairnbackup/cairn/server/orchestrator"
	"github.com/cairnbackup/cairn/wire"
)

// Policies are the policies the catalog holds (catalog.Store.Policies).
type Policies interface {
	Policies() ([]catalog.Policy, error)
}

// Raft proposes catalog commands, stamped with the leader's time, and
// returns the cluster's error as it is (orchestrator.Orchestrator.Propose).
type Raft interface {
	Propose(ctx context.Context, c *catalog.Command) (catalog.ApplyResult, error)
}

// Jobs starts backups and writes their logs (orchestrator.Orchestrator).
type Jobs interface {
	StartBackup(ctx context.Context, spec orchestrator.BackupSpec) (wire.JobStarted, error)
	JobLog(ctx context.Context, id uint64, level string, format string, args ...any)
}

// Alerts is told when the scheduler raised alerts: it records them in
// the catalog with its runs (catalog.RunsRecord.Alert), and whoever sends
// the alerts the catalog owes sends them.
type Alerts interface {
	Raised()
}

// Config is what the scheduler's decisions depend on.
type Config struct {
	// Tick is how often Run looks for runs that fell due.
	Tick time.Duration
	// RunHistory is how long the runs are kept in the catalog ('cairn job
	// runs'): each record of a client's runs drops that client's runs
	// older than this, but the newest. Zero keeps them all.
	RunHistory time.Duration
	// Starts is how many decisions (each a policy and a client: its
	// record, its job's start, its mark) a tick carries out at once; 0
	// means DefaultStarts. A start waits on the client's agent and on
	// Raft, so many clients due at 21:00 start together, not one after
	// another.
	Starts int
}

// DefaultStarts is Config.Starts when not set.
const DefaultStarts = 32

// Deps are the scheduler's collaborators.
type Deps struct {
	Store    *catalog.Store
	Policies Policies
	Raft     Raft
	Jobs     Jobs
	Alerts   Alerts // nil: no alerts
	Clock    clock.Clock
	Log      *slog.Logger
}

// Scheduler decides the runs of every policy. One goroutine runs it (Run),
// on the leader; Decide may be called directly by a test, never beside Run.
type Scheduler struct {
	cfg Config
	d   Deps
	// swept is, per policy whose runs endOrphans looked at this term,
	// the state of the policy it found them orphaned by (deleted,
	// disabled, or the clients it names): they are read again only when
	// that changes. Run starts each term with none.
	swept map[string]string
}

// New returns a scheduler; the server runs it while it leads.
func New(cfg Config, d Deps) *Scheduler {
	if d.Clock == nil {
		d.Clock = clock.Real()
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 30 * time.Second
	}
	if cfg.Starts <= 0 {
		cfg.Starts = DefaultStarts
	}
	return &Scheduler{cfg: cfg, d: d}
}

// Run decides at once, then at every tick of the clock, until ctx (the
// leader term's) ends.
func (s *Scheduler) Run(ctx context.Context) {
	t := s.d.Clock.NewTicker(s.cfg.Tick)
	defer t.Stop()
	s.swept = nil
	for {
		if err := s.Decide(ctx); err != nil && ctx.Err() == nil {
			s.d.Log.Warn("scheduler", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// Decide looks at every enabled policy and each of its clients once, at
// the clock's time: it records what fell due and starts what must run.
func (s *Scheduler) Decide(ctx context.Context) error {
	policies, err := s.d.Policies.Policies()
	if err != nil {
		return fmt.Errorf("read the policies: %w", err)
	}
	now := s.d.Clock.Now()
	var clients []catalog.Client // read once, when a policy selects clients by label
	var errs []error
	var work []decision
	applies := map[string][]string{} // an enabled policy's clients
	for i := range policies {
		p := &policies[i]
		if p.Disabled {
			continue
		}
		sch, err := p.ParsedSchedule()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		names := p.Clients
		if len(p.ClientLabels) > 0 {
			if clients == nil {
				if clients, err = s.d.Store.Clients(); err != nil {
					return fmt.Errorf("read the clients: %w", err)
				}
			}
			names = slices.Clone(names)
			for _, c := range clients {
				if !slices.Contains(names, c.Name) && p.AppliesTo(c.Name, c.Labels) {
					names = append(names, c.Name)
				}
			}
		}
		applies[p.Name] = names
		for _, client := range names {
			work = append(work, decision{p: p, sch: sch, client: client})
		}
	}
	if err := s.decideAll(ctx, work, now); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = append(errs, err)
	}
	if err := s.endOrphans(ctx, policies, applies); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// decision is one policy and client to decide for.
type decision struct {
	p      *catalog.Policy
	sch    *schedule.Schedule
	client string
}

// decideAll carries out the decisions of one tick, Config.Starts at once,
// by priority: every decision of a policy of higher priority is done
// (its run recorded, its job started, so dispatched or queued) before one
// of lower priority begins, so a run of lower priority never takes the
// place a limit leaves to one of higher priority due at the same tick.
// Runs of one priority start together; the orchestrator's limits (per
// client, node, pool, drive) queue what they hold back, and the queue
// serves by priority and scheduled time. Each decision is of its own
// policy and client, and the catalog refuses a second record of a run, so
// running them side by side changes nothing of rule 2.
func (s *Scheduler) decideAll(ctx context.Context, work []decision, now time.Time) error {
	slices.SortStableFunc(work, func(a, b decision) int { return cmp.Compare(b.p.Priority, a.p.Priority) })
	var mu sync.Mutex
	var errs []error
	for len(work) > 0 {
		n := 1
		for n < len(work) && work[n].p.Priority == work[0].p.Priority {
			n++
		}
		wave := work[:n]
		work = work[n:]
		sem := make(chan struct{}, s.cfg.Starts)
		var wg sync.WaitGroup
		for _, d := range wave {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if err := s.decide(ctx, d.p, d.sch, d.client, now); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("policy %s, client %s: %w", d.p.Name, d.client, err))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return errors.Join(errs...)
}

// endOrphans ends the runs left starting that no decision above looks at
// again: those of a policy since deleted or disabled, or of a client the
// policy no longer names. Each is marked dispatched with the job a start
// made for it (the leader died before the mark), else failed, saying why;
// an administrator who disabled a policy, or took a client out of it,
// expects no backup of it to start later. A policy's runs are read again
// only when what orphaned them changes, not at every tick.
func (s *Scheduler) endOrphans(ctx context.Context, policies []catalog.Policy, applies map[string][]string) error {
	names, err := s.d.Store.RunPolicies()
	if err != nil {
		return fmt.Errorf("read the policies of the runs: %w", err)
	}
	if s.swept == nil {
		s.swept = map[string]string{}
	}
	var errs []error
	for _, name := range names {
		state, clients := "deleted", []string(nil)
		if i := slices.IndexFunc(policies, func(p catalog.Policy) bool { return p.Name == name }); i >= 0 {
			state = "disabled"
			if !policies[i].Disabled {
				clients = slices.Sorted(slices.Values(applies[name]))
				state = "clients " + strings.Join(clients, ",")
			}
		} else if _, err := s.d.Store.Policy(name); !errors.Is(err, catalog.ErrNotFound) {
			if err != nil {
				errs = append(errs, err)
			}
			continue // made since the policies were read: the next tick decides its runs
		}
		if s.swept[name] == state {
			continue
		}
		runs, err := s.d.Store.Runs(catalog.RunFilter{Policy: name, States: []catalog.RunState{catalog.RunStarting}})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ended := true
		for i := range runs {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var why string
			switch {
			case state == "deleted":
				why = fmt.Sprintf("policy %s was deleted before the run was started", name)
			case state == "disabled":
				why = fmt.Sprintf("policy %s was disabled before the run was started", name)
			case !slices.Contains(clients, runs[i].Client):
				why = fmt.Sprintf("client %s was taken out of policy %s before the run was started", runs[i].Client, name)
			default:
				continue // the client's decision finishes it
			}
			if err := s.endOrphan(ctx, &runs[i], why); err != nil {
				errs = append(errs, err)
				ended = false
			}
		}
		if ended {
			s.swept[name] = state
		}
	}
	return errors.Join(errs...)
}

func (s *Scheduler) endOrphan(ctx context.Context, run *catalog.Run, why string) error {
	key := run.Key()
	update := &catalog.RunUpdate{Key: key, State: catalog.RunFailed, Reason: why}
	if req, err := s.d.Store.Request(catalog.RunRequestID(key)); err == nil && req.JobID != 0 {
		if j, err := s.d.Store.Job(req.JobID); err == nil && j.State != catalog.JobVoid {
			update = &catalog.RunUpdate{Key: key, State: catalog.RunDispatched, JobID: j.ID}
			update.Level, update.Promotion = s.ranAt(run, j.ID)
		}
	}
	res, err := s.d.Raft.Propose(ctx, &catalog.Command{Op: catalog.OpUpdateRun, RunUpdate: update})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		return fmt.Errorf("end the %s: %w", key, err)
	}
	s.d.Log.Info("ended a run no decision looks at", "run", key.String(), "state", update.State, "job", update.JobID, "why", why)
	return nil
}

// Plan is what one decision for a policy and client comes to: the runs to
// record (missed, skipped, or the one to start), or nothing.
type Plan struct {
	// Finish is a run a leader recorded and did not see started: it is
	// started again under its own request id before anything else.
	Finish *catalog.Run
	Record []catalog.Run
	// Start is the run of Record to start, nil when none.
	Start *catalog.Run
}

// Plan decides, from the catalog alone, what is owed for client under p
// at now. It writes nothing: Decide records and carries it out.
func (s *Scheduler) Plan(p *catalog.Policy, sch *schedule.Schedule, client string, now time.Time) (Plan, error) {
	var plan Plan
	last, err := s.d.Store.LastRun(p.Name, client)
	if err != nil {
		return plan, err
	}
	from := p.Created
	if p.Updated.After(from) {
		from = p.Updated
	}
	if last != nil {
		if last.State == catalog.RunStarting {
			plan.Finish = last
		}
		if last.Scheduled.After(from) {
			from = last.Scheduled
		}
	}
	window := p.CatchUpWindow
	if window <= 0 {
		window = catalog.DefaultCatchUpWindow
	}
	cu := sch.CatchUp(from, now, window)
	for _, m := range cu.Missed {
		reason := fmt.Sprintf("no server started it within its catch-up window of %s", schedule.FormatAge(window))
		if cu.Due {
			reason = fmt.Sprintf("the servers were down when it was due; the run at %s made up for the downtime", cu.Run.Time.UTC().Format(time.RFC3339))
		}
		plan.Record = append(plan.Record, catalog.Run{Policy: p.Name, Client: client, Scheduled: m.Time, Asked: catalog.Level(m.Level),
			Level: catalog.Level(m.Level), State: catalog.RunMissed, Reason: reason})
	}
	if !cu.Due {
		return plan, nil
	}
	run := catalog.Run{Policy: p.Name, Client: client, Scheduled: cu.Run.Time, Asked: catalog.Level(cu.Run.Level), Level: catalog.Level(cu.Run.Level)}
	busy, err := s.activeJob(p.Name, client, false)
	if err != nil {
		return plan, err
	}
	if busy != nil || plan.Finish != nil {
		run.State = catalog.RunSkipped
		if busy != nil {
			run.Reason = fmt.Sprintf("job %d of the run at %s is still %s", busy.ID, busy.Scheduled.UTC().Format(time.RFC3339), busy.State)
		} else {
			run.Reason = fmt.Sprintf("the run at %s is still being started", plan.Finish.Scheduled.UTC().Format(time.RFC3339))
		}
		plan.Record = append(plan.Record, run)
		return plan, nil
	}
	chain, err := s.d.Store.ChainOf(client, p.FileSet(), p.Pools())
	if err != nil {
		return plan, err
	}
	level, why := schedule.Promote(cu.Run.Level, cu.Run.Time, chain, p.Limits())
	run.Level, run.Promotion, run.State = catalog.Level(level), why, catalog.RunStarting
	plan.Record = append(plan.Record, run)
	plan.Start = &plan.Record[len(plan.Record)-1]
	return plan, nil
}

// activeJob is a job of policy for client that has not ended, nil when
// none: a new run of the policy would overlap it. A synthetic full (a fold)
// counts only when folds is set: a run is not skipped for one, which
// brings nothing new from the client and may take long; the run builds on
// the chain as it is, and the next fold takes it in.
func (s *Scheduler) activeJob(policy, client string, folds bool) (*catalog.Job, error) {
	jobs, err := s.d.Store.Jobs(catalog.JobFilter{Client: client, Type: catalog.JobBackup,
		States: []catalog.JobState{catalog.JobPending, catalog.JobQueued, catalog.JobRunning}})
	if err != nil {
		return nil, err
	}
	for i := range jobs {
		if jobs[i].Policy == policy && (folds || jobs[i].Level != catalog.LevelSyntheticFull) {
			return &jobs[i], nil
		}
	}
	return nil, nil
}

func (s *Scheduler) decide(ctx context.Context, p *catalog.Policy, sch *schedule.Schedule, client string, now time.Time) error {
	if err := s.decideRun(ctx, p, sch, client, now); err != nil {
		return err
	}
	return s.fold(ctx, p, client)
}

// fold starts a synthetic full of the client's chain once a restore of its
// newest backup reads the policy's MaxChain sessions, while no job of the
// policy runs for the client: the next incremental then builds on it, and
// no restore of the chain's newest point reads more than MaxChain. Its
// request id names the chain's state, so every leader and every tick
// starts it once, and a fold that failed is not tried again until the
// chain changes.
func (s *Scheduler) fold(ctx context.Context, p *catalog.Policy, client string) error {
	if p.MaxChain < 2 {
		return nil
	}
	chain, err := s.d.Store.ChainOf(client, p.FileSet(), p.Pools())
	if err != nil {
		return err
	}
	ok, why := schedule.Consolidate(chain, p.Limits())
	if !ok {
		return nil
	}
	if busy, err := s.activeJob(p.Name, client, true); err != nil || busy != nil {
		return err
	}
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d\x00%d", p.Name, client, chain.LastFull.UnixNano(), chain.Length))
	started, err := s.d.Jobs.StartBackup(ctx, orchestrator.BackupSpec{
		Client: client, Paths: paths(p.Paths), Excludes: paths(p.Excludes), Level: string(catalog.LevelSyntheticFull),
		Pool: p.PoolFor(catalog.LevelSyntheticFull), RequestID: "fold-" + hex.EncodeToString(h[:16]), Retry: true,
		Policy: p.Name, Priority: p.Priority,
	})
	if err != nil {
		s.d.Log.Warn("a chain over the policy's maximum length could not be folded", "policy", p.Name, "client", client, "err", err)
		return nil
	}
	if !started.Repeated {
		s.d.Jobs.JobLog(ctx, started.JobID, "info", "policy %s: %s", p.Name, why)
	}
	return nil
}

func (s *Scheduler) decideRun(ctx context.Context, p *catalog.Policy, sch *schedule.Schedule, client string, now time.Time) error {
	plan, err := s.Plan(p, sch, client, now)
	if err != nil {
		return err
	}
	if plan.Finish != nil {
		s.start(ctx, p, plan.Finish, true, now)
		if len(plan.Record) == 0 {
			return nil
		}
		// The start may have ended the run's overlap (a failed start):
		// decide again with it settled.
		if plan, err = s.Plan(p, sch, client, now); err != nil {
			return err
		}
		if plan.Finish != nil {
			plan.Finish = nil // still starting: the new run is skipped
		}
	}
	return s.carryOut(ctx, p, plan, now)
}

// carryOut records a plan's runs, alerts on those not started and starts
// the one to start. A record the catalog refuses because another leader
// recorded one of its runs first is dropped whole: that leader's decision
// stands, and the next tick plans again from it.
func (s *Scheduler) carryOut(ctx context.Context, p *catalog.Policy, plan Plan, now time.Time) error {
	if len(plan.Record) == 0 {
		return nil
	}
	client := plan.Record[0].Client
	rec := &catalog.RunsRecord{Runs: plan.Record, Alert: s.missedAlert(p, client, plan.Record, now)}
	if s.cfg.RunHistory > 0 {
		rec.ForgetBefore = now.Add(-s.cfg.RunHistory)
	}
	res, err := s.d.Raft.Propose(ctx, &catalog.Command{Op: catalog.OpRecordRuns, Runs: rec})
	if err != nil {
		return fmt.Errorf("record runs: %w", err)
	}
	if res.Err != nil {
		var ce *catalog.Error
		if errors.As(res.Err, &ce) && ce.Code == catalog.CodeAlreadyExists {
			// Another leader recorded them first; the next tick sees
			// what it recorded and finishes its start if need be.
			s.d.Log.Info("runs already recorded by another leader", "policy", p.Name, "client", client)
			return nil
		}
		return fmt.Errorf("record runs: %w", res.Err)
	}
	if rec.Alert != nil {
		s.d.Log.Warn("runs not started; alert raised", "policy", p.Name, "client", client, "alert", strings.ReplaceAll(rec.Alert.Condition, "\x00", " "))
		if s.d.Alerts != nil {
			s.d.Alerts.Raised()
		}
	}
	if plan.Start != nil {
		s.start(ctx, p, plan.Start, false, now)
	}
	return nil
}

// missedAlert is the one missed_run alert of the runs recorded missed or
// skipped, raised with them (so a leader that dies after the record
// leaves it owed, and none sends it twice); nil when there are none.
func (s *Scheduler) missedAlert(p *catalog.Policy, client string, runs []catalog.Run, now time.Time) *catalog.AlertRaise {
	var missed []catalog.Run
	for _, r := range runs {
		if r.State == catalog.RunMissed || r.State == catalog.RunSkipped {
			missed = append(missed, r)
		}
	}
	if len(missed) == 0 {
		return nil
	}
	newest := missed[len(missed)-1]
	body, err := json.Marshal(alert.NewMissedRun(now, p.Name, client, newest.Scheduled, len(missed), newest.Reason))
	if err != nil {
		s.d.Log.Error("encode the alert of a missed run", "policy", p.Name, "client", client, "err", err)
		return nil
	}
	return &catalog.AlertRaise{Condition: MissedCondition(p.Name, client, newest.Scheduled), Kind: string(alert.MissedRun),
		Client: client, Policy: p.Name, Event: body}
}

// MissedCondition names the missed_run alert of a record of runs by its
// newest run: each record has its own.
func MissedCondition(policy, client string, newest time.Time) string {
	return "missed_run\x00" + policy + "\x00" + client + "\x00" + newest.UTC().Format(time.RFC3339Nano)
}

// start starts the job of a run recorded starting, under the run's request
// id, and records what became of it. retry says an earlier leader may
// have started it already.
func (s *Scheduler) start(ctx context.Context, p *catalog.Policy, run *catalog.Run, retry bool, now time.Time) {
	key := run.Key()
	rid := catalog.RunRequestID(key)
	spec := orchestrator.BackupSpec{
		Client: run.Client, Paths: paths(p.Paths), Excludes: paths(p.Excludes), Level: string(run.Level), Pool: p.PoolFor(run.Level),
		RequestID: rid, Retry: retry, Policy: p.Name, Scheduled: run.Scheduled, Priority: p.Priority,
		OneFileSystem: p.OneFileSystem,
	}
	if p.Application != nil {
		spec.Application = orchestrator.WireApplication(*p.Application)
	}
	started, err := s.d.Jobs.StartBackup(ctx, spec)
	jobID := started.JobID
	if err != nil {
		// A start that failed may still have made its job (its agent
		// refused the order): the request index says. A job voided
		// (its start never confirmed) never ran: the next tick's start
		// under the same id is told so, and the run fails.
		if req, rerr := s.d.Store.Request(rid); rerr == nil && req.JobID != 0 {
			if j, jerr := s.d.Store.Job(req.JobID); jerr == nil && j.State != catalog.JobVoid {
				jobID = req.JobID
			}
		}
	}
	update := &catalog.RunUpdate{Key: key}
	switch {
	case jobID != 0:
		update.State, update.JobID = catalog.RunDispatched, jobID
	case definite(err):
		update.State, update.Reason = catalog.RunFailed, err.Error()
	default:
		window := p.CatchUpWindow
		if window <= 0 {
			window = catalog.DefaultCatchUpWindow
		}
		if now.Sub(run.Scheduled) <= window {
			s.d.Log.Warn("the start of a run was not confirmed; trying again at the next tick", "run", key.String(), "err", err)
			return
		}
		update.State, update.Reason = catalog.RunFailed, fmt.Sprintf("not started within its catch-up window of %s: %v", schedule.FormatAge(window), err)
	}
	if update.State == catalog.RunDispatched {
		update.Level, update.Promotion = s.ranAt(run, jobID)
		// Before the run is marked dispatched: a leader that dies after
		// the job was made leaves the run starting, and the next one
		// writes these lines (a second time only if this one died
		// between them and the mark).
		s.d.Jobs.JobLog(ctx, jobID, "info", "run of policy %s scheduled at %s, level %s", p.Name, run.Scheduled.UTC().Format(time.RFC3339), run.Asked)
		if run.Promotion != "" {
			s.d.Jobs.JobLog(ctx, jobID, "info", "%s", run.Promotion)
		}
	}
	res, uerr := s.d.Raft.Propose(ctx, &catalog.Command{Op: catalog.OpUpdateRun, RunUpdate: update})
	if uerr == nil {
		uerr = res.Err
	}
	if uerr != nil {
		// The run stays starting: the next tick (or leader) starts it
		// again under its request id, which answers the same job.
		s.d.Log.Warn("record the start of a run", "run", key.String(), "err", uerr)
		return
	}
	if update.State == catalog.RunFailed {
		s.d.Log.Warn("a run could not be started", "run", key.String(), "reason", update.Reason)
	}
}

// ranAt is the level run's job was made at and why, when the catalog
// made it at another level than the run asked (a chain's full expired or
// was deleted between the run's plan and its job); empty when it did not.
func (s *Scheduler) ranAt(run *catalog.Run, jobID uint64) (catalog.Level, string) {
	j, err := s.d.Store.Job(jobID)
	if err != nil || j.Level == "" || j.Level == run.Level {
		return "", ""
	}
	why := fmt.Sprintf("promoted to %s when its job was made (job %d's log says why)", j.Level, j.ID)
	for _, l := range j.Log {
		if strings.HasPrefix(l.Msg, "promoted to ") {
			why = l.Msg
			break
		}
	}
	if run.Promotion != "" {
		why = run.Promotion + "; then " + why
	}
	return j.Level, why
}

// definite reports whether a start's error says it will never take effect
// as asked: bad input, or a thing that does not exist. Anything else (no
// quorum, a lost leadership, an unknown outcome) may pass, and the start is
// tried again.
func definite(err error) bool {
	if err == nil {
		return false
	}
	code, _, _ := orchestrator.Describe(err)
	return slices.Contains([]string{wire.CodeInvalidArgument, wire.CodeUnknownClient, wire.CodeNotFound, wire.CodeAlreadyExists,
		wire.CodeWrongState, wire.CodeCommandRefused, wire.CodeDuplicateAgent}, code)
}

func paths(ps []string) []fileindex.Path {
	out := make([]fileindex.Path, len(ps))
	for i, p := range ps {
		out[i] = fileindex.Path(p)
	}
	return out
}
