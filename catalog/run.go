package catalog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/schedule"
)

// Runs: the scheduler on the leader records every run of a policy for a
// client (OpRecordRuns) before it starts anything for it, and the catalog
// refuses a second record of the same run (policy, client, scheduled time).
// So two servers that both believe they lead, or a leader that records a
// run and dies, never start it twice: whoever comes second is refused, and
// a run recorded but not yet started is finished by the next leader under
// the request id the run's key gives (RunRequestID), which the start's own
// request index makes idempotent. DESIGN.md, "Runs".

// RunState is what became of a scheduled run.
type RunState string

const (
	// RunStarting: recorded, its job not yet known to be started. The
	// leader that finds it so (its own, or one a dead leader left)
	// starts it under the run's request id and records the job.
	RunStarting RunState = "starting"
	// RunDispatched: its job was started (JobID); the job says the rest.
	RunDispatched RunState = "dispatched"
	// RunSkipped: not started, because the policy's previous run for the
	// client was still going (Reason names its job).
	RunSkipped RunState = "skipped"
	// RunMissed: not started, because no server led from before it was due
	// until past its catch-up window (Reason says so).
	RunMissed RunState = "missed"
	// RunFailed: its job could not be made (an unknown client, a pool that
	// does not exist): Reason has the servers' refusal; or its policy was
	// deleted while it was starting, and no job was made for it.
	RunFailed RunState = "failed"
)

func (s RunState) valid() bool {
	switch s {
	case RunStarting, RunDispatched, RunSkipped, RunMissed, RunFailed:
		return true
	}
	return false
}

// Run is one scheduled run of a policy for one of its clients.
type Run struct {
	Policy    string    `json:"policy"`
	Client    string    `json:"client"`
	Scheduled time.Time `json:"scheduled"`
	// Asked is the level the schedule gave the run; Level the one it runs
	// at, and Promotion the job log's sentence when the two differ
	// (schedule.Promote).
	Asked     Level    `json:"asked"`
	Level     Level    `json:"level"`
	Promotion string   `json:"promotion,omitempty"`
	State     RunState `json:"state"`
	// JobID is the run's job, once dispatched.
	JobID  uint64 `json:"job_id,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Recorded and Updated are the leader's times of the record and of
	// its last change.
	Recorded time.Time `json:"recorded"`
	Updated  time.Time `json:"updated"`
}

// RunKey names a run: the catalog holds at most one run per key.
type RunKey struct {
	Policy    string    `json:"policy"`
	Client    string    `json:"client"`
	Scheduled time.Time `json:"scheduled"`
}

// Key is the run's key.
func (r *Run) Key() RunKey { return RunKey{Policy: r.Policy, Client: r.Client, Scheduled: r.Scheduled} }

func (k RunKey) String() string {
	return fmt.Sprintf("run of policy %s for client %s at %s", k.Policy, k.Client, k.Scheduled.UTC().Format(time.RFC3339))
}

// RunRequestID is the request id the run's job is started under: the same
// for every leader that starts it, so the start's request index turns a
// second start of the run into an answer with the first one's job.
func RunRequestID(k RunKey) string {
	h := sha256.Sum256(runKey(k.Policy, k.Client, k.Scheduled))
	return "run-" + hex.EncodeToString(h[:16])
}

// RunsRecord records runs of policies, all or none: a catch-up records the
// runs it missed with the one it starts, in one command, so a leader that
// dies half-way leaves either all of them or none for the next.
type RunsRecord struct {
	Runs []Run `json:"runs"`
	// ForgetBefore, when set, drops the runs of the same policies and
	// clients scheduled before it, but the newest of each (the one the
	// scheduler reads): the run history is kept for a while, not for
	// ever, at the cost of a few deletes per record.
	ForgetBefore time.Time `json:"forget_before,omitzero"`
	// Alert, when set, is raised with the runs (the missed_run alert of
	// those not started): recorded together, a leader that dies after the
	// record still leaves the alert owed to the next.
	Alert *AlertRaise `json:"alert,omitempty"`
}

// RunUpdate moves a starting run on: to dispatched with its job, or to
// failed with the reason. A run already in that state is left as it is (a
// new leader finishing a run the old one finished too).
type RunUpdate struct {
	Key    RunKey   `json:"key"`
	State  RunState `json:"state"`
	JobID  uint64   `json:"job_id,omitempty"`
	Reason string   `json:"reason,omitempty"`
	// Level, when set with a dispatch, is the level the job was made at
	// and Promotion why: the catalog promotes a job further than the
	// scheduler did when the run's chain has no full in the policy's
	// pools (createJob), and the run then shows the level that ran.
	Level     Level  `json:"level,omitempty"`
	Promotion string `json:"promotion,omitempty"`
}

// runKey is policy 0 client 0 scheduled (unix nanoseconds, 8 bytes), so
// the runs of one policy and client sort by time and the newest is last.
func runKey(policy, client string, at time.Time) []byte {
	k := append([]byte(policy), 0)
	k = append(k, client...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, uint64(at.UnixNano()))
}

func runPrefix(policy, client string) []byte {
	k := append([]byte(policy), 0)
	if client == "" {
		return k
	}
	k = append(k, client...)
	return append(k, 0)
}

func (a *applier) recordRuns(rec *RunsRecord) error {
	if len(rec.Runs) == 0 {
		return refuse(CodeInvalidArgument, "", "a record of runs names no run")
	}
	b := a.tx.Bucket(bRuns)
	for _, r := range rec.Runs {
		if err := validName("policy", r.Policy); err != nil {
			return err
		}
		if err := validName("client", r.Client); err != nil {
			return err
		}
		if r.Scheduled.IsZero() {
			return refuse(CodeInvalidArgument, "", "the %s has no scheduled time", r.Key())
		}
		switch r.State {
		case RunStarting, RunSkipped, RunMissed:
		default:
			return refuse(CodeInvalidArgument, "", "a run is recorded starting, skipped or missed, not %q", r.State)
		}
		if r.State == RunStarting && !r.Level.Valid() {
			return refuse(CodeInvalidArgument, "", "the %s has no valid level (%q)", r.Key(), r.Level)
		}
		k := runKey(r.Policy, r.Client, r.Scheduled)
		if b.Get(k) != nil {
			// The refusal that makes a run happen once: whoever records
			// second (another leader, a retry after a lost answer) is
			// told, and reads what the first one recorded.
			return refuse(CodeAlreadyExists, "", "the %s is already recorded", r.Key())
		}
		r.Scheduled = r.Scheduled.UTC()
		r.JobID = 0
		r.Recorded, r.Updated = a.now, a.now
		if err := putJSON(a.tx, bRuns, k, &r); err != nil {
			return err
		}
	}
	if rec.Alert != nil {
		if err := a.raiseAlert(rec.Alert, false); err != nil {
			return err
		}
	}
	if rec.ForgetBefore.IsZero() {
		return nil
	}
	done := map[string]bool{}
	for _, r := range rec.Runs {
		prefix := runPrefix(r.Policy, r.Client)
		if done[string(prefix)] {
			continue
		}
		done[string(prefix)] = true
		if err := forgetRuns(b, prefix, runKey(r.Policy, r.Client, rec.ForgetBefore)); err != nil {
			return err
		}
	}
	return nil
}

// forgetRuns deletes the keys of prefix below end, but the newest key of
// prefix.
func forgetRuns(b *bbolt.Bucket, prefix, end []byte) error {
	var old [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && bytes.Compare(k, end) < 0; k, _ = c.Next() {
		old = append(old, bytes.Clone(k))
	}
	if len(old) == 0 {
		return nil
	}
	if k, _ := c.Seek(old[len(old)-1]); k != nil {
		if next, _ := c.Next(); next == nil || !bytes.HasPrefix(next, prefix) {
			old = old[:len(old)-1] // the newest run: kept
		}
	}
	for _, k := range old {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) updateRun(u *RunUpdate) error {
	k := runKey(u.Key.Policy, u.Key.Client, u.Key.Scheduled)
	var r Run
	ok, err := getJSON(a.tx, bRuns, k, &r)
	if err != nil {
		return err
	}
	if !ok {
		return refuse(CodeNotFound, "", "the %s is not recorded", u.Key)
	}
	switch {
	case r.State == u.State && r.JobID == u.JobID:
		return nil // the same change again
	case r.State != RunStarting:
		return refuse(CodeWrongState, "", "the %s is %s already", u.Key, r.State)
	case u.State == RunDispatched && u.JobID == 0:
		return refuse(CodeInvalidArgument, "", "the %s is dispatched without a job", u.Key)
	case u.State != RunDispatched && u.State != RunFailed:
		return refuse(CodeInvalidArgument, "", "a starting run becomes dispatched or failed, not %q", u.State)
	case u.Level != "" && (u.State != RunDispatched || !u.Level.Valid()):
		return refuse(CodeInvalidArgument, "", "the %s gets a level (%q) only with its job, and a valid one", u.Key, u.Level)
	}
	r.State, r.JobID, r.Reason, r.Updated = u.State, u.JobID, u.Reason, a.now
	if u.Level != "" {
		r.Level, r.Promotion = u.Level, u.Promotion
	}
	return putJSON(a.tx, bRuns, k, &r)
}

// Run returns the run of key.
func (s *Store) Run(k RunKey) (*Run, error) {
	var r Run
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bRuns)
		if b == nil {
			return notFound("the %s is not recorded", k)
		}
		ok, err := getJSON(tx, bRuns, runKey(k.Policy, k.Client, k.Scheduled), &r)
		if err != nil {
			return err
		}
		if !ok {
			return notFound("the %s is not recorded", k)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// LastRun returns the newest run recorded of policy for client, nil when
// there is none.
func (s *Store) LastRun(policy, client string) (*Run, error) {
	var last *Run
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bRuns)
		if b == nil {
			return nil
		}
		return reverse(b, runPrefix(policy, client), func(k []byte) (bool, error) {
			var r Run
			if err := jsonUnmarshal(bRuns, k, b.Get(k), &r); err != nil {
				return false, err
			}
			last = &r
			return false, nil
		})
	})
	return last, err
}

// RunPolicies returns the names of the policies that have runs recorded,
// in name order: one seek per policy, however many runs each has. The
// scheduler finds in it the runs of policies since deleted.
func (s *Store) RunPolicies() ([]string, error) {
	var out []string
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bRuns)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, _ := c.First(); k != nil; {
			name, _, ok := bytes.Cut(k, []byte{0})
			if !ok {
				return fmt.Errorf("catalog: run key %q has no policy", k)
			}
			out = append(out, string(name))
			k, _ = c.Seek(append(bytes.Clone(name), 1)) // past every key of the policy
		}
		return nil
	})
	return out, err
}

// RunFilter selects runs; empty fields match everything.
type RunFilter struct {
	Policy string
	Client string
	States []RunState
	// Limit caps the number of runs returned, 0 for no cap.
	Limit int
}

// Runs returns the runs f selects, newest scheduled first.
func (s *Store) Runs(f RunFilter) ([]Run, error) {
	var out []Run
	var prefix []byte
	if f.Policy != "" {
		prefix = runPrefix(f.Policy, f.Client)
	}
	// Within one policy and client the keys are in time order, and the
	// scan can stop at the limit; across clients it cannot.
	ordered := f.Policy != "" && f.Client != ""
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bRuns)
		if b == nil {
			return nil
		}
		return reverse(b, prefix, func(k []byte) (bool, error) {
			if !bytes.HasPrefix(k, prefix) {
				return false, nil
			}
			var r Run
			if err := jsonUnmarshal(bRuns, k, b.Get(k), &r); err != nil {
				return false, err
			}
			if (f.Client == "" || r.Client == f.Client) && (len(f.States) == 0 || slices.Contains(f.States, r.State)) {
				out = append(out, r)
			}
			return !ordered || f.Limit <= 0 || len(out) < f.Limit, nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(x, y Run) int { return y.Scheduled.Compare(x.Scheduled) })
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

// ChainOf is what a new backup of client and file set would build on: the
// start times of its last complete full and of the last complete
// differential after it (zero when there is none). It reads the index of
// the file set's backups by time newest first and stops at the first full,
// so its cost is the length of the chain, not of the client's history; it
// decodes only the parents of the newest (the chain's length), which a
// scheduler tick does for every client whose run is due. Pools, when given, are the pools the
// chain may lie in (Policy.Pools, as createJob seeks a policy run's base):
// a full elsewhere is no base of this chain.
func (s *Store) ChainOf(client, fileSet string, pools []string) (schedule.Chain, error) {
	var ch schedule.Chain
	err := s.view(func(tx *bbolt.Tx) error {
		backups := tx.Bucket(bBackups)
		var parent uint64 // of the newest backup of the chain
		_, _, err := latestEntry(tx, client, fileSet, time.Time{}, func(e *backupTime) bool {
			if e.State != BackupComplete || (pools != nil && !slices.Contains(pools, e.Pool)) {
				return false
			}
			if ch.Length == 0 {
				ch.Length, parent = 1, e.Parent
			}
			switch e.Level {
			case LevelDifferential:
				if ch.LastDifferential.IsZero() {
					ch.LastDifferential = e.StartTime
				}
			case LevelFull:
				ch.LastFull = e.StartTime
				return true
			}
			return false
		})
		if err != nil {
			return err
		}
		// The sessions a restore of the newest reads: its parents, which
		// a differential makes fewer than the backups since the full.
		for parent != 0 && ch.Length <= maxChainWalk {
			var b chainLink
			if err := jsonUnmarshal(bBackups, u64(parent), backups.Get(u64(parent)), &b); err != nil {
				return err
			}
			ch.Length++
			parent = b.Parent
		}
		return nil
	})
	return ch, err
}

// maxChainWalk bounds the parents ChainOf follows: a chain longer than any
// policy's limit is long enough to be folded, whatever its length.
const maxChainWalk = 10000

// chainLink is the part of a Backup that ChainOf reads.
type chainLink struct {
	Parent uint64 `json:"parent"`
}
