// Package alert tells an administrator what needs a person: a job that
// failed, a client whose last good restore point is older than its RPO
// target (and, once it is not, that the breach is over), a scheduled run
// that did not run, and a pool that cannot take a policy's next run. It
// sends each alert to webhooks (a JSON POST) and commands (a program that
// reads the JSON on its stdin), retries what did not get through, and does
// not repeat the same alert more often than the administrator asked.
//
// The package decides nothing about backups: the scheduler, the RPO check
// and the job orchestrator make the events (NewJobFailed, NewRPOBreach,
// NewRPOResolved, NewMissedRun, NewPoolShort) and hand them to a
// Dispatcher. It imports no catalog, NATS or role code.
//
// # The event
//
// A webhook's body and a command's stdin are one JSON object:
//
//	{
//	  "version": 1,
//	  "kind": "rpo_breach",
//	  "time": "2026-12-02T06:00:00Z",
//	  "summary": "RPO breach: client web1's last good restore point (policy nightly) is 2d3h old, target 1d",
//	  "client": "web1",
//	  "policy": "nightly",
//	  "last_good": "2026-11-30T03:00:00Z",
//	  "age_seconds": 183600,
//	  "target_seconds": 86400
//	}
//
// The field names are stable. version is 1; it changes only when a field
// changes meaning or goes away, never for a new field, so a receiver
// ignores fields it does not know. A field that does not apply to a kind
// is left out. Times are RFC 3339.
//
//	version         1
//	kind            job_failed, rpo_breach, rpo_resolved, missed_run or pool_short
//	id              the alert's name, the same from every server that sends
//	                it (rpo_*, missed_run): a receiver that gets one id
//	                twice drops the second
//	time            when the condition was seen
//	summary         one line for a person (a chat message, a mail subject)
//	client          the client (job_failed, rpo_*, missed_run of one client)
//	policy          the policy
//	pool            the pool (pool_short)
//	job             the job id (job_failed)
//	level           the backup level of the job (job_failed)
//	error           why the job failed, the run was missed, the pool is short
//	scheduled       the scheduled time of the missed run (the newest, when
//	                several), or of the run the pool cannot take
//	missed          how many runs a missed_run stands for
//	last_good       the last good restore point (rpo_*); absent when none
//	age_seconds     its age at time (rpo_*)
//	target_seconds  the RPO target (rpo_*)
//	need_bytes      what the next run is expected to write (pool_short)
//	free_bytes      what the pool has free (pool_short)
//	suppressed      how many alerts of the same condition were not sent
//	                since the last one was (see Repeats below)
//
// A webhook gets the object as the body of a POST with Content-Type
// application/json, the header X-Cairn-Alert-Kind, and "Authorization:
// Bearer TOKEN" when it has a token file. A command gets it on stdin, and
// in its environment, beside the server's: CAIRN_ALERT_VERSION,
// CAIRN_ALERT_KIND, CAIRN_ALERT_TIME, CAIRN_ALERT_SUMMARY,
// CAIRN_ALERT_SUBJECT, CAIRN_ALERT_CLIENT, CAIRN_ALERT_POLICY,
// CAIRN_ALERT_POOL and CAIRN_ALERT_JOB (empty when they do not apply), so
// that a one-line script can mail the summary without a JSON parser:
//
//	#!/bin/sh
//	# cairn-alert-mail ADDRESS: the summary as the subject, the JSON as the body
//	exec mail -s "cairn: $CAIRN_ALERT_SUMMARY" "$1"
//
// The body is Cairn's own: a chat service that wants its own format
// (Slack's or Teams' incoming webhooks) takes the alert through a command
// or a relay that rewrites it.
//
// # Repeats
//
// An alert is about a condition: its kind and its subject (Event.Subject:
// the client and policy of an RPO breach or a missed run, the pool and
// policy of a short pool, the job of a failed job). The same condition in
// the same state is sent at most once per RepeatInterval (4h by default):
// an RPO check every five minutes does not page every five minutes. The
// next one sent after the interval carries in "suppressed" how many were
// held back. A change of state is sent at once: rpo_resolved is the
// resolved state of the rpo_breach condition, so the end of a breach goes
// out the moment it is seen, and a new breach after it too. The memory of
// what was sent within the interval lives in the Dispatcher. The servers
// keep more in their catalog: which RPO breaches and missed runs were
// raised and whether each was handed over (SendAck says when the
// Dispatcher is finished with an alert), so a new leader neither sends
// one again nor drops one its predecessor raised and did not send.
//
// # Delivery
//
// Each webhook and command has its own worker goroutine and queue
// (QueueSize, 256 by default), so Send never blocks and one dead receiver
// neither holds up the others nor grows memory: when a queue is full its
// oldest alert is dropped, counted and logged, since the newest says most
// about the present. A worker delivers its alerts one at a time, in the
// order they were sent.
//
// A webhook post that fails (no connection, a timeout, a 5xx, 408 or 429)
// is tried again, up to Attempts times in all, after a wait that doubles
// from Backoff up to MaxBackoff, each drawn between half and all of it so
// that retries from many places do not arrive together. When the answer
// asks for a longer wait in seconds (Retry-After, as a 429 or a 503 may
// carry), that wait is kept, up to MaxBackoff; a Retry-After that is an
// HTTP date is not read. A 4xx other than 408 and 429 is given up at once,
// since the same post would get the same answer, and so is a redirect,
// which is not followed (a 302 would turn the post into a GET): the URL in
// the config needs fixing.
//
// A command is run once by default (it may have done part of its work
// before it failed); it runs without a shell, in a process group of its
// own, and past its Timeout the group gets SIGTERM and, 5s later, SIGKILL.
// Its output is kept, up to 4 KiB, for the log line of its failure.
//
// Close stops taking alerts and lets the workers deliver what is queued
// until its context is done; what is left then is dropped, counted and
// logged.
//
// # Metrics
//
// Register adds, by sink (the webhook's or command's name):
// cairn_alerts_sent_total, cairn_alerts_failed_total (given up after the
// last attempt) and cairn_alerts_dropped_total (a full queue, or left at
// Close); and, by kind, cairn_alerts_suppressed_total (held back by the
// repeat interval).
//
// # Time
//
// The repeat interval and the waits between attempts run on the
// Dispatcher's Clock, so tests move time by hand; a post's and a command's
// timeout bound real work and run on the real clock.
package alert
