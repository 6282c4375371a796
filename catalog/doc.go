// Package catalog is Cairn's record of everything it knows: clients, storage
// nodes, pools and their keys, volumes, jobs, backups and the file index of
// every backup.
//
// The catalog is a bbolt file that changes only through Commands, applied in
// Raft log order by the FSM on every server; reads are served from the local
// file by any goroutine. Apply is deterministic (the leader puts times and
// identifiers into the command) and idempotent per Raft index (the applied
// index is stored in the same transaction as the change), so every server
// holds the same catalog and a restart replays nothing twice.
//
// DESIGN.md in this directory explains the layout, the file index storage and
// the Raft rules.
package catalog
