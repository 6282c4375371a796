// Package rpo says, for each client and each policy that backs it up, how
// old its newest good restore point is against the policy's recovery point
// objective (RPO), and which clients breach it.
//
// The rules, which `cairn status`, `cairn client list`, the metrics and the
// alerts all follow:
//
//   - A target is one client under one policy with an RPO. A client under two
//     policies has two targets, each judged on the file set of its policy: a
//     good backup of /etc says nothing about /srv.
//   - The good restore point is the newest complete backup of that client and
//     file set, whatever made it (the policy's run, or an ad hoc backup of the
//     same paths); its time is the point in time it represents (the backup's
//     start), since that is how much data a restore would lose.
//   - A target breaches when that age is strictly greater than the RPO. A
//     target with no good restore point yet is measured from when it began to
//     apply (the later of the policy's creation and the client's
//     registration), so a new policy is not in breach the moment it is made,
//     and is once its first RPO passes with nothing to show.
//   - A Tracker turns successive assessments into the beginning and the end of
//     breaches, so an alert goes out once when a breach begins and once when
//     it ends, not at every assessment.
//
// The package is pure: it reads no clock and no catalog; the leader passes
// the time and a lookup of restore points in.
package rpo

import (
	"cmp"
	"slices"
	"time"
)

// Target is one client under one policy with an RPO.
type Target struct {
	Client  string
	Policy  string
	FileSet string
	RPO     time.Duration
	// Since is when the target began to apply.
	Since time.Time
}

// Status is a target's state at one instant.
type Status struct {
	Target
	// Backup is the newest good restore point's backup, 0 when there is none;
	// LastGood is the time it represents.
	Backup   uint64
	LastGood time.Time
	// Age is how old the restore point is, or how long the target has
	// applied with none.
	Age    time.Duration
	Breach bool
}

// Latest finds the newest complete backup of a client and file set: its ID
// and the time it represents; ok is false when there is none.
type Latest func(client, fileSet string) (id uint64, at time.Time, ok bool, err error)

// Assess judges every target with an RPO at now, sorted by client then
// policy. Targets without an RPO are left out: there is nothing to breach.
func Assess(now time.Time, targets []Target, latest Latest) ([]Status, error) {
	out := make([]Status, 0, len(targets))
	for _, t := range targets {
		if t.RPO <= 0 {
			continue
		}
		st := Status{Target: t}
		id, at, ok, err := latest(t.Client, t.FileSet)
		if err != nil {
			return nil, err
		}
		if ok {
			st.Backup, st.LastGood, st.Age = id, at, now.Sub(at)
		} else {
			st.Age = now.Sub(t.Since)
		}
		st.Age = max(st.Age, 0)
		st.Breach = st.Age > t.RPO
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b Status) int {
		return cmp.Or(cmp.Compare(a.Client, b.Client), cmp.Compare(a.Policy, b.Policy))
	})
	return out, nil
}

// Breaches are the statuses that breach, in the order given.
func Breaches(sts []Status) []Status {
	var out []Status
	for _, s := range sts {
		if s.Breach {
			out = append(out, s)
		}
	}
	return out
}

type key struct{ client, policy string }

// Tracker remembers which targets breach between assessments. It is not
// safe for use by several goroutines; the leader's RPO loop owns it. What
// it remembers may be kept elsewhere and given back (Remember): the servers
// keep the breaches they alerted in the catalog, so a new leader's Tracker
// starts from them and does not say again a breach that goes on.
type Tracker struct {
	breaching map[key]Status
}

// Remember records that s's target breaches already, as the last
// assessment said: Update reports its end, not its beginning.
func (tr *Tracker) Remember(s Status) {
	if tr.breaching == nil {
		tr.breaching = map[key]Status{}
	}
	tr.breaching[key{s.Client, s.Policy}] = s
}

// Update takes the newest assessment and returns the breaches that began and
// the ones that ended since the last. A target that left the assessment (its
// policy was deleted, or lost its RPO) ends its breach too, so no alert
// stays open for a target nobody watches.
func (tr *Tracker) Update(sts []Status) (began, ended []Status) {
	if tr.breaching == nil {
		tr.breaching = map[key]Status{}
	}
	seen := make(map[key]bool, len(sts))
	for _, s := range sts {
		k := key{s.Client, s.Policy}
		seen[k] = true
		_, was := tr.breaching[k]
		switch {
		case s.Breach && !was:
			began = append(began, s)
			tr.breaching[k] = s
		case s.Breach:
			tr.breaching[k] = s
		case was:
			ended = append(ended, s)
			delete(tr.breaching, k)
		}
	}
	var gone []Status
	for k, s := range tr.breaching {
		if !seen[k] {
			gone = append(gone, s)
			delete(tr.breaching, k)
		}
	}
	slices.SortFunc(gone, func(a, b Status) int {
		return cmp.Or(cmp.Compare(a.Client, b.Client), cmp.Compare(a.Policy, b.Policy))
	})
	return began, append(ended, gone...)
}
