package wire

import (
	"time"

	"github.com/google/uuid"
)

// Admin operations of retention and expiry (cairn backup hold, release,
// delete and show, cairn prune).
const (
	OpBackupShow    = "backup.show"
	OpBackupHold    = "backup.hold"
	OpBackupRelease = "backup.release"
	OpBackupDelete  = "backup.delete"
	OpPrune         = "prune"
	OpPruneHistory  = "prune.history"
)

// OpNodeVolumeDelete (node order) deletes an expired disk volume's file.
const OpNodeVolumeDelete = "volume.delete"

// HoldReq puts a backup, or every backup of a client, on legal hold
// (backup.hold), or releases it (backup.release).
type HoldReq struct {
	BackupID uint64 `json:"backup_id,omitempty"`
	Client   string `json:"client,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// By names who holds or releases, for the hold's record.
	By string `json:"by,omitempty"`
}

// HoldInfo is one legal hold.
type HoldInfo struct {
	BackupID uint64    `json:"backup_id,omitempty"`
	Client   string    `json:"client,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	By       string    `json:"by,omitempty"`
	Time     time.Time `json:"time"`
}

// BackupShowReq asks for one backup.
type BackupShowReq struct {
	BackupID uint64 `json:"backup_id"`
}

// BackupShowResp is a backup, its hold, what builds on it and what the
// expiry pass would do with it now.
type BackupShowResp struct {
	Backup BackupInfo `json:"backup"`
	// Dependents build on the backup: a deletion takes them along.
	Dependents []uint64 `json:"dependents,omitempty"`
	// Retention says why the expiry pass keeps or would expire it, empty
	// when no retention covers its client and file set.
	Retention string `json:"retention,omitempty"`
}

// BackupDeleteReq deletes a backup. With WithDependents the backups that
// build on it go too; without, a backup others build on is refused,
// naming them.
type BackupDeleteReq struct {
	BackupID       uint64 `json:"backup_id"`
	WithDependents bool   `json:"with_dependents,omitempty"`
	// By names who deletes, for the expiry history.
	By string `json:"by,omitempty"`
}

// BackupDeleteResp lists the backups deleted.
type BackupDeleteResp struct {
	Deleted []uint64 `json:"deleted"`
	// Pending says why volumes the backups were on wait to be deleted.
	Pending []string `json:"pending,omitempty"`
}

// PruneReq runs the expiry pass now, or with DryRun says what it would
// expire and why.
type PruneReq struct {
	DryRun bool `json:"dry_run,omitempty"`
}

// PruneGroup is what a pass does in one client's file set.
type PruneGroup struct {
	Client  string        `json:"client"`
	FileSet string        `json:"file_set"`
	Paths   []string      `json:"paths,omitempty"`
	Policy  string        `json:"policy,omitempty"`
	Expire  []PruneBackup `json:"expire"`
	Kept    int           `json:"kept"`
}

// PruneBackup is one backup a pass expires (or, after a run, kept against
// the plan: Refused says why), and the reason.
type PruneBackup struct {
	ID        uint64    `json:"id"`
	Level     string    `json:"level"`
	StartTime time.Time `json:"start_time"`
	Reason    string    `json:"reason"`
	Refused   string    `json:"refused,omitempty"`
}

// PruneResp answers prune.
type PruneResp struct {
	DryRun bool         `json:"dry_run,omitempty"`
	Groups []PruneGroup `json:"groups"`
	// Expired counts the backups expired (or that would be), Kept those
	// the catalog kept at the last moment (a hold, a restore, a new
	// dependent).
	Expired int `json:"expired"`
	Kept    int `json:"kept"`
	// Volumes are the volumes no backup is on any more: disk volumes
	// deleted, tapes recyclable.
	Volumes []string `json:"volumes,omitempty"`
	// Pending says why volumes no backup is on wait to be deleted (their
	// storage node is offline, or failed): the next pass tries again.
	Pending []string `json:"pending,omitempty"`
	// More: the pass stopped at its time limit with clients it has not
	// gone through yet; the next pass, or 'cairn prune' again, goes on.
	More bool `json:"more,omitempty"`
	// Unlisted counts the backups counted in Expired that Groups leaves
	// out to keep the answer within one message ('cairn prune --history'
	// lists them).
	Unlisted int `json:"unlisted,omitempty"`
}

// PruneHistoryReq pages through the expiry history, newest first.
type PruneHistoryReq struct {
	Before uint64 `json:"before,omitempty"`
	Client string `json:"client,omitempty"`
}

// ExpiryRecord is one backup that expired or was deleted.
type ExpiryRecord struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	BackupID  uint64    `json:"backup_id"`
	Client    string    `json:"client"`
	FileSet   string    `json:"file_set"`
	Level     string    `json:"level"`
	StartTime time.Time `json:"start_time"`
	Pool      string    `json:"pool"`
	Bytes     int64     `json:"bytes"`
	Reason    string    `json:"reason"`
	By        string    `json:"by"`
}

// PruneHistoryResp answers prune.history.
type PruneHistoryResp struct {
	Expiries []ExpiryRecord `json:"expiries"`
	More     bool           `json:"more,omitempty"`
}

// VolumeDeleteOrder (node order) deletes the file of an expired disk
// volume. A file already gone is success; a file that holds another
// volume, or that a writer holds, is refused and left alone.
type VolumeDeleteOrder struct {
	Pool     string    `json:"pool"`
	Volume   string    `json:"volume"`
	VolumeID uuid.UUID `json:"volume_id"`
}
