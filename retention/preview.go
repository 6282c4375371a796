package retention

import (
	"cmp"
	"slices"
	"time"

	"github.com/cairnbackup/cairn/schedule"
)

// Foreseen is one run a preview foresees, and what the expiry pass after it
// would expire.
type Foreseen struct {
	schedule.Run
	// Level is the level the run would take once promoted; Run.Level is the
	// level its rule asks for.
	Level schedule.Level
	// Promoted is the promotion's reason, "" when the run keeps its level.
	Promoted string
	// Backup is the ID the preview gave the run's backup. Foreseen backups
	// are numbered after every ID of the history, so they are told apart
	// from real ones.
	Backup uint64
	// Expires are the backups, real or foreseen, that the expiry pass after
	// this run would expire, with their reasons.
	Expires []Decision
}

// Preview foresees the runs of s in (from, to] for one client and fileset
// whose backups so far are history (cairn policy preview): each run's level
// after promotion (schedule.Promote with limits) and what retention would
// expire after it. It assumes what a preview must: every run takes place at
// its time and completes, the expiry pass runs after each run, and the holds
// in history stay as they are. Backups of other groups in history are left
// out. A nil policy expires nothing.
func Preview(s *schedule.Schedule, from, to time.Time, g Group, history []Backup, policy *Policy, limits schedule.Limits) []Foreseen {
	var backups []Backup
	var nextID uint64 = 1
	for _, b := range history {
		if b.Client == g.Client && b.FileSet == g.FileSet {
			backups = append(backups, b)
		}
		nextID = max(nextID, b.ID+1)
	}
	slices.SortFunc(backups, func(a, b Backup) int { return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.ID, b.ID)) })

	// The chain a new run builds on, as the catalog chains: a differential
	// onto the newest complete full, an incremental onto the newest complete
	// backup of any level.
	var chain schedule.Chain
	var lastFull, lastAny uint64
	for _, b := range backups {
		if b.State != Complete {
			continue
		}
		lastAny = b.ID
		switch b.Level {
		case schedule.Full:
			lastFull, chain.LastFull = b.ID, b.Time
		case schedule.Differential:
			chain.LastDifferential = b.Time
		}
	}

	var out []Foreseen
	var p Planner
	var decisions []Decision
	for _, r := range s.Between(from, to) {
		level, why := schedule.Promote(r.Level, r.Time, chain, limits)
		b := Backup{ID: nextID, Time: r.Time, Level: level, Client: g.Client, FileSet: g.FileSet, State: Complete}
		nextID++
		switch level {
		case schedule.Full:
			lastFull, chain.LastFull = b.ID, b.Time
		case schedule.Differential:
			b.Parent, chain.LastDifferential = lastFull, b.Time
		case schedule.Incremental:
			b.Parent = lastAny
		}
		lastAny = b.ID
		backups = append(backups, b)

		f := Foreseen{Run: r, Level: level, Promoted: why, Backup: b.ID}
		if policy != nil {
			decisions = p.PlanGroup(backups, policy, decisions[:0])
			kept := backups[:0]
			for _, d := range decisions {
				if d.Keep {
					kept = append(kept, d.Backup)
				} else {
					f.Expires = append(f.Expires, d)
				}
			}
			backups = kept
		}
		out = append(out, f)
	}
	return out
}
