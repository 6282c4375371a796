// Package storagenode is the storage node role: it owns devices (disk pools
// now; SFTP targets and tape libraries later), accepts agents' streams on its
// TLS data port, runs the transform pipeline of package media/volume, and
// writes and reads volumes. It trusts the servers' job ticket, not the
// client, for what a connection may write or read, and it talks to the
// servers only over NATS (package wire): it never imports package server.
package storagenode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cairnbackup/cairn/wire"
)

// PoolConfig is a disk pool this node serves.
type PoolConfig struct {
	// Name of the pool in the catalog; pools are created when a node
	// first announces them.
	Name string `json:"name"`
	// Dir holds the pool's volume files.
	Dir string `json:"dir"`
	// MaxVolumeBytes is the size at which a volume is full and the job
	// moves to a new one; 0 means no limit.
	MaxVolumeBytes int64 `json:"max_volume_bytes"`
}

// Config of a storage node. Flags and the config file fill the same struct.
type Config struct {
	// ID names the node in the catalog and in NATS subjects.
	ID string `json:"id"`
	// DataDir holds the node's own state: its data-port certificate, the
	// used-ticket record and spill files of running sessions.
	DataDir string `json:"data_dir"`
	// NATSURL is where the node reaches the servers.
	NATSURL string `json:"nats_url"`
	// NATSAuth is the NATS connection's TLS and credential (empty: plain,
	// as to the embedded server of cairn dev).
	NATSAuth wire.NATSAuth `json:"nats_auth"`
	// DataAddr is the address the TLS data port listens on.
	DataAddr string `json:"data_addr"`
	// AdvertiseAddr is the address agents dial; the listening address
	// when empty.
	AdvertiseAddr string `json:"advertise_addr"`
	// Site places the node: backups prefer a node of their client's site.
	Site string `json:"site"`
	// Pools are the disk pools this node serves.
	Pools []PoolConfig `json:"pools"`
	// HeartbeatInterval is how often the node tells the servers it lives.
	HeartbeatInterval time.Duration `json:"heartbeat_interval"`
	// Workers is the number of compress-and-encrypt goroutines per stream.
	Workers int `json:"workers"`
	// ClockSkew is how far the servers' clock may be from this node's when
	// checking ticket times.
	ClockSkew time.Duration `json:"clock_skew"`
	// HelloTimeout bounds how long a connection may take to present its ticket.
	HelloTimeout time.Duration `json:"hello_timeout"`
	// ServerWait is how long a request to the servers is retried while
	// they elect a leader or a majority returns.
	ServerWait time.Duration `json:"server_wait"`
	// IdleTimeout ends a stream whose agent sent nothing for this long, so
	// a hung client cannot hold a volume forever.
	IdleTimeout time.Duration `json:"idle_timeout"`
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
		IdleTimeout:       5 * time.Minute,
		ServerWait:        time.Minute,
	}
}

// Validate names the first bad field and how to fix it.
func (c *Config) Validate() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("storage node id is empty: set --name"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data directory is empty: set --data"))
	}
	if c.NATSURL == "" {
		errs = append(errs, errors.New("NATS URL is empty: set --nats"))
	}
	if err := c.NATSAuth.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.DataAddr == "" {
		errs = append(errs, errors.New("data port address is empty: set --data-addr host:port"))
	}
	if len(c.Pools) == 0 {
		errs = append(errs, errors.New("no disk pool: add --pool NAME=DIR (and optionally :MAXSIZE)"))
	}
	seen := map[string]bool{}
	for _, p := range c.Pools {
		if seen[p.Name] {
			errs = append(errs, fmt.Errorf("pool %s is given twice", p.Name))
		}
		seen[p.Name] = true
		if !filepath.IsAbs(p.Dir) {
			errs = append(errs, fmt.Errorf("pool %s: directory %q is not absolute", p.Name, p.Dir))
		}
		if p.MaxVolumeBytes < 0 {
			errs = append(errs, fmt.Errorf("pool %s: maximum volume size is negative", p.Name))
		}
	}
	if c.HeartbeatInterval <= 0 {
		errs = append(errs, errors.New("heartbeat interval must be positive"))
	}
	if c.IdleTimeout < time.Second {
		errs = append(errs, errors.New("idle timeout must be at least 1s"))
	}
	if c.Workers < 1 {
		errs = append(errs, errors.New("workers must be at least 1"))
	}
	return errors.Join(errs...)
}
