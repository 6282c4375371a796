// Package orchestrator starts and runs the jobs of a backup server group:
// backups and restores from a spec, their dispatch to a storage node and
// an agent, the runs the leader watches, requeues and failures, cancels,
// and the restore planner. It is what the server's NATS handlers call, and
// what a scheduler will call, with the same Go API:
//
//	StartBackup(ctx, BackupSpec) / StartRestore(ctx, RestoreSpec)
//	Cancel(ctx, CancelSpec)
//	Commit, NodeAborted, AgentDone, AgentRestarted (a job's end, told by its node or agent)
//	Fail, Requeue, Ended
//	Activity, Waiting, Progressed (what a running job does)
//	BaseTree, PlanPage            (pages a running job's agent asks for)
//	Round, Adopt, Lost, RunStops  (the leader's loop, run by the server)
//
// It owns no goroutine of its own but those carrying out cancels and
// sending stop orders, both waited for by Wait; the server runs Round on
// its leader loop, under the leader term's context, and RunStops under its
// own. It depends on narrow interfaces, not on the server: Raft (the
// catalog's replicated log), Member (this server: disk space, the group's
// ticket key, metrics, how a failed change is told), Roles (requests to
// storage nodes and agents, job events), Liveness (what heartbeats say)
// and a clock. server/DESIGN.md has the structs, goroutines and locks.
//
// Errors are the orchestrator's own (*Error: a code, a message, a hint and
// the cause), told apart with errors.Is against the sentinels
// (ErrUnknownClient, ErrInvalidArgument, ErrOutcomeUnknown, ...); above all
// ErrOutcomeUnknown says a start may have taken effect and is to be
// repeated under the same request id. The codes are the wire's, so the
// NATS edge (server/orchestration.go, wireError) answers with the same
// code and hint; the orchestrator builds no wire error itself.
package orchestrator
