package catalog

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
)

// Client is a host that runs an agent.
type Client struct {
	Name        string `json:"name"`
	Hostname    string `json:"hostname,omitempty"`
	OS          string `json:"os,omitempty"`
	Arch        string `json:"arch,omitempty"`
	Version     string `json:"version,omitempty"`
	DefaultPool string `json:"default_pool,omitempty"`
	// Site places the client, so backups prefer a storage node of the same site.
	Site string `json:"site,omitempty"`
	// Labels are what the agent's config says of the client
	// (role=db, env=prod); a policy selects clients by them.
	Labels     map[string]string `json:"labels,omitempty"`
	Registered time.Time         `json:"registered"`
	LastSeen   time.Time         `json:"last_seen"`
	// LabelsReported, on a registration only (it is not stored), says
	// the agent reports its labels, none included: they then replace the
	// stored ones. An older agent, which reports none, keeps them.
	LabelsReported bool `json:"labels_reported,omitempty"`
}

// StorageNode is a process that owns devices and writes volumes.
type StorageNode struct {
	ID         string     `json:"id"`
	DataAddr   string     `json:"data_addr"`
	CertSHA256 string     `json:"cert_sha256,omitempty"`
	Version    string     `json:"version,omitempty"`
	Pools      []NodePool `json:"pools,omitempty"`
	// Libraries are the tape libraries the node owns; a library has one
	// owner, and its tape pools' volumes are written and read there.
	Libraries  []NodeLibrary `json:"libraries,omitempty"`
	Registered time.Time     `json:"registered"`
	LastSeen   time.Time     `json:"last_seen"`
}

// NodePool is a pool as a storage node serves it: a disk pool's directory,
// or a tape pool's library.
type NodePool struct {
	Name           string   `json:"name"`
	Type           PoolType `json:"type,omitempty"` // "" is disk (ParsePoolType)
	Dir            string   `json:"dir,omitempty"`
	MaxVolumeBytes int64    `json:"max_volume_bytes,omitempty"`
	Library        string   `json:"library,omitempty"`
}

// NodeLibrary is a tape library a storage node owns.
type NodeLibrary struct {
	Name      string `json:"name"`
	Changer   string `json:"changer,omitempty"`
	Drives    int    `json:"drives"`
	Slots     int    `json:"slots"`
	MailSlots int    `json:"mail_slots"`
}

// PoolType is the medium of a pool's volumes. Code asks it what it needs
// to know of the medium (does it write in order, does it belong to a
// library, is a volume a file) rather than comparing names, so that a new
// medium is a constant and its answers, not a change wherever a pool's
// type matters.
type PoolType string

// Pool types.
const (
	// PoolTypeDisk is a pool of volume files in a directory of one storage
	// node.
	PoolTypeDisk PoolType = "disk"
	// PoolTypeTape is a pool of labeled cartridges; each volume is one
	// cartridge of a library, named by its barcode.
	PoolTypeTape PoolType = "tape"
	// PoolTypeSFTP is a pool of volume files in a directory of an SFTP
	// server (an offsite target) that one storage node writes over SSH.
	PoolTypeSFTP PoolType = "sftp"
	// PoolTypeS3 is a pool of volumes in an S3 bucket (an offsite target,
	// AWS or S3-compatible) that one storage node writes: each volume a
	// prefix of immutable objects, locked when the bucket has object lock.
	PoolTypeS3 PoolType = "s3"
)

// ParsePoolType reads a pool type as a storage node announces it; ""
// is disk (nodes from before tape pools announced no type).
func ParsePoolType(s string) (PoolType, bool) {
	t := PoolType(s)
	if s == "" {
		t = PoolTypeDisk
	}
	return t, t.Valid()
}

// Valid says whether t is a type the catalog knows.
func (t PoolType) Valid() bool {
	return t == PoolTypeDisk || t == PoolTypeTape || t == PoolTypeSFTP || t == PoolTypeS3
}

// Sequential: a volume is written and read in order, its blocks found by
// position (a tape). A new part starts only at the committed end, and a
// reader maps a part's offsets to blocks with the start of every part
// before it (Volume.PartStarts).
func (t PoolType) Sequential() bool { return t == PoolTypeTape }

// HasLibrary: each volume is a cartridge of a library, labeled ahead of
// need by an operator ('cairn media label'), named by its barcode and
// moved between slots, drives, mail slots and the vault.
func (t PoolType) HasLibrary() bool { return t == PoolTypeTape }

// FileBacked: each volume is a file in a directory of its storage node
// (or of the SFTP target the node writes; or a prefix of objects in the
// bucket of an S3 pool), created by the node when a backup needs it, with
// a path; it may be capped by the pool's MaxVolumeBytes (a cartridge ends
// where its tape does).
func (t PoolType) FileBacked() bool { return t == PoolTypeDisk || t == PoolTypeSFTP || t == PoolTypeS3 }

// Locks: the store may hold a volume's objects under object lock until a
// date (Volume.LockedUntil) that no one can bring forward, so a volume is
// deleted only once that date has passed.
func (t PoolType) Locks() bool { return t == PoolTypeS3 }

// VolumePath is where volume name lies in a pool whose storage node
// names dir as the pool's place: a file NAME.cvol in a directory, or the
// prefix NAME/ of an S3 pool's objects.
func (t PoolType) VolumePath(dir, name string) string {
	if t == PoolTypeS3 {
		return dir + name + "/"
	}
	return path.Join(dir, name+".cvol")
}

// ScratchPool holds labeled tapes that belong to no pool yet: a tape pool
// with no appendable volume takes one of them (OpAssignTape).
const ScratchPool = "Scratch"

// Tape locations besides "slot N", "drive N" and "mail slot N" of the
// volume's library.
const (
	// LocationVault is outside any library: exported and taken out of the
	// mail slot.
	LocationVault = "vault"
)

// MaxVolumeMoves bounds the move history a volume keeps; the oldest moves
// are dropped first.
const MaxVolumeMoves = 100

// VolumeMove is one movement of a cartridge.
type VolumeMove struct {
	Time   time.Time `json:"time"`
	From   string    `json:"from,omitempty"`
	To     string    `json:"to"`
	Reason string    `json:"reason,omitempty"`
}

// TapeStats are the drive's figures of a backup that went to tape.
type TapeStats struct {
	DriveBytes   int64   `json:"drive_bytes"`
	DriveSeconds float64 `json:"drive_seconds"`
	Stops        int64   `json:"stops"`
	Tapes        int     `json:"tapes"`
	Spooled      bool    `json:"spooled,omitempty"`
}

// Defaults for pools created without explicit settings, among them the pools a
// storage node announces on registration.
const (
	DefaultBlockSize    = 256 << 10
	DefaultBlockRawSize = 1 << 20
)

// Pool is a set of volumes written with the same settings and key.
type Pool struct {
	Name string   `json:"name"`
	Type PoolType `json:"type"`
	// Nodes are the storage nodes that serve the pool; each keeps its own
	// volumes of it, and a backup may go to any of them.
	Nodes          []string `json:"nodes,omitempty"`
	MaxVolumeBytes int64    `json:"max_volume_bytes,omitempty"`
	BlockSize      int      `json:"block_size"`
	BlockRawSize   int      `json:"block_raw_size"`
	// LabelPrefix names the pool's volumes LabelPrefix-0001, -0002, …
	LabelPrefix string `json:"label_prefix"`
	// NextVolume is the number the next volume's name gets.
	NextVolume int `json:"next_volume"`
	// Library is the library whose cartridges a tape pool's volumes are;
	// empty for disk pools and for the Scratch pool, which spans libraries.
	Library string `json:"library,omitempty"`
	KeyID   string `json:"key_id,omitempty"`
	// Compression is false when the pool's data blocks are stored as they
	// are. Records from before Codec have only this, true: zstd.
	Compression bool `json:"compression"`
	// Codec is what compresses the pool's data blocks: CodecZstd,
	// CodecS2 or CodecNone; empty is zstd.
	// A change applies to the sessions that start after it: each block
	// says on the volume what it was written with.
	Codec   string    `json:"codec,omitempty"`
	Created time.Time `json:"created"`
}

// Codecs a pool's data blocks are compressed with. They are the names
// media/volume takes for a session (volume.CompressionZstd, …), which the
// catalog does not import (server.TestPoolCodecsAreTheVolumes holds them
// equal).
const (
	CodecZstd = "zstd"
	CodecS2   = "s2"
	CodecNone = "none"
)

// DataCodec is the codec the pool's sessions compress their data blocks
// with: CodecZstd, CodecS2 or CodecNone.
func (p *Pool) DataCodec() string {
	switch {
	case !p.Compression:
		return CodecNone
	case p.Codec == "":
		return CodecZstd
	}
	return p.Codec
}

// ValidCodec reports whether this version writes codec.
func ValidCodec(codec string) bool {
	return codec == CodecZstd || codec == CodecS2 || codec == CodecNone
}

// Group is the identity of the Raft group whose catalog this is, written
// once by its first leader; a rotation of the group's secrets
// (OpRotateSecrets) changes its keys, never its id. Every member holds it, so a server can tell a
// member of its own group from one of another group on the same NATS, and
// check that a server asking to join holds the group's secrets.
type Group struct {
	// ID is random, made when the group was formed.
	ID string `json:"id"`
	// KEKFingerprint is keyring.KEKFingerprint of the group's key-encryption
	// key: never the key itself.
	KEKFingerprint string `json:"kek_fingerprint"`
	// TicketKeys are the ed25519 public keys job tickets of this group are
	// signed with; storage nodes take them from here, whichever server they
	// ask.
	TicketKeys [][]byte  `json:"ticket_keys"`
	Created    time.Time `json:"created"`
	// RetiredKEKFingerprints are the KEKs rotations replaced, oldest
	// first: a secrets file that holds one is an old file of this group,
	// not another group's.
	RetiredKEKFingerprints []string `json:"retired_kek_fingerprints,omitempty"`
	// Rotated is when the secrets were last rotated.
	Rotated time.Time `json:"rotated,omitzero"`
}

// Key is a data key as the catalog keeps it: wrapped by the servers'
// key-encryption key, so the catalog (and every snapshot of it) never holds a
// plain key.
type Key struct {
	ID      string    `json:"id"`
	Pool    string    `json:"pool,omitempty"`
	Wrapped []byte    `json:"wrapped"`
	Created time.Time `json:"created"`
}

// VolumeState is where a volume is in its life.
type VolumeState string

const (
	VolumeLabeling VolumeState = "labeling"
	VolumeAppend   VolumeState = "append"
	VolumeFull     VolumeState = "full"
	VolumeError    VolumeState = "error"
	VolumeRetired  VolumeState = "retired"
	// VolumeExpired is a disk volume whose backups have all expired: its
	// storage node deletes the file, then the catalog forgets it.
	VolumeExpired VolumeState = "expired"
	// VolumeRecyclable is a tape whose backups have all expired: the next
	// backup of its pool that needs a new tape may relabel it.
	VolumeRecyclable VolumeState = "recyclable"
)

// Valid reports whether s is a state this version knows.
func (s VolumeState) Valid() bool {
	switch s {
	case VolumeLabeling, VolumeAppend, VolumeFull, VolumeError, VolumeRetired, VolumeExpired, VolumeRecyclable:
		return true
	}
	return false
}

// Volume is one disk file, SFTP file or tape.
type Volume struct {
	ID        uuid.UUID   `json:"id"`
	Name      string      `json:"name"`
	Pool      string      `json:"pool"`
	Node      string      `json:"node,omitempty"`
	MediaType PoolType    `json:"media_type"`
	State     VolumeState `json:"state"`
	// Bytes is the committed end: where the next part may start. Anything
	// beyond it on the medium is an unfinished session and is overwritten.
	Bytes       int64     `json:"bytes"`
	Sessions    int       `json:"sessions"`
	Created     time.Time `json:"created"`
	LastWritten time.Time `json:"last_written"`
	// WriterJob is the job holding the volume for appending, 0 for none.
	WriterJob uint64 `json:"writer_job,omitempty"`
	Error     string `json:"error,omitempty"`
	// LockedUntil is, in a pool whose type Locks, the latest retain-until
	// date the store was asked to lock the volume's objects until (by
	// every session granted it, committed or not: a failed session's
	// objects may be locked too): the volume cannot be deleted before.
	LockedUntil time.Time `json:"locked_until,omitzero"`

	// Tape volumes: the cartridge's Barcode (also the volume's Name), the
	// Library it belongs to and where it is ("slot 3", "drive 0",
	// "mail slot 25", "vault"), the label's BlockSize, the VolumeStart of
	// every session part on it in order (a restore maps offsets to tape
	// blocks with them; a new part may only start at Bytes), and the last
	// MaxVolumeMoves moves.
	Barcode    string       `json:"barcode,omitempty"`
	Library    string       `json:"library,omitempty"`
	Location   string       `json:"location,omitempty"`
	BlockSize  int          `json:"block_size,omitempty"`
	PartStarts []int64      `json:"part_starts,omitempty"`
	Moves      []VolumeMove `json:"moves,omitempty"`
	// Relabel is the volume a recycled tape's label still names
	// (RecycleTape with a NewID): the next writer writes this volume's
	// label over it before any data, and its report clears it.
	Relabel uuid.UUID `json:"relabel,omitzero"`
}

// JobType is what a job does.
type JobType string

const (
	JobBackup  JobType = "backup"
	JobRestore JobType = "restore"
)

// JobState is where a job is in its life.
type JobState string

const (
	// JobPending is a job whose start has not been confirmed to its caller
	// yet. Only OpAcceptJob makes it queued, once the server that created
	// it is about to answer; nothing dispatches a pending job, and the
	// leader voids one that nobody accepted in time (DESIGN.md, "Starts").
	JobPending  JobState = "pending"
	JobQueued   JobState = "queued"
	JobRunning  JobState = "running"
	JobSuccess  JobState = "success"
	JobWarning  JobState = "warning"
	JobFailed   JobState = "failed"
	JobCanceled JobState = "canceled"
	// JobVoid is a pending job that was never accepted: its caller was
	// told it failed, or never heard of it. It never ran and never will.
	JobVoid JobState = "void"
)

// JobStates lists every job state, in the order of a job's life.
var JobStates = []JobState{JobPending, JobQueued, JobRunning, JobSuccess, JobWarning, JobFailed, JobCanceled, JobVoid}

// Done reports whether a job in this state has ended.
func (s JobState) Done() bool {
	switch s {
	case JobSuccess, JobWarning, JobFailed, JobCanceled, JobVoid:
		return true
	}
	return false
}

// Valid reports whether s is a state this version knows.
func (s JobState) Valid() bool { return slices.Contains(JobStates, s) }

// Level is a backup level.
type Level string

const (
	LevelFull         Level = "full"
	LevelIncremental  Level = "incremental"
	LevelDifferential Level = "differential"
	// LevelSyntheticFull is a job's level only: the job folds a chain into
	// one new full on its storage node, with no agent, and its backup is a
	// full (Backup.Consolidates says which chain it folded).
	LevelSyntheticFull Level = "synthetic-full"
)

// Valid reports whether l is a level this version knows.
func (l Level) Valid() bool {
	return l == LevelFull || l == LevelIncremental || l == LevelDifferential || l == LevelSyntheticFull
}

// MaxJobLogLines bounds the log a job keeps; older lines are dropped first.
const MaxJobLogLines = 1000

// LogLine is one line of a job's log.
type LogLine struct {
	Time  time.Time `json:"time"`
	Level string    `json:"level"`
	Msg   string    `json:"msg"`
}

// Application is what a backup runs on its client besides reading files
// (wire.Application, of the same shape): application steps before and
// after it, and command sources stored as files of it. The catalog keeps
// them with the job so that every attempt of the job runs them.
type Application struct {
	Before  []AppStep       `json:"before,omitempty"`
	After   []AppStep       `json:"after,omitempty"`
	Sources []CommandSource `json:"sources,omitempty"`
}

// AppStep is a command run on the client before or after a backup
// (wire.AppStep).
type AppStep struct {
	Command string        `json:"command"`
	Timeout time.Duration `json:"timeout,omitempty"`
	FailJob bool          `json:"fail_job,omitempty"`
}

// CommandSource is a command whose stdout a backup stores as the file Path
// (wire.CommandSource).
type CommandSource struct {
	Path    fileindex.Path `json:"path"`
	Command string         `json:"command"`
	Timeout time.Duration  `json:"timeout,omitempty"`
}

// Job is one run of a backup or a restore.
type Job struct {
	// ID is assigned by the FSM: 1, 2, 3…, short enough for admins to type.
	ID     uint64           `json:"id"`
	Type   JobType          `json:"type"`
	Client string           `json:"client"`
	Level  Level            `json:"level,omitempty"`
	State  JobState         `json:"state"`
	Node   string           `json:"node,omitempty"`
	Pool   string           `json:"pool,omitempty"`
	Paths  []fileindex.Path `json:"paths,omitempty"`
	// Excludes are glob patterns a backup skips.
	Excludes []fileindex.Path `json:"excludes,omitempty"`
	// SkipNodump: a backup leaves out what carries the nodump inode flag.
	SkipNodump bool `json:"skip_nodump,omitempty"`
	// OneFileSystem: a backup's walk stays on the filesystem of each path.
	OneFileSystem bool `json:"one_file_system,omitempty"`
	// Application: the commands a backup runs on its client, carried to
	// the agent's order.
	Application Application `json:"application,omitzero"`
	// BackupID is the backup the job writes (its own ID for a backup) or
	// restores from.
	// Attempt counts dispatches: a backup whose storage node died is
	// dispatched again to another node of its pool.
	Attempt int `json:"attempt,omitempty"`
	// Waiting says why a queued job is not running yet, or what a running
	// job waits for (a drive, a tape to insert).
	Waiting  string `json:"waiting,omitempty"`
	BackupID uint64 `json:"backup_id,omitempty"`
	Target   string `json:"target,omitempty"`
	// Force lets a restore write into a directory that is not empty.
	Force bool `json:"force,omitempty"`
	// Devices lets a restore create block and character device nodes.
	Devices bool `json:"devices,omitempty"`
	// RequestID is the client-chosen id of the start that created the job
	// (Request): a repeat of that start answers this job.
	RequestID string `json:"request_id,omitempty"`
	// Policy, Scheduled and Priority are set on a scheduled run's job: the
	// policy and the run's scheduled time, and the policy's priority, which
	// orders the queue (the higher first, then the earlier scheduled).
	Policy      string    `json:"policy,omitempty"`
	Scheduled   time.Time `json:"scheduled,omitzero"`
	Priority    int       `json:"priority,omitempty"`
	Created     time.Time `json:"created"`
	Started     time.Time `json:"started"`
	Ended       time.Time `json:"ended"`
	Files       int64     `json:"files"`
	Bytes       int64     `json:"bytes"`
	StoredBytes int64     `json:"stored_bytes"`
	Warnings    int       `json:"warnings"`
	// A restore's accounting: of Entries asked of its storage node,
	// Restored came back and Lost did not, their data lost on the
	// volumes (the job log names them).
	Entries   int64  `json:"entries,omitempty"`
	Restored  int64  `json:"restored,omitempty"`
	Lost      int64  `json:"lost,omitempty"`
	ErrorCode string `json:"error_code,omitempty"`
	Error     string `json:"error,omitempty"`
	// Tape is the drive's figures of a backup that went to tape.
	Tape *TapeStats `json:"tape,omitempty"`
	// Cancel, once set, is an administrator's cancel of the job
	// (OpCancelJob): a running job keeps it until the leader has stopped
	// it at its node and agent and ended it as canceled.
	Cancel *JobCancel `json:"cancel,omitempty"`
	// Log holds the last MaxJobLogLines lines, oldest first. Job fills it;
	// Jobs leaves it empty, since lists do not show logs.
	Log []LogLine `json:"log,omitempty"`
	// LogLines counts every line ever appended, so LogLines-len(Log) lines
	// were dropped.
	LogLines int64 `json:"log_lines,omitempty"`
}

// BackupState is where a backup is in its life.
type BackupState string

const (
	BackupWriting  BackupState = "writing"
	BackupComplete BackupState = "complete"
	BackupAborted  BackupState = "aborted"
)

// Backup is what one backup job wrote: a session on one or more volumes and
// the index of the file versions it holds.
type Backup struct {
	// ID is the ID of the job that wrote it.
	ID     uint64 `json:"id"`
	Client string `json:"client"`
	// FileSet identifies Paths and Excludes (see FileSetOf), so that an
	// incremental is compared against a backup of the same file set.
	FileSet  string           `json:"file_set"`
	Paths    []fileindex.Path `json:"paths,omitempty"`
	Excludes []fileindex.Path `json:"excludes,omitempty"`
	Level    Level            `json:"level"`
	// Parent is the backup this one was compared against, 0 for a full.
	Parent uint64 `json:"parent,omitempty"`
	// Consolidates is, for a synthetic full, the newest backup of the
	// chain it folded: it holds the tree of that backup's point in time
	// (StartTime is that backup's), read from the chain on its storage
	// node, with no agent.
	Consolidates uint64 `json:"consolidates,omitempty"`
	// StartTime is the point in time the backup represents.
	StartTime   time.Time   `json:"start_time"`
	EndTime     time.Time   `json:"end_time"`
	SessionID   uuid.UUID   `json:"session_id"`
	KeyID       string      `json:"key_id,omitempty"`
	Pool        string      `json:"pool"`
	Node        string      `json:"node,omitempty"`
	Parts       []Part      `json:"parts,omitempty"`
	Entries     int64       `json:"entries"`
	Files       int64       `json:"files"`
	Bytes       int64       `json:"bytes"`
	StoredBytes int64       `json:"stored_bytes"`
	Segments    int         `json:"segments"`
	State       BackupState `json:"state"`
	// LockedUntil is, for a backup whose objects a store keeps under
	// object lock, the latest date they must stay locked until: the one
	// its session's objects were born with, extended (never brought
	// forward) by every later backup that builds on it, since a restore
	// of that one reads this one's objects (objectlock.go).
	LockedUntil time.Time `json:"locked_until,omitzero"`
}

// Part is the piece of a backup's session that lies on one volume, as the
// storage node reported it (wire.SessionPart, every field carried).
type Part struct {
	VolumeID    uuid.UUID `json:"volume_id"`
	Part        int       `json:"part"`
	VolumeStart int64     `json:"volume_start"`
	DataStart   int64     `json:"data_start"`
	End         int64     `json:"end"`
	StreamStart uint64    `json:"stream_start"`
	StreamEnd   uint64    `json:"stream_end"`
	FirstSeq    uint64    `json:"first_seq"`
	LastSeq     uint64    `json:"last_seq"`
	Final       bool      `json:"final"`
	// Torn: the medium failed in this part (a tape's bad spot): it has no
	// end marker, and holds its blocks up to StreamEnd.
	Torn bool `json:"torn,omitempty"`
}

// FileSetOf is the stable identity of a set of paths and excludes: the order
// in which they were given does not matter.
func FileSetOf(paths, excludes []string) string {
	p := slices.Clone(paths)
	e := slices.Clone(excludes)
	slices.Sort(p)
	slices.Sort(e)
	h := sha256.New()
	for _, s := range p {
		h.Write([]byte("p\x00" + s + "\x00"))
	}
	for _, s := range e {
		h.Write([]byte("x\x00" + s + "\x00"))
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// ServesPool reports whether node serves pool p.
func (p *Pool) Serves(node string) bool { return slices.Contains(p.Nodes, node) }

// Request is what a client-chosen request id started: the first command
// that carried it, so that a repeat of the request (its answer was lost, the
// caller retries) answers the same job or volume instead of making another.
// Requests are forgotten after a while (OpForgetRequests).
type Request struct {
	ID string `json:"id"`
	// Op is the command the request started: OpCreateJob or OpLabelTape.
	Op Op `json:"op"`
	// Digest identifies the request's parameters; a repeat with another
	// digest is a different request under the same id, and is refused.
	Digest   string    `json:"digest,omitempty"`
	JobID    uint64    `json:"job_id,omitempty"`
	VolumeID uuid.UUID `json:"volume_id,omitempty"`
	Time     time.Time `json:"time"`
}
