// Package server is the backup server role: a member of the Raft group that
// holds the catalog (package catalog, replicated by package server/cluster),
// the admin API on NATS, and, on the leader, the job orchestrator.
//
// The orchestrator never touches bulk data. For a backup it records the job,
// picks the storage node that serves the pool, signs a ticket and orders the
// agent to stream to that node; the node asks for volumes and the pool's key
// as it writes, sends the session's file index in segments, and commits the
// session once it is durable. A restore is the reverse: the server plans which
// sessions and blocks hold the chosen paths and hands the plan out page by
// page; the agent forwards it to the node over the data port.
//
// Liveness is not replicated: storage nodes and agents heartbeat to every
// server, and a job whose node or agent falls silent fails with the reason.
package server
