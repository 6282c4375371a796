// Package cluster is a backup server's member of the Raft group that
// replicates the catalog: hashicorp/raft over TCP, with the Raft log and
// stable state in one bbolt file (raft.db) and file snapshots beside it, and
// catalog.FSM applying the committed commands.
//
// Writes go through Node.Apply on the leader; a follower answers
// *NotLeaderError naming the leader, and the caller forwards. Reads go to the
// local catalog.Store directly; Barrier on the leader makes them
// linearizable. catalog/DESIGN.md explains how the catalog and Raft fit.
package cluster
