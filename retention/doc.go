// Package retention decides which backups a policy keeps and which expire,
// and says why, so that "why is this backup still here" and "why did that one
// go" have an answer an administrator can read (cairn prune --dry-run).
//
// The package is pure: it is given the backups and the rules and returns a
// decision per backup. The expiry pass on the Raft leader turns the expired
// ones into a catalog command; a preview computes the same decisions.
//
// # Groups and restore points
//
// Retention applies to each client and fileset on its own (a Group), since
// that is what a backup chain is. Within a group, the restore points are the
// complete backups, ordered newest first (by time, then by the larger ID for
// two at the same time). Backups being written and aborted ones are not
// restore points: no rule counts them.
//
// # Keep rules
//
// The rules are restic's forget --keep-* options, each applied on its own to
// the same list of restore points; a restore point is kept when any rule keeps
// it. (Proxmox's prune applies its options in turn, each to the points older
// than the ones before it kept, so that keep-daily 7 and keep-weekly 4 keep
// about 11 weeks; here they keep the last 7 days and the newest point of each
// of the last 4 weeks that have one, overlapping, which is what the words
// say.)
//
//   - keep-within D: every restore point at or after the newest restore
//     point's time minus D, the bound included. The newest restore point,
//     not the current time, is the anchor, so a client that stops backing up
//     keeps its last points instead of losing them all D after the last
//     backup.
//   - keep-last N: the N newest restore points.
//   - keep-hourly, -daily, -weekly, -monthly, -yearly N: the periods that hold
//     at least one restore point are taken newest first, and the newest
//     restore point of each of the first N of them is kept. Periods with no
//     restore point do not count. Days are cut at midnight in the policy's
//     time zone, weeks are ISO weeks (Monday to Sunday, the first week of a
//     year is the one with its Thursday), months and years are calendar
//     months and years; an hour is a wall-clock hour, so the hour a fall-back
//     day repeats is one period. Unlimited (-1) keeps the newest point of
//     every period. Unlike restic since 0.17, the oldest restore point is not
//     kept in addition when there are fewer periods than N: a policy that
//     wants the first backup kept says so with a longer rule or a hold.
//
// Rules come in two scopes. Policy.Rules count the restore points of every
// level together. Policy.Levels[level] count only the restore points of that
// level ("incrementals keep-within 14 days, differentials keep-weekly 8,
// fulls keep-monthly 12"), measuring keep-within from the group's newest
// restore point of any level. Both scopes apply, and a point either keeps is
// kept.
//
// A policy with no rule at all is refused by Validate; given one anyway, or
// no policy, Plan keeps everything: nothing expires by accident.
//
// # Holds, backups in progress, aborted backups
//
// A backup on legal hold is kept whatever the rules say, in any state. A
// backup being written is kept. An aborted backup is expired ("aborted: it
// never became a restore point") unless held or needed.
//
// # Dependencies
//
// A backup kept for its own sake (by a rule, a hold, or because it is being
// written) keeps its whole chain: its parent, the parent's parent, down to the
// full, since a restore reads them all. Each backup kept this way says which
// backup needs it: the newest one kept for its own sake whose chain holds it
// ("needed by retained incremental 412"). So an incremental is never kept
// without its base, and a held backup can always be restored. A chain that
// names a parent not among the backups given is reported on the backup that
// names it (Decision.MissingBase): the catalog lost it, and the backup cannot
// be restored whatever retention does.
//
// # Preview
//
// Preview foresees a schedule's runs for one client and fileset: the level
// each would take after promotion, and what the expiry pass after it would
// expire, on the assumption that every run completes at its time and the
// holds stay as they are.
//
// # Properties the tests hold
//
// No kept backup lacks a base; a held backup is never expired; a second pass
// over only the kept backups keeps them all (expiry is stable, so a pass
// never wants back what an earlier pass removed); and adding a newer backup
// keeps no older backup that was expired before, except a base the newer
// backup itself needs.
package retention
