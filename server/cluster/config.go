package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// Config is one server's place in the Raft group.
type Config struct {
	// ID names this server in the group; it must stay the same across
	// restarts and be unique in the group.
	ID string `json:"id"`
	// Dir holds raft.db (the Raft log and term/vote) and the snapshots.
	Dir string `json:"dir"`
	// BindAddr is the host:port the Raft transport listens on. Port 0 picks
	// a free port (tests).
	BindAddr string `json:"bind_addr"`
	// AdvertiseAddr is the host:port the other servers reach this one at;
	// empty means BindAddr, which must then be a concrete address.
	AdvertiseAddr string `json:"advertise_addr,omitempty"`
	// TLS, when set, runs the transport over mutual TLS (see pki.MutualTLS):
	// this server's certificate, and the group's CA in RootCAs and
	// ClientCAs. Nil is plain TCP, for one server or a demo on one host.
	TLS *tls.Config `json:"-"`
	// Bootstrap forms a one-voter group when Dir holds no Raft state yet.
	// Set it on the first server only; the others join with AddVoter.
	Bootstrap bool `json:"bootstrap,omitempty"`

	// SnapshotInterval is how often Raft checks whether a snapshot is due.
	SnapshotInterval time.Duration `json:"snapshot_interval"`
	// SnapshotThreshold is the number of log entries since the last
	// snapshot that makes one due. A snapshot copies the whole catalog, so
	// this trades snapshot work against the size of raft.db.
	SnapshotThreshold uint64 `json:"snapshot_threshold"`
	// TrailingLogs is how many entries stay in the log after a snapshot, so
	// that a briefly lagging follower catches up from the log instead of a
	// whole snapshot. Index segments make entries up to ~1 MiB each.
	TrailingLogs uint64 `json:"trailing_logs"`
	// SnapshotRetain is how many snapshots are kept in Dir.
	SnapshotRetain int `json:"snapshot_retain"`

	HeartbeatTimeout   time.Duration `json:"heartbeat_timeout"`
	ElectionTimeout    time.Duration `json:"election_timeout"`
	LeaderLeaseTimeout time.Duration `json:"leader_lease_timeout"`
	CommitTimeout      time.Duration `json:"commit_timeout"`

	// ApplyTimeout bounds how long Apply waits for a command to be accepted
	// by the leader's queue when the caller's context has no deadline.
	ApplyTimeout time.Duration `json:"apply_timeout"`
	// TransportTimeout bounds one Raft RPC's I/O.
	TransportTimeout time.Duration `json:"transport_timeout"`
	// MaxPool is the number of connections kept per peer.
	MaxPool int `json:"max_pool"`
	// CatalogFloor is the free space, in bytes, below which the catalog
	// stops applying commands (catalog.FSM.SetSpaceFloor) rather than run
	// into a full disk mid-commit, leaving Raft room for its own writes; 0
	// checks nothing.
	CatalogFloor int64 `json:"catalog_floor,omitempty"`
}

// DefaultConfig returns a Config with every default set; ID, Dir and
// BindAddr are left for the caller.
func DefaultConfig() Config {
	return Config{}.withDefaults()
}

// withDefaults fills the zero fields. It is the only place defaults live.
func (c Config) withDefaults() Config {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&c.SnapshotInterval, 2*time.Minute)
	set(&c.HeartbeatTimeout, time.Second)
	set(&c.ElectionTimeout, time.Second)
	set(&c.LeaderLeaseTimeout, 500*time.Millisecond)
	set(&c.CommitTimeout, 50*time.Millisecond)
	set(&c.ApplyTimeout, 10*time.Second)
	set(&c.TransportTimeout, 10*time.Second)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 4096
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 1024
	}
	if c.SnapshotRetain == 0 {
		c.SnapshotRetain = 2
	}
	if c.MaxPool == 0 {
		c.MaxPool = 3
	}
	return c
}

// Validate reports every bad field, naming it and the fix.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.ID == "" {
		bad("raft ID is empty: set the server's name")
	}
	if c.Dir == "" {
		bad("raft Dir is empty: set a directory for the Raft log and snapshots")
	}
	host, _, err := net.SplitHostPort(c.BindAddr)
	switch {
	case c.BindAddr == "":
		bad("raft BindAddr is empty: set host:port to listen on, e.g. 127.0.0.1:7010")
	case err != nil:
		bad("raft BindAddr %q is not host:port: %v", c.BindAddr, err)
	case c.AdvertiseAddr == "" && (host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified()):
		bad("raft BindAddr %q listens on every interface: set AdvertiseAddr to the host:port other servers reach this one at", c.BindAddr)
	}
	if c.AdvertiseAddr != "" {
		if h, p, err := net.SplitHostPort(c.AdvertiseAddr); err != nil || h == "" || p == "0" {
			bad("raft AdvertiseAddr %q is not a reachable host:port", c.AdvertiseAddr)
		}
	}
	if c.HeartbeatTimeout < 5*time.Millisecond {
		bad("raft HeartbeatTimeout %s is too short: use at least 5ms (1s on real networks)", c.HeartbeatTimeout)
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		bad("raft ElectionTimeout %s is shorter than HeartbeatTimeout %s: make it at least as long", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.LeaderLeaseTimeout <= 0 || c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		bad("raft LeaderLeaseTimeout %s must be positive and at most HeartbeatTimeout %s", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.CommitTimeout <= 0 {
		bad("raft CommitTimeout %s must be positive", c.CommitTimeout)
	}
	if c.SnapshotInterval < 5*time.Millisecond {
		bad("raft SnapshotInterval %s is too short: use at least 5ms (minutes in production)", c.SnapshotInterval)
	}
	if c.SnapshotThreshold == 0 {
		bad("raft SnapshotThreshold is 0: set the number of log entries that makes a snapshot due")
	}
	if c.SnapshotRetain < 1 {
		bad("raft SnapshotRetain %d: keep at least 1 snapshot", c.SnapshotRetain)
	}
	if c.ApplyTimeout <= 0 || c.TransportTimeout <= 0 {
		bad("raft ApplyTimeout and TransportTimeout must be positive")
	}
	if c.MaxPool < 1 {
		bad("raft MaxPool %d: keep at least 1 connection per peer", c.MaxPool)
	}
	return errors.Join(errs...)
}
