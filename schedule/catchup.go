package schedule

import "time"

// CatchUp is what to do about the runs that fell due since the last one the
// catalog recorded.
type CatchUp struct {
	// Run is the one run to start now, when Due.
	Run Run
	Due bool
	// Missed are the runs to record as missed (and alert on), oldest first.
	Missed []Run
}

// CatchUp applies the catch-up rule to the runs in (last, now]: the newest of
// them runs if it is at most window late (now - its time <= window); every
// other one is missed. So a leader that was down a week starts one backup, not
// seven, and a run too old to be useful is recorded as missed rather than
// started hours late into the business day.
//
// The run started keeps the level its rule gave it; a full missed in the
// downtime comes back through the promotion rule (Promote: no full yet, or the
// last full too old), not by raising the level of the catch-up run.
//
// last is the scheduled time of the newest run recorded (run or missed), or
// the time the policy was created; a zero last means nothing is recorded and
// nothing is owed. The scheduler calls CatchUp at every tick, so in normal
// operation (last, now] holds the one run that just fell due and it runs;
// window must therefore be longer than the time between two ticks, or a run
// that falls just after one tick is already too late at the next.
func (s *Schedule) CatchUp(last, now time.Time, window time.Duration) CatchUp {
	if last.IsZero() || !now.After(last) {
		return CatchUp{}
	}
	runs := s.Between(last, now)
	if len(runs) == 0 {
		return CatchUp{}
	}
	newest := runs[len(runs)-1]
	if now.Sub(newest.Time) <= window {
		return CatchUp{Run: newest, Due: true, Missed: runs[: len(runs)-1 : len(runs)-1]}
	}
	return CatchUp{Missed: runs}
}
