package retention

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cairnbackup/cairn/schedule"
)

// State is where a backup is in its life; the strings are the catalog's
// (catalog.BackupState).
type State string

const (
	Complete State = "complete"
	Writing  State = "writing"
	Aborted  State = "aborted"
)

// Backup is what retention needs to know of one backup.
type Backup struct {
	ID uint64
	// Time is the point in time the backup represents (its start).
	Time  time.Time
	Level schedule.Level
	// Parent is the backup this one was compared against and needs for a
	// restore, 0 for a full. It lies in the same client and fileset.
	Parent  uint64
	Client  string
	FileSet string
	// Held is true while a legal hold covers the backup (on it, or on its
	// client: the caller resolves which).
	Held  bool
	State State
}

// Unlimited as a count keeps one restore point in every period there is.
const Unlimited = -1

// Rules are the keep rules of restic's forget and Proxmox's prune. Each rule
// is applied on its own to the same list of restore points, newest first, and
// a restore point is kept when any rule keeps it. A zero field is a rule not
// in use.
type Rules struct {
	// Within keeps every restore point whose time is at or after the newest
	// restore point's time minus Within.
	Within time.Duration
	// Last keeps the Last newest restore points.
	Last int
	// Hourly, Daily, Weekly, Monthly and Yearly keep the newest restore point
	// of each of the N newest periods that have one.
	Hourly, Daily, Weekly, Monthly, Yearly int
}

func (r Rules) empty() bool { return r == Rules{} }

// Policy is the retention of one client and fileset.
type Policy struct {
	// Rules apply to the group's restore points of every level together.
	Rules Rules
	// Levels apply to the group's restore points of one level only, so
	// "incrementals 14 days, differentials 8 weeks, fulls 12 months" is
	// three entries.
	Levels map[schedule.Level]Rules
	// Location is the calendar the periods are cut in (a day ends at local
	// midnight); nil means UTC.
	Location *time.Location
}

// ErrKeepsNothing is the error of a policy with no rule at all.
var ErrKeepsNothing = errors.New("the retention policy has no keep rule: set at least one (keep-within, keep-last, keep-daily ...)")

// RuleError is the error of one bad rule of a policy.
type RuleError struct {
	// Level is the level the rule is for, "" for the rules over every level.
	Level schedule.Level
	// Rule is the rule's name as a policy file writes it ("keep-daily").
	Rule string
	Msg  string
}

func (e *RuleError) Error() string {
	scope := ""
	if e.Level != "" {
		scope = string(e.Level) + " "
	}
	return scope + e.Rule + ": " + e.Msg
}

// Validate refuses a policy that would keep nothing, a rule for a level
// that does not exist, and a negative count other than Unlimited.
func (p Policy) Validate() error {
	check := func(level schedule.Level, r Rules) error {
		for _, c := range []struct {
			name string
			n    int
		}{{"keep-last", r.Last}, {"keep-hourly", r.Hourly}, {"keep-daily", r.Daily},
			{"keep-weekly", r.Weekly}, {"keep-monthly", r.Monthly}, {"keep-yearly", r.Yearly}} {
			if c.n < Unlimited {
				return &RuleError{Level: level, Rule: c.name, Msg: fmt.Sprintf("%d is not a count: use a number of periods, or unlimited", c.n)}
			}
		}
		if r.Within < 0 {
			return &RuleError{Level: level, Rule: "keep-within", Msg: fmt.Sprintf("%s is negative: use a positive duration", r.Within)}
		}
		return nil
	}
	if err := check("", p.Rules); err != nil {
		return err
	}
	keeps := !p.Rules.empty()
	for _, l := range slices.Sorted(maps.Keys(p.Levels)) {
		r := p.Levels[l]
		if !l.Valid() {
			return &RuleError{Level: l, Rule: "level", Msg: "not a level: the levels are full, differential and incremental"}
		}
		if err := check(l, r); err != nil {
			return err
		}
		keeps = keeps || !r.empty()
	}
	if !keeps {
		return ErrKeepsNothing
	}
	return nil
}

func (p *Policy) keepsNothing() bool {
	if !p.Rules.empty() {
		return false
	}
	for _, r := range p.Levels {
		if !r.empty() {
			return false
		}
	}
	return true
}

// Group is one chain of backups: a client and a fileset.
type Group struct {
	Client  string
	FileSet string
}

// Decision is the verdict on one backup and why.
type Decision struct {
	Backup
	Keep bool
	// NeededBy is the newest backup kept for its own sake (by a rule, a hold,
	// or because it is being written) that needs this one for a restore, 0
	// when none does.
	NeededBy      uint64
	NeededByLevel schedule.Level
	// MissingBase is a base this backup's chain names that is not among the
	// backups given: the chain is broken and a restore of it cannot
	// complete. Retention keeps or expires it by the rules all the same.
	MissingBase uint64

	kept   uint32 // keptBit bits
	expiry reasonKind
	policy *Policy
}

// reasonKind lists the reasons in the order a decision prints them.
type reasonKind uint8

const (
	reasonNone reasonKind = iota
	reasonHeld
	reasonWriting
	reasonNoPolicy
	reasonWithin
	reasonLast
	reasonHourly
	reasonDaily
	reasonWeekly
	reasonMonthly
	reasonYearly
	reasonAborted
	reasonNoRule
)

// keptBit is the bit of a rule kind, for the rules over every level
// (byLevel false) or over the backup's own level.
func keptBit(k reasonKind, byLevel bool) uint32 {
	b := uint32(k) * 2
	if byLevel {
		b++
	}
	return 1 << b
}

// Reason is one reason for a decision.
type Reason struct {
	// Text is the reason as an administrator reads it.
	Text string
	// Rule is the policy rule that kept the backup ("keep-daily",
	// "incremental keep-within"), empty for reasons that are not a rule.
	Rule string
}

func (r Reason) String() string { return r.Text }

var ruleNames = map[reasonKind]string{
	reasonWithin: "keep-within", reasonLast: "keep-last", reasonHourly: "keep-hourly", reasonDaily: "keep-daily",
	reasonWeekly: "keep-weekly", reasonMonthly: "keep-monthly", reasonYearly: "keep-yearly",
}

// Reasons says why the backup is kept or expires, most decisive first.
func (d *Decision) Reasons() []Reason {
	var out []Reason
	if !d.Keep {
		switch d.expiry {
		case reasonAborted:
			out = append(out, Reason{Text: "aborted: it never became a restore point"})
		default:
			out = append(out, Reason{Text: "no rule keeps it"})
		}
		return d.withMissing(out)
	}
	if d.kept&keptBit(reasonHeld, false) != 0 {
		out = append(out, Reason{Text: "on legal hold"})
	}
	if d.kept&keptBit(reasonWriting, false) != 0 {
		out = append(out, Reason{Text: "still being written"})
	}
	if d.kept&keptBit(reasonNoPolicy, false) != 0 {
		out = append(out, Reason{Text: "no retention rule covers its client and fileset: kept until deleted by hand"})
	}
	for k := reasonWithin; k <= reasonYearly; k++ {
		for _, byLevel := range []bool{false, true} {
			if d.kept&keptBit(k, byLevel) == 0 {
				continue
			}
			rules, scope := d.policy.Rules, ""
			if byLevel {
				rules, scope = d.policy.Levels[d.Level], string(d.Level)+" "
			}
			out = append(out, d.ruleReason(k, scope, rules))
		}
	}
	if d.NeededBy != 0 {
		out = append(out, Reason{Text: fmt.Sprintf("needed by retained %s %d", d.NeededByLevel, d.NeededBy)})
	}
	return d.withMissing(out)
}

func (d *Decision) withMissing(out []Reason) []Reason {
	if d.MissingBase != 0 {
		out = append(out, Reason{Text: fmt.Sprintf("its base %d is missing: a restore of it cannot complete", d.MissingBase)})
	}
	return out
}

func (d *Decision) ruleReason(k reasonKind, scope string, r Rules) Reason {
	name := scope + ruleNames[k]
	count := func(n int) string {
		if n == Unlimited {
			return "unlimited"
		}
		return fmt.Sprint(n)
	}
	t := d.Time.In(d.policy.location())
	var text string
	switch k {
	case reasonWithin:
		text = fmt.Sprintf("%s %s", name, schedule.FormatAge(r.Within))
	case reasonLast:
		text = fmt.Sprintf("%s %s", name, count(r.Last))
	case reasonHourly:
		text = fmt.Sprintf("%s %s: the newest of hour %s", name, count(r.Hourly), t.Format("2006-01-02 15:00"))
	case reasonDaily:
		text = fmt.Sprintf("%s %s: the newest of day %s", name, count(r.Daily), t.Format("2006-01-02"))
	case reasonWeekly:
		y, w := t.ISOWeek()
		text = fmt.Sprintf("%s %s: the newest of week %d-W%02d", name, count(r.Weekly), y, w)
	case reasonMonthly:
		text = fmt.Sprintf("%s %s: the newest of month %s", name, count(r.Monthly), t.Format("2006-01"))
	case reasonYearly:
		text = fmt.Sprintf("%s %s: the newest of year %d", name, count(r.Yearly), t.Year())
	}
	return Reason{Text: text, Rule: name}
}

// Why joins the reasons into one line, for a table.
func (d *Decision) Why() string {
	var texts []string
	for _, r := range d.Reasons() {
		texts = append(texts, r.Text)
	}
	return strings.Join(texts, "; ")
}

func (p *Policy) location() *time.Location {
	if p == nil || p.Location == nil {
		return time.UTC
	}
	return p.Location
}

// Plan decides, for every backup given, whether it is kept or expires, by
// the rules of the package documentation. policies gives the policy of a
// client and fileset; a group it has none for keeps everything. The
// decisions come sorted by client, fileset, time and ID.
func Plan(backups []Backup, policies func(Group) (Policy, bool)) []Decision {
	sorted := slices.Clone(backups)
	slices.SortFunc(sorted, func(a, b Backup) int {
		return cmp.Or(cmp.Compare(a.Client, b.Client), cmp.Compare(a.FileSet, b.FileSet),
			a.Time.Compare(b.Time), cmp.Compare(a.ID, b.ID))
	})
	out := make([]Decision, 0, len(sorted))
	var p Planner
	for start := 0; start < len(sorted); {
		end := start + 1
		for end < len(sorted) && sorted[end].Client == sorted[start].Client && sorted[end].FileSet == sorted[start].FileSet {
			end++
		}
		g := Group{sorted[start].Client, sorted[start].FileSet}
		pol, ok := policies(g)
		var pp *Policy
		if ok {
			pp = &pol
		}
		out = p.PlanGroup(sorted[start:end], pp, out)
		start = end
	}
	return out
}

// Planner plans one group at a time and keeps its scratch space between
// groups, so an expiry pass over thousands of clients allocates once. The zero
// Planner is ready; it is not for concurrent use.
type Planner struct {
	newest    []int32          // indices into the group, newest first
	index     map[uint64]int32 // a backup's place by ID, when IDs do not ascend
	ascending bool
	local     []localTime
	seen      []bool
}

// localTime is a backup's time cut into the calendar periods, once.
type localTime struct {
	hour, day, week, month, year int64
	cut                          bool
}

// PlanGroup appends the decisions for one client and fileset to out, in the
// order of the group sorted by time then ID, and returns the extended slice.
// The group's backups must all share the client and fileset. A nil policy
// keeps everything. The decisions refer to policy for their reasons, so it
// must not change while they are in use.
func (p *Planner) PlanGroup(group []Backup, policy *Policy, out []Decision) []Decision {
	base := len(out)
	n := len(group)
	for i := range group {
		out = append(out, Decision{Backup: group[i], policy: policy})
	}
	dec := out[base:]
	// The catalog and Plan hand groups over in order already; checking is a
	// fraction of the cost of sorting these wide structs again.
	byTime := func(a, b Decision) int { return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.ID, b.ID)) }
	if !slices.IsSortedFunc(dec, byTime) {
		slices.SortFunc(dec, byTime)
	}

	if policy == nil || policy.keepsNothing() {
		for i := range dec {
			dec[i].Keep = true
			dec[i].kept |= keptBit(reasonNoPolicy, false)
		}
		p.closeChains(dec)
		return out
	}

	// Restore points, newest first.
	p.newest = p.newest[:0]
	for i := n - 1; i >= 0; i-- {
		if dec[i].State == Complete {
			p.newest = append(p.newest, int32(i))
		}
	}
	p.local = slices.Grow(p.local[:0], n)[:n]
	clear(p.local)
	p.apply(dec, policy, policy.Rules, "", false)
	for _, l := range []schedule.Level{schedule.Full, schedule.Differential, schedule.Incremental} {
		if r, ok := policy.Levels[l]; ok && !r.empty() {
			p.apply(dec, policy, r, l, true)
		}
	}
	for i := range dec {
		d := &dec[i]
		switch {
		case d.Held:
			d.kept |= keptBit(reasonHeld, false)
		case d.State == Writing:
			d.kept |= keptBit(reasonWriting, false)
		case d.State == Aborted:
			d.expiry = reasonAborted
		}
		d.Keep = d.kept != 0
		if !d.Keep && d.expiry == reasonNone {
			d.expiry = reasonNoRule
		}
	}
	p.closeChains(dec)
	return out
}

// periods returns backup i's time cut into calendar periods, computed the
// first time a period rule asks: a typical policy cuts only its fulls and
// differentials (its incrementals go by keep-within), and the cut is most of
// the cost of a decision.
func (p *Planner) periods(dec []Decision, i int32, loc *time.Location) localTime {
	if l := p.local[i]; l.cut {
		return l
	}
	t := dec[i].Time.In(loc)
	y, m, d := t.Date()
	iy, iw := t.ISOWeek()
	day := int64(y)*10000 + int64(m)*100 + int64(d)
	l := localTime{
		hour: day*100 + int64(t.Hour()), day: day, week: int64(iy)*100 + int64(iw),
		month: int64(y)*100 + int64(m), year: int64(y), cut: true,
	}
	p.local[i] = l
	return l
}

// apply runs one set of rules over the restore points (of level, when
// byLevel), newest first, each rule on its own.
func (p *Planner) apply(dec []Decision, policy *Policy, r Rules, level schedule.Level, byLevel bool) {
	if r.empty() || len(p.newest) == 0 {
		return
	}
	anchor := dec[p.newest[0]].Time
	in := func(i int32) bool { return !byLevel || dec[i].Level == level }
	if r.Within > 0 {
		from := anchor.Add(-r.Within)
		for _, i := range p.newest {
			if dec[i].Time.Before(from) {
				break
			}
			if in(i) {
				dec[i].kept |= keptBit(reasonWithin, byLevel)
			}
		}
	}
	if r.Last != 0 {
		left := limit(r.Last)
		for _, i := range p.newest {
			if left == 0 {
				break
			}
			if in(i) {
				dec[i].kept |= keptBit(reasonLast, byLevel)
				left--
			}
		}
	}
	buckets := [...]struct {
		n    int
		kind reasonKind
		key  func(localTime) int64
	}{
		{r.Hourly, reasonHourly, func(l localTime) int64 { return l.hour }},
		{r.Daily, reasonDaily, func(l localTime) int64 { return l.day }},
		{r.Weekly, reasonWeekly, func(l localTime) int64 { return l.week }},
		{r.Monthly, reasonMonthly, func(l localTime) int64 { return l.month }},
		{r.Yearly, reasonYearly, func(l localTime) int64 { return l.year }},
	}
	loc := policy.location()
	for _, b := range buckets {
		if b.n == 0 {
			continue
		}
		left := limit(b.n)
		last := int64(math.MinInt64)
		bit := keptBit(b.kind, byLevel)
		for _, i := range p.newest {
			if left == 0 {
				break
			}
			if !in(i) {
				continue
			}
			// Newest first, so the first restore point of a new period is
			// that period's newest.
			if k := b.key(p.periods(dec, i, loc)); k != last {
				last = k
				dec[i].kept |= bit
				left--
			}
		}
	}
}

// limit turns a rule's count into how many to keep. Validate refuses
// negative counts other than Unlimited; one that reaches Plan anyway keeps
// every period, erring towards keeping.
func limit(n int) int {
	if n < 0 {
		return math.MaxInt
	}
	return n
}

// closeChains keeps the base of every kept backup, transitively: a restore
// of an incremental reads its differential or full and every backup between.
// The backups kept for their own sake are walked newest first, so each base
// names the newest one that needs it.
func (p *Planner) closeChains(dec []Decision) {
	p.indexIDs(dec)
	p.seen = slices.Grow(p.seen[:0], len(dec))[:len(dec)]
	clear(p.seen)
	for i := len(dec) - 1; i >= 0; i-- {
		root := &dec[i]
		if !root.Keep || p.seen[i] {
			continue // expired, or its chain was walked from a newer backup
		}
		for j, at, steps := root.Parent, i, 0; j != 0 && steps < len(dec); steps++ {
			k, ok := p.find(dec, j)
			if !ok {
				dec[at].MissingBase = j
				break
			}
			b := &dec[k]
			if p.seen[k] {
				break
			}
			p.seen[k] = true
			b.Keep = true
			b.NeededBy, b.NeededByLevel = root.ID, root.Level
			at, j = k, b.Parent
		}
	}
}

// indexIDs prepares find for dec. The catalog numbers backups in the order
// they start, so IDs usually ascend with time and a binary search needs
// nothing built; otherwise a map is.
func (p *Planner) indexIDs(dec []Decision) {
	p.ascending = true
	for i := 1; i < len(dec) && p.ascending; i++ {
		p.ascending = dec[i-1].ID < dec[i].ID
	}
	if p.ascending {
		return
	}
	if p.index == nil {
		p.index = make(map[uint64]int32, len(dec))
	}
	clear(p.index)
	for i := range dec {
		p.index[dec[i].ID] = int32(i)
	}
}

// find returns the place in dec of the backup id.
func (p *Planner) find(dec []Decision, id uint64) (int, bool) {
	if p.ascending {
		return slices.BinarySearchFunc(dec, id, func(d Decision, id uint64) int { return cmp.Compare(d.ID, id) })
	}
	k, ok := p.index[id]
	return int(k), ok
}

// Longest is the longest the policy's rules may keep a restore point,
// counted from its own time: the greatest of Within and each period
// rule's periods (a day for each of Daily's, a 31-day month for each of
// Monthly's, a 366-day year for each of Yearly's; one period more for the
// one the point falls in). Last and unlimited counts keep a point for as
// long as no newer one displaces it, which no date bounds: they add
// nothing. ok is false when no rule gives a date. A medium that locks
// what it stores (S3 object lock) locks a backup's data this long, so
// that nothing can delete it while its retention may still want it.
func (p *Policy) Longest() (d time.Duration, ok bool) {
	const day = 24 * time.Hour
	span := func(r Rules) {
		periods := []struct {
			n   int
			per time.Duration
		}{{r.Hourly, time.Hour}, {r.Daily, day}, {r.Weekly, 7 * day}, {r.Monthly, 31 * day}, {r.Yearly, 366 * day}}
		if r.Within > d {
			d, ok = r.Within, true
		}
		for _, pr := range periods {
			if pr.n > 0 {
				if x := time.Duration(pr.n+1) * pr.per; x > d {
					d, ok = x, true
				}
			}
		}
	}
	span(p.Rules)
	for _, r := range p.Levels {
		span(r)
	}
	return d, ok
}
