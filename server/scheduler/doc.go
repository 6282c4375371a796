// Package scheduler turns policies into runs on the Raft leader: at every
// tick of the server's clock it asks each policy's schedule (package
// schedule) what fell due for each of its clients, records the answer in the
// catalog, and starts the backups through the orchestrator.
//
// # Rules
//
//  1. Only the leader schedules, and only after its barrier: the server
//     starts Run with the leader term's context and Run ends at once when
//     the term does. Everything the scheduler knows is in the catalog, so a
//     new leader carries on where the old one stopped.
//
//  2. A run is recorded before anything is started for it
//     (catalog.OpRecordRuns), keyed by policy, client and scheduled time, and
//     the catalog refuses a second record of the same key. Its job is then
//     started under a request id made from the key (catalog.RunRequestID),
//     and the run is marked dispatched with the job's id. A leader that dies
//     between the record and the mark leaves the run "starting": the next
//     leader, finding it so, starts it again under the same request id, which
//     the orchestrator answers with the job the first start made, if it made
//     one. So every run happens exactly once, whatever leader dies when.
//
//  3. Catch-up (schedule.Schedule.CatchUp): of the runs due since the newest
//     run recorded for the policy and client (or since the policy was
//     created or last changed, when that is later), the newest runs if it is
//     at most the policy's catch-up window late; every other one is recorded
//     missed, with the record of the one that runs, in one command, and one
//     alert of kind missed_run is raised for them in that command
//     (catalog.RunsRecord.Alert): the catalog owes it until a leader sent
//     it, so it is neither lost with a leader nor sent by two. So a week
//     of downtime starts one backup per client and policy, not seven.
//
//  4. Level (schedule.Promote): the level the schedule gives the run is
//     raised when the chain of the client and the policy's file set needs it
//     (no full yet, the last full or differential older than the policy's
//     maximum), from the catalog's last full and differential of that chain
//     (catalog.Store.ChainOf). The run records both levels and the reason,
//     and the job's log says it.
//
//  5. Overlap: a run that falls due while a job of the same policy and
//     client is still pending, queued or running is not started: it is
//     recorded skipped, naming that job, and alerted as missed_run.
//
//  6. A run whose job cannot be made (the client is not known, the pool does
//     not exist) is recorded failed with the servers' refusal. One whose
//     start could not be confirmed (no quorum, leadership lost) stays
//     starting and is tried again at the next tick, under the same request
//     id, until its catch-up window has passed; then it is recorded failed.
//
//  7. A run left starting whose policy was since deleted or disabled, or
//     no longer names its client, is ended at the next tick (a policy's
//     starting runs are read again only when what orphaned them changes):
//     dispatched with the job a start made for it under its request id,
//     else failed, saying which. An administrator who disabled a policy
//     does not see its old run start when it is enabled again. A run dispatched records the level its job was
//     made at when the catalog promoted it further than rule 4 did (the
//     catalog looks for the chain in the policy's pools only, rule 4 in
//     every pool), with the catalog's reason.
//
//  8. History: each record of runs drops the same policy's and client's
//     runs older than Config.RunHistory, but the newest, which is the only
//     one the rules above read.
//
//  9. Limits and the queue are the orchestrator's: a run's job carries the
//     policy's priority and the run's scheduled time, by which the queue is
//     served when a limit holds jobs back.
//
//  10. The decisions of one tick (each a policy and a client) are carried
//     out Config.Starts at once, policies of higher priority first: every
//     one of a priority has its run recorded and its job started
//     (dispatched, or queued by a limit) before one of a lower priority
//     begins, and those of one priority start together, so the last of
//     many clients due at 21:00 does not start minutes late. Each decision
//     is its own policy's and client's, and rule 2 holds for each.
//
// A policy's clients are the names it lists and the clients whose agents
// report every label it selects by (catalog.Policy.AppliesTo); a disabled
// policy is not looked at, and the runs it would have had meanwhile are not
// owed when it is enabled again (its change is where catch-up starts).
//
// Time comes only from the injected clock (internal/clock), so tests run
// months of schedule in milliseconds on a clock.Fake.
package scheduler
