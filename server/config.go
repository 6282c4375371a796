package server

import (
	"errors"
	"github.com/cairnbackup/cairn/alert"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/cairnbackup/cairn/internal/configfile"
	"github.com/cairnbackup/cairn/pki"
	"github.com/cairnbackup/cairn/wire"
)

// Config of a server. Flags and the config file fill the same struct: a
// field's name in the file is its flag's (package internal/configfile).
type Config struct {
	// Name identifies this server in its Raft group, in logs and metrics.
	Name string `json:"name" config:"default=the host name"`
	// DataDir holds the catalog, the Raft log and snapshots, the ticket
	// signing key (ticket.key) and, unless KEKFile or a systemd credential
	// says otherwise, the key-encryption key (kek).
	DataDir string `json:"data" config:"alias=data_dir"`
	// KEKFile is the key-encryption key, 32 raw bytes, when it is kept
	// outside DataDir: the catalog holds every data key wrapped with it,
	// so a copy of a data directory that holds its KEK too (a backup of the
	// server, a disk sent for repair) holds every data key. Made on the
	// first start when missing; refused when missing while the catalog
	// exists, since a new KEK opens none of its keys. Empty: the systemd
	// credential cairn-kek when the service has one ($CREDENTIALS_DIRECTORY,
	// LoadCredential=cairn-kek:PATH), else DataDir/kek.
	KEKFile string `json:"kek_file,omitempty"`
	// NATSURL is the NATS server (or servers, separated by commas) where
	// the server reaches every other role.
	NATSURL string `json:"nats" config:"alias=nats_url"`
	// NATSAuth is the NATS connection's TLS and credential (empty: plain,
	// as to the embedded server of cairn dev).
	NATSAuth wire.NATSAuth `json:"nats_auth" config:"inline=nats_"`
	// RaftAddr is the address the Raft transport listens on.
	RaftAddr string `json:"raft_addr"`
	// Bootstrap forms a new group of one voter when DataDir has no Raft
	// state: for the first server of a new group only, and never by
	// default, since a server that forms a group of its own on a NATS
	// where a group runs becomes a second leader there. Without it a new
	// server waits, answering no role, until 'cairn cluster join' adds it.
	// A data directory with Raft state ignores it.
	Bootstrap bool `json:"bootstrap"`
	// RaftTLS runs the Raft transport over mutual TLS: the group's CA, and
	// this server's certificate and key, issued with 'cairn cert issue
	// --client --server' for the host in RaftAddr. Empty: plain TCP, which
	// Validate allows on a loopback RaftAddr only, unless InsecureRaft.
	RaftTLS pki.Files `json:"raft_tls" config:"inline=tls_"`
	// InsecureRaft allows plain, unauthenticated Raft on an address other
	// machines reach: whoever reaches it can pose as a member, read the
	// catalog and append to its log. Only for a network where nothing else
	// runs; the server says so loudly at every start.
	InsecureRaft bool `json:"insecure_raft,omitempty"`
	// SecretsFile is the group's secrets ('cairn cluster init'): the KEK and
	// the ticket signing key, which every member must share. The first
	// start copies them into DataDir (the KEK to KEKFile when set); a later
	// start with other secrets is refused, unless they are secrets the
	// group rotated away from ('cairn cluster rotate-secrets'), which are
	// ignored with a warning, or the group's current ones on a server that
	// missed the rotation, which replace its old keys. Empty: the server
	// makes its own, right for a group of one.
	SecretsFile string `json:"secrets" config:"alias=secrets_file"`
	// TicketTTL is how long a job ticket is good for: the agent must reach
	// the storage node within it.
	TicketTTL time.Duration `json:"ticket_ttl"`
	// LivenessTimeout: a storage node or agent silent for this long is
	// offline, and the jobs it takes part in fail.
	LivenessTimeout time.Duration `json:"liveness_timeout"`
	// StallTimeout fails a running job that reported nothing for this long
	// even though its node and agent are alive.
	StallTimeout time.Duration `json:"stall_timeout"`
	// QueueTimeout fails a job that waited this long in the queue for its
	// agent or a storage node, as Bacula's Max Wait Time does.
	QueueTimeout time.Duration `json:"queue_timeout"`
	// DefaultPool is used for backups that name no pool when the client has
	// no default either.
	DefaultPool string `json:"default_pool"`
	// RaftSnapshotThreshold is how many log entries since the last
	// snapshot make Raft snapshot the catalog and compact its log; 0
	// keeps the default of package server/cluster (4096). Low values make
	// a member that was down catch up from a snapshot instead of the log.
	RaftSnapshotThreshold uint64 `json:"raft_snapshot_threshold,omitempty"`
	// RaftTrailingLogs is how many entries a compaction keeps behind a
	// snapshot, for a member that lags a little; 0 keeps the default of
	// package server/cluster (1024).
	RaftTrailingLogs uint64 `json:"raft_trailing_logs,omitempty"`
	// RaftSnapshotInterval is how often Raft checks whether a snapshot is
	// due; 0 keeps the default of package server/cluster (2m).
	RaftSnapshotInterval time.Duration `json:"raft_snapshot_interval,omitempty"`
	// MinFreeBytes is the free space, on the filesystems of the catalog and
	// of the Raft log, below which the leader starts nothing new (backups,
	// restores, tape labels) and says the disk is full, so that running
	// jobs can still finish; 0 checks nothing.
	MinFreeBytes int64 `json:"min_free" config:"size"`
	// CatalogFloorBytes is the free space below which a server's catalog
	// stops applying the log, before a commit runs into a full disk and
	// while Raft still has room for its own writes; it goes on by itself
	// once there is room again. Keep it under MinFreeBytes. 0 checks
	// nothing and leaves it to the filesystem's ENOSPC.
	CatalogFloorBytes int64 `json:"catalog_floor" config:"size"`
	// StartConfirmTimeout is how long a started job may stay pending, its
	// start not yet confirmed to the caller, before the leader voids it:
	// longer than a client retries a start whose answer it lost.
	StartConfirmTimeout time.Duration `json:"start_confirm_timeout"`
	// RequestIDTTL is how long the catalog remembers a request id, so that
	// a repeat of the request answers what the first one did.
	RequestIDTTL time.Duration `json:"request_id_ttl"`
	// ExpiryInterval is how often the leader runs the expiry pass: the
	// backups that their policy's retention no longer keeps leave the
	// catalog, and the volumes no backup is on any more are deleted (disk)
	// or made recyclable (tape).
	ExpiryInterval time.Duration `json:"expiry_interval"`
	// Alerts are where the leader tells an administrator what needs a
	// person (a job that failed), as webhooks and commands: see package
	// alert and README's Alerts for every field.
	Alerts alert.Config `json:"alerts" config:"fileonly"`

	// MaxJobsPerClient is how many backups run at once on one client; a
	// backup past it waits in the queue ("client web1 runs job 41"). 0 is
	// no limit, the default: a policy's runs never overlap on a client
	// anyway (the scheduler skips a run while the previous one goes on);
	// 1 is Bacula's default, one job per client. Restores are never held
	// back by it, nor by the limits below, but they count.
	MaxJobsPerClient int `json:"max_jobs_per_client"`
	// MaxJobsPerNode is how many jobs one storage node runs at once; a
	// backup goes to another node of its pool, or waits. 0 is no limit.
	MaxJobsPerNode int `json:"max_jobs_per_node,omitempty"`
	// PoolJobLimits caps the backups running at once into some pools
	// ([{"pool": "Offsite", "max_jobs": 2}]); a pool not named has no
	// limit.
	PoolJobLimits []PoolJobLimit `json:"pool_job_limits,omitempty" config:"fileonly"`
	// MaxJobsPerDrive, when not 0, holds a tape pool's backups past that
	// many a drive of its library in the queue, in priority order ("pool
	// Tape: 2 of 2 drives busy"). 0, the default, leaves it to the storage
	// node, where a drive writes one session at a time and a backup that
	// finds every drive busy runs waiting for one (a spooled backup spools
	// meanwhile, which a limit here would forbid).
	MaxJobsPerDrive int `json:"max_jobs_per_drive,omitempty"`
	// ScheduleTick is how often the leader's scheduler looks for runs that
	// fell due; a run starts at most this late. Keep it well under the
	// policies' catch-up windows.
	ScheduleTick time.Duration `json:"schedule_tick"`
	// RunHistory is how long the catalog keeps the policies' runs ('cairn
	// job runs'); the newest run of each policy and client is kept
	// whatever its age, since the scheduler starts from it. 0 keeps them
	// all (about 250 bytes a run).
	RunHistory time.Duration `json:"run_history"`
	// JobHistory is how long the catalog keeps an ended job ('cairn job
	// list', its log) that has no backup in the catalog: a restore, a
	// failed backup, a backup since expired or deleted. A job whose backup
	// is in the catalog is kept with it. The leader prunes the others once
	// a day, in its expiry pass. 0 keeps every job; else at least
	// request_id_ttl, so a repeated request finds the job it made.
	JobHistory time.Duration `json:"job_history"`
}

// PoolJobLimit caps the backups running at once into one pool.
type PoolJobLimit struct {
	// Pool names the pool.
	Pool string `json:"pool"`
	// MaxJobs is how many of its backups run at once; more wait in the
	// queue.
	MaxJobs int `json:"max_jobs"`
}

// IsLoopback reports whether a host:port listens on this machine only:
// localhost or a loopback IP. An empty host or 0.0.0.0 listens everywhere,
// and a host name may resolve anywhere.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func sameFile(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && aa == bb
}

// KEKCredential is the name of the systemd credential a server reads its
// KEK from (LoadCredential=cairn-kek:PATH, or LoadCredentialEncrypted=, in
// its unit).
const KEKCredential = "cairn-kek"

// KEK sources, as KEKPath reports them.
const (
	KEKFromFile       = "--kek-file"
	KEKFromCredential = "systemd credential " + KEKCredential
	KEKFromDataDir    = "data directory"
)

// KEKPath is where this server's key-encryption key is, and what chose
// it: KEKFile when set; else the systemd credential when the service was
// started with one; else DataDir/kek.
func (c *Config) KEKPath() (path, source string) {
	if c.KEKFile != "" {
		return c.KEKFile, KEKFromFile
	}
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		p := filepath.Join(dir, KEKCredential)
		if _, err := os.Stat(p); err == nil {
			return p, KEKFromCredential
		}
	}
	return filepath.Join(c.DataDir, "kek"), KEKFromDataDir
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "server"
	}
	return Config{
		Name:            host,
		NATSURL:         "nats://127.0.0.1:4222",
		RaftAddr:        "127.0.0.1:7010",
		TicketTTL:       5 * time.Minute,
		LivenessTimeout: 20 * time.Second,
		StallTimeout:    10 * time.Minute,
		QueueTimeout:    time.Hour,
		DefaultPool:     "Default",

		MinFreeBytes:        256 << 20,
		CatalogFloorBytes:   64 << 20,
		StartConfirmTimeout: 2 * time.Minute,
		RequestIDTTL:        7 * 24 * time.Hour,
		ScheduleTick:        30 * time.Second,
		RunHistory:          90 * 24 * time.Hour,
		JobHistory:          90 * 24 * time.Hour,
		ExpiryInterval:      time.Hour,
	}
}

// Validate names every bad field, as its flag and config file field are
// named (configfile.FieldError), and how to fix it.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, configfile.Fieldf(field, format, args...))
	}
	if c.Name == "" {
		bad("name", "the server name is empty: set --name")
	}
	if c.DataDir == "" {
		bad("data", "the data directory is empty: set --data")
	}
	if c.NATSURL == "" {
		bad("nats", "the NATS URL is empty: set --nats")
	}
	if err := c.NATSAuth.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.RaftAddr == "" {
		bad("raft_addr", "the Raft address is empty: set --raft-addr host:port")
	}
	if err := c.RaftTLS.Check("tls"); err != nil {
		errs = append(errs, err)
	}
	if c.RaftAddr != "" && c.RaftTLS.Empty() && !c.InsecureRaft && !IsLoopback(c.RaftAddr) {
		bad("raft_addr", "Raft address %s is reachable from other machines and Raft has no TLS: "+
			"anyone who reaches it could pose as a member, read the catalog and append to its log; "+
			"give --tls-ca, --tls-cert and --tls-key (see 'cairn cert issue --client --server'), "+
			"bind Raft to 127.0.0.1 for a group of one, or pass --insecure-raft on a network you trust", c.RaftAddr)
	}
	if c.KEKFile != "" && c.DataDir != "" && sameFile(c.KEKFile, filepath.Join(c.DataDir, "kek")) {
		bad("kek_file", "--kek-file %s is the data directory's own kek: give a path outside --data, or leave --kek-file out", c.KEKFile)
	}
	if c.TicketTTL < 10*time.Second {
		bad("ticket_ttl", "ticket TTL %s is too short: use at least 10s", c.TicketTTL)
	}
	if c.LivenessTimeout < time.Second {
		bad("liveness_timeout", "liveness timeout %s is too short: use at least 1s", c.LivenessTimeout)
	}
	if c.QueueTimeout < time.Second {
		bad("queue_timeout", "queue timeout %s is too short: use at least 1s", c.QueueTimeout)
	}
	if c.MinFreeBytes < 0 {
		bad("min_free", "free space margin %d is negative: use 0 (no check) or more", c.MinFreeBytes)
	}
	if c.CatalogFloorBytes < 0 {
		bad("catalog_floor", "catalog floor %d is negative: use 0 (no check) or more", c.CatalogFloorBytes)
	}
	if c.ExpiryInterval < time.Second {
		bad("expiry_interval", "expiry interval %s is too short: use at least 1s (an hour is the default)", c.ExpiryInterval)
	}
	if c.StartConfirmTimeout < time.Second {
		bad("start_confirm_timeout", "start confirm timeout %s is too short: use at least 1s (minutes: a client retries a lost answer for about one)", c.StartConfirmTimeout)
	}
	if c.RequestIDTTL < c.StartConfirmTimeout {
		bad("request_id_ttl", "request id TTL %s is shorter than the start confirm timeout %s: make it longer", c.RequestIDTTL, c.StartConfirmTimeout)
	}
	if err := c.Alerts.Validate(); err != nil {
		errs = append(errs, configfile.In("alerts", err))
	}
	if c.MaxJobsPerClient < 0 {
		bad("max_jobs_per_client", "job limit per client %d is negative: use 0 (no limit) or more", c.MaxJobsPerClient)
	}
	if c.MaxJobsPerNode < 0 {
		bad("max_jobs_per_node", "job limit per storage node %d is negative: use 0 (no limit) or more", c.MaxJobsPerNode)
	}
	if c.RunHistory < 0 {
		bad("run_history", "run history %s is negative: use 0 (keep every run) or more", c.RunHistory)
	}
	if c.JobHistory < 0 || (c.JobHistory > 0 && c.JobHistory < c.RequestIDTTL) {
		bad("job_history", "job history %s is shorter than the request id TTL %s: use 0 (keep every job) or at least that", c.JobHistory, c.RequestIDTTL)
	}
	if c.MaxJobsPerDrive < 0 {
		bad("max_jobs_per_drive", "job limit per drive %d is negative: use 0 (left to the storage node) or more", c.MaxJobsPerDrive)
	}
	for _, l := range c.PoolJobLimits {
		if l.Pool == "" || l.MaxJobs < 0 {
			bad("pool_job_limits", "job limit %d of pool %q: name the pool, and use 0 (no limit) or more", l.MaxJobs, l.Pool)
		}
	}
	if c.ScheduleTick < time.Second || c.ScheduleTick > 10*time.Minute {
		bad("schedule_tick", "schedule tick %s is out of range: use 1s to 10m (a run starts at most one tick late)", c.ScheduleTick)
	}
	if c.StallTimeout < c.LivenessTimeout {
		bad("stall_timeout", "stall timeout %s is shorter than the liveness timeout %s: make it longer", c.StallTimeout, c.LivenessTimeout)
	}
	return errors.Join(errs...)
}
