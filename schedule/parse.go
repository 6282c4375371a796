package schedule

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// SyntaxError says where a schedule is wrong and what would be right, so
// that an administrator fixes a policy file without reading this package.
type SyntaxError struct {
	// Line is the 1-based line of the schedule text, 0 when one rule was
	// parsed on its own (ParseRule).
	Line int
	// Column is the 1-based byte column in that line.
	Column int
	// Token is the text at fault, empty when something is missing.
	Token string
	Msg   string
}

func (e *SyntaxError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d, ", e.Line)
	}
	fmt.Fprintf(&b, "column %d: ", e.Column)
	if e.Token != "" {
		fmt.Fprintf(&b, "%q: ", e.Token)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrEmpty is the error of a schedule with no rule at all.
var ErrEmpty = errors.New("the schedule has no rule: write at least one, such as \"daily 02:00 incremental\"")

// Rule is one line of a schedule: the days it runs on, the times of those
// days, and the level of its runs.
type Rule struct {
	// Text is the rule as written, so a run can say which line made it.
	Text  string
	Level Level

	months   uint16 // bit m for month m (1..12)
	weekdays uint8  // bit w for time.Weekday w
	weeks    uint8  // bit w for week w of the month (1..5); lastWeek for the last 7 days
	days     uint32 // bit d for day d of the month (1..31)
	lastDay  bool   // the last day of the month, whatever its number
	// cronOr is cron's own day rule: when both the day of the month and the
	// weekday are restricted, either one matching is enough. Calendar rules
	// always need every condition.
	cronOr  bool
	minutes []uint16 // minutes after midnight, ascending, no duplicates
}

const (
	allMonths   = uint16(0x1ffe)     // bits 1..12
	allWeekdays = uint8(0x7f)        // bits 0..6
	allWeeks    = uint8(0x3e)        // bits 1..5: every day is in one of them
	lastWeek    = uint8(1 << 6)      // the last seven days of the month
	allDays     = uint32(0xfffffffe) // bits 1..31
)

// token is a word of a rule and the column it starts at.
type token struct {
	text string
	col  int
}

func tokenize(s string) []token {
	var toks []token
	start := -1
	for i := 0; i <= len(s); i++ {
		space := i == len(s) || s[i] == ' ' || s[i] == '\t' || s[i] == '\r'
		switch {
		case space && start >= 0:
			toks = append(toks, token{s[start:i], start + 1})
			start = -1
		case !space && start < 0:
			start = i
		}
	}
	return toks
}

// Parse reads a schedule: one rule a line, blank lines and text after # left
// out, evaluated in the IANA time zone zone ("" for UTC, "Local" for this process's
// local zone).
// A list of rules kept elsewhere (a YAML list) is parsed joined by newlines, so
// the line of an error is the rule's place in the list.
func Parse(text, zone string) (*Schedule, error) {
	loc, err := loadZone(zone)
	if err != nil {
		return nil, err
	}
	s := &Schedule{loc: loc}
	for n, line := range strings.Split(text, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		r, err := ParseRule(line)
		if err != nil {
			var se *SyntaxError
			if errors.As(err, &se) {
				se.Line = n + 1
			}
			return nil, err
		}
		s.rules = append(s.rules, r)
	}
	if len(s.rules) == 0 {
		return nil, ErrEmpty
	}
	return s, nil
}

// ZoneError is the error of a schedule whose time zone this machine's zone
// database does not know.
type ZoneError struct {
	Zone string
	Err  error
}

func (e *ZoneError) Error() string {
	return fmt.Sprintf("time zone %q is not known (%v): use an IANA name such as Europe/Berlin or UTC", e.Zone, e.Err)
}

func (e *ZoneError) Unwrap() error { return e.Err }

func loadZone(zone string) (*time.Location, error) {
	switch zone {
	case "":
		// Not the local zone: servers in different zones would run the
		// same schedule at different instants.
		return time.UTC, nil
	case "Local":
		return time.Local, nil
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return nil, &ZoneError{Zone: zone, Err: err}
	}
	return loc, nil
}

// ParseRule reads one rule. See the package documentation for the grammar.
func ParseRule(text string) (Rule, error) {
	p := &ruleParser{toks: tokenize(text), end: len(text) + 1}
	p.r.Text = strings.TrimSpace(text)
	if err := p.parse(); err != nil {
		return Rule{}, err
	}
	return p.r, nil
}

type ruleParser struct {
	toks []token
	i    int
	end  int // the column just past the rule, where a missing part is reported
	r    Rule

	level, daily, hourly *token
	dayTok               *token // the first token that restricted the days
	clock                []*token
	hourMinutes          []*token
	set                  struct{ months, weekdays, weeks, days bool }
}

func errAt(t token, format string, args ...any) error {
	return &SyntaxError{Column: t.col, Token: t.text, Msg: fmt.Sprintf(format, args...)}
}

func (p *ruleParser) parse() error {
	if len(p.toks) == 0 {
		return &SyntaxError{Column: 1, Msg: "the rule is empty"}
	}
	if lower(p.toks[0].text) == "cron" {
		return p.parseCron()
	}
	var minutes []uint16
	for p.i < len(p.toks) {
		t := p.toks[p.i]
		w := lower(t.text)
		p.i++
		switch {
		case w == "at" || w == "on" || w == "every":
			// Words an administrator writes in a sentence; they carry nothing.
		case w == "of":
			if !p.skipMonthWord() {
				return errAt(t, `"of" goes in "of month" ("last Sun of month", "1st day of month")`)
			}
		case w == "cron":
			return errAt(t, "a cron rule starts with cron and has nothing before it: write it on its own line")
		case strings.HasPrefix(w, "level="):
			if err := p.setLevel(token{t.text[len("level="):], t.col + len("level=")}); err != nil {
				return err
			}
		case levelWords[w] != "":
			if err := p.setLevel(t); err != nil {
				return err
			}
		case w == "daily":
			p.daily = &t
		case w == "hourly":
			p.hourly = &t
		case w == "weekly" || w == "monthly" || w == "yearly" || w == "annually":
			return errAt(t, `say which day it runs on, such as "Sun 02:00", "1st day of month 02:00" or "Jan 1st day 02:00"`)
		case strings.Contains(w, ":"):
			m, err := parseTimes(t)
			if err != nil {
				return err
			}
			if strings.HasPrefix(w, ":") {
				p.hourMinutes = append(p.hourMinutes, &t)
			} else {
				p.clock = append(p.clock, &t)
			}
			minutes = append(minutes, m...)
		case w == "day" || w == "days":
			if p.i == len(p.toks) {
				return errAt(t, `say which day of the month, such as "day 1" or "day 1,15"`)
			}
			d := p.toks[p.i]
			p.i++
			if err := p.parseDays(d); err != nil {
				return err
			}
			p.skipOfMonth()
		case p.i < len(p.toks) && (lower(p.toks[p.i].text) == "day" || lower(p.toks[p.i].text) == "days"):
			p.i++
			if err := p.parseDays(t); err != nil {
				return err
			}
			p.skipOfMonth()
		default:
			if err := p.parseList(t); err != nil {
				return err
			}
		}
	}
	return p.finish(minutes)
}

// skipOfMonth takes the optional "of month" / "of the month" after a day of
// the month.
func (p *ruleParser) skipOfMonth() {
	if p.i < len(p.toks) && lower(p.toks[p.i].text) == "of" {
		p.i++
		if !p.skipMonthWord() {
			p.i--
		}
	}
}

func (p *ruleParser) skipMonthWord() bool {
	if p.i < len(p.toks) && lower(p.toks[p.i].text) == "the" {
		p.i++
	}
	if p.i < len(p.toks) && lower(p.toks[p.i].text) == "month" {
		p.i++
		return true
	}
	return false
}

func (p *ruleParser) setLevel(t token) error {
	if p.level != nil {
		return errAt(t, "a rule has one level (this one already says %s): write a second rule for a second level", p.r.Level)
	}
	l, ok := levelWords[lower(t.text)]
	if !ok {
		return errAt(t, "a level is full, differential or incremental")
	}
	p.level = &t
	p.r.Level = l
	return nil
}

func (p *ruleParser) finish(minutes []uint16) error {
	if p.level == nil {
		p.r.Level = Incremental
	}
	if p.daily != nil && p.dayTok != nil {
		return errAt(*p.daily, "daily means every day, and %q names days: drop one of them", p.dayTok.text)
	}
	if p.hourly != nil {
		if len(p.clock) > 0 {
			return errAt(*p.clock[0], "an hourly rule takes minutes past the hour, such as :15")
		}
		if len(p.hourMinutes) == 0 {
			minutes = []uint16{0}
		}
		var all []uint16
		for h := uint16(0); h < 24; h++ {
			for _, m := range minutes {
				all = append(all, h*60+m)
			}
		}
		minutes = all
	} else {
		if len(p.hourMinutes) > 0 {
			return errAt(*p.hourMinutes[0], "minutes past the hour need hourly (\"hourly at :15\"); a time of day is HH:MM")
		}
		if len(minutes) == 0 {
			return &SyntaxError{Column: p.end, Msg: "say when it runs: add a time such as 02:00 (or hourly)"}
		}
	}
	slices.Sort(minutes)
	p.r.minutes = slices.Compact(minutes)
	if !p.set.months {
		p.r.months = allMonths
	}
	if !p.set.weekdays {
		p.r.weekdays = allWeekdays
	}
	if !p.set.weeks {
		p.r.weeks = allWeeks
	}
	if !p.set.days {
		p.r.days = allDays
	}
	return p.r.checkFires()
}

// checkFires refuses a rule that no day satisfies ("Feb 30th day",
// "5th Mon day 1"): a schedule that never runs is a mistake, and Next would
// otherwise search years ahead to find nothing. 28 years hold every pairing of
// weekday, leap year and date the Gregorian calendar has in this era.
func (r *Rule) checkFires() error {
	d := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 28 * 366 {
		if r.matchesDate(d) {
			return nil
		}
		d = d.AddDate(0, 0, 1)
	}
	return &SyntaxError{Column: 1, Token: r.Text, Msg: "no day of any year matches it: check the days of the month against the weeks, weekdays and months"}
}

func (r *Rule) matchesDate(d time.Time) bool {
	y, m, day := d.Date()
	return r.matches(m, day, d.Weekday(), daysIn(y, m))
}

func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// matches says whether the rule runs on a day, given its month, day of the
// month, weekday and the length of its month.
func (r *Rule) matches(m time.Month, d int, wd time.Weekday, monthLen int) bool {
	if r.months&(1<<m) == 0 {
		return false
	}
	dayOK := r.days&(1<<d) != 0 || (r.lastDay && d == monthLen)
	if r.cronOr {
		return dayOK || r.weekdays&(1<<wd) != 0
	}
	if !dayOK || r.weekdays&(1<<wd) == 0 {
		return false
	}
	return r.weeks&(1<<((d-1)/7+1)) != 0 || (r.weeks&lastWeek != 0 && d > monthLen-7)
}

// parseTimes reads "02:00", "2:05,14:30" or ":15,:45": a list is all times
// of day or all minutes past the hour, as its first item is.
func parseTimes(t token) ([]uint16, error) {
	pastHour := strings.HasPrefix(t.text, ":")
	var out []uint16
	for _, e := range splitList(t) {
		hs, ms, ok := strings.Cut(e.text, ":")
		if !ok || (hs == "") != pastHour {
			return nil, errAt(e, "a list of times is all HH:MM or all :MM")
		}
		h := 0
		if !pastHour {
			var err error
			h, err = strconv.Atoi(hs)
			if err != nil || !isDigits(hs) || len(hs) > 2 || h > 23 {
				return nil, errAt(e, "a time is HH:MM, hours 00 to 23")
			}
		}
		m, err := strconv.Atoi(ms)
		if err != nil || !isDigits(ms) || len(ms) != 2 || m > 59 {
			return nil, errAt(e, "a time is HH:MM, minutes 00 to 59")
		}
		out = append(out, uint16(h*60+m))
	}
	return out, nil
}

// splitList cuts "a,b-c" at its commas, keeping each item's column. An empty
// item is kept, so the caller reports it where it is.
func splitList(t token) []token {
	var out []token
	col := t.col
	for _, part := range strings.Split(t.text, ",") {
		out = append(out, token{part, col})
		col += len(part) + 1
	}
	return out
}

type listKind int

const (
	kindNone listKind = iota
	kindWeekday
	kindMonth
	kindWeek
	kindDay
)

func (k listKind) String() string {
	return [...]string{"", "weekday", "month", "week of the month", "day of the month"}[k]
}

// kindOf says what a single word names.
func kindOf(w string) listKind {
	w = lower(w)
	if _, ok := weekdayNames[w]; ok {
		return kindWeekday
	}
	if _, ok := monthNames[w]; ok {
		return kindMonth
	}
	if _, ok := weekWords[w]; ok || w == "last" {
		return kindWeek
	}
	if n := len(w); n > 2 && isDigits(w[:n-2]) && ordinalSuffix(w[n-2:]) {
		return kindWeek
	}
	if isDigits(w) {
		return kindDay
	}
	return kindNone
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func ordinalSuffix(s string) bool { return s == "st" || s == "nd" || s == "rd" || s == "th" }

// parseList reads a comma list of weekdays, months, weeks of the month or
// days of the month, each item a value or a range "a-b".
func (p *ruleParser) parseList(t token) error {
	items := splitList(t)
	first, _, _ := strings.Cut(items[0].text, "-")
	kind := kindOf(first)
	if kind == kindNone {
		return errAt(t, "not a weekday, month, week of the month (1st..5th, last), day of the month, time (HH:MM) or level")
	}
	for _, it := range items {
		if err := p.addItem(kind, it); err != nil {
			return err
		}
	}
	p.noteDays(t, kind)
	return nil
}

func (p *ruleParser) noteDays(t token, kind listKind) {
	if kind != kindMonth && p.dayTok == nil {
		p.dayTok = &t
	}
}

// parseDays reads the days of the month of "1st,15th day", "day 1-7" or
// "last day".
func (p *ruleParser) parseDays(t token) error {
	for _, it := range splitList(t) {
		if err := p.addItem(kindDay, it); err != nil {
			return err
		}
	}
	p.noteDays(t, kindDay)
	return nil
}

func (p *ruleParser) addItem(kind listKind, it token) error {
	if it.text == "" {
		return errAt(it, "an empty item in a list: remove the extra comma")
	}
	lo, hi, isRange := strings.Cut(it.text, "-")
	a, okA := value(kind, lo)
	b := a
	okB := true
	if isRange {
		b, okB = value(kind, hi)
	}
	if !okA || !okB {
		if k := kindOf(lo); !okA && k != kind && k != kindNone && (!isRange || kindOf(hi) == k) {
			return errAt(it, "a %s in a list of %ss: write it as its own word", k, kind)
		}
		return errAt(it, "%s", rangeHelp[kind])
	}
	if kind == kindDay && lower(lo) == "last" {
		if isRange {
			return errAt(it, "the last day of the month ends no range: write it as its own item")
		}
		p.r.lastDay = true
		p.set.days = true
		return nil
	}
	if isRange && lower(hi) == "last" {
		if kind != kindWeek {
			return errAt(it, "%s", rangeHelp[kind])
		}
		// "4th-last": the fourth week and the last seven days.
		p.r.weeks |= lastWeek
		b = 5
	}
	wraps := kind == kindWeekday || kind == kindMonth
	if a > b && !wraps {
		return errAt(it, "a range runs from the smaller to the larger")
	}
	for v := a; ; {
		switch kind {
		case kindWeekday:
			p.r.weekdays |= 1 << v
			p.set.weekdays = true
		case kindMonth:
			p.r.months |= 1 << v
			p.set.months = true
		case kindWeek:
			if v == 6 {
				p.r.weeks |= lastWeek
			} else {
				p.r.weeks |= 1 << v
			}
			p.set.weeks = true
		case kindDay:
			p.r.days |= 1 << v
			p.set.days = true
		}
		if v == b {
			break
		}
		v++
		if kind == kindWeekday && v > 6 {
			v = 0
		}
		if kind == kindMonth && v > 12 {
			v = 1
		}
	}
	return nil
}

var rangeHelp = map[listKind]string{
	kindWeekday: "a weekday is Mon..Sun (or Monday..Sunday), a range Mon-Fri",
	kindMonth:   "a month is Jan..Dec (or January..December), a range Jan-Mar",
	kindWeek:    "a week of the month is 1st..5th or last",
	kindDay:     "a day of the month is 1..31 (or 1st..31st, or last)",
}

// value reads one value of a list of kind: a weekday 0..6, a month 1..12, a
// week 1..5 (6 for last), a day 1..31 (0 for last).
func value(kind listKind, s string) (int, bool) {
	w := lower(s)
	switch kind {
	case kindWeekday:
		v, ok := weekdayNames[w]
		return int(v), ok
	case kindMonth:
		v, ok := monthNames[w]
		return int(v), ok
	case kindWeek:
		if w == "last" {
			return 6, true
		}
		if v, ok := weekWords[w]; ok {
			return v, true
		}
		if n := len(w); n > 2 && ordinalSuffix(w[n-2:]) && isDigits(w[:n-2]) {
			v, err := strconv.Atoi(w[:n-2])
			return v, err == nil && v >= 1 && v <= 5
		}
		return 0, false
	case kindDay:
		if w == "last" {
			return 0, true
		}
		if n := len(w); n > 2 && ordinalSuffix(w[n-2:]) {
			w = w[:n-2]
		}
		if !isDigits(w) || len(w) > 2 {
			return 0, false
		}
		v, _ := strconv.Atoi(w)
		return v, v >= 1 && v <= 31
	}
	return 0, false
}

var weekdayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
	"sunday": time.Sunday, "monday": time.Monday, "tuesday": time.Tuesday, "wednesday": time.Wednesday,
	"thursday": time.Thursday, "friday": time.Friday, "saturday": time.Saturday,
	"tues": time.Tuesday, "thur": time.Thursday, "thurs": time.Thursday,
}

var monthNames = map[string]time.Month{
	"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
	"jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
	"january": 1, "february": 2, "march": 3, "april": 4, "june": 6, "july": 7,
	"august": 8, "sept": 9, "september": 9, "october": 10, "november": 11, "december": 12,
}

var weekWords = map[string]int{"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5}

// cronParser reads the five standard fields. Descriptors (@daily, @every 1h)
// are left out on purpose: @every is an interval from the daemon's start, not
// a calendar, and the calendar words say the rest more plainly.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// starBit is robfig/cron's mark of a field written as * (or ?), which its
// SpecSchedule keeps unexported; cron's day rule depends on it.
const starBit = 1 << 63

// parseCron reads "cron MIN HOUR DOM MONTH DOW [level]". robfig/cron parses
// the fields (ranges, steps, names, exactly as crontab(5)); this package
// evaluates them, because SpecSchedule.Next walks absolute hours and so skips
// a 02:30 run on a spring-forward day and runs it twice on a fall-back
// day (TestRobfigNextAndDST), which is not the rule this package documents.
func (p *ruleParser) parseCron() error {
	fields := p.toks[1:]
	if len(fields) < 5 {
		return &SyntaxError{Column: p.end, Msg: "cron takes five fields: minute hour day-of-month month weekday"}
	}
	for _, f := range fields[:5] {
		if strings.HasPrefix(f.text, "TZ=") || strings.HasPrefix(f.text, "CRON_TZ=") || strings.HasPrefix(f.text, "@") {
			return errAt(f, "cron takes five fields here; the time zone is the schedule's, and descriptors are not taken (write the calendar words instead)")
		}
	}
	var spec []string
	for _, f := range fields[:5] {
		// robfig/cron takes an empty item ("," or "1,") as naming
		// nothing, and a field of nothing makes a rule that never runs.
		for _, item := range splitList(f) {
			if item.text == "" {
				return &SyntaxError{Column: item.col, Msg: "an empty item in a list: remove the extra comma"}
			}
		}
		spec = append(spec, f.text)
	}
	joined := strings.Join(spec, " ")
	parsed, err := cronParser.Parse(joined)
	if err != nil {
		return &SyntaxError{Column: fields[0].col, Token: joined, Msg: err.Error()}
	}
	s := parsed.(*cron.SpecSchedule)
	for _, t := range fields[5:] {
		w := lower(t.text)
		w = strings.TrimPrefix(w, "level=")
		if levelWords[w] == "" {
			return errAt(t, "after the five cron fields only the level may follow (full, differential or incremental)")
		}
		if err := p.setLevel(token{w, t.col}); err != nil {
			return err
		}
	}
	if p.level == nil {
		p.r.Level = Incremental
	}
	for h := 0; h < 24; h++ {
		if s.Hour&(1<<h) == 0 {
			continue
		}
		for m := 0; m < 60; m++ {
			if s.Minute&(1<<m) != 0 {
				p.r.minutes = append(p.r.minutes, uint16(h*60+m))
			}
		}
	}
	if len(p.r.minutes) == 0 {
		// What robfig/cron parses to no minute at all: a rule that
		// would never run.
		return &SyntaxError{Column: fields[0].col, Token: joined, Msg: "the minute and hour fields name no time of day: check them for an empty item (a comma with nothing on one side)"}
	}
	p.r.months = uint16(s.Month) & allMonths
	p.r.days = uint32(s.Dom) & allDays
	p.r.weekdays = uint8(s.Dow) & allWeekdays
	p.r.weeks = allWeeks
	p.r.cronOr = s.Dom&starBit == 0 && s.Dow&starBit == 0
	if s.Dom&starBit != 0 {
		p.r.days = allDays
	}
	if s.Dow&starBit != 0 {
		p.r.weekdays = allWeekdays
	}
	return p.r.checkFires()
}
