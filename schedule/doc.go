// Package schedule says when a policy's backups run and at what level: it
// parses a schedule, lists its runs, decides what to do about runs missed
// while no server led, and promotes a run's level when its chain needs it.
//
// The package is pure: it reads no clock and keeps no state. The scheduler
// passes the times in, so a preview, a test and the leader's own decisions
// compute the same runs from the same inputs, and an administrator's question
// "why did this run, and why at that level" has an answer written here.
//
// # Rules
//
// A schedule is a list of rules, one a line; text after # is a comment. A
// rule names days, times of those days, and a level:
//
//	Sun 1st 02:00 full
//	Sun 2nd-5th 02:00 differential
//	Mon-Sat 21:00 incremental
//	daily 03:30 incremental
//	hourly at :15,:45
//	1st day of month 01:00 full
//	last Sun of month 04:00 full
//	Jan,Jul 1st day 00:30 full
//	Mon-Fri 12:00,18:00 incremental
//	cron */30 8-18 * * 1-5 incremental
//
// The words of a calendar rule come in any order and are matched without
// regard to case:
//
//   - Weekdays: Mon..Sun or Monday..Sunday; lists Mon,Wed,Fri; ranges
//     Mon-Fri, which may wrap (Fri-Mon).
//   - Weeks of the month: 1st..5th or first..fifth, and last. Week n is days
//     7n-6..7n of the month (the 1st week is days 1-7, the 5th days 29-31),
//     so "Sun 1st" is the first Sunday of the month; last is the last seven
//     days of the month, so "last Sun" is the last Sunday. Ranges 2nd-5th,
//     4th-last.
//   - Days of the month: a number or an ordinal before "day"
//     ("1st day of month", "1,15 day"), or after it ("day 1-7"); "last day"
//     is the last day of each month. A bare number (1..31) is a day too, as
//     in Bacula.
//   - Months: Jan..Dec or January..December; lists and ranges (Nov-Feb wraps).
//   - Times: HH:MM on a 24-hour clock, several in a list (02:00,14:00) or as
//     several words. "hourly" runs every hour at the minutes given as :MM
//     (":15", ":15,:45"), at :00 when none is given.
//   - Level: full, differential (diff) or incremental (incr, inc), or
//     level=full. A rule without one runs incremental; the promotion rules
//     below make the first run of a fileset a full.
//   - "daily" says every day and may not be combined with days; "at", "on",
//     "every" and "of month" are there to be read and carry nothing.
//     "weekly", "monthly" and "yearly" are refused: they do not say which day.
//
// A day must satisfy every condition the rule states: weekday, week of the
// month, day of the month and month. Conditions not stated hold on every day.
// A rule that no day of any year satisfies ("Feb 30 day") is refused.
//
// A rule that starts with "cron" takes the five fields of crontab(5)
// (minute, hour, day of month, month, weekday 0-6 with 0 Sunday, names,
// ranges, lists and steps), parsed by github.com/robfig/cron/v3, then an
// optional level. Its days follow cron's own rule: when both the day of the
// month and the weekday are restricted, a day matching either runs. Its times
// are evaluated by this package under the rule below, not by robfig/cron,
// whose Next steps through absolute hours and so skips a 02:30 run on a
// spring-forward day and runs it twice on a fall-back day.
//
// An error names the line and the byte column of what is wrong, and says what
// is expected there: column 5: "2nd-9th": a week of the month is 1st..5th or
// last.
//
// # Time zone and daylight saving time
//
// Times are wall-clock times in the schedule's time zone (an IANA name,
// default UTC, never the server's local zone, so that every server runs the
// same schedule at the same instants). A run is due at the first instant at
// which that clock shows its time or later. So:
//
//   - on a spring-forward day a time the clock skips (02:30 when clocks go
//     from 02:00 to 03:00) runs once, at the end of the gap (03:00);
//   - on a fall-back day a time the clock shows twice (02:30 when clocks go
//     from 03:00 back to 02:00) runs once, the first time;
//   - every other time runs once a day as written.
//
// # Two rules at the same minute
//
// When two rules fall due at the same instant (including two times that the
// DST rule moved onto the same instant) there is one run, of the higher level:
// full before differential before incremental, because the higher level
// copies everything the lower one would. Run.Rule names the rule of that
// level, the first written when two have the same level. That is how
// "Sun 1st 02:00 full" and "daily 02:00 incremental" combine into a full on
// the first Sunday and an incremental on every other day.
//
// # Catch-up after downtime
//
// Schedule.CatchUp takes the scheduled time of the last run the catalog
// recorded, the current time and a window. Of the runs due in between
// (after the last one, up to and including now), the newest runs if it is at
// most window late; all the others, and the newest too when it is later than
// that, are recorded as missed (and alerted on). At most one run is started
// however long the downtime, at the level its rule gave it; a full missed in
// the downtime is made up by the promotion rules, not by the catch-up.
//
// # Promotion
//
// Promote decides the level a run actually takes, and the sentence the job
// log carries when that is not the level asked for:
//
//  1. no full of this client and fileset yet: full ("promoted to full: no
//     full of this fileset yet");
//  2. the last full older than the policy's maximum full age: full
//     ("promoted to full: the last full is 35 days old, the policy's maximum
//     is 31 days");
//  3. an incremental whose last full or differential (the newer) is older
//     than the maximum differential age: differential.
//
// Ages are measured from the run's scheduled time and a limit is passed only
// when the age is strictly greater. A full is never lowered.
package schedule
