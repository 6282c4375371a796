package alert

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Version is the version of the event's JSON, its "version" field. It
// changes only when a field changes meaning or goes away; a new field does
// not change it, so a receiver ignores fields it does not know.
const Version = 1

// Kind is what happened. The values are the "kind" field of the JSON.
type Kind string

const (
	// JobFailed: a job ended failed, after its last attempt.
	JobFailed Kind = "job_failed"
	// RPOBreach: a client's last good restore point of a policy is older
	// than the policy's RPO target.
	RPOBreach Kind = "rpo_breach"
	// RPOResolved: a breach is over, a restore point within the target
	// exists again.
	RPOResolved Kind = "rpo_resolved"
	// MissedRun: a scheduled run did not run (the servers were down past
	// its catch-up window, or the previous run was still going).
	MissedRun Kind = "missed_run"
	// PoolShort: a pool cannot take a policy's next run: too little free
	// space, or no volume it could write.
	PoolShort Kind = "pool_short"
)

// Kinds are every kind, in the order the package doc lists them.
var Kinds = []Kind{JobFailed, RPOBreach, RPOResolved, MissedRun, PoolShort}

func (k Kind) valid() bool {
	for _, known := range Kinds {
		if k == known {
			return true
		}
	}
	return false
}

// condition is the family of a kind: a breach and its resolution are two
// states of one condition, so that the end of a breach is sent at once
// even within the repeat interval of the breach.
func (k Kind) condition() string {
	if k == RPOResolved {
		return string(RPOBreach)
	}
	return string(k)
}

// Event is one alert. Its JSON is what a webhook receives and a command
// reads on its stdin; the package doc lists the fields. The constructors
// (NewJobFailed, NewRPOBreach, ...) fill the fields of their kind and the
// summary.
type Event struct {
	Version int  `json:"version"`
	Kind    Kind `json:"kind"`
	// ID names this alert, the same on every attempt and from every
	// server that sends it: a receiver that gets it twice (a leader died
	// after its delivery and before it recorded it) drops the second.
	// Empty for an alert the servers do not record (job_failed,
	// pool_short).
	ID string `json:"id,omitempty"`
	// Time is when the condition was seen; the dispatcher's clock's time
	// when left zero.
	Time time.Time `json:"time"`
	// Summary is one line for a person: a chat message, a mail subject.
	Summary string `json:"summary"`

	Client string `json:"client,omitempty"`
	Policy string `json:"policy,omitempty"`
	Pool   string `json:"pool,omitempty"`
	Job    uint64 `json:"job,omitempty"`
	Level  string `json:"level,omitempty"`
	// Error says why a job failed or a run was missed.
	Error string `json:"error,omitempty"`

	// Scheduled is the scheduled time of a missed run, or of the run a
	// short pool cannot take.
	Scheduled *time.Time `json:"scheduled,omitempty"`
	// Missed counts the runs a missed_run event stands for (a downtime
	// misses several at once); Scheduled is the newest.
	Missed int `json:"missed,omitempty"`

	// LastGood is the time of the last good restore point, absent when
	// there is none; AgeSeconds its age at Time and TargetSeconds the
	// RPO target, for rpo_breach and rpo_resolved.
	LastGood      *time.Time `json:"last_good,omitempty"`
	AgeSeconds    int64      `json:"age_seconds,omitempty"`
	TargetSeconds int64      `json:"target_seconds,omitempty"`

	// NeedBytes is what a pool's next run is expected to write and
	// FreeBytes what the pool has, for pool_short.
	NeedBytes int64 `json:"need_bytes,omitempty"`
	FreeBytes int64 `json:"free_bytes,omitempty"`

	// Suppressed counts the events of the same condition and state that
	// were not sent since the last one was, because they came within the
	// repeat interval.
	Suppressed int `json:"suppressed,omitempty"`
}

// NewJobFailed is the alert for job id of client, ended failed with err at t.
func NewJobFailed(t time.Time, id uint64, client, policy, level, err string) Event {
	e := Event{Version: Version, Kind: JobFailed, Time: t, Job: id, Client: client, Policy: policy, Level: level, Error: err}
	what := "job " + strconv.FormatUint(id, 10)
	if level != "" {
		what += " (" + level + " backup)"
	}
	e.Summary = fmt.Sprintf("%s of client %s failed%s: %s", what, client, policyOf(policy), orUnknown(err))
	return e
}

// NewRPOBreach is the alert for a client whose last good restore point of
// policy (lastGood; zero when it has none) is older at now than target.
func NewRPOBreach(now time.Time, client, policy string, lastGood time.Time, target time.Duration) Event {
	e := rpo(RPOBreach, now, client, policy, lastGood, target)
	if lastGood.IsZero() {
		e.Summary = fmt.Sprintf("RPO breach: client %s has no good restore point%s, target %s", client, policyOf(policy), human(target))
	} else {
		e.Summary = fmt.Sprintf("RPO breach: client %s's last good restore point%s is %s old, target %s", client, policyOf(policy), human(now.Sub(lastGood)), human(target))
	}
	return e
}

// NewRPOResolved is the alert that the breach of client and policy is over:
// lastGood is the restore point that ended it.
func NewRPOResolved(now time.Time, client, policy string, lastGood time.Time, target time.Duration) Event {
	e := rpo(RPOResolved, now, client, policy, lastGood, target)
	e.Summary = fmt.Sprintf("RPO met again: client %s's last good restore point%s is %s old, target %s", client, policyOf(policy), human(now.Sub(lastGood)), human(target))
	return e
}

func rpo(kind Kind, now time.Time, client, policy string, lastGood time.Time, target time.Duration) Event {
	e := Event{Version: Version, Kind: kind, Time: now, Client: client, Policy: policy, TargetSeconds: int64(target / time.Second)}
	if !lastGood.IsZero() {
		lg := lastGood
		e.LastGood = &lg
		e.AgeSeconds = int64(now.Sub(lastGood) / time.Second)
	}
	return e
}

// NewMissedRun is the alert for missed runs of policy for client (empty
// when the run was the policy's for all its clients): missed of them, the
// newest scheduled at scheduled, each not run for reason.
func NewMissedRun(now time.Time, policy, client string, scheduled time.Time, missed int, reason string) Event {
	s := scheduled
	e := Event{Version: Version, Kind: MissedRun, Time: now, Policy: policy, Client: client, Scheduled: &s, Missed: missed, Error: reason}
	of := "policy " + policy
	if client != "" {
		of += " for client " + client
	}
	when := "scheduled " + scheduled.Format(time.RFC3339)
	if missed > 1 {
		e.Summary = fmt.Sprintf("missed %d runs of %s, the last %s: %s", missed, of, when, orUnknown(reason))
	} else {
		e.Summary = fmt.Sprintf("missed run of %s %s: %s", of, when, orUnknown(reason))
	}
	return e
}

// NewPoolShort is the alert that pool cannot take the run of policy
// scheduled at scheduled: it needs need bytes and has free, or it cannot
// for reason (no writable volume) when need is 0.
func NewPoolShort(now time.Time, pool, policy string, scheduled time.Time, need, free int64, reason string) Event {
	s := scheduled
	e := Event{Version: Version, Kind: PoolShort, Time: now, Pool: pool, Policy: policy, Scheduled: &s, NeedBytes: need, FreeBytes: free, Error: reason}
	why := reason
	if need > 0 {
		why = fmt.Sprintf("it needs about %s and has %s free", bytesHuman(need), bytesHuman(free))
		if reason != "" {
			why += " (" + reason + ")"
		}
	}
	e.Summary = fmt.Sprintf("pool %s cannot take the run of policy %s at %s: %s", pool, policy, scheduled.Format(time.RFC3339), orUnknown(why))
	return e
}

// Subject is what the event is about, within its kind: the client and
// policy of an RPO event or a missed run, the pool of a short pool (and
// the policy), the job of a failed job. Two events of one condition and
// one subject are the same alert repeated.
func (e Event) Subject() string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	switch e.Kind {
	case JobFailed:
		add("job", strconv.FormatUint(e.Job, 10))
	case PoolShort:
		add("pool", e.Pool)
		add("policy", e.Policy)
	default:
		add("client", e.Client)
		add("policy", e.Policy)
	}
	return strings.Join(parts, " ")
}

// key is the dedupe key: condition and subject.
func (e Event) key() string { return e.Kind.condition() + " " + e.Subject() }

func policyOf(p string) string {
	if p == "" {
		return ""
	}
	return " (policy " + p + ")"
}

func orUnknown(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}

// human writes a duration as a person reads an age: days and hours, hours
// and minutes, or seconds.
func human(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d >= 24*time.Hour:
		days, hours := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour)
		if hours == 0 {
			return fmt.Sprintf("%dd", days)
		}
		return fmt.Sprintf("%dd%dh", days, hours)
	case d >= time.Hour:
		h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
		if m == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	}
	return fmt.Sprintf("%ds", int(d/time.Second))
}

func bytesHuman(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
