package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cairnbackup/cairn/agent"
	"github.com/cairnbackup/cairn/devstack"
	"github.com/cairnbackup/cairn/internal/configfile"
	"github.com/cairnbackup/cairn/pki"
	"github.com/cairnbackup/cairn/server"
	"github.com/cairnbackup/cairn/storagenode"
	"github.com/cairnbackup/cairn/wire"
)

// roleOpts are the options every long-running role has.
type roleOpts struct {
	config string
	// roleFields are bound to the flags, and the config file fills them
	// too.
	roleFields
	level slog.LevelVar
	// levelFlag is whether --log-level was given, which wins over the file.
	levelFlag bool
	// memDefault is the role's default memory_limit.
	memDefault int64
}

func (o *roleOpts) bind(f *pflag.FlagSet, defMetrics string, defMemory int64) {
	f.StringVar(&o.config, "config", "", "config file: JSON with // comment lines, whose fields are these flags' names with _ for - "+
		"('cairn config example' writes one, 'cairn config check' checks one); flags given on the command line override it")
	f.StringVar(&o.MetricsAddr, "metrics-addr", defMetrics, "serve Prometheus metrics on this address (/metrics); empty to disable")
	f.StringVar(&o.LogLevel, "log-level", defaultLogLevel, "debug, info, warn or error (or log_level in the config file; SIGHUP reads the file's again)")
	f.StringVar(&o.LogFormat, "log-format", "text", logFormatUsage)
	o.MemoryLimit, o.memDefault = defMemory, defMemory
	f.Var((*sizeValue)(&o.MemoryLimit), "memory-limit", "soft limit of the memory the process's Go runtime holds, e.g. 96M: the garbage collector runs sooner as it nears it (0: none; GOMEMLIMIT wins over the default)")
}

// The roles' default soft memory limits. A restore or backup stream holds
// a few megabytes of buffers that it allocates and drops block after
// block, so with the collector's usual goal (twice the live heap) about
// half of a busy role's resident memory is garbage waiting for the next
// collection. The agent runs on every client, beside the client's own
// work, and keeps little live: it gets a limit. The storage node's live
// heap grows with its streams and the server's with its catalog, so a
// fixed default there would only cost CPU; an operator sets theirs.
// cairn dev, every role in one process, gets a limit that keeps its
// stack (and the CLI beside it) within issue 14's 150 MB on the bench's
// restore (bench/README.md, "Restore: memory and cores"). Its restore
// holds some 56-60 MB live (the node's blocks, the agent's frames and
// file workers, the zstd state a backup left): under 72M the collector
// ran every few megabytes, about a hundred times a restore of the bench
// tree right after its backup, where 80M leaves it room (bench/memlimit.sh;
// bench/README.md, "cairn dev's memory limit").
const (
	agentMemoryLimit = 64 << 20
	devMemoryLimit   = 80 << 20
)

// applyMemoryLimit sets the process's soft memory limit from
// --memory-limit or memory_limit. The role's default gives way to
// GOMEMLIMIT, which the runtime has already applied.
func (o *roleOpts) applyMemoryLimit(log *slog.Logger) {
	if o.MemoryLimit == o.memDefault && os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	switch {
	case o.MemoryLimit > 0:
		debug.SetMemoryLimit(o.MemoryLimit)
		log.Debug("soft memory limit set", "bytes", o.MemoryLimit)
	case o.MemoryLimit == 0 && o.memDefault != 0:
		// 0 given over a role's default is "none", GOMEMLIMIT's too.
		debug.SetMemoryLimit(math.MaxInt64)
	}
}

// logger makes the role's logger at the level of --log-level, or of the
// config file's log_level when the flag is not given; reloadLevel changes
// it while the role runs.
func (o *roleOpts) logger(w io.Writer) (*slog.Logger, error) {
	if err := o.level.UnmarshalText([]byte(o.LogLevel)); err != nil {
		what := "--log-level"
		if !o.levelFlag && o.config != "" {
			what = "log_level in " + o.config + " (or --log-level)"
		}
		return nil, &usageError{fmt.Errorf("%s %q: use debug, info, warn or error", what, o.LogLevel)}
	}
	h, err := newLogHandler(w, o.LogFormat, &slog.HandlerOptions{Level: &o.level})
	if err != nil {
		return nil, err
	}
	return slog.New(h), nil
}

// reloadLevel reads the config file's log_level again (SIGHUP): the level
// becomes the file's, or the default when the file has none, unless
// --log-level was given. It says so before the new level applies, so that
// a level above info still reports what it became.
func (o *roleOpts) reloadLevel(log *slog.Logger) {
	fileLevel := ""
	if o.config != "" {
		lvl, err := readLogLevel(o.config)
		if err != nil {
			log.Error("log level not reloaded", "err", err)
			return
		}
		fileLevel = lvl
	}
	name := o.LogLevel
	if !o.levelFlag {
		name = cmp.Or(fileLevel, defaultLogLevel)
	}
	var now slog.Level
	if err := now.UnmarshalText([]byte(name)); err != nil {
		log.Error("log level not reloaded", "err", fmt.Errorf("log_level %q in %s: use debug, info, warn or error", name, o.config))
		return
	}
	was := o.level.Level()
	if o.levelFlag && fileLevel != "" {
		log.Info("reloaded", "what", "log level "+now.String()+" (--log-level, which wins over the config file's log_level)")
	} else {
		log.Info("reloaded", "what", "log level "+now.String(), "was", was.String())
	}
	o.LogLevel = name
	o.level.Set(now)
}

// serveMetrics serves reg on addr until ctx ends.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger) (bound string, err error) {
	if addr == "" {
		return "", nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("metrics address %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	log.Info("serving metrics", "addr", "http://"+ln.Addr().String()+"/metrics")
	return ln.Addr().String(), nil
}

// servePprof serves net/http/pprof on addr until ctx ends, for profiling a
// running process (go tool pprof http://ADDR/debug/pprof/profile).
func servePprof(ctx context.Context, addr string, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("pprof address %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("pprof server", "err", err)
		}
	}()
	log.Info("serving pprof", "addr", "http://"+ln.Addr().String()+"/debug/pprof/")
	return nil
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// role is a long-running role's lifecycle.
type role interface {
	Start(context.Context) error
	Close() error
	// Reload reads again what can change while the role runs (SIGHUP):
	// the certificates. It logs what it reloaded and what waits for a
	// restart.
	Reload(context.Context) error
	// LoadedCerts are the certificates the role presents and trusts now,
	// for their expiry metric and warnings.
	LoadedCerts() []pki.LoadedCert
}

// drainer is a role that winds down before it stops (SIGTERM): it stops
// taking new work and lets what runs finish or hands it back, until ctx
// ends.
type drainer interface {
	Drain(ctx context.Context)
}

// runRole fills a role's config from its file and flags, builds the role,
// runs it with its metrics endpoint until the command's context ends.
// natsURL and natsAuth point at the config's NATS fields, which the global
// --nats and --nats-* flags (or CAIRN_NATS*) set unless the config file does.
//
// Signals: SIGHUP reloads (the log level, then the role's certificates) and
// never stops the role, so a logrotate hook cannot take it down. The first
// SIGTERM or SIGINT ends the command's context: the role drains for up to
// drainTimeout (0: it needs no time), and a second signal cuts the drain
// short; then it closes and the command exits 0.
func runRole(cmd *cobra.Command, g *globals, ro *roleOpts, cfg any, natsURL *string, natsAuth *wire.NATSAuth, drainTimeout func() time.Duration, build func(*slog.Logger, prometheus.Registerer) (role, error)) error {
	// Caught before anything else: SIGHUP's default action is to exit.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	stops := make(chan os.Signal, 4)
	signal.Notify(stops, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(stops)

	*natsURL = g.natsURL
	*natsAuth = g.natsAuth
	warns, err := loadConfig(cmd, ro.config, cfg, &ro.roleFields)
	if err != nil {
		return err
	}
	ro.levelFlag = cmd.Flags().Changed("log-level")
	if cmd.Flags().Changed("nats") {
		*natsURL = g.natsURL
	}
	g.applyNATSFlags(cmd, natsAuth)
	log, err := ro.logger(g.errOut)
	if err != nil {
		return err
	}
	logConfigWarnings(log, ro.config, warns)
	ro.applyMemoryLimit(log)
	ctx := cmd.Context()
	reg := newRegistry()
	r, err := build(log, reg)
	if err != nil {
		return err
	}
	defer r.Close()
	// The role runs until it has drained, not until the first signal: its
	// streams and requests must outlive the command's context.
	roleCtx, stopRole := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRole()
	if err := r.Start(roleCtx); err != nil {
		return err
	}
	// Every certificate the role uses, in the metrics and, a month before
	// it expires, in the log: at start, twice a day and after a reload.
	certs := &pki.ExpiryWatch{Log: log}
	certs.Add(r.LoadedCerts)
	reg.MustRegister(certs)
	go certs.Run(roleCtx, 0)
	if _, err := serveMetrics(roleCtx, ro.MetricsAddr, reg, log); err != nil {
		return err
	}
	for running := true; running; {
		select {
		case <-hup:
			log.Info("SIGHUP: reloading the log level and certificates")
			ro.reloadLevel(log)
			_ = r.Reload(roleCtx) // it logs what failed; the role goes on with what it had
			certs.Check()
		case <-ctx.Done():
			running = false
		}
	}
	if d, ok := r.(drainer); ok {
		timeout := time.Duration(0)
		if drainTimeout != nil {
			timeout = drainTimeout()
		}
		dctx, cancel := context.WithTimeout(roleCtx, timeout)
		// The signal that ended ctx is in stops too: a second one cuts
		// the drain short.
		go func() {
			seen := 0
			for {
				select {
				case <-dctx.Done():
					return
				case sig := <-stops:
					if seen++; seen >= 2 {
						log.Warn("second signal: cutting the drain short", "signal", sig.String())
						cancel()
						return
					}
				}
			}
		}()
		d.Drain(dctx)
		cancel()
	}
	log.Info("stopping")
	return nil
}

// logConfigWarnings logs what a config file says that still works but
// should change (an older field name, a bare number of nanoseconds).
func logConfigWarnings(log *slog.Logger, path string, warns []configfile.Warning) {
	for _, w := range warns {
		log.Warn("config file: "+w.String(), "file", path)
	}
}

// serverDrainTimeout bounds a stopping leader's leadership transfer.
const serverDrainTimeout = 10 * time.Second

// agentHandBackTimeout bounds a stopping agent's reports of the jobs it
// hands back.
const agentHandBackTimeout = 15 * time.Second

// configError is a role configuration that cannot run, said with what to
// do about it, as every error the CLI prints is.
func configError(cmd *cobra.Command, role string, err error) error {
	return wire.Errorf(wire.CodeInvalidArgument,
		fmt.Sprintf("correct the flag or config file field named (a field is its flag's name with _ for -); see '%s --help', and 'cairn config check FILE'", cmd.CommandPath()),
		"%s config: %w", role, err)
}

func newServerCmd(g *globals) *cobra.Command {
	cfg := server.DefaultConfig()
	var ro roleOpts
	c := &cobra.Command{
		Use:   "server",
		Short: "Run a backup server: a Raft member holding the catalog, the admin API and, on the leader, the job dispatcher",
		Long: `Run a backup server: a member of a Raft group that holds the catalog.

A server never forms a group unless told to. The first server of a new group
starts with --bootstrap; every other one starts without it, with the group's
secrets file, and waits, answering nobody, until 'cairn cluster join' adds it:

  cairn cluster init --out secrets.json              # once per group
  cairn server --name s1 --raft-addr 10.0.0.1:7010 --secrets secrets.json --bootstrap ...
  cairn server --name s2 --raft-addr 10.0.0.2:7010 --secrets secrets.json ...
  cairn cluster join --name s2 --raft-addr 10.0.0.2:7010

A data directory that already belongs to a group ignores --bootstrap, so the
flag may stay in s1's unit file.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRole(cmd, g, &ro, &cfg, &cfg.NATSURL, &cfg.NATSAuth, func() time.Duration { return serverDrainTimeout }, func(log *slog.Logger, reg prometheus.Registerer) (role, error) {
				if err := cfg.Validate(); err != nil {
					return nil, configError(cmd, "server", err)
				}
				return server.New(cfg, log, reg)
			})
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.Name, "name", cfg.Name, "server name in the Raft group")
	f.StringVar(&cfg.DataDir, "data", "", "directory for the catalog, Raft log and keys")
	f.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "address of the Raft transport")
	f.BoolVar(&cfg.Bootstrap, "bootstrap", cfg.Bootstrap, "form a NEW group with this server as its one voter, when the data directory is new: for the first server of a group only; without it a new server waits, answering nobody, until 'cairn cluster join' adds it")
	f.StringVar(&cfg.RaftTLS.CA, "tls-ca", "", "CA certificate of the group: Raft runs over mutual TLS with --tls-cert and --tls-key")
	f.StringVar(&cfg.RaftTLS.Cert, "tls-cert", "", "this server's certificate ('cairn cert issue --client --server', naming the --raft-addr host)")
	f.StringVar(&cfg.RaftTLS.Key, "tls-key", "", "key of --tls-cert")
	f.StringVar(&cfg.SecretsFile, "secrets", "", "the group's secrets file ('cairn cluster init'): KEK and ticket signing key every server shares")
	f.StringVar(&cfg.KEKFile, "kek-file", "", "the key-encryption key (32 bytes), kept outside --data so that a copy of the data directory opens no data key "+
		"(default: the systemd credential "+server.KEKCredential+" when the service has one, else DATA/kek)")
	f.BoolVar(&cfg.InsecureRaft, "insecure-raft", false, "allow plain, unauthenticated Raft on a --raft-addr other machines reach (refused without it unless --tls-* are given)")
	f.DurationVar(&cfg.TicketTTL, "ticket-ttl", cfg.TicketTTL, "how long a job ticket is good for: the agent must reach the storage node within it")
	f.DurationVar(&cfg.LivenessTimeout, "liveness-timeout", cfg.LivenessTimeout, "a node or agent silent this long is offline")
	f.DurationVar(&cfg.StallTimeout, "stall-timeout", cfg.StallTimeout, "a running job that reports nothing this long fails, though its node and agent are alive")
	f.DurationVar(&cfg.QueueTimeout, "queue-timeout", cfg.QueueTimeout, "a job waiting this long for its agent or a storage node fails")
	f.StringVar(&cfg.DefaultPool, "default-pool", cfg.DefaultPool, "pool for backups that name none")
	f.Uint64Var(&cfg.RaftSnapshotThreshold, "raft-snapshot-threshold", 0, "log entries since the last snapshot that make Raft snapshot the catalog (0: 4096)")
	f.Uint64Var(&cfg.RaftTrailingLogs, "raft-trailing-logs", 0, "log entries a compaction keeps behind a snapshot (0: 1024)")
	f.DurationVar(&cfg.RaftSnapshotInterval, "raft-snapshot-interval", 0, "how often Raft checks whether a snapshot is due (0: 2m)")
	f.Var((*sizeValue)(&cfg.MinFreeBytes), "min-free", "below this much free space for the catalog or the Raft log, start no new backup, restore or label (512M, 1G; 0: no check)")
	f.Var((*sizeValue)(&cfg.CatalogFloorBytes), "catalog-floor", "below this much free space the catalog stops applying the log until there is room (keep it under --min-free)")
	f.DurationVar(&cfg.ExpiryInterval, "expiry-interval", cfg.ExpiryInterval, "how often the leader expires what retention no longer keeps, and deletes the disk volumes it emptied")
	f.DurationVar(&cfg.StartConfirmTimeout, "start-confirm-timeout", cfg.StartConfirmTimeout, "a job whose start was not confirmed to its caller this long is voided, never run (longer than a client retries a lost answer)")
	f.DurationVar(&cfg.RequestIDTTL, "request-id-ttl", cfg.RequestIDTTL, "how long a request id is remembered, so that a repeat of the request answers what the first did")
	f.IntVar(&cfg.MaxJobsPerClient, "max-jobs-per-client", cfg.MaxJobsPerClient, "backups running at once on one client; more wait in the queue (0: no limit)")
	f.IntVar(&cfg.MaxJobsPerNode, "max-jobs-per-node", cfg.MaxJobsPerNode, "jobs running at once on one storage node (0: no limit)")
	f.IntVar(&cfg.MaxJobsPerDrive, "max-jobs-per-drive", cfg.MaxJobsPerDrive, "tape backups running at once per drive of a library; more wait in the queue (0: the storage node has them wait for a drive)")
	f.DurationVar(&cfg.RunHistory, "run-history", cfg.RunHistory, "how long the policies' runs are kept for 'cairn job runs' (0: for ever)")
	f.DurationVar(&cfg.JobHistory, "job-history", cfg.JobHistory, "how long an ended job without a backup in the catalog is kept for 'cairn job list' (0: for ever)")
	f.DurationVar(&cfg.ScheduleTick, "schedule-tick", cfg.ScheduleTick, "how often the leader looks for scheduled runs that fell due")
	ro.bind(f, "127.0.0.1:9464", 0)
	return c
}

// poolUsage says what --pool takes.
const poolUsage = "disk pool NAME=DIR[,volume-size=SIZE]: volumes are files in DIR, each full at SIZE (e.g. 50G; " +
	"no limit when left out) and the pool as large as the disk; repeat for several"

// parsePool reads a --pool: NAME=DIR[,volume-size=SIZE]. The older form
// NAME=DIR:SIZE still reads, with a warning, since its SIZE looks like the
// pool's when it caps each volume file.
func parsePool(s string) (p storagenode.PoolConfig, warning string, err error) {
	usage := func(format string, args ...any) error {
		return &usageError{fmt.Errorf("--pool %q: "+format+"; use NAME=DIR or NAME=DIR,volume-size=SIZE (e.g. Default=/srv/cairn/pool,volume-size=50G)", append([]any{s}, args...)...)}
	}
	name, rest, ok := strings.Cut(s, "=")
	if !ok || name == "" || rest == "" {
		return p, "", usage("no NAME=DIR")
	}
	parts := strings.Split(rest, ",")
	p = storagenode.PoolConfig{Name: name, Dir: parts[0]}
	for _, opt := range parts[1:] {
		k, v, _ := strings.Cut(opt, "=")
		switch k {
		case "volume-size":
			n, err := configfile.ParseSize(v)
			if err != nil {
				return p, "", usage("volume-size: %v", err)
			}
			p.MaxVolumeBytes = n
		default:
			return p, "", usage("%q is no option of a pool (volume-size is)", opt)
		}
	}
	if i := strings.LastIndex(p.Dir, ":"); i > 0 && len(parts) == 1 {
		if size, err := configfile.ParseSize(p.Dir[i+1:]); err == nil {
			p.Dir, p.MaxVolumeBytes = p.Dir[:i], size
			warning = fmt.Sprintf("--pool %s: NAME=DIR:SIZE is deprecated, since SIZE caps each volume file and not the pool: write --pool %s=%s,volume-size=%s",
				s, name, p.Dir, configfile.FormatSize(size))
		}
	}
	if p.Dir == "" {
		return p, "", usage("no DIR")
	}
	abs, err := filepath.Abs(p.Dir)
	if err != nil {
		return p, "", err
	}
	p.Dir = abs
	return p, warning, nil
}

func newStorageNodeCmd(g *globals) *cobra.Command {
	cfg := storagenode.DefaultConfig()
	var ro roleOpts
	var pools []string
	c := &cobra.Command{
		Use:   "storagenode",
		Short: "Run a storage node: disk pools and the data port agents stream to",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRole(cmd, g, &ro, &cfg, &cfg.NATSURL, &cfg.NATSAuth, func() time.Duration { return cfg.DrainTimeout }, func(log *slog.Logger, reg prometheus.Registerer) (role, error) {
				for _, s := range pools {
					p, warning, err := parsePool(s)
					if err != nil {
						return nil, err
					}
					if warning != "" {
						log.Warn(warning)
					}
					cfg.Pools = append(cfg.Pools, p)
				}
				if err := cfg.Validate(); err != nil {
					return nil, configError(cmd, "storage node", err)
				}
				return storagenode.New(cfg, log, reg)
			})
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.ID, "name", cfg.ID, "storage node name")
	f.StringVar(&cfg.DataDir, "data", "", "directory for the node's own state")
	f.StringVar(&cfg.DataAddr, "data-addr", cfg.DataAddr, "address of the TLS data port")
	f.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "data port address agents dial (the listening address when empty)")
	f.StringVar(&cfg.Site, "site", "", "the node's site: backups prefer a node of their client's site")
	f.StringVar(&cfg.Group, "group", "", groupUsage)
	f.StringArrayVar(&pools, "pool", nil, poolUsage+" (tape pools and libraries are set in the config file: 'cairn config example --role storagenode')")
	f.IntVar(&cfg.Workers, "workers", cfg.Workers, "compress-and-encrypt goroutines per stream")
	f.DurationVar(&cfg.VolumeWaitPoll, "volume-wait-poll", cfg.VolumeWaitPoll, "how often a backup that found no volume to write asks the servers again")
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", cfg.HeartbeatInterval, "how often the node tells the servers it lives")
	f.DurationVar(&cfg.ClockSkew, "clock-skew", cfg.ClockSkew, "how far the servers' clock may be from this node's when it checks a ticket's times")
	f.DurationVar(&cfg.HelloTimeout, "hello-timeout", cfg.HelloTimeout, "how long a connection to the data port may take to present its ticket")
	f.IntVar(&cfg.MaxPendingConns, "max-pending-conns", cfg.MaxPendingConns, "data port connections that have not shown a ticket yet, at most; past it new ones wait")
	f.IntVar(&cfg.MaxPendingPerHost, "max-pending-per-host", cfg.MaxPendingPerHost, "data port connections of one address that have not shown a ticket yet, at most; past it new ones are closed")
	f.DurationVar(&cfg.ServerWait, "server-wait", cfg.ServerWait, "how long a request to the servers is retried while they elect a leader")
	f.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "a stream whose agent sends nothing this long ends")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "on SIGTERM, how long running sessions may go on before they are handed back to the servers (a second SIGTERM cuts it short)")
	ro.bind(f, "127.0.0.1:9465", 0)
	return c
}

// groupUsage is the --group of a storage node and an agent.
const groupUsage = "id of the group of servers this role belongs to ('cairn cluster status' shows it); " +
	"default: learned from the first registration, which servers refuse while several groups share the NATS"

func newAgentCmd(g *globals) *cobra.Command {
	cfg := agent.DefaultConfig()
	var ro roleOpts
	c := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent of a client: backs up and restores its files",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRole(cmd, g, &ro, &cfg, &cfg.NATSURL, &cfg.NATSAuth, func() time.Duration { return agentHandBackTimeout }, func(log *slog.Logger, reg prometheus.Registerer) (role, error) {
				if err := cfg.Validate(); err != nil {
					return nil, configError(cmd, "agent", err)
				}
				cfg.ConfigFile = ro.config
				return agent.New(cfg, log, reg)
			})
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.Name, "name", cfg.Name, "client name")
	f.StringVar(&cfg.Site, "site", "", "the client's site: backups prefer a storage node of the same site")
	f.StringArrayVar(&cfg.Labels, "label", nil, "a label of the client, KEY=VALUE (role=db), by which policies select it; repeat for several")
	f.StringVar(&cfg.Group, "group", "", groupUsage)
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", cfg.HeartbeatInterval, "how often the agent tells the servers it lives")
	f.DurationVar(&cfg.ProgressInterval, "progress-interval", cfg.ProgressInterval, "how often a running job reports its progress")
	f.Var((*sizeValue)(&cfg.MaxBytesPerSecond), "max-bytes-per-second", "cap the rate a backup streams at, in bytes per second (e.g. 20M); 0 is no cap")
	f.DurationVar(&cfg.DataTimeout, "data-timeout", cfg.DataTimeout, "a storage node's data port that takes nothing and sends nothing (not even a keepalive) this long fails the job")
	f.StringArrayVar(&cfg.AllowedCommandDirs, "allowed-command-dirs", nil, "directory whose programs a backup may run on this client (application steps, command sources); repeat for several; none by default")
	f.StringArrayVar(&cfg.AllowedCommands, "allowed-commands", nil, "exact command line a backup may run on this client; repeat for several")
	f.BoolVar(&cfg.AllowShellCommands, "allow-shell-commands", false, "run a command that --allowed-commands lists verbatim with /bin/sh -c (pipes, redirections); otherwise no shell runs")
	f.StringVar(&cfg.SpoolDir, "spool-dir", "", "directory that holds a command source's output while its command runs (empty: $TMPDIR or /tmp)")
	ro.bind(f, "127.0.0.1:9466", agentMemoryLimit)
	return c
}

// devConfig is what 'cairn dev' is told, by its flags or its config file.
type devConfig struct {
	// Data holds all the stack's state, kept across restarts: the
	// catalog, the disk pool, the emulated tape library, the NATS
	// credentials.
	Data string `json:"data"`
	// NATSPort is the port of the embedded NATS server, which listens on
	// 127.0.0.1 only.
	NATSPort int `json:"nats_port"`
	// RaftAddr is the address of the server's Raft transport.
	RaftAddr string `json:"raft_addr"`
	// Client is the client name of the local agent.
	Client string `json:"client" config:"default=this host's name"`
	// MaxVolumeSize is the size at which a volume of the disk pool is
	// full ("4G"); 0 is no limit.
	MaxVolumeSize int64 `json:"max_volume_size" config:"size"`
	// PprofAddr serves net/http/pprof on this address (/debug/pprof/),
	// for profiling; empty serves none.
	PprofAddr string `json:"pprof_addr"`
	// S3Pools are more pools of the storage node, in S3 buckets, as in a
	// storage node's config (a trial of an offsite store, bench/s3.sh).
	S3Pools []storagenode.S3PoolConfig `json:"s3_pools" config:"fileonly"`
}

// defaultDevConfig is cairn dev's defaults.
func defaultDevConfig() devConfig {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	return devConfig{NATSPort: 4222, RaftAddr: "127.0.0.1:7010", Client: sanitizeName(host)}
}

func newDevCmd(g *globals) *cobra.Command {
	ro := roleOpts{}
	dc := defaultDevConfig()
	c := &cobra.Command{
		Use:   "dev --data DIR",
		Short: "Run the whole system in one process, keeping its state in DIR",
		Long: `Run the whole system in one process until Ctrl-C: an embedded NATS server,
one server (a one-voter Raft group), a storage node with the disk pool
Default in DIR/pool and an emulated tape library lib1 (2 drives, 24 slots,
2 mail slots, 20 blank barcoded tapes in DIR/library) with the tape pool
Weekly, and an agent for this host. State stays in DIR across restarts. In
another terminal, the admin commands talk to it.

It takes 127.0.0.1:4222 (NATS, --nats-port), 127.0.0.1:7010 (Raft,
--raft-addr), 127.0.0.1:9464 (metrics, --metrics-addr) and a free loopback
port for the storage node's data port, and prints them; a second instance on
the machine needs other ports for the first three, and its banner says how
to reach it (CAIRN_NATS and CAIRN_NATS_NKEY).

The embedded NATS server listens on 127.0.0.1 only and lets in no one
without a credential: each role has its own nkey user with its role's
permissions, as in a secured deployment, and the seeds are in DIR/nats
(mode 0700). So another user of this machine cannot drive the stack, whose
agent runs as you and restores wherever it is told.

The admin commands of the user who started it need no flags: 'cairn dev'
writes a client file (the NATS URL and the admin's seed, mode 0600) to
DIR/nats/client.json and to
  /run/cairn/dev.json                    when run as root
  $XDG_CONFIG_HOME/cairn/dev.json        otherwise (~/.config/cairn/dev.json)
  $CAIRN_DEV_FILE                        when set (for the admin commands too)
and the admin commands read it when given no --nats-nkey (nor --nats, or
--nats with the same URL). Anyone else needs the admin's seed:
  cairn --nats nats://127.0.0.1:4222 --nats-nkey DIR/nats/admin-admin.nk status`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// SIGHUP's default action is to exit: cairn dev reloads its log
			// level instead, like every role.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			warns, err := loadConfig(cmd, ro.config, &dc, &ro.roleFields)
			if err != nil {
				return err
			}
			ro.levelFlag = cmd.Flags().Changed("log-level")
			if dc.Data == "" {
				return &usageError{fmt.Errorf("pass --data DIR (it keeps the catalog and volumes across restarts)")}
			}
			abs, err := filepath.Abs(dc.Data)
			if err != nil {
				return err
			}
			log, err := ro.logger(g.errOut)
			if err != nil {
				return err
			}
			logConfigWarnings(log, ro.config, warns)
			ro.applyMemoryLimit(log)
			ctx := cmd.Context()
			reg := newRegistry()
			st, err := devstack.Start(ctx, devstack.Config{
				Dir: abs, NATSPort: dc.NATSPort, RaftAddr: dc.RaftAddr, Client: dc.Client,
				MaxVolumeBytes: dc.MaxVolumeSize, S3Pools: dc.S3Pools, Logger: log, Registry: reg,
			})
			if err != nil {
				return err
			}
			defer st.Close()
			metricsAddr, err := serveMetrics(ctx, ro.MetricsAddr, reg, log)
			if err != nil {
				return err
			}
			if err := servePprof(ctx, dc.PprofAddr, log); err != nil {
				return err
			}
			clientFile := publishDevClientFile(st, log)
			if clientFile != "" {
				defer withdrawDevClientFile(clientFile, st)
			}
			printDevBanner(g.out, st, clientFile, metricsAddr, dc.PprofAddr)
			for running := true; running; {
				select {
				case <-hup:
					ro.reloadLevel(log)
				case <-ctx.Done():
					running = false
				}
			}
			fmt.Fprintln(g.out, "stopping")
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&dc.Data, "data", "", "directory for all state")
	f.IntVar(&dc.NATSPort, "nats-port", dc.NATSPort, "port of the embedded NATS server on 127.0.0.1")
	f.StringVar(&dc.RaftAddr, "raft-addr", dc.RaftAddr, "address of the server's Raft transport")
	f.StringVar(&dc.Client, "client", dc.Client, "client name of the local agent")
	f.Var((*sizeValue)(&dc.MaxVolumeSize), "max-volume-size", "size at which a volume is full, e.g. 4G (0: no limit)")
	f.StringVar(&dc.PprofAddr, "pprof-addr", "", "serve net/http/pprof on this address (/debug/pprof/), for profiling; empty to disable")
	ro.bind(f, "127.0.0.1:9464", devMemoryLimit)
	return c
}

// publishDevClientFile writes the stack's client file where this user's
// admin commands look for it (devClientFile) and returns where; empty, with
// a warning, when it cannot.
func publishDevClientFile(st *devstack.Stack, log *slog.Logger) string {
	path := devClientFile()
	if path == "" {
		log.Warn("no place for the client file of the admin commands (no home directory?): pass them --nats-nkey", "nkey", st.AdminAuth.NkeyFile)
		return ""
	}
	if err := devstack.WriteClientFile(path, st.ClientFile()); err != nil {
		log.Warn("cannot write the client file of the admin commands: pass them --nats-nkey", "err", err, "nkey", st.AdminAuth.NkeyFile)
		return ""
	}
	return path
}

// withdrawDevClientFile removes the client file at path if it still names
// this stack, so that no admin command is sent to a stack that is gone (a
// stack started since keeps its own).
func withdrawDevClientFile(path string, st *devstack.Stack) {
	if f, err := devstack.ReadClientFile(path); err == nil && f == st.ClientFile() {
		_ = os.Remove(path)
	}
}

// printDevBanner says what runs, which ports it took (those bound on port
// 0 as bound), and how another terminal reaches it.
func printDevBanner(w io.Writer, st *devstack.Stack, clientFile, metricsAddr, pprofAddr string) {
	fmt.Fprintf(w, "cairn dev is running: client %s, pool Default in %s\n", st.Config.Client, st.PoolDir())
	fmt.Fprintf(w, "tape library %s: %d drives, %d slots, %d mail slots, tapes %s to %s; tape pool %s\n",
		devstack.Library, devstack.LibraryDrives, devstack.LibrarySlots, devstack.LibraryMail,
		devstack.Barcode(1), devstack.Barcode(devstack.Cartridges), st.Config.TapePool)
	ports := fmt.Sprintf("ports: NATS %s (127.0.0.1 only, nkey users only), Raft %s, data port %s", st.URL(), st.Config.RaftAddr, st.Node.DataAddr())
	if metricsAddr != "" {
		ports += ", metrics http://" + metricsAddr + "/metrics"
	}
	if pprofAddr != "" {
		ports += ", pprof http://" + pprofAddr + "/debug/pprof/"
	}
	fmt.Fprintln(w, ports)
	who := "you"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	if clientFile != "" && clientFile == defaultDevClientFile() && st.URL() == defaultNATSURL {
		fmt.Fprintf(w, "from another terminal, as %s: cairn status (the admin commands find the credentials in %s)\n", who, clientFile)
	} else {
		// A new terminal's admin commands given no flag read the client
		// file at its default place, which names whichever 'cairn dev'
		// wrote it last (or go to the default port when there is none):
		// the URL and the seed name this one.
		why := "it is not on the default port"
		if clientFile != "" && clientFile != defaultDevClientFile() {
			why = "its client file " + clientFile + " is not where a new terminal looks"
		}
		fmt.Fprintf(w, "from another terminal, as %s, naming this instance (%s):\n", who, why)
		fmt.Fprintf(w, "  export CAIRN_NATS=%s CAIRN_NATS_NKEY=%s\n  cairn status\n", st.URL(), st.AdminAuth.NkeyFile)
	}
	fmt.Fprintf(w, "as another user, with a copy of the admin seed: cairn --nats %s --nats-nkey %s status\n", st.URL(), st.AdminAuth.NkeyFile)
	fmt.Fprintf(w, "try: cairn backup --client %s --path /etc --wait\n", st.Config.Client)
	fmt.Fprintf(w, "     cairn media label --library %s --slots 1-4 --pool %s; cairn backup --client %s --path /etc --pool %s --wait\n",
		devstack.Library, st.Config.TapePool, st.Config.Client, st.Config.TapePool)
}

// sanitizeName makes a host name usable as a client name.
func sanitizeName(s string) string {
	s, _, _ = strings.Cut(s, ".")
	var b strings.Builder
	for _, r := range s {
		if r == '-' || r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "localhost"
	}
	return b.String()
}
