// Package storagenode is the storage node role: it owns devices (disk pools,
// tape libraries and SFTP targets), accepts agents' streams on its
// TLS data port, runs the transform pipeline of package media/volume, and
// writes and reads volumes. It trusts the servers' job ticket, not the
// client, for what a connection may write or read, and it talks to the
// servers only over NATS (package wire): it never imports package server.
//
// Media (medium.go): a backup session and a restore see a pool only
// through the medium interface, which the disk pool (diskpool.go), the
// tape pool (tapepool.go, spool.go), the SFTP pool (sftppool.go) and the
// S3 pool (s3pool.go) implement; backup.go and restore.go never ask which
// one they have. To add a medium: write its
// file (its pool config, and the types that implement medium,
// appendSession and partReader as medium.go's contract says), give
// Config the list of its pools and New the line that makes a medium of
// each, and add its line to mediaCases in media_test.go, whose scenario
// (backup, restore, rollback) every medium passes; its volume.Appender
// runs media/volume/volumetest in its own package, as disk, tape and the
// spool do. DESIGN.md has the structs, the goroutines, drive ownership
// and the lock order.
//
// Tape (tapepool.go, spool.go): the node owns its
// libraries through package library. A backup to a tape pool asks the
// servers for a tape (waiting, with the reason reported, while the pool
// has none), mounts it and appends a session part; at early warning it
// gives the drive back and asks for the next tape, and a medium error
// ends the part at its last durable block and goes on on another tape,
// reporting the bad one. With a spool directory the stream is staged on
// disk in chunks and despooled on its own goroutine, so the drive gets
// data at disk speed. A restore mounts each tape once and reads it through
// tape.Reader: one locate per part, then streaming. A node killed mid
// backup leaves its spool chunks behind; the next start removes them
// before it takes any work and logs how many (a requeued backup starts
// over, it never resumes from chunks).
//
// SFTP (sftppool.go): a disk pool at a distance, its volume files in a
// directory of an SFTP server (media/sftpvol), over one SSH connection per
// pool that is redialled when it drops; the target's host key is checked
// against a known_hosts file.
//
// S3 (s3pool.go): volumes in a bucket, each a prefix of immutable objects,
// one per session part, completed at the part's sync point and born
// locked until the backup's retention date when the pool locks
// (media/s3vol); DESIGN.md, "S3 pools".
//
// Group (node.go): the node names the group of servers it belongs to in
// every request, heartbeat and order it takes (wire.GroupHeader): its
// group setting, or the group its first registration answered, kept until
// it stops. Servers of another group on the same NATS hand its requests
// on to its group's, or refuse them naming both groups.
//
// Stopping (Drain, on SIGTERM): the node closes its data port, says in a
// heartbeat that it drains (the servers send it no job), and lets its
// sessions finish for up to DrainTimeout; a second signal or the timeout
// closes the rest, each rolled back on its volume and reported handed back
// (wire.CodeHandedBack), so its job goes on with another attempt.
//
// A restore accounts for every entry a read request asks for (restore.go):
// its records go to the agent, or a Damaged frame names it with the reason
// it is lost: a damaged block anywhere in its blocks, a volume cut short,
// missing or unreadable, a key that does not open the session. A read that
// cannot be done loses its entries, not the stream; ReadDone counts both.
//
// No stream waits for its agent forever: every read and write on the data
// port has the IdleTimeout, and keepalives go out while the node works
// without sending. The servers' job.cancel order ends a job's stream at
// once (node.go): a backup is cut off its volumes, a restore stops, and
// either gives its drive back.
package storagenode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cairnbackup/cairn/internal/configfile"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/storagenode/library"
	"github.com/cairnbackup/cairn/wire"
)

// PoolConfig is a disk pool this node serves.
type PoolConfig struct {
	// Name of the pool in the catalog; pools are created when a node
	// first announces them.
	Name string `json:"name"`
	// Dir holds the pool's volume files (an absolute path).
	Dir string `json:"dir"`
	// MaxVolumeBytes is the size at which each volume file of the pool is
	// full and the job goes on in a new one ("50G"); it caps one volume,
	// not the pool, which grows until the disk is full. 0 means no limit.
	MaxVolumeBytes int64 `json:"volume_size" config:"size,alias=max_volume_bytes"`
}

// TapePoolConfig is a tape pool this node serves: its volumes are the
// cartridges of one of the node's libraries that the catalog puts in the
// pool.
type TapePoolConfig struct {
	// Name of the pool in the catalog.
	Name string `json:"name"`
	// Library is the name of the node's library (in its libraries) whose
	// tapes the pool's volumes are.
	Library string `json:"library"`
	// SpoolDir, when set, stages backups to the pool on disk there, so
	// the drive gets data at disk speed and keeps streaming however
	// slowly the client sends; empty writes the stream to the drive as
	// it comes.
	SpoolDir string `json:"spool_dir,omitempty"`
	// SpoolChunkBytes is the size of a spool chunk: one fills while the
	// one before goes to tape, so the spool needs twice this on disk,
	// and two chunks must fit the cartridge's early warning zone. 0
	// means 4G.
	SpoolChunkBytes int64 `json:"spool_chunk_size,omitempty" config:"size,alias=spool_chunk_bytes"`
}

// Config of a storage node. Flags and the config file fill the same struct:
// a field's name in the file is its flag's (package internal/configfile).
type Config struct {
	// ID is the node's name in the catalog and in NATS subjects (the
	// flag --name; "id" in older files).
	ID string `json:"name" config:"alias=id,default=the host name"`
	// DataDir holds the node's own state: its data-port certificate, the
	// used-ticket record and spill files of running sessions.
	DataDir string `json:"data" config:"alias=data_dir"`
	// NATSURL is the NATS server (or servers, separated by commas) where
	// the node reaches the servers.
	NATSURL string `json:"nats" config:"alias=nats_url"`
	// NATSAuth is the NATS connection's TLS and credential (empty: plain,
	// as to the embedded server of cairn dev).
	NATSAuth wire.NATSAuth `json:"nats_auth" config:"inline=nats_"`
	// DataAddr is the address the TLS data port listens on.
	DataAddr string `json:"data_addr"`
	// AdvertiseAddr is the address agents dial; the listening address
	// when empty.
	AdvertiseAddr string `json:"advertise_addr"`
	// Site places the node: backups prefer a node of their client's site.
	Site string `json:"site"`
	// Group is the id of the group of servers the node belongs to
	// ('cairn cluster status' shows it). Empty: the node learns it from
	// its first registration and keeps it until it stops; set it where
	// servers of several groups share the NATS, since a request that
	// names no group is refused there.
	Group string `json:"group"`
	// Pools are the disk pools this node serves, each also given by a
	// flag --pool NAME=DIR[,volume-size=SIZE].
	Pools []PoolConfig `json:"pools" config:"flag=pool"`
	// Libraries are the tape libraries this node owns: each a changer and
	// its drives, or an emulated library.
	Libraries []library.Config `json:"libraries" config:"fileonly"`
	// TapePools are the tape pools this node serves, each in one of
	// Libraries.
	TapePools []TapePoolConfig `json:"tape_pools" config:"fileonly"`
	// SFTPPools are the pools this node writes to SFTP targets.
	SFTPPools []SFTPPoolConfig `json:"sftp_pools" config:"fileonly"`
	// S3Pools are the pools this node writes to S3 buckets.
	S3Pools []S3PoolConfig `json:"s3_pools" config:"fileonly"`
	// VolumeWaitPoll is how often a backup that found no volume to write
	// asks the servers again (a tape pool with no appendable tape waits
	// for one to be labeled or imported).
	VolumeWaitPoll time.Duration `json:"volume_wait_poll"`
	// HeartbeatInterval is how often the node tells the servers it lives.
	HeartbeatInterval time.Duration `json:"heartbeat_interval"`
	// Workers is the number of compress-and-encrypt goroutines per stream.
	Workers int `json:"workers"`
	// ClockSkew is how far the servers' clock may be from this node's when
	// checking ticket times.
	ClockSkew time.Duration `json:"clock_skew"`
	// HelloTimeout bounds how long a connection may take to present its ticket.
	HelloTimeout time.Duration `json:"hello_timeout"`
	// MaxPendingConns bounds the connections to the data port that have
	// not shown a valid ticket yet: past it the node accepts no more until
	// one does or its hello_timeout ends, and new ones wait in the
	// kernel's backlog.
	MaxPendingConns int `json:"max_pending_conns"`
	// MaxPendingPerHost bounds those of one address: past it a new
	// connection from there is closed at once, so no one host takes every
	// place of max_pending_conns.
	MaxPendingPerHost int `json:"max_pending_per_host"`
	// ServerWait is how long a request to the servers is retried while
	// they elect a leader or a majority returns.
	ServerWait time.Duration `json:"server_wait"`
	// IdleTimeout ends a stream whose agent sent nothing for this long, so
	// a hung client cannot hold a volume forever.
	IdleTimeout time.Duration `json:"idle_timeout"`
	// DrainTimeout is how long a stopping node (SIGTERM) lets its running
	// sessions finish before it hands them back to the servers, which
	// send their jobs to another node.
	DrainTimeout time.Duration `json:"drain_timeout"`
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "storagenode"
	}
	return Config{
		ID:                host,
		NATSURL:           "nats://127.0.0.1:4222",
		DataAddr:          "127.0.0.1:7020",
		HeartbeatInterval: 5 * time.Second,
		Workers:           2,
		ClockSkew:         30 * time.Second,
		HelloTimeout:      30 * time.Second,
		MaxPendingConns:   128,
		MaxPendingPerHost: 32,
		IdleTimeout:       5 * time.Minute,
		ServerWait:        time.Minute,
		VolumeWaitPoll:    30 * time.Second,
		DrainTimeout:      5 * time.Minute,
	}
}

// Validate names every bad field, as its flag and config file field are
// named (configfile.FieldError: pools[1].dir), and how to fix it.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, configfile.Fieldf(field, format, args...))
	}
	if c.ID == "" {
		bad("name", "the storage node's name is empty: set --name")
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
	if c.DataAddr == "" {
		bad("data_addr", "the data port address is empty: set --data-addr host:port")
	}
	if c.MaxPendingConns < 1 {
		bad("max_pending_conns", "%d connections waiting to show a ticket would let no agent in: set --max-pending-conns to 1 or more (default 128)", c.MaxPendingConns)
	}
	if c.MaxPendingPerHost < 1 {
		bad("max_pending_per_host", "%d connections per address waiting to show a ticket would let no agent in: set --max-pending-per-host to 1 or more (default 32)", c.MaxPendingPerHost)
	}
	if len(c.Pools) == 0 && len(c.TapePools) == 0 && len(c.SFTPPools) == 0 && len(c.S3Pools) == 0 {
		bad("pools", "no disk pool and no tape pool: add --pool NAME=DIR (and optionally ,volume-size=SIZE), or a pool, tape pool, SFTP pool or S3 pool in the config file")
	}
	seen := map[string]bool{}
	for i, p := range c.Pools {
		at := fmt.Sprintf("pools[%d]", i)
		if p.Name == "" {
			bad(at+".name", "the pool has no name: give it one")
		}
		if seen[p.Name] {
			bad(at+".name", "pool %s is given twice: keep one", p.Name)
		}
		seen[p.Name] = true
		if !filepath.IsAbs(p.Dir) {
			bad(at+".dir", "pool %s: directory %q is not absolute: give the full path", p.Name, p.Dir)
		}
		if p.MaxVolumeBytes < 0 {
			bad(at+".volume_size", "pool %s: the volume size is negative: give a size, or 0 for no limit", p.Name)
		}
	}
	libs := map[string]*library.Config{}
	for i, l := range c.Libraries {
		at := fmt.Sprintf("libraries[%d]", i)
		if libs[l.Name] != nil {
			bad(at+".name", "library %s is given twice: keep one", l.Name)
		}
		if err := l.Validate(); err != nil {
			errs = append(errs, configfile.In(at, err))
		}
		libs[l.Name] = &c.Libraries[i]
	}
	for i, p := range c.TapePools {
		at := fmt.Sprintf("tape_pools[%d]", i)
		if seen[p.Name] {
			bad(at+".name", "pool %s is given twice: keep one", p.Name)
		}
		seen[p.Name] = true
		lib := libs[p.Library]
		if lib == nil {
			bad(at+".library", "tape pool %s: library %q is not one of this node's libraries: add it to \"libraries\" or fix the name", p.Name, p.Library)
		}
		if p.SpoolDir != "" && !filepath.IsAbs(p.SpoolDir) {
			bad(at+".spool_dir", "tape pool %s: spool directory %q is not absolute: give the full path", p.Name, p.SpoolDir)
		}
		if p.SpoolChunkBytes < 0 {
			bad(at+".spool_chunk_size", "tape pool %s: the spool chunk size is negative: give a size, or 0 for the default", p.Name)
		}
		if p.SpoolDir != "" && lib != nil && lib.Emulated != nil {
			if zone, need := emulatedZone(lib.Emulated), spoolZoneNeed(p.chunkBytes()); need > zone {
				// The advice in whole MiB, at most what fits.
				fix := fmt.Sprintf("set spool_chunk_size to at most %s", configfile.FormatSize((zone-spoolZoneNeed(0))/2&^(1<<20-1)))
				if zone-spoolZoneNeed(0) < 2<<20 {
					fix = "spool to larger cartridges, or turn spooling off (no spool_dir)"
				}
				bad(at+".spool_chunk_size", "tape pool %s: two spool chunks of %s (and a block, a part's end and its padding) need %s of early warning zone; the cartridges of library %s have %s: %s",
					p.Name, configfile.FormatSize(p.chunkBytes()), kib(need), lib.Name, kib(zone), fix)
			}
		}
	}
	validateSFTPPools(c.SFTPPools, seen, bad)
	validateS3Pools(c.S3Pools, seen, bad)
	if c.VolumeWaitPoll <= 0 && len(c.TapePools) > 0 {
		bad("volume_wait_poll", "the volume wait poll must be positive: give a duration, like 30s")
	}
	if c.HeartbeatInterval <= 0 {
		bad("heartbeat_interval", "the heartbeat interval must be positive: give a duration, like 5s")
	}
	if c.IdleTimeout < time.Second {
		bad("idle_timeout", "the idle timeout must be at least 1s")
	}
	if c.Workers < 1 {
		bad("workers", "workers must be at least 1")
	}
	if c.DrainTimeout < 0 {
		bad("drain_timeout", "the drain timeout is negative: set --drain-timeout to 0 to hand running sessions back at once, or to how long they may go on")
	}
	return errors.Join(errs...)
}

// kib writes a size in whole KiB, rounded up, for a message.
func kib(n int64) string { return configfile.FormatSize((n + 1<<10 - 1) &^ (1<<10 - 1)) }

func (p TapePoolConfig) chunkBytes() int64 {
	if p.SpoolChunkBytes > 0 {
		return p.SpoolChunkBytes
	}
	return DefaultSpoolChunkBytes
}

// spoolZoneNeed is the early warning zone that a spool with chunks of
// chunk bytes may write into after the drive gave the warning: the chunk
// being despooled and the one filling, a block, a PartEnd and the
// largest padding.
func spoolZoneNeed(chunk int64) int64 {
	return 2*chunk + volume.MaxBlockBytes + volume.MaxBlockSize + 64<<10
}

// emulatedZone is the early warning zone of an emulated library's
// cartridges (as media/tape sizes it when the config leaves it 0).
func emulatedZone(e *library.EmulatedConfig) int64 {
	if e.EarlyWarningBytes > 0 {
		return e.EarlyWarningBytes
	}
	capacity := e.CartridgeBytes
	if capacity <= 0 {
		capacity = 18_000_000_000_000
	}
	return max(capacity/1000, 1<<20)
}
