package wire

import (
	"regexp"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
)

// Admin operations (cairn.api.<op>).
const (
	OpStatus        = "status"
	OpClientList    = "client.list"
	OpPoolList      = "pool.list"
	OpPoolSet       = "pool.set" // a pool's compression, for the sessions that start after
	OpVolumeList    = "volume.list"
	OpVolumeShow    = "volume.show"
	OpJobList       = "job.list"
	OpJobShow       = "job.show"
	OpJobCancel     = "job.cancel"
	OpBackupStart   = "backup.start"
	OpBackupList    = "backup.list"
	OpTreeList      = "tree.list"
	OpRestoreStart  = "restore.start"
	OpKeyExport     = "key.export"
	OpClusterStatus = "cluster.status"
	OpClusterJoin   = "cluster.join"
	OpClusterRemove = "cluster.remove"
	// OpSecretsRotate replaces the group's key-encryption key and ticket
	// signing key (a key escrow operation: cairn.escrow.secrets.rotate).
	OpSecretsRotate = "secrets.rotate"
)

// OpServerStatus asks one server (cairn.server.<name>.status) for its own view.
const OpServerStatus = "status"

// OpServerPrepareSecrets asks one server (cairn.server.<name>.secrets.prepare)
// to read the new secrets of a rotation from a file of its own.
const OpServerPrepareSecrets = "secrets.prepare"

// SecretsRotateReq names the new secrets file ('cairn cluster init'), at
// the same path on every server. The secrets never cross NATS: each server
// reads the file, and the servers compare fingerprints.
type SecretsRotateReq struct {
	File string `json:"file"`
}

// SecretsPrepareResp is what a server read from the new secrets file: the
// fingerprints of its keys, never the keys.
type SecretsPrepareResp struct {
	Server               string `json:"server"`
	KEKFingerprint       string `json:"kek_fingerprint"`
	TicketKeyFingerprint string `json:"ticket_key_fingerprint"`
}

// SecretsRotateResp says what a rotation did.
type SecretsRotateResp struct {
	Group string `json:"group"`
	// FromKEK and ToKEK are the fingerprints of the KEK before and after.
	FromKEK string `json:"from_kek_fingerprint"`
	ToKEK   string `json:"to_kek_fingerprint"`
	// TicketKey is the fingerprint of the new ticket signing key.
	TicketKey string `json:"ticket_key_fingerprint"`
	// Keys is the number of data keys wrapped anew.
	Keys int `json:"keys"`
	// Servers are the members that hold the new secrets.
	Servers []string `json:"servers"`
}

// ServerStatus is one server's own view of the Raft group.
type ServerStatus struct {
	Name         string `json:"name"`
	RaftAddr     string `json:"raft_addr"`
	State        string `json:"state"`
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_index"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	Leader       string `json:"leader"`
	Version      string `json:"version"`
	// CatalogIndex is the Raft index of the last command its catalog
	// applied; AppliedIndex is Raft's, which runs a little ahead.
	CatalogIndex uint64 `json:"catalog_index"`
	// Group is the id of the group whose catalog the server holds; empty
	// for a server that never joined one.
	Group string `json:"group,omitempty"`
	// Member is set while the server is a voter of its group's
	// configuration and caught up: only then does it answer roles.
	Member bool `json:"member"`
	// Peers are the servers in its Raft configuration: none for a server
	// that never was in a group.
	Peers []string `json:"peers,omitempty"`
	// KEKFingerprint and TicketKeyFingerprint name the keys the server
	// holds, never the keys themselves (keyring.KEKFingerprint).
	KEKFingerprint       string `json:"kek_fingerprint,omitempty"`
	TicketKeyFingerprint string `json:"ticket_key_fingerprint,omitempty"`
	// CatalogError says why this server's catalog stopped applying the
	// log (a full disk), and CatalogBehind how many commands it missed.
	CatalogError  string `json:"catalog_error,omitempty"`
	CatalogBehind uint64 `json:"catalog_behind,omitempty"`
}

// ServerBeat is a server's announcement of itself (ServerBeatSubject).
type ServerBeat struct {
	Name     string `json:"name"`
	RaftAddr string `json:"raft_addr"`
	Group    string `json:"group,omitempty"`
	Member   bool   `json:"member"`
	State    string `json:"state"`
}

// OtherServer is a server on the same NATS that is not a member of the
// answering server's group: of another group, or waiting to be joined.
type OtherServer struct {
	Name     string    `json:"name"`
	RaftAddr string    `json:"raft_addr"`
	Group    string    `json:"group,omitempty"`
	LastSeen time.Time `json:"last_seen"`
}

// MemberStatus is a member of the group as cluster.status reports it.
type MemberStatus struct {
	Name         string `json:"name"`
	RaftAddr     string `json:"raft_addr"`
	Voter        bool   `json:"voter"`
	Reachable    bool   `json:"reachable"`
	State        string `json:"state,omitempty"`
	Term         uint64 `json:"term,omitempty"`
	LastIndex    uint64 `json:"last_index,omitempty"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
	// Lag is how many entries the member's catalog is behind the leader's log.
	Lag   uint64 `json:"lag"`
	Error string `json:"error,omitempty"`
	// CatalogError says why the member's catalog stopped applying the log,
	// and CatalogBehind how many commands it missed (counted in Lag too).
	CatalogError  string `json:"catalog_error,omitempty"`
	CatalogBehind uint64 `json:"catalog_behind,omitempty"`
}

// ClusterStatusResp answers cluster.status.
type ClusterStatusResp struct {
	Leader   string         `json:"leader"`
	Answered string         `json:"answered_by"`
	Members  []MemberStatus `json:"members"`
	// Group is the group's id.
	Group string `json:"group,omitempty"`
	// OtherGroups are servers of other groups on the same NATS: while they
	// run, requests that name no group are refused, so either every role
	// is told its group or they are a misconfiguration to fix.
	OtherGroups []OtherServer `json:"other_groups,omitempty"`
	// Waiting are servers on the NATS that belong to no group yet: started,
	// and not joined.
	Waiting []OtherServer `json:"waiting,omitempty"`
}

// ClusterJoinReq adds a server to the group: checked, as a non-voter until
// it caught up, then as a voter.
type ClusterJoinReq struct {
	Name     string `json:"name"`
	RaftAddr string `json:"raft_addr"`
	// CatchUpTimeout bounds the wait for the new server to catch up with
	// the leader; 0 is the server's default.
	CatchUpTimeout time.Duration `json:"catch_up_timeout,omitempty"`
}

// ClusterJoinResp says how a join went.
type ClusterJoinResp struct {
	// Already is set when the server was a voter at that address: nothing
	// changed.
	Already bool `json:"already,omitempty"`
	// CaughtUpIndex is the catalog index the new server applied before it
	// became a voter, CaughtUpIn how long that took.
	CaughtUpIndex uint64        `json:"caught_up_index,omitempty"`
	CaughtUpIn    time.Duration `json:"caught_up_in,omitempty"`
}

// ClusterRemoveResp says how a removal went.
type ClusterRemoveResp struct {
	// NewLeader is set when the server removed was the leader: it handed
	// leadership to NewLeader first.
	NewLeader string `json:"new_leader,omitempty"`
	// Voters are the voters left.
	Voters []string `json:"voters"`
	// Warning says what the group lost, such as its fault tolerance.
	Warning string `json:"warning,omitempty"`
}

// ClusterRemoveReq removes a server from the group.
type ClusterRemoveReq struct {
	Name string `json:"name"`
}

// Operations a storage node sends the servers (cairn.srv.node.<id>.<op>).
const (
	OpNodeRegister    = "register"
	OpVolumeAcquire   = "volume.acquire"
	OpVolumeLabeled   = "volume.labeled"
	OpKeyGet          = "key.get"
	OpSessionIndex    = "session.index"
	OpSessionCommit   = "session.commit"
	OpSessionAbort    = "session.abort"
	OpSessionProgress = "session.progress"
	// OpRestorePlan pages through the plan of a restore the node runs
	// (RestorePlanReq); the servers hand it only to the node the job
	// runs on, at the attempt the node's ticket names.
	OpRestorePlan = "restore.plan"
)

// Operations an agent sends the servers (cairn.srv.agent.<client>.<op>).
const (
	OpAgentRegister = "register"
	OpBaseTree      = "base.tree"
	OpJobDone       = "job.done"
	// OpJobAlive asks whether a job still runs at an attempt: an agent
	// whose restore was held up asks before it writes on.
	OpJobAlive = "job.alive"
)

// Orders the servers send an agent (cairn.agent.<client>.<op>) and a storage
// node (cairn.node.<id>.<op>).
const (
	OpRunBackup  = "backup.run"
	OpRunRestore = "restore.run"
	// OpCheckBackup and OpCheckRestore ask an agent, before the servers
	// make a job, whether it would take the order (CheckBackup,
	// CheckRestore): a request it would refuse is refused as bad input and
	// leaves no job behind. An agent that does not know them answers
	// unknown_operation, and the order checks again.
	OpCheckBackup  = "backup.check"
	OpCheckRestore = "restore.check"
	OpCancel       = "job.cancel"
	// OpAgentDuplicate tells every agent of a client name that another
	// one runs under it (AgentDuplicate); no reply.
	OpAgentDuplicate = "duplicate"
	OpPing           = "ping"
	OpNodeStatus     = "status"
)

// CancelJob orders a storage node or an agent (OpCancel) to stop a job at
// once: the node closes the job's stream, cuts a backup's session off its
// volumes and gives its drive back; the agent stops the job and writes
// nothing more to a restore target. Attempt names the attempt the order is
// about, so a late order cannot stop the attempt that replaced it; 0 stops
// whatever attempt runs. The order is idempotent: stopping a job that does
// not run (any more) there changes nothing.
type CancelJob struct {
	JobID   uint64 `json:"job_id"`
	Attempt int    `json:"attempt,omitempty"`
	Reason  string `json:"reason"`
}

// CancelResult answers CancelJob: whether the job was running there.
type CancelResult struct {
	Running bool `json:"running"`
}

// NodeStatus answers a storage node's status order.
type NodeStatus struct {
	ID       string      `json:"id"`
	Version  string      `json:"version"`
	DataAddr string      `json:"data_addr"`
	Streams  int         `json:"streams"`
	Pools    []PoolUsage `json:"pools"`
	Draining bool        `json:"draining,omitempty"`
}

// Empty is the body of requests and replies that carry nothing.
type Empty struct{}

// ---- admin API ----

// StatusResp describes the server that answered and its Raft group.
type StatusResp struct {
	Server       string `json:"server"`
	Version      string `json:"version"`
	Leader       string `json:"leader"`
	IsLeader     bool   `json:"is_leader"`
	RaftState    string `json:"raft_state"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
	Group        string `json:"group,omitempty"`
	// OtherGroups are servers of other groups seen on the same NATS.
	OtherGroups []OtherServer `json:"other_groups,omitempty"`
	// CatalogError says why the answering server's catalog stopped
	// applying the log.
	CatalogError string `json:"catalog_error,omitempty"`
	// RPOTargets counts the clients under a policy with an RPO, each
	// policy once; RPOBreaches are those whose newest good restore point
	// is older than the target (package rpo says how it is judged).
	RPOTargets  int         `json:"rpo_targets,omitempty"`
	RPOBreaches []RPOStatus `json:"rpo_breaches,omitempty"`
	// Nodes are the storage nodes the catalog knows, by id, as the
	// answering server hears their heartbeats.
	Nodes []NodeLiveness `json:"nodes,omitempty"`
	// Agents counts the clients the catalog knows whose agent the answering
	// server hears, and names those it does not (the first
	// MaxOfflineNamed, in name order). Nil from a server older than it.
	Agents *AgentsSummary `json:"agents,omitempty"`
}

// NodeLiveness is a storage node as a server hears it.
type NodeLiveness struct {
	ID       string    `json:"id"`
	Online   bool      `json:"online"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Draining bool      `json:"draining,omitempty"`
	Streams  int       `json:"streams,omitempty"`
	Version  string    `json:"version,omitempty"`
}

// AgentsSummary counts agents online and offline.
type AgentsSummary struct {
	Online  int      `json:"online"`
	Offline int      `json:"offline"`
	Named   []string `json:"offline_named,omitempty"`
}

// MaxOfflineNamed bounds the offline clients a status names.
const MaxOfflineNamed = 20

// RPOStatus is one client under one policy with an RPO target: the age of
// its newest good restore point of the policy's file set against it.
type RPOStatus struct {
	Client string        `json:"client"`
	Policy string        `json:"policy"`
	Target time.Duration `json:"target"`
	// Backup is the newest good restore point, 0 when there is none yet;
	// Age then counts from when the policy began to cover the client.
	Backup   uint64        `json:"backup,omitempty"`
	LastGood time.Time     `json:"last_good,omitzero"`
	Age      time.Duration `json:"age"`
	Breach   bool          `json:"breach,omitempty"`
}

// ClientInfo is a client (a host running an agent) as the servers see it.
type ClientInfo struct {
	Name        string    `json:"name"`
	Hostname    string    `json:"hostname"`
	OS          string    `json:"os"`
	Version     string    `json:"version"`
	Online      bool      `json:"online"`
	LastSeen    time.Time `json:"last_seen"`
	Backups     int       `json:"backups"`
	LastBackup  time.Time `json:"last_backup,omitzero"`
	DefaultPool string    `json:"default_pool,omitempty"`
	// RPO is the client's state under each policy with an RPO target.
	RPO []RPOStatus `json:"rpo,omitempty"`
	// Labels are what the client's agent reports of it; policies select
	// clients by them.
	Labels map[string]string `json:"labels,omitempty"`
	// Duplicate says that two agents run under this name at once, naming
	// their hosts; Instances lists them.
	Duplicate string          `json:"duplicate,omitempty"`
	Instances []AgentInstance `json:"instances,omitempty"`
}

// ClientListReq pages client.list.
type ClientListReq struct {
	After string `json:"after,omitempty"` // resume after this client's name
}

// ClientListResp answers client.list, by name. A list too long for one
// message comes in pages: More says that clients follow the last one.
type ClientListResp struct {
	Clients []ClientInfo `json:"clients"`
	More    bool         `json:"more,omitempty"`
}

// PoolNode is one storage node serving a pool.
type PoolNode struct {
	Name      string `json:"name"`
	Online    bool   `json:"online"`
	Dir       string `json:"dir,omitempty"`
	FreeBytes int64  `json:"free_bytes"`
	// Target is the node's view of the pool's remote target, if it has
	// one, as of its last heartbeat.
	Target *TargetStatus `json:"target,omitempty"`
}

// PoolInfo is a pool with its usage.
type PoolInfo struct {
	Name           string     `json:"name"`
	Type           string     `json:"type"`
	Nodes          []PoolNode `json:"nodes"`
	Volumes        int        `json:"volumes"`
	UsedBytes      int64      `json:"used_bytes"`
	FreeBytes      int64      `json:"free_bytes"`
	MaxVolumeBytes int64      `json:"max_volume_bytes"`
	KeyID          string     `json:"key_id"`
	// Compression is the codec the pool's new sessions compress their
	// data blocks with: zstd, s2 or none.
	Compression string `json:"compression"`
	// ReclaimableBytes are held by volumes whose backups have all expired:
	// disk volumes not deleted yet, recyclable tapes.
	ReclaimableBytes int64 `json:"reclaimable_bytes"`
	// LockedBytes are held by volumes whose objects the store keeps
	// under object lock (an S3 pool) past now: nothing can delete them
	// before their date, expired or not.
	LockedBytes int64 `json:"locked_bytes,omitempty"`
}

// PoolListResp answers pool.list.
type PoolListResp struct {
	Pools []PoolInfo `json:"pools"`
}

// PoolSetReq asks pool.set to change pool Name. Compression is the codec
// its sessions compress data blocks with from then on: zstd, s2 or none
// (volume.CheckCompression); sessions written before keep theirs.
type PoolSetReq struct {
	Name        string `json:"name"`
	Compression string `json:"compression"`
}

// PoolSetResp answers pool.set with the pool's settings after the change.
type PoolSetResp struct {
	Name        string `json:"name"`
	Compression string `json:"compression"`
}

// VolumeListReq filters volume.list.
type VolumeListReq struct {
	Pool  string `json:"pool,omitempty"`
	After string `json:"after,omitempty"` // resume after this volume's name
}

// VolumeInfo is one volume.
type VolumeInfo struct {
	ID          uuid.UUID `json:"id"`
	Name        string    `json:"name"`
	Pool        string    `json:"pool"`
	Node        string    `json:"node"`
	MediaType   string    `json:"media_type"`
	State       string    `json:"state"`
	Bytes       int64     `json:"bytes"`
	Sessions    int       `json:"sessions"`
	Created     time.Time `json:"created"`
	LastWritten time.Time `json:"last_written,omitzero"`
	Path        string    `json:"path,omitempty"`
	Error       string    `json:"error,omitempty"`
	// Tape volumes: the cartridge's barcode, its library and where it is
	// ("slot 3", "drive 0", "mail slot 25", "vault").
	Barcode  string `json:"barcode,omitempty"`
	Library  string `json:"library,omitempty"`
	Location string `json:"location,omitempty"`
}

// VolumeListResp answers volume.list, by name. A list too long for one
// message comes in pages: More says that volumes follow the last one.
type VolumeListResp struct {
	Volumes []VolumeInfo `json:"volumes"`
	More    bool         `json:"more,omitempty"`
}

// JobListReq filters job.list.
type JobListReq struct {
	Client string `json:"client,omitempty"`
	// RequestID, when set, selects the job the start with this request id
	// made, if any.
	RequestID string   `json:"request_id,omitempty"`
	States    []string `json:"states,omitempty"`
	Limit     int      `json:"limit,omitempty"`
	Before    uint64   `json:"before,omitempty"` // resume with the jobs older than this one
}

// JobLogLine is one line of a job's log.
type JobLogLine struct {
	Time  time.Time `json:"time"`
	Level string    `json:"level"`
	Msg   string    `json:"msg"`
}

// PartInfo is a part of a backup's session on a volume, for job.show
// (the parts of the job's backup) and volume.show (the parts on the
// volume).
type PartInfo struct {
	Volume      string `json:"volume"`
	BackupID    uint64 `json:"backup_id"`
	Client      string `json:"client,omitempty"`
	Part        int    `json:"part"`
	VolumeStart int64  `json:"volume_start"`
	End         int64  `json:"end"`
	Final       bool   `json:"final"`
	// Torn: the medium failed in the part; it has no end marker, and the
	// session goes on on another volume (SessionPart.Torn).
	Torn bool `json:"torn,omitempty"`
}

// VolumeShowReq asks for one volume, by name (a tape's is its barcode).
type VolumeShowReq struct {
	Name string `json:"name"`
}

// VolumeShowResp is a volume and the parts of sessions on it, in the
// order they lie there. More says that parts after the last one did not
// fit the message.
type VolumeShowResp struct {
	Volume VolumeInfo `json:"volume"`
	Parts  []PartInfo `json:"parts"`
	More   bool       `json:"more,omitempty"`
}

// JobInfo is a job; Log is filled by job.show only. A log too long for one
// message comes in pages: LogNext is then the line to ask for next.
type JobInfo struct {
	ID          uint64           `json:"id"`
	Type        string           `json:"type"`
	Client      string           `json:"client"`
	Level       string           `json:"level,omitempty"`
	State       string           `json:"state"`
	Node        string           `json:"node,omitempty"`
	Pool        string           `json:"pool,omitempty"`
	Paths       []fileindex.Path `json:"paths,omitempty"`
	SkipNodump  bool             `json:"skip_nodump,omitempty"`
	BackupID    uint64           `json:"backup_id,omitempty"`
	Target      string           `json:"target,omitempty"`
	Created     time.Time        `json:"created"`
	Started     time.Time        `json:"started,omitzero"`
	Ended       time.Time        `json:"ended,omitzero"`
	Files       int64            `json:"files"`
	Bytes       int64            `json:"bytes"`
	StoredBytes int64            `json:"stored_bytes"`
	Warnings    int              `json:"warnings"`
	// A restore's accounting: of Entries asked of the storage node,
	// Restored came back and Lost did not (the log names them).
	Entries   int64  `json:"entries,omitempty"`
	Restored  int64  `json:"restored,omitempty"`
	Lost      int64  `json:"lost,omitempty"`
	ErrorCode string `json:"error_code,omitempty"`
	Error     string `json:"error,omitempty"`
	Hint      string `json:"hint,omitempty"`
	Waiting   string `json:"waiting,omitempty"`
	Attempt   int    `json:"attempt,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	// Policy, Scheduled and Priority are a scheduled run's job's: its
	// policy, the run's time and the policy's priority, by which the
	// queue is served.
	Policy    string    `json:"policy,omitempty"`
	Scheduled time.Time `json:"scheduled,omitzero"`
	Priority  int       `json:"priority,omitempty"`
	// CanceledBy and CancelReason are set once a cancel was asked: the job
	// is canceled, or will be when the leader has stopped it.
	CanceledBy   string   `json:"canceled_by,omitempty"`
	CancelReason string   `json:"cancel_reason,omitempty"`
	Volumes      []string `json:"volumes,omitempty"`
	// Parts are where a backup's session lies, by job.show only.
	Parts []PartInfo   `json:"parts,omitempty"`
	Log   []JobLogLine `json:"log,omitempty"`
	// LogFrom is the number of the first line of Log, counted from the
	// job's first line. A job keeps only its last thousand lines, so it
	// can be more than the JobShowReq asked for.
	LogFrom int `json:"log_from,omitempty"`
	LogNext int `json:"log_next,omitempty"`
	// Progress is the latest live progress of a running job.
	Progress *Progress `json:"progress,omitempty"`
	// Tape is the drive's figures of a backup that went to tape.
	Tape *TapeStats `json:"tape,omitempty"`
	// FileSet is a backup's file set, or the file set of the backup a
	// restore reads.
	FileSet *FileSetInfo `json:"file_set,omitempty"`
}

// JobListResp answers job.list, newest first. A list too long for one
// message comes in pages: More says that jobs within the limit follow the
// last one.
type JobListResp struct {
	Jobs []JobInfo `json:"jobs"`
	More bool      `json:"more,omitempty"`
}

// JobShowReq asks for one job, with its log from line LogFrom on.
type JobShowReq struct {
	ID      uint64 `json:"id"`
	LogFrom int    `json:"log_from,omitempty"`
}

// JobCancelReq cancels a job (job.cancel): a queued job ends at once, a
// running one once the leader has stopped it at its storage node and its
// agent. By says who cancels, Reason why; both go into the job's log. The
// reply is the job as the cancel left it: canceled, or still running with
// CanceledBy set until it ends. A repeat of the cancel of a running job is
// taken again; the cancel of a job that ended is refused (wrong_state).
type JobCancelReq struct {
	ID     uint64 `json:"id"`
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// BackupStartReq starts a file backup of a client.
type BackupStartReq struct {
	Client   string           `json:"client"`
	Paths    []fileindex.Path `json:"paths"`
	Excludes []fileindex.Path `json:"excludes,omitempty"`
	Level    string           `json:"level,omitempty"` // full, incremental (default), differential
	Pool     string           `json:"pool,omitempty"`
	// SkipNodump leaves out the files and directories that carry the
	// nodump inode flag (chattr +d), as dump(8) does; the job log counts
	// them.
	SkipNodump bool `json:"skip_nodump,omitempty"`
	// OneFileSystem keeps the walk on the filesystem of each path, as
	// tar --one-file-system does: a mount point below one is backed up as
	// an empty directory, its contents not.
	OneFileSystem bool `json:"one_file_system,omitempty"`
	// Application steps and command sources, carried to the agent's order.
	Application
	Start
}

// Start names a request that starts something (a backup, a restore, a tape
// label or move) so it can be repeated safely: the servers do it once per
// RequestID, and a repeat answers what the first did. The client chooses
// the id (the CLI makes a UUID per command, or takes --request-id); a
// request without one gets one from the server and cannot be repeated.
type Start struct {
	RequestID string `json:"request_id,omitempty"`
	// Retry says this request id may have been sent before: the client
	// retries it after an unclear answer, or the user gave the id. The
	// servers then never answer "failed" while they cannot tell that an
	// earlier try did not take effect.
	Retry bool `json:"retry,omitempty"`
}

var requestIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// ValidateRequestID refuses a request id that cannot name a request: empty,
// longer than 128 bytes, or of other characters than letters, digits and
// ".", "_", ":", "-".
func ValidateRequestID(id string) error {
	if !requestIDRE.MatchString(id) {
		return Errorf(CodeInvalidArgument, "use up to 128 letters, digits, '.', '_', ':' and '-', starting with a letter or digit (a UUID will do)",
			"request id %q is not valid", id)
	}
	return nil
}

// JobStarted answers backup.start and restore.start.
type JobStarted struct {
	JobID uint64 `json:"job_id"`
	Level string `json:"level,omitempty"` // the level actually run (an incremental with no full becomes full)
	// Waiting says why the job is queued instead of running, if it is.
	Waiting string `json:"waiting,omitempty"`
	// State is the job's state now: queued or running for a new job, what
	// became of it for a repeat.
	State     string `json:"state,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	// Repeated says an earlier request with this id started the job.
	Repeated bool `json:"repeated,omitempty"`
	// BackupID and FileSet are, for a restore, the backup it reads and
	// that backup's file set.
	BackupID uint64       `json:"backup_id,omitempty"`
	FileSet  *FileSetInfo `json:"file_set,omitempty"`
}

// BackupListReq filters backup.list.
type BackupListReq struct {
	Client string `json:"client,omitempty"`
	// FileSet, Path and Policy narrow the list to a file set: by its id,
	// to the file sets that back up Path, or to a policy's.
	FileSet string `json:"file_set,omitempty"`
	Path    string `json:"path,omitempty"`
	Policy  string `json:"policy,omitempty"`
	Before  uint64 `json:"before,omitempty"` // resume with the backups older than this one
}

// BackupInfo is one backup (a point in time of a client's file set).
type BackupInfo struct {
	ID     uint64 `json:"id"`
	Client string `json:"client"`
	Level  string `json:"level"`
	Parent uint64 `json:"parent,omitempty"`
	// Consolidates is, for a synthetic full, the newest backup of the
	// chain it folded in: it holds that backup's point in time.
	Consolidates uint64           `json:"consolidates,omitempty"`
	Paths        []fileindex.Path `json:"paths"`
	Excludes     []fileindex.Path `json:"excludes,omitempty"`
	FileSet      string           `json:"file_set,omitempty"`
	State        string           `json:"state"`
	StartTime    time.Time        `json:"start_time"`
	EndTime      time.Time        `json:"end_time,omitzero"`
	Files        int64            `json:"files"`
	Bytes        int64            `json:"bytes"`
	StoredBytes  int64            `json:"stored_bytes"`
	Pool         string           `json:"pool"`
	Volumes      []string         `json:"volumes,omitempty"`
	// Hold is the legal hold that covers the backup, nil for none.
	Hold *HoldInfo `json:"hold,omitempty"`
	// Expires is why the expiry pass would expire it now, empty when it
	// keeps it (or no retention covers it).
	Expires string `json:"expires,omitempty"`
}

// BackupListResp answers backup.list, newest first. A list too long for
// one message comes in pages: More says that backups follow the last one.
type BackupListResp struct {
	Backups []BackupInfo `json:"backups"`
	More    bool         `json:"more,omitempty"`
}

// PointInTime selects a backup of a client: by id, or the latest (at or
// before At, when given) of the file set that holds the paths asked for
// (FileSet, when given: that file set's).
type PointInTime struct {
	Client   string    `json:"client"`
	BackupID uint64    `json:"backup_id,omitempty"`
	At       time.Time `json:"at,omitzero"`
	// FileSet is a file set id, or an unambiguous prefix of one.
	FileSet string `json:"file_set,omitempty"`
}

// FileSetInfo is a file set: the paths and excludes that a client's
// backups chain within, and its id (a prefix of which commands print).
type FileSetInfo struct {
	ID       string           `json:"id"`
	Paths    []fileindex.Path `json:"paths"`
	Excludes []fileindex.Path `json:"excludes,omitempty"`
}

// TreeListReq browses the tree of a backup: the entries directly inside
// Path (or Path itself when it is not a directory).
type TreeListReq struct {
	PointInTime
	Path      fileindex.Path `json:"path,omitempty"`
	Recursive bool           `json:"recursive,omitempty"`
	After     fileindex.Path `json:"after,omitempty"` // resume after this path
	Limit     int            `json:"limit,omitempty"`
}

// EntryInfo is one entry of a tree listing.
type EntryInfo struct {
	Path   fileindex.Path `json:"path"`
	Type   string         `json:"type"`
	Mode   uint32         `json:"mode"`
	Size   int64          `json:"size"`
	MTime  time.Time      `json:"mtime"`
	User   string         `json:"user,omitempty"`
	Group  string         `json:"group,omitempty"`
	UID    uint32         `json:"uid"`
	GID    uint32         `json:"gid"`
	Target fileindex.Path `json:"target,omitempty"`
	// Flags are the inode flags of chattr (fileindex.Entry.Flags).
	Flags uint32 `json:"flags,omitempty"`
	// Backup is the backup of the chain that holds this version.
	Backup uint64 `json:"backup"`
}

// TreeListResp answers tree.list.
type TreeListResp struct {
	Backup  BackupInfo  `json:"backup"`
	Entries []EntryInfo `json:"entries"`
	More    bool        `json:"more,omitempty"` // more entries follow the last one
}

// RestoreStartReq restores a backup (or paths of it) into a directory of a
// client, the source client by default.
type RestoreStartReq struct {
	PointInTime
	Paths        []fileindex.Path `json:"paths,omitempty"`
	TargetClient string           `json:"target_client,omitempty"`
	To           string           `json:"to"`
	Force        bool             `json:"force,omitempty"`
	// Devices restores block and character device nodes; without it they
	// are refused (a device node from an untrusted backup gives its owner
	// the hardware it names).
	Devices bool `json:"devices,omitempty"`
	Start
}

// KeyMaterial is a data key in the clear, for escrow.
type KeyMaterial struct {
	ID      string    `json:"id"`
	Pool    string    `json:"pool"`
	Key     []byte    `json:"key"`
	Created time.Time `json:"created"`
}

// KeyExportResp answers key.export.
type KeyExportResp struct {
	Keys []KeyMaterial `json:"keys"`
}

// ---- events ----

// Progress is a running job's live progress.
type Progress struct {
	JobID uint64 `json:"job_id"`
	// Group is the agent's group: servers of another group, whose job of
	// the same id is another, ignore the report.
	Group      string `json:"group,omitempty"`
	Phase      string `json:"phase,omitempty"` // e.g. "walking", "streaming", "committing"
	Files      int64  `json:"files"`
	Bytes      int64  `json:"bytes"`
	Stored     int64  `json:"stored,omitempty"`
	TotalFiles int64  `json:"total_files,omitempty"` // 0 while unknown
	TotalBytes int64  `json:"total_bytes,omitempty"`
	Current    string `json:"current,omitempty"`
}

// JobEvent is published on cairn.evt.job.<id> on progress and state changes.
type JobEvent struct {
	JobID    uint64    `json:"job_id"`
	State    string    `json:"state"`
	Progress *Progress `json:"progress,omitempty"`
	Message  string    `json:"message,omitempty"`
	// Group is the group whose job it is: job ids are a group's own, so
	// a watcher on a NATS that groups share keeps only its group's.
	Group string `json:"group,omitempty"`
}

// ---- storage node <-> servers ----

// NodePool is a pool a storage node serves.
type NodePool struct {
	Name           string `json:"name"`
	Type           string `json:"type"` // "disk" or "tape"
	Dir            string `json:"dir"`
	MaxVolumeBytes int64  `json:"max_volume_bytes"`
	// Library is the library whose tapes a tape pool's volumes are.
	Library string `json:"library,omitempty"`
}

// NodeRegisterReq announces a storage node and its pools.
type NodeRegisterReq struct {
	ID         string     `json:"id"`
	DataAddr   string     `json:"data_addr"`
	CertSHA256 string     `json:"cert_sha256"`
	Version    string     `json:"version"`
	Pools      []NodePool `json:"pools"`
	// Libraries are the tape libraries the node owns.
	Libraries []NodeLibrary `json:"libraries,omitempty"`
}

// NodeRegisterResp gives a storage node what it needs to check tickets.
type NodeRegisterResp struct {
	TicketKey  []byte    `json:"ticket_key"` // ed25519 public key
	ServerTime time.Time `json:"server_time"`
	// TicketKeys are every key the group signs tickets with, from its
	// catalog, so every server hands out the same; TicketKey is the first.
	TicketKeys [][]byte `json:"ticket_keys,omitempty"`
	// Group is the group's id.
	Group string `json:"group,omitempty"`
}

// PoolUsage is a pool's filesystem usage, as a heartbeat reports it.
type PoolUsage struct {
	Name       string `json:"name"`
	FreeBytes  int64  `json:"free_bytes"`
	TotalBytes int64  `json:"total_bytes"`
	// Target is the state of a pool whose volumes are on a remote target
	// (SFTP, object storage); nil for local disks and tapes.
	Target *TargetStatus `json:"target,omitempty"`
}

// TargetStatus is what a storage node saw of a pool's remote target
// since it started: whether it reaches it, what went over the wire, and
// the errors. Rates are bytes over the time spent transferring.
type TargetStatus struct {
	// Addr is where the target is (host:port, an endpoint).
	Addr string `json:"addr"`
	// Tried: the node has tried the target; Reachable is then whether
	// the last try reached it.
	Tried     bool `json:"tried"`
	Reachable bool `json:"reachable"`
	// BytesWritten and BytesRead count volume bytes sent and received;
	// WriteSeconds and ReadSeconds the time spent doing it.
	BytesWritten int64   `json:"bytes_written"`
	BytesRead    int64   `json:"bytes_read"`
	WriteSeconds float64 `json:"write_seconds"`
	ReadSeconds  float64 `json:"read_seconds"`
	// Errors counts failed connections and operations (each retry).
	Errors      int64     `json:"errors"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// AppendOnly: the target refuses deletes and overwrites; its owner
	// deletes expired volumes.
	AppendOnly bool `json:"append_only,omitempty"`
}

// WriteRate and ReadRate are bytes per second while transferring; 0
// before any transfer.
func (t *TargetStatus) WriteRate() float64 { return rate(t.BytesWritten, t.WriteSeconds) }
func (t *TargetStatus) ReadRate() float64  { return rate(t.BytesRead, t.ReadSeconds) }

func rate(bytes int64, seconds float64) float64 {
	if seconds <= 0 {
		return 0
	}
	return float64(bytes) / seconds
}

// AgentHeartbeat is published every few seconds by an agent. Running lists
// the jobs it is working on, so a new leader can tell a job the agent lost
// (or never got) from one still streaming. Instance, Hostname and PID name
// the agent process (as in AgentRegisterReq; empty from an older agent).
type AgentHeartbeat struct {
	Running  []uint64 `json:"running,omitempty"`
	Instance string   `json:"instance,omitempty"`
	Hostname string   `json:"hostname,omitempty"`
	PID      int      `json:"pid,omitempty"`
	// Stopping: the agent is stopping (SIGTERM) and takes no order.
	Stopping bool `json:"stopping,omitempty"`
	// Group is the group the agent belongs to, once it knows it: servers
	// of another group ignore the beat.
	Group string `json:"group,omitempty"`
}

// AgentInstance is one agent process of a client name as the servers saw
// it: a random id the process drew when it started, its host and pid.
type AgentInstance struct {
	ID        string    `json:"id"`
	Hostname  string    `json:"hostname"`
	PID       int       `json:"pid"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// AgentDuplicate tells the agents of a client name that more than one of
// them runs: each logs an error naming the others.
type AgentDuplicate struct {
	Client    string          `json:"client"`
	Instances []AgentInstance `json:"instances"`
	Message   string          `json:"message"`
	Hint      string          `json:"hint"`
}

// NodeHeartbeat is published every few seconds by a storage node.
type NodeHeartbeat struct {
	ID      string      `json:"id"`
	Site    string      `json:"site,omitempty"`
	Pools   []PoolUsage `json:"pools"`
	Streams int         `json:"streams"`
	// Draining: the node is stopping (SIGTERM). It takes no new session
	// and lets the running ones finish; the servers send it no job.
	Draining bool `json:"draining,omitempty"`
	// Group is the group the node belongs to, once it knows it: servers
	// of another group ignore the beat.
	Group string `json:"group,omitempty"`
}

// VolumeAcquireReq asks for a volume to write job's session on. Full names
// the volume that just filled up, if any; Used lists every volume the
// session already wrote a part on, none of which may be granted again.
type VolumeAcquireReq struct {
	JobID uint64      `json:"job_id"`
	Pool  string      `json:"pool"`
	Full  uuid.UUID   `json:"full,omitzero"`
	Used  []uuid.UUID `json:"used,omitempty"`
	// Bad names a volume that failed (a medium error, a tape that is not
	// what the catalog says); the servers mark it error with BadReason
	// and grant another.
	Bad       uuid.UUID `json:"bad,omitzero"`
	BadReason string    `json:"bad_reason,omitempty"`
}

// DataCodec is the codec the session compresses its data blocks with.
func (g *VolumeGrant) DataCodec() string {
	switch {
	case !g.Compression:
		return "none"
	case g.Codec == "":
		return "zstd"
	}
	return g.Codec
}

// VolumeGrant is a volume reserved for one job.
type VolumeGrant struct {
	ID           uuid.UUID `json:"id"`
	Name         string    `json:"name"`
	Pool         string    `json:"pool"`
	Bytes        int64     `json:"bytes"` // committed end; anything beyond it is discarded
	New          bool      `json:"new"`   // not labeled yet: label it, then send volume.labeled
	BlockSize    int       `json:"block_size"`
	BlockRawSize int       `json:"block_raw_size"`
	// Compression is true when data blocks are compressed: with Codec,
	// or with zstd when Codec is empty (servers before Codec).
	Compression bool `json:"compression"`
	// Codec is the pool's codec: zstd, s2 or none.
	Codec    string    `json:"codec,omitempty"`
	MaxBytes int64     `json:"max_bytes"`
	Created  time.Time `json:"created"`
	// Tape volumes: the volume is the cartridge with Barcode in Library,
	// already labeled; Parts is the number of session parts on it (what
	// tape.OpenAppender checks with Bytes).
	MediaType string `json:"media_type,omitempty"`
	Barcode   string `json:"barcode,omitempty"`
	Library   string `json:"library,omitempty"`
	Parts     int    `json:"parts,omitempty"`
	// Relabel, on a tape, is the volume its label still names: the
	// servers recycled the cartridge into this volume (its backups all
	// expired), and the node writes this volume's label over the old one
	// before any data, then sends volume.labeled. The label it finds may
	// be this volume's already (a node that died after writing it).
	Relabel uuid.UUID `json:"relabel,omitzero"`
	// RetainUntil is how long the session's data must outlive it, from
	// its backup's retention (the longest the retention may keep it): a
	// medium with object lock (an S3 pool) locks what it writes until
	// then. Zero: the retention gives no date, and nothing is locked.
	RetainUntil time.Time `json:"retain_until,omitzero"`
}

// VolumeLabeled reports that a new volume's label was written and read back.
type VolumeLabeled struct {
	JobID    uint64    `json:"job_id"`
	VolumeID uuid.UUID `json:"volume_id"`
	Error    string    `json:"error,omitempty"` // labeling failed: the volume goes to state error
}

// KeyGetReq asks for the data key of a job's session.
type KeyGetReq struct {
	JobID uint64 `json:"job_id"`
	KeyID string `json:"key_id"`
}

// KeyGetResp carries a data key in the clear.
type KeyGetResp struct {
	ID  string `json:"id"`
	Key []byte `json:"key"`
}

// SessionIndexReq carries one segment of a session's file index, in order.
type SessionIndexReq struct {
	JobID uint64         `json:"job_id"`
	No    int            `json:"no"`
	First fileindex.Path `json:"first"`
	Last  fileindex.Path `json:"last"`
	Count int            `json:"count"`
	Data  []byte         `json:"data"`
	// Attempt is the attempt of the session's ticket (0 from an older
	// node), as in SessionAbortReq: a segment of an attempt that is over
	// is refused, even from the node the next attempt runs on.
	Attempt int `json:"attempt,omitempty"`
}

// MaxIndexSegmentBytes keeps a segment message below NATS's default 1 MiB
// payload limit: the message is JSON, Data goes in base64 (640 KiB become
// 853 KiB), and its two paths may take up to 4 KiB each, more escaped.
const MaxIndexSegmentBytes = 640 << 10

// SessionPart is where one part of a session lies on a volume, as the
// storage node's session writer reports it (volume.PartResult) and the
// catalog records it (catalog.Part): the same fields, carried whole each
// way (tests hold the conversions to it).
type SessionPart struct {
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
	// Torn: the medium failed in this part (a tape's bad spot). It holds
	// its blocks up to StreamEnd and no end marker; the session goes on in
	// its next part, on another volume.
	Torn bool `json:"torn,omitempty"`
}

// SessionStats counts what a session holds.
type SessionStats struct {
	Entries      int64 `json:"entries"`
	Files        int64 `json:"files"`
	ContentBytes int64 `json:"content_bytes"`
	StreamBytes  int64 `json:"stream_bytes"`
	StoredBytes  int64 `json:"stored_bytes"`
	Blocks       int64 `json:"blocks"`
}

// SessionCommitReq asks the servers to record a durable session as a backup.
// Every index segment was sent before it.
type SessionCommitReq struct {
	JobID     uint64        `json:"job_id"`
	SessionID uuid.UUID     `json:"session_id"`
	Parts     []SessionPart `json:"parts"`
	Segments  int           `json:"segments"`
	Stats     SessionStats  `json:"stats"`
	Warnings  []string      `json:"warnings,omitempty"` // the agent's, passed through
	// Notes are the agent's lines for the job log at level info, passed
	// through: what the backup left out on purpose.
	Notes []string `json:"notes,omitempty"`
	// Tape is the drive's figures when the session went to tape.
	Tape *TapeStats `json:"tape,omitempty"`
	// Sealed are volumes of Parts the medium takes nothing more on (an
	// append-only target writes each volume once): the servers mark them
	// full.
	Sealed []uuid.UUID `json:"sealed,omitempty"`
	// LockedUntil is the retain-until date the store locked the
	// session's objects with, zero when it locked none: the servers
	// extend the locks of the backups this one builds on to it.
	LockedUntil time.Time `json:"locked_until,omitzero"`
	// Attempt is the attempt of the session's ticket (0 from an older
	// node), as in SessionIndexReq: a session that outlived its attempt
	// (the job handed back, then given to this node again) is not
	// committed, since the next attempt writes where it wrote.
	Attempt int `json:"attempt,omitempty"`
}

// SessionAbortReq reports that a session failed; nothing of it is kept.
type SessionAbortReq struct {
	JobID uint64 `json:"job_id"`
	Error Error  `json:"error"`
	// Attempt is the attempt of the session's ticket (0 from an older
	// node): an abort that comes in after the job went on to another
	// attempt changes nothing.
	Attempt int `json:"attempt,omitempty"`
}

// ---- agent <-> servers ----

// AgentRegisterReq announces an agent. Instance is drawn at random when
// the agent process starts: the servers tell a restarted agent (a new
// instance, the old one silent) from a second agent under the same name
// (two instances alive at once).
type AgentRegisterReq struct {
	Name     string `json:"name"`
	Hostname string `json:"hostname"`
	OS       string `json:"os"`
	Arch     string `json:"arch"`
	Version  string `json:"version"`
	Site     string `json:"site,omitempty"`
	// Labels are the agent's labels (its config's labels, KEY=VALUE), by
	// which policies select clients.
	Labels map[string]string `json:"labels,omitempty"`
	// ReportsLabels is set by every agent that knows labels: its Labels
	// replace the client's, none clearing them; an older agent's
	// registration keeps them.
	ReportsLabels bool     `json:"reports_labels,omitempty"`
	Instance      string   `json:"instance,omitempty"`
	PID           int      `json:"pid,omitempty"`
	Running       []uint64 `json:"running,omitempty"`
}

// AgentRegisterResp answers a registration: Duplicate is set while another
// agent runs under the same name.
type AgentRegisterResp struct {
	Duplicate *AgentDuplicate `json:"duplicate,omitempty"`
	// Group is the group's id: the agent names it in every request after.
	Group string `json:"group,omitempty"`
}

// DataEndpoint is how an agent reaches a storage node's data port.
type DataEndpoint struct {
	Node       string `json:"node"`
	Addr       string `json:"addr"`
	CertSHA256 string `json:"cert_sha256"` // the agent pins the node's certificate
}

// RunBackup orders an agent to back up and stream to a storage node.
type RunBackup struct {
	JobID    uint64           `json:"job_id"`
	Attempt  int              `json:"attempt,omitempty"`
	Level    string           `json:"level"`
	Paths    []fileindex.Path `json:"paths"`
	Excludes []fileindex.Path `json:"excludes,omitempty"`
	// SkipNodump leaves out what carries the nodump inode flag
	// (BackupStartReq.SkipNodump).
	SkipNodump bool `json:"skip_nodump,omitempty"`
	// OneFileSystem keeps the walk on the filesystem of each path
	// (BackupStartReq.OneFileSystem).
	OneFileSystem bool         `json:"one_file_system,omitempty"`
	Base          uint64       `json:"base,omitempty"` // compare against this backup's tree (incremental, differential)
	Node          DataEndpoint `json:"node"`
	Ticket        string       `json:"ticket"`
	// EstimateBytes is the size of the last backup of this file set, for an ETA.
	EstimateBytes int64 `json:"estimate_bytes,omitempty"`
	EstimateFiles int64 `json:"estimate_files,omitempty"`
	// Application steps and command sources (BackupStartReq.Application).
	Application
}

// Application is what a backup runs on its client besides reading files:
// commands before and after it (quiesce a database, flush, snapshot) and
// commands whose output it stores as a file (a database dump). The agent
// runs only what its own configuration allows (agent.CommandPolicy).
type Application struct {
	// Before run in order once the storage node accepted the backup, before
	// anything is read; After run once everything was read (or the backup
	// failed), before the storage node commits, in order, every one of
	// them, even when the backup or a step failed.
	Before []AppStep `json:"before,omitempty"`
	After  []AppStep `json:"after,omitempty"`
	// Sources are stored as files of the backup.
	Sources []CommandSource `json:"sources,omitempty"`
}

// AppStep is a command run on the client before or after a backup. The
// agent gives it CAIRN_JOB_ID, CAIRN_JOB_LEVEL, CAIRN_CLIENT and CAIRN_STEP
// (before or after) in its environment, and an after-step also
// CAIRN_JOB_STATUS (success or failed) and, on failure, CAIRN_JOB_ERROR.
type AppStep struct {
	Command string `json:"command"`
	// Timeout ends the command (SIGTERM to its process group, SIGKILL
	// later); 0 is the agent's default.
	Timeout time.Duration `json:"timeout,omitempty"`
	// FailJob: a step that fails (exits non-zero, is killed, runs past
	// its timeout, or is refused) fails the backup, which then commits
	// nothing; otherwise it is a warning.
	FailJob bool `json:"fail_job,omitempty"`
}

// CommandSource is a command whose standard output is stored as the file
// Path of the backup (mode 0600, owned by root, its mtime the command's
// start). A source that exits non-zero fails the backup.
type CommandSource struct {
	Path    fileindex.Path `json:"path"`
	Command string         `json:"command"`
	// Timeout ends the command as AppStep's does; 0 is none.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// CheckBackup asks an agent whether it would take a backup of Paths: that
// each exists on the client.
type CheckBackup struct {
	Paths []fileindex.Path `json:"paths"`
}

// CheckRestore asks an agent whether it would take a restore into To: a
// directory, or a path that does not exist yet, and empty unless Force.
type CheckRestore struct {
	To    string `json:"to"`
	Force bool   `json:"force,omitempty"`
}

// BaseTreeReq pages through the tree a backup is compared against.
type BaseTreeReq struct {
	JobID uint64         `json:"job_id"`
	After fileindex.Path `json:"after,omitempty"`
}

// BaseTreeResp is one page of a base tree: a fileindex segment.
type BaseTreeResp struct {
	Segment []byte `json:"segment,omitempty"`
	Done    bool   `json:"done"`
}

// RunRestore orders an agent to restore from a storage node.
type RunRestore struct {
	JobID   uint64       `json:"job_id"`
	Attempt int          `json:"attempt,omitempty"`
	To      string       `json:"to"`
	Force   bool         `json:"force,omitempty"`
	Devices bool         `json:"devices,omitempty"` // create device nodes (RestoreStartReq.Devices)
	Node    DataEndpoint `json:"node"`
	Ticket  string       `json:"ticket"`
	Files   int64        `json:"files"`
	Bytes   int64        `json:"bytes"`
	// Recheck: a restore held up longer than this (the agent's process
	// stopped, its target's disk hung) asks the servers whether the job
	// still runs before it writes on, since they may have failed it
	// meanwhile. The servers give half their liveness timeout.
	Recheck time.Duration `json:"recheck,omitempty"`
}

// JobAliveReq asks whether a job runs at Attempt; the answer is empty, or
// an error (CodeAborted once it ended).
type JobAliveReq struct {
	JobID   uint64 `json:"job_id"`
	Attempt int    `json:"attempt,omitempty"`
}

// RestorePlanReq pages through a restore's plan. The storage node that
// runs the restore asks, for the job and attempt its ticket names: the
// plan says where the data lies on the volumes (parts, offsets, barcodes),
// which only the node has a use for, so it never crosses the agent.
type RestorePlanReq struct {
	JobID   uint64 `json:"job_id"`
	Attempt int    `json:"attempt,omitempty"`
	Cursor  int    `json:"cursor"`
	// Packed asks for the page's reads in RestorePlanResp.Packed, in the
	// packed form (PackReads) of this version or an older one: the
	// newest the node reads. 0, or a server older than packed pages,
	// answers in Reads.
	Packed int `json:"packed,omitempty"`
}

// ReadLoc is one entry to read: where its FileHeader lies in its session.
type ReadLoc struct {
	Path fileindex.Path     `json:"path"`
	Loc  fileindex.Location `json:"loc"`
	// Ancestor marks a directory read only because it lies above a path
	// chosen for the restore: the agent creates it with its metadata when
	// it is missing, and leaves it as it is when it exists.
	Ancestor bool `json:"ancestor,omitempty"`
	// Block is set for a block of a large file whose entry lies in another
	// session: Loc is where the block lies (Loc.Len its length), and the
	// storage node reads only it and tells the agent where it goes.
	Block *BlockRead `json:"block,omitempty"`
	// Follows says that this entry comes right after the location before
	// it in the read, nothing of the session between them (both whole
	// entries): a data block that lies wholly inside such entries holds
	// nothing else, and the storage node may pass it on as stored
	// (volume.SessionReader.ReadAdjacent). Only the packed form from
	// version 2 carries it; JSON pages leave it out, so that a page's
	// size, which every server must reckon alike, does not depend on it.
	Follows bool `json:"-"`
}

// BlockRead says where a block read by its location goes in the file:
// the offsets of the file that hold it (more than one when the file holds
// the same bytes twice).
type BlockRead struct {
	At []int64 `json:"at"`
}

// ReadPart locates a part of a session for a storage node.
type ReadPart struct {
	VolumeID    uuid.UUID `json:"volume_id"`
	Volume      string    `json:"volume"`
	Pool        string    `json:"pool"`
	VolumeStart int64     `json:"volume_start"` // the part header: the key is checked against it first
	DataStart   int64     `json:"data_start"`
	StreamStart uint64    `json:"stream_start"`
	StreamEnd   uint64    `json:"stream_end"`
	// MediaType is the volume's medium (disk, tape, sftp; "" from a
	// server older than SFTP pools is disk or tape): a node reads the
	// part with its pool of that type and name.
	MediaType string `json:"media_type,omitempty"`
	// Tape volumes: the cartridge, the label's block size, the start of
	// every part on the volume up to this one (tape.NewReader maps offsets
	// to blocks with them) and the volume's committed end.
	Barcode     string  `json:"barcode,omitempty"`
	Library     string  `json:"library,omitempty"`
	BlockSize   int     `json:"block_size,omitempty"`
	PartStarts  []int64 `json:"part_starts,omitempty"`
	VolumeBytes int64   `json:"volume_bytes,omitempty"`
}

// ReadRequest asks a storage node for entries of one session, in stream
// order. The node takes it from the servers (OpRestorePlan) and checks it
// against the ticket; the agent sees only the entries' paths
// (dataplane.ReadStart).
type ReadRequest struct {
	SessionID uuid.UUID  `json:"session_id"`
	KeyID     string     `json:"key_id"`
	Parts     []ReadPart `json:"parts"`
	Locs      []ReadLoc  `json:"locs"`
	// Adjacent says that Locs are consecutive entries of the session's
	// index, none left out between the first and the last (a whole
	// session restored): a data block that lies wholly inside them holds
	// nothing else, and the storage node may pass it on as stored
	// (volume.SessionReader.ReadAdjacent). Older servers leave it unset.
	Adjacent bool `json:"adjacent,omitempty"`
}

// RestorePlanResp is one page of a restore plan.
type RestorePlanResp struct {
	Reads []ReadRequest `json:"reads"`
	// Packed holds the reads instead, in the form of PackReads, when the
	// request asked for it.
	Packed []byte `json:"packed,omitempty"`
	Cursor int    `json:"cursor"`
	Done   bool   `json:"done"`
}

// JobDoneReq is an agent's final report on a job.
type JobDoneReq struct {
	JobID    uint64   `json:"job_id"`
	Attempt  int      `json:"attempt,omitempty"` // the order's attempt this reports on
	Files    int64    `json:"files"`
	Bytes    int64    `json:"bytes"`
	Warnings []string `json:"warnings,omitempty"`
	// A restore's accounting: Entries were asked of the storage node,
	// Restored of them were restored, Lost were not because their data
	// is lost (damaged, cut off, unreadable). Damaged lists lost entries
	// with their reasons, "path: reason", the first of them only when
	// there are many: Lost is the count.
	Entries  int64    `json:"entries,omitempty"`
	Restored int64    `json:"restored,omitempty"`
	Lost     int64    `json:"lost,omitempty"`
	Damaged  []string `json:"damaged,omitempty"`
	// Refused counts a restore's entries not restored though their data
	// was fine: refused (devices without --devices) or failed; Warnings
	// names them.
	Refused int64  `json:"refused,omitempty"`
	Error   *Error `json:"error,omitempty"`
}
