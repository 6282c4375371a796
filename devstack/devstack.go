// Package devstack wires every role into one process: an embedded NATS
// server, a one-voter Raft group of one server, a storage node with a disk
// pool and an emulated tape library with a tape pool, and an agent. `cairn dev` and `cairn demo` run it, and in-process
// end-to-end tests stand it up. It composes the same code the separate
// processes run; nothing here is a second implementation.
//
// The stack is as closed to the machine's other users as a deployment is to
// its network: the embedded NATS server listens on 127.0.0.1 only and lets
// in no one without an nkey, each role has its own nkey user with its
// role's permissions (as 'cairn cert nats-config' writes them), and the
// seeds are in DIR/nats (mode 0700, each seed 0600) with the client file
// that tells the admin commands where the stack is and which seed to use.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnbackup/cairn/agent"
	"github.com/cairnbackup/cairn/internal/datadir"
	"github.com/cairnbackup/cairn/natsauth"
	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/server"
	"github.com/cairnbackup/cairn/storagenode"
	"github.com/cairnbackup/cairn/storagenode/library"
	"github.com/cairnbackup/cairn/wire"
)

// Config of an all-in-one stack.
type Config struct {
	// Dir holds all state: server/, node/, pool/.
	Dir string
	// NATSPort for the embedded NATS server; 0 picks a free port.
	NATSPort int
	// RaftAddr for the server; when empty, the transport binds a port of
	// 127.0.0.1 the kernel picks, and Start sets it to that address. Keep
	// it fixed for a stack that restarts on the same Dir.
	RaftAddr string
	// Client is the agent's client name.
	Client string
	// Pool is the disk pool's name; Default when empty.
	Pool string
	// MaxVolumeBytes is the pool's volume size; 0 means unlimited.
	MaxVolumeBytes int64
	// Workers per stream on the storage node; 2 when 0.
	Workers int
	// NoTape leaves the emulated tape library and the tape pool out.
	NoTape bool
	// TapePool is the tape pool's name; Weekly when empty.
	TapePool string
	// CartridgeBytes and EarlyWarningBytes size the emulated cartridges;
	// 4 GiB with a 256 MiB early warning zone when 0. The demo makes them
	// small so that a backup spans tapes.
	CartridgeBytes, EarlyWarningBytes int64
	// SpoolChunkBytes is the tape pool's disk spool chunk (DIR/spool); 64
	// MiB when 0, no spool when negative. Two chunks must fit the early
	// warning zone.
	SpoolChunkBytes int64
	// TapeVirtualClock makes the emulated drives' and robot's times free
	// (tests).
	TapeVirtualClock bool
	// MountPoll is how often a job waiting for a tape or a drive looks
	// again, and how often a backup waiting for a volume asks; 1s when 0.
	MountPoll time.Duration
	// S3Pools are more pools of the storage node, in S3 buckets (a
	// benchmark or a trial of an offsite store).
	S3Pools []storagenode.S3PoolConfig
	// Logger receives every role's log; discarded when nil.
	Logger *slog.Logger
	// Registry receives every role's metrics, each labelled with its role
	// (role="server", "storagenode", "agent"), since the roles of one
	// process export some of the same metrics (their NATS connection's);
	// none when nil.
	Registry prometheus.Registerer
}

// Stack is a running all-in-one system.
type Stack struct {
	NATS   *natsd.Server
	Server *server.Server
	Node   *storagenode.Node
	Agent  *agent.Agent
	Config Config
	// Admin is the stack's admin (a key admin): its name and its NATS
	// credential, which the admin commands use.
	Admin     string
	AdminAuth wire.NATSAuth

	lock *datadir.Lock // Config.Dir, held until Close
}

// The names of the stack's roles, as NATS users.
const (
	ServerName = "dev-server"
	NodeName   = "dev-node"
	AdminName  = "admin"
)

// Start starts every role and waits until the storage node and the agent
// have registered.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Pool == "" {
		cfg.Pool = "Default"
	}
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	if cfg.TapePool == "" {
		cfg.TapePool = "Weekly"
	}
	if cfg.CartridgeBytes == 0 {
		cfg.CartridgeBytes, cfg.EarlyWarningBytes = 4<<30, 256<<20
	}
	if cfg.SpoolChunkBytes == 0 {
		cfg.SpoolChunkBytes = 64 << 20
	}
	if cfg.MountPoll == 0 {
		cfg.MountPoll = time.Second
	}
	if cfg.Client == "" {
		return nil, errors.New("devstack: no client name")
	}
	// First of all: a second stack on the directory would take the NATS
	// port and write its client file over the first's before its server
	// found the catalog in use.
	lock, err := datadir.Acquire(cfg.Dir, "dev")
	if err != nil {
		return nil, err
	}
	st := &Stack{Config: cfg, lock: lock}
	ok := false
	defer func() {
		if !ok {
			st.Close()
		}
	}()
	users, err := credentials(cfg.Dir, cfg.Client)
	if err != nil {
		return nil, err
	}
	embedded := make([]natsd.User, len(users))
	for i, u := range users {
		embedded[i] = u.Embedded()
	}
	ns, err := natsd.Start(natsd.Config{Port: cfg.NATSPort, Users: embedded}, cfg.Logger)
	if err != nil {
		return nil, err
	}
	st.NATS = ns
	auth := func(kind, name string) wire.NATSAuth {
		return wire.NATSAuth{NkeyFile: filepath.Join(CredentialsDir(cfg.Dir), natsauth.SeedFileName(kind, name))}
	}
	st.Admin, st.AdminAuth = AdminName, auth(wire.KindAdmin, AdminName)
	if err := WriteClientFile(ClientFilePath(cfg.Dir), st.ClientFile()); err != nil {
		return nil, err
	}

	sc := server.DefaultConfig()
	sc.Name = ServerName
	sc.Bootstrap = true // the one server of its own group
	sc.DataDir = filepath.Join(cfg.Dir, "server")
	sc.NATSURL = ns.URL()
	sc.NATSAuth = auth(wire.KindServer, ServerName)
	sc.RaftAddr = cfg.RaftAddr
	if sc.RaftAddr == "" {
		// Bound at once: a port found free and bound later can be taken
		// meanwhile by any socket of the machine.
		sc.RaftAddr = "127.0.0.1:0"
	}
	sc.DefaultPool = cfg.Pool
	srv, err := server.New(sc, cfg.Logger, cfg.registry("server"))
	if err != nil {
		return nil, err
	}
	st.Server = srv
	st.Config.RaftAddr = srv.RaftAddr()
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := srv.WaitLeader(lctx); err != nil {
		return nil, fmt.Errorf("server did not become leader: %w", err)
	}
	if err := srv.Start(ctx); err != nil {
		return nil, err
	}

	nc := storagenode.DefaultConfig()
	nc.ID = NodeName
	nc.DataDir = filepath.Join(cfg.Dir, "node")
	nc.NATSURL = ns.URL()
	nc.NATSAuth = auth(wire.KindNode, NodeName)
	nc.DataAddr = "127.0.0.1:0"
	nc.Workers = cfg.Workers
	nc.Pools = []storagenode.PoolConfig{{Name: cfg.Pool, Dir: filepath.Join(cfg.Dir, "pool"), MaxVolumeBytes: cfg.MaxVolumeBytes}}
	if !cfg.NoTape {
		nc.Libraries = []library.Config{cfg.library()}
		tp := storagenode.TapePoolConfig{Name: cfg.TapePool, Library: Library}
		if cfg.SpoolChunkBytes >= 0 {
			tp.SpoolDir, tp.SpoolChunkBytes = filepath.Join(cfg.Dir, "spool"), cfg.SpoolChunkBytes
		}
		nc.TapePools = []storagenode.TapePoolConfig{tp}
		nc.VolumeWaitPoll = cfg.MountPoll
	}
	nc.S3Pools = cfg.S3Pools
	node, err := storagenode.New(nc, cfg.Logger, cfg.registry("storagenode"))
	if err != nil {
		return nil, err
	}
	st.Node = node
	if err := node.Start(ctx); err != nil {
		return nil, err
	}

	ac := agent.DefaultConfig()
	ac.Name = cfg.Client
	ac.NATSURL = ns.URL()
	ac.NATSAuth = auth(wire.KindAgent, cfg.Client)
	ag, err := agent.New(ac, cfg.Logger, cfg.registry("agent"))
	if err != nil {
		return nil, err
	}
	st.Agent = ag
	if err := ag.Start(ctx); err != nil {
		return nil, err
	}
	for !node.Registered() || !ag.Registered() {
		select {
		case <-lctx.Done():
			return nil, errors.New("storage node and agent did not register with the server within 30s")
		case <-time.After(20 * time.Millisecond):
		}
	}
	ok = true
	return st, nil
}

// registry is where one role's metrics go: Registry, with the role's label.
func (c *Config) registry(role string) prometheus.Registerer {
	if c.Registry == nil {
		return nil
	}
	return prometheus.WrapRegistererWith(prometheus.Labels{"role": role}, c.Registry)
}

// The emulated library of a stack: 2 drives, 24 slots, 2 mail slots and 20
// blank cartridges, barcodes CRN001L9 to CRN020L9, in slots 1 to 20.
const (
	Library       = "lib1"
	LibraryDrives = 2
	LibrarySlots  = 24
	LibraryMail   = 2
	Cartridges    = 20
)

// Barcode is the barcode of the stack's cartridge n (from 1).
func Barcode(n int) string { return fmt.Sprintf("CRN%03dL9", n) }

func (c *Config) library() library.Config {
	var barcodes []string
	for i := 1; i <= Cartridges; i++ {
		barcodes = append(barcodes, Barcode(i))
	}
	return library.Config{
		Name: Library, MountPoll: c.MountPoll,
		Emulated: &library.EmulatedConfig{
			Dir: filepath.Join(c.Dir, "library"), Drives: LibraryDrives, Slots: LibrarySlots, MailSlots: LibraryMail,
			Barcodes: barcodes, CartridgeBytes: c.CartridgeBytes, EarlyWarningBytes: c.EarlyWarningBytes,
			Profile: "fast", VirtualClock: c.TapeVirtualClock,
		},
	}
}

// Library is the stack's emulated library, nil with NoTape.
func (s *Stack) Library() *library.Manager {
	if s.Node == nil || s.Config.NoTape {
		return nil
	}
	return s.Node.Library(Library)
}

// URL is the NATS URL the admin commands use.
func (s *Stack) URL() string { return s.NATS.URL() }

// PoolDir is where the disk pool's volumes are.
func (s *Stack) PoolDir() string { return filepath.Join(s.Config.Dir, "pool") }

// Close stops the roles in the reverse order of their start.
func (s *Stack) Close() error {
	var errs []error
	if s.Agent != nil {
		errs = append(errs, s.Agent.Close())
	}
	if s.Node != nil {
		errs = append(errs, s.Node.Close())
	}
	if s.Server != nil {
		errs = append(errs, s.Server.Close())
	}
	if s.NATS != nil {
		s.NATS.Shutdown()
	}
	errs = append(errs, s.lock.Release())
	return errors.Join(errs...)
}
