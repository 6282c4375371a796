// Package cluster is a backup server's member of the Raft group that
// replicates the catalog: hashicorp/raft over TCP, with the Raft log and
// stable state in one bbolt file (raft.db) and file snapshots beside it, and
// catalog.FSM applying the committed commands.
//
// Writes go through Node.Apply on the leader; a follower answers
// *NotLeaderError naming the leader, and the caller forwards. Reads go to the
// local catalog.Store directly; Barrier on the leader makes them
// linearizable. catalog/DESIGN.md explains how the catalog and Raft fit.
//
// A server joins (Node.Join) as a non-voter, which counts for no majority,
// and is promoted to voter only once Raft reaches it and its catalog holds
// what the leader's held when it was added; a join that fails on the way
// removes it again. A server bootstraps a group only when its Config says
// so.
package cluster
