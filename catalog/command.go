package catalog

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/varint"
)

// Op names a catalog change.
type Op string

const (
	OpRegisterClient  Op = "register_client"
	OpRegisterNode    Op = "register_node"
	OpCreatePool      Op = "create_pool"
	OpPutKey          Op = "put_key"
	OpCreateJob       Op = "create_job"
	OpUpdateJob       Op = "update_job"
	OpAppendJobLog    Op = "append_job_log"
	OpCreateVolume    Op = "create_volume"
	OpUpdateVolume    Op = "update_volume"
	OpAddIndexSegment Op = "add_index_segment"
	OpCommitBackup    Op = "commit_backup"
	OpAbortBackup     Op = "abort_backup"
	OpDispatchJob     Op = "dispatch_job"
	OpRequeueJob      Op = "requeue_job"
	OpLabelTape       Op = "label_tape"
	OpMoveTape        Op = "move_tape"
	OpAssignTape      Op = "assign_tape"
	OpInitGroup       Op = "init_group"
	OpCancelJob       Op = "cancel_job"
	OpRotateSecrets   Op = "rotate_secrets"
	OpAcceptJob       Op = "accept_job"
	OpVoidJobs        Op = "void_jobs"
	OpForgetRequests  Op = "forget_requests"
	OpPutPolicy       Op = "put_policy"
	OpDeletePolicy    Op = "delete_policy"
	OpApplyPolicies   Op = "apply_policies"
	OpRecordRuns      Op = "record_runs"
	OpUpdateRun       Op = "update_run"
	OpHold            Op = "hold"
	OpRelease         Op = "release"
	OpExpireBackups   Op = "expire_backups"
	OpForgetVolume    Op = "forget_volume"
	OpRecycleTape     Op = "recycle_tape"
	OpRaiseAlert      Op = "raise_alert"
	OpAlertSent       Op = "alert_sent"
	OpPruneJobs       Op = "prune_jobs"
	OpRenewTape       Op = "renew_tape"
	// OpSetPoolCompression changes the codec of a pool's sessions.
	OpSetPoolCompression Op = "set_pool_compression"
)

// Command is one change to the catalog, as the leader proposes it. Time and
// every new identifier are chosen by the leader and travel in the command, so
// that every server applies exactly the same change.
type Command struct {
	Op   Op        `json:"op"`
	Time time.Time `json:"time"`

	Client       *Client          `json:"client,omitempty"`        // OpRegisterClient
	Node         *StorageNode     `json:"node,omitempty"`          // OpRegisterNode
	Pool         *Pool            `json:"pool,omitempty"`          // OpCreatePool
	Key          *Key             `json:"key,omitempty"`           // OpPutKey
	Job          *Job             `json:"job,omitempty"`           // OpCreateJob
	JobUpdate    *JobUpdate       `json:"job_update,omitempty"`    // OpUpdateJob
	JobLog       *JobLog          `json:"job_log,omitempty"`       // OpAppendJobLog
	Volume       *Volume          `json:"volume,omitempty"`        // OpCreateVolume
	VolumeUpdate *VolumeUpdate    `json:"volume_update,omitempty"` // OpUpdateVolume
	Segment      *IndexSegment    `json:"segment,omitempty"`       // OpAddIndexSegment
	Commit       *BackupCommit    `json:"commit,omitempty"`        // OpCommitBackup
	Abort        *BackupAbort     `json:"abort,omitempty"`         // OpAbortBackup
	Dispatch     *JobDispatch     `json:"dispatch,omitempty"`      // OpDispatchJob
	Requeue      *JobRequeue      `json:"requeue,omitempty"`       // OpRequeueJob
	TapeLabel    *TapeLabel       `json:"tape_label,omitempty"`    // OpLabelTape
	TapeMove     *TapeMove        `json:"tape_move,omitempty"`     // OpMoveTape
	TapeAssign   *TapeAssign      `json:"tape_assign,omitempty"`   // OpAssignTape
	Accept       *JobAccept       `json:"accept,omitempty"`        // OpAcceptJob
	Void         *JobsVoid        `json:"void,omitempty"`          // OpVoidJobs
	Forget       *RequestsForget  `json:"forget,omitempty"`        // OpForgetRequests
	Group        *Group           `json:"group,omitempty"`         // OpInitGroup
	Cancel       *JobCancel       `json:"cancel,omitempty"`        // OpCancelJob
	Rotation     *SecretsRotation `json:"rotation,omitempty"`      // OpRotateSecrets
	PolicyPut    *PolicyPut       `json:"policy_put,omitempty"`    // OpPutPolicy
	PolicyDelete *PolicyDelete    `json:"policy_delete,omitempty"` // OpDeletePolicy
	PolicyApply  *PolicyApply     `json:"policy_apply,omitempty"`  // OpApplyPolicies
	Runs         *RunsRecord      `json:"runs,omitempty"`          // OpRecordRuns
	RunUpdate    *RunUpdate       `json:"run_update,omitempty"`    // OpUpdateRun
	Hold         *Hold            `json:"hold,omitempty"`          // OpHold, OpRelease
	Expire       *BackupsExpire   `json:"expire,omitempty"`        // OpExpireBackups
	VolumeForget *VolumeForget    `json:"volume_forget,omitempty"` // OpForgetVolume
	TapeRecycle  *TapeRecycle     `json:"tape_recycle,omitempty"`  // OpRecycleTape, OpRenewTape
	Alert        *AlertRaise      `json:"alert,omitempty"`         // OpRaiseAlert
	AlertSent    *AlertSent       `json:"alert_sent,omitempty"`    // OpAlertSent
	PruneJobs    *JobsPrune       `json:"prune_jobs,omitempty"`    // OpPruneJobs
	// PoolCompression goes with OpSetPoolCompression.
	PoolCompression *PoolCompression `json:"pool_compression,omitempty"`

	// Request, on OpCreateJob and OpLabelTape, is the client-chosen request
	// the command carries out. A command whose request id the catalog
	// knows changes nothing and answers what the first one made.
	Request *RequestKey `json:"request,omitempty"`
}

// RequestKey names a client's request: its id, and a digest of its
// parameters.
type RequestKey struct {
	ID     string `json:"id"`
	Digest string `json:"digest,omitempty"`
}

// JobAccept confirms a pending job: its start is being answered, so it may
// run. Accepting a job that is already past pending changes nothing.
type JobAccept struct {
	JobID uint64 `json:"job_id"`
}

// JobsVoid ends the listed jobs that are still pending and were created at
// or before CreatedBefore: nobody confirmed their start in time, so they
// must never run. A job accepted meanwhile is left alone.
type JobsVoid struct {
	JobIDs        []uint64  `json:"job_ids"`
	CreatedBefore time.Time `json:"created_before"`
	Reason        string    `json:"reason"`
}

// RequestsForget drops the request ids recorded before Before: a repeat
// after that is a new request.
type RequestsForget struct {
	Before time.Time `json:"before"`
}

// SecretsRotation replaces the group's key-encryption key and ticket
// signing key. Every data key comes wrapped anew with the new KEK, and all
// are replaced in one transaction with the group's KEK fingerprint, so no
// key is ever left wrapped with a KEK the group no longer holds, and a
// data key's material never changes: what it encrypted opens as before.
type SecretsRotation struct {
	// FromKEK is the fingerprint of the KEK the keys are wrapped with
	// now: a rotation that raced another, or a key added meanwhile, is
	// refused and changes nothing.
	FromKEK string `json:"from_kek"`
	// ToKEK is the new KEK's fingerprint.
	ToKEK string `json:"to_kek"`
	// Keys are every data key of the catalog, wrapped with the new KEK.
	Keys []RewrappedKey `json:"keys"`
	// TicketKey is the new ticket signing public key. The one it replaces
	// stays valid beside it, for the tickets already handed out.
	TicketKey []byte `json:"ticket_key"`
}

// RewrappedKey is a data key wrapped with a new KEK.
type RewrappedKey struct {
	ID      string `json:"id"`
	Wrapped []byte `json:"wrapped"`
}

// PoolCompression sets the codec a pool's sessions compress their data
// blocks with: CodecZstd, CodecS2 or CodecNone. Sessions that
// started before keep theirs.
type PoolCompression struct {
	Pool  string `json:"pool"`
	Codec string `json:"codec"`
}

// TapeLabel records a cartridge that a storage node labeled and read back:
// a new tape volume named by its barcode, appendable in Pool, its label
// taking the first BlockSize bytes.
type TapeLabel struct {
	VolumeID  uuid.UUID `json:"volume_id"`
	Barcode   string    `json:"barcode"`
	Library   string    `json:"library"`
	Node      string    `json:"node"`
	Pool      string    `json:"pool"`
	Location  string    `json:"location"`
	BlockSize int       `json:"block_size"`
}

// TapeMove records where a cartridge went. A barcode the catalog does not
// know (a blank or foreign tape) is ignored: only volumes have locations.
type TapeMove struct {
	Library string `json:"library"`
	Barcode string `json:"barcode"`
	From    string `json:"from,omitempty"`
	To      string `json:"to"`
	Reason  string `json:"reason,omitempty"`
}

// TapeAssign moves an unused tape of the Scratch pool into a tape pool,
// held by WriterJob when it is not 0 (the job that needed it).
type TapeAssign struct {
	VolumeID  uuid.UUID `json:"volume_id"`
	Pool      string    `json:"pool"`
	WriterJob uint64    `json:"writer_job,omitempty"`
}

// JobDispatch starts a queued job on a storage node. It is recorded before
// the agent gets its order, so a new leader knows the job was sent and never
// sends it a second time.
type JobDispatch struct {
	JobID uint64 `json:"job_id"`
	Node  string `json:"node"`
}

// JobRequeue puts a running job back in the queue, as when its storage node
// died: whatever its session wrote is dropped, and it waits for Reason to
// pass.
type JobRequeue struct {
	JobID  uint64 `json:"job_id"`
	Reason string `json:"reason"`
	// Attempt, when not 0, is the attempt that failed: a report that comes
	// in after the job went on to another attempt changes nothing.
	Attempt int `json:"attempt,omitempty"`
}

// JobUpdate changes a job. Zero fields leave the job's value as it is.
type JobUpdate struct {
	ID          uint64    `json:"id"`
	State       JobState  `json:"state,omitempty"`
	Started     time.Time `json:"started"`
	Ended       time.Time `json:"ended"`
	Files       int64     `json:"files,omitempty"`
	Bytes       int64     `json:"bytes,omitempty"`
	StoredBytes int64     `json:"stored_bytes,omitempty"`
	Warnings    int       `json:"warnings,omitempty"`
	Entries     int64     `json:"entries,omitempty"`
	Restored    int64     `json:"restored,omitempty"`
	Lost        int64     `json:"lost,omitempty"`
	ErrorCode   string    `json:"error_code,omitempty"`
	Error       string    `json:"error,omitempty"`
	// Waiting, when not nil, replaces the job's reason for waiting
	// (queued, or running and waiting for a drive or a tape).
	Waiting *string `json:"waiting,omitempty"`
	// Attempt, when not 0, applies the update only to the job running that
	// attempt: a late report about an earlier attempt (its storage node
	// aborting, its agent failing) must not end the one that replaced it.
	Attempt int `json:"attempt,omitempty"`
	// Log is appended to the job's log in the update's own change (an
	// ended job's last lines are there when its end is seen).
	Log []LogLine `json:"log,omitempty"`
}

// JobLog appends lines to a job's log. Lines without a time get the
// command's.
type JobLog struct {
	JobID uint64    `json:"job_id"`
	Lines []LogLine `json:"lines"`
}

// VolumeUpdate changes a volume. Nil pointers and empty strings leave the
// value as it is; a WriterJob of 0 releases the volume.
type VolumeUpdate struct {
	ID          uuid.UUID   `json:"id"`
	State       VolumeState `json:"state,omitempty"`
	Bytes       *int64      `json:"bytes,omitempty"`
	WriterJob   *uint64     `json:"writer_job,omitempty"`
	Error       string      `json:"error,omitempty"`
	LastWritten time.Time   `json:"last_written"`
	// LockedUntil extends the volume's LockedUntil (never brings it
	// forward: a store's lock cannot be shortened).
	LockedUntil time.Time `json:"locked_until,omitzero"`
	// Relabeled says the tape's label names the volume now: its Relabel
	// is cleared.
	Relabeled bool `json:"relabeled,omitempty"`
}

// IndexSegment is one segment of a writing backup's file index
// (fileindex.Segment). Segments arrive numbered from 0 with ascending,
// non-overlapping path ranges.
type IndexSegment struct {
	BackupID uint64         `json:"backup_id"`
	No       int            `json:"no"`
	First    fileindex.Path `json:"first"`
	Last     fileindex.Path `json:"last"`
	Count    int            `json:"count"`
	// Node, when set, is the storage node that sends the segment: refused
	// unless the backup is being written there.
	Node string `json:"node,omitempty"`
	// Data travels in the command's raw blob, not in its JSON, so that a
	// compressed segment is not inflated by base64.
	Data []byte `json:"-"`
}

// BackupCommit records a backup whose session is durable on its volumes.
type BackupCommit struct {
	BackupID  uint64    `json:"backup_id"`
	SessionID uuid.UUID `json:"session_id"`
	// Node, when set, is the storage node that wrote the session: refused
	// unless the backup is being written there, so a node the job was
	// taken from cannot commit over the attempt that replaced it.
	Node  string `json:"node,omitempty"`
	Parts []Part `json:"parts"`
	// Segments is the number of index segments the session produced; the
	// commit is refused unless the catalog holds exactly that many.
	Segments    int       `json:"segments"`
	Entries     int64     `json:"entries"`
	Files       int64     `json:"files"`
	Bytes       int64     `json:"bytes"`
	StoredBytes int64     `json:"stored_bytes"`
	Warnings    int       `json:"warnings"`
	EndTime     time.Time `json:"end_time"`
	// Full lists the volumes of Parts that the session filled.
	Full []uuid.UUID `json:"full,omitempty"`
	// Tape is the drive's figures when the session went to tape.
	Tape *TapeStats `json:"tape,omitempty"`
	// Log is appended to the job's log in the commit's own change, so
	// that whoever sees the job ended also sees what its log says of it.
	Log []LogLine `json:"log,omitempty"`
	// LockedUntil is the retain-until date the store locked the session's
	// objects with (zero: none): the backup's, and at least that of every
	// backup it builds on.
	LockedUntil time.Time `json:"locked_until,omitzero"`
}

// BackupAbort drops a writing backup: its index, its claim on volumes, and
// its job, which fails with the given error.
type BackupAbort struct {
	BackupID uint64 `json:"backup_id"`
	Code     string `json:"code"`
	Msg      string `json:"msg"`
	// Attempt, when not 0, aborts only while the job runs that attempt.
	Attempt int `json:"attempt,omitempty"`
}

// ApplyResult is what applying one command produced. Err is a *Error when the
// catalog refused the command (and changed nothing).
type ApplyResult struct {
	JobID      uint64
	VolumeID   uuid.UUID
	VolumeName string
	// Skipped is set when the index was applied before, so nothing was done.
	Skipped bool
	// Repeat is set when the command's request id was known: nothing was
	// done, and JobID or VolumeID are what the first command made.
	Repeat bool
	// Expired are the backups OpExpireBackups removed, Kept those it was
	// asked to remove and kept (and why), Emptied the volumes that no
	// backup is on any more.
	Expired []uint64
	Kept    []ExpiryKept
	Emptied []uuid.UUID
	// Pruned counts the jobs OpPruneJobs dropped.
	Pruned int
	Err    error
}

// CommandVersion is the first byte of every encoded command. A server reads
// only the versions it knows, so a newer leader's commands stop an older
// follower instead of being misread.
const CommandVersion = 1

// maxCommandJSON bounds the JSON part a decoder accepts.
const maxCommandJSON = 16 << 20

// ErrBadCommand is wrapped by every decoding error.
var ErrBadCommand = errors.New("bad catalog command")

// payload returns whether the command carries the payload its Op needs,
// and false for an Op this version does not know.
func (c *Command) payloadOK() (known, present bool) {
	switch c.Op {
	case OpRegisterClient:
		return true, c.Client != nil
	case OpRegisterNode:
		return true, c.Node != nil
	case OpCreatePool:
		return true, c.Pool != nil
	case OpPutKey:
		return true, c.Key != nil
	case OpCreateJob:
		return true, c.Job != nil
	case OpUpdateJob:
		return true, c.JobUpdate != nil
	case OpAppendJobLog:
		return true, c.JobLog != nil
	case OpCreateVolume:
		return true, c.Volume != nil
	case OpUpdateVolume:
		return true, c.VolumeUpdate != nil
	case OpAddIndexSegment:
		return true, c.Segment != nil
	case OpCommitBackup:
		return true, c.Commit != nil
	case OpAbortBackup:
		return true, c.Abort != nil
	case OpDispatchJob:
		return true, c.Dispatch != nil
	case OpRequeueJob:
		return true, c.Requeue != nil
	case OpLabelTape:
		return true, c.TapeLabel != nil
	case OpMoveTape:
		return true, c.TapeMove != nil
	case OpAssignTape:
		return true, c.TapeAssign != nil
	case OpInitGroup:
		return true, c.Group != nil
	case OpCancelJob:
		return true, c.Cancel != nil
	case OpRotateSecrets:
		return true, c.Rotation != nil
	case OpAcceptJob:
		return true, c.Accept != nil
	case OpVoidJobs:
		return true, c.Void != nil
	case OpForgetRequests:
		return true, c.Forget != nil
	case OpPutPolicy:
		return true, c.PolicyPut != nil
	case OpDeletePolicy:
		return true, c.PolicyDelete != nil
	case OpApplyPolicies:
		return true, c.PolicyApply != nil
	case OpRecordRuns:
		return true, c.Runs != nil
	case OpUpdateRun:
		return true, c.RunUpdate != nil
	case OpHold, OpRelease:
		return true, c.Hold != nil
	case OpExpireBackups:
		return true, c.Expire != nil
	case OpForgetVolume:
		return true, c.VolumeForget != nil
	case OpRecycleTape, OpRenewTape:
		return true, c.TapeRecycle != nil
	case OpRaiseAlert:
		return true, c.Alert != nil
	case OpAlertSent:
		return true, c.AlertSent != nil
	case OpPruneJobs:
		return true, c.PruneJobs != nil
	case OpSetPoolCompression:
		return true, c.PoolCompression != nil
	}
	return false, false
}

// EncodeCommand encodes c for the Raft log: a version byte, the length of a
// JSON part, the JSON part, and a raw blob (an index segment's data).
func EncodeCommand(c *Command) ([]byte, error) {
	known, present := c.payloadOK()
	if !known {
		return nil, fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
	}
	if !present {
		return nil, fmt.Errorf("%w: op %s without its payload", ErrBadCommand, c.Op)
	}
	js, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode catalog command %s: %w", c.Op, err)
	}
	var blob []byte
	if c.Segment != nil {
		blob = c.Segment.Data
	}
	out := make([]byte, 0, 1+binary.MaxVarintLen64+len(js)+len(blob))
	out = append(out, CommandVersion)
	out = binary.AppendUvarint(out, uint64(len(js)))
	out = append(out, js...)
	return append(out, blob...), nil
}

// DecodeCommand decodes what EncodeCommand produced. Anything else, including
// a command of a newer version or an op this version does not know, is an
// error wrapping ErrBadCommand.
func DecodeCommand(b []byte) (*Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrBadCommand)
	}
	if b[0] != CommandVersion {
		return nil, fmt.Errorf("%w: version %d, this server reads version %d; upgrade it to the leader's version",
			ErrBadCommand, b[0], CommandVersion)
	}
	n, m := varint.Uvarint(b[1:])
	if m <= 0 || n > maxCommandJSON || n > uint64(len(b)-1-m) {
		return nil, fmt.Errorf("%w: bad length of the JSON part", ErrBadCommand)
	}
	js := b[1+m : 1+m+int(n)]
	blob := b[1+m+int(n):]
	var c Command
	if err := json.Unmarshal(js, &c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	known, present := c.payloadOK()
	if !known {
		return nil, fmt.Errorf("%w: op %q is unknown to this server; upgrade it to the leader's version", ErrBadCommand, c.Op)
	}
	if !present {
		return nil, fmt.Errorf("%w: op %s without its payload", ErrBadCommand, c.Op)
	}
	if c.Segment != nil {
		c.Segment.Data = append([]byte(nil), blob...)
	} else if len(blob) > 0 {
		return nil, fmt.Errorf("%w: op %s with a blob", ErrBadCommand, c.Op)
	}
	return &c, nil
}
