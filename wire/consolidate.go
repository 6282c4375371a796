package wire

import "github.com/google/uuid"

// OpBackupConsolidate starts a synthetic full (cairn.api.backup.consolidate):
// the storage node that holds a client's chain folds its last full and the
// backups after it into one new full, with no agent involved.
const OpBackupConsolidate = "backup.consolidate"

// OpRunConsolidate orders a storage node (cairn.node.<id>.consolidate.run)
// to write the synthetic full of a running job (RunConsolidate).
const OpRunConsolidate = "consolidate.run"

// BackupConsolidateReq asks for a synthetic full of a client's newest chain
// (of FileSet, which may be a prefix of its id, when the client has several),
// written to Pool (the chain's full's pool when empty).
type BackupConsolidateReq struct {
	Client  string `json:"client"`
	FileSet string `json:"file_set,omitempty"`
	Pool    string `json:"pool,omitempty"`
	Start
}

// RunConsolidate orders the storage node that holds a chain to read it as of
// its newest backup and write it as one full session to Pool, as job JobID at
// Attempt. The node takes the plan of what to read from the servers
// (OpRestorePlan, as a restore does), reads Sessions only, and commits the
// session as a backup's (OpSessionIndex, OpSessionCommit). Stream is the
// session whose reads come last and are merged as they are read; the reads
// of every other session are staged on the node's disk first.
type RunConsolidate struct {
	JobID    uint64      `json:"job_id"`
	Attempt  int         `json:"attempt,omitempty"`
	Client   string      `json:"client"`
	Pool     string      `json:"pool"`
	BackupID uint64      `json:"backup_id"`
	KeyID    string      `json:"key_id"`
	Sessions []uuid.UUID `json:"sessions"`
	Stream   uuid.UUID   `json:"stream"`
}
