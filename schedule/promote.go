package schedule

import (
	"fmt"
	"time"
)

// Chain is what the catalog knows of the backups of one client and fileset
// that a new run would build on. A zero time means there is none.
type Chain struct {
	LastFull         time.Time
	LastDifferential time.Time
	// Length is how many sessions a restore of the newest backup reads:
	// its full, a differential and the incrementals after it; 0 with no
	// backup.
	Length int
}

// Limits are a policy's bounds on the age of a chain's base.
type Limits struct {
	// MaxFullAge promotes a run to full when the last full is older than
	// this (Bacula's Max Full Interval). Zero means no bound.
	MaxFullAge time.Duration
	// MaxDifferentialAge promotes an incremental to differential when the
	// newer of the last full and the last differential is older than this
	// (Bacula's Max Diff Interval), so the incrementals a restore must read
	// stay few. Zero means no bound.
	MaxDifferentialAge time.Duration
	// MaxChain is the most sessions a restore of the newest backup may
	// read: a chain that reaches it is folded into a synthetic full, so
	// the next incremental starts a chain of two. Zero means no bound.
	MaxChain int
}

// Consolidate says whether a chain should be folded into a synthetic full
// now, and why: it reached the policy's MaxChain.
func Consolidate(chain Chain, lim Limits) (bool, string) {
	if lim.MaxChain < 2 || chain.Length < lim.MaxChain {
		return false, ""
	}
	return true, fmt.Sprintf("the chain is %d backups long, the policy's maximum is %d: it is folded into a synthetic full", chain.Length, lim.MaxChain)
}

// Promote returns the level a run due at at should run with, and why it
// differs from asked ("" when it does not). The rules, in order:
//
//  1. A fileset with no full yet runs a full: an incremental or differential
//     has nothing to compare against.
//  2. A run whose last full is older than MaxFullAge (strictly) runs a full.
//  3. An incremental whose last full or differential, the newer of the two,
//     is older than MaxDifferentialAge (strictly) runs a differential.
//
// A full is never lowered. Ages come from at, the run's scheduled time, so a
// preview and the run itself agree.
func Promote(asked Level, at time.Time, chain Chain, lim Limits) (Level, string) {
	if asked == Full {
		return Full, ""
	}
	if chain.LastFull.IsZero() {
		return Full, "promoted to full: no full of this fileset yet"
	}
	if age := at.Sub(chain.LastFull); lim.MaxFullAge > 0 && age > lim.MaxFullAge {
		return Full, fmt.Sprintf("promoted to full: the last full is %s old, the policy's maximum is %s",
			FormatAge(age), FormatAge(lim.MaxFullAge))
	}
	if asked == Incremental && lim.MaxDifferentialAge > 0 {
		base, what := chain.LastFull, "the last full (there is no differential since)"
		if chain.LastDifferential.After(base) {
			base, what = chain.LastDifferential, "the last differential"
		}
		if age := at.Sub(base); age > lim.MaxDifferentialAge {
			return Differential, fmt.Sprintf("promoted to differential: %s is %s old, the policy's maximum is %s",
				what, FormatAge(age), FormatAge(lim.MaxDifferentialAge))
		}
	}
	return asked, ""
}

// FormatAge writes a duration the way a retention policy is written: in days
// and hours ("35 days", "1 day 6 hours"), or in hours and minutes under a day.
func FormatAge(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	const day = 24 * time.Hour
	days, rest := d/day, d%day
	hours, mins := rest/time.Hour, (rest%time.Hour)/time.Minute
	plural := func(n time.Duration, unit string) string {
		if n == 1 {
			return fmt.Sprintf("1 %s", unit)
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	switch {
	case days > 0 && hours > 0:
		return plural(days, "day") + " " + plural(hours, "hour")
	case days > 0:
		return plural(days, "day")
	case hours > 0 && mins > 0:
		return plural(hours, "hour") + " " + plural(mins, "minute")
	case hours > 0:
		return plural(hours, "hour")
	}
	return plural(mins, "minute")
}
