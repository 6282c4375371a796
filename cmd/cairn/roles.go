package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
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
	"github.com/cairnbackup/cairn/server"
	"github.com/cairnbackup/cairn/storagenode"
	"github.com/cairnbackup/cairn/wire"
)

// roleOpts are the options every long-running role has.
type roleOpts struct {
	config      string
	metricsAddr string
	logLevel    string
	// fileLevel is the config file's log_level, read again on SIGHUP.
	fileLevel string
	level     slog.LevelVar
	// levelFlag is whether --log-level was given, which wins over the file.
	levelFlag bool
	logFormat string
}

func (o *roleOpts) bind(f *pflag.FlagSet, defMetrics string) {
	f.StringVar(&o.config, "config", "", "JSON config file; flags given on the command line override it")
	f.StringVar(&o.metricsAddr, "metrics-addr", defMetrics, "serve Prometheus metrics on this address (/metrics); empty to disable")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error (or log_level in the config file; SIGHUP reads the file's again)")
	f.StringVar(&o.logFormat, "log-format", "text", logFormatUsage)
}

// logger makes the role's logger at the level of --log-level, or of the
// config file's log_level when the flag is not given; setLevel changes it
// while the role runs.
func (o *roleOpts) logger(w io.Writer) (*slog.Logger, error) {
	if err := o.setLevel(); err != nil {
		return nil, err
	}
	h, err := newLogHandler(w, o.logFormat, &slog.HandlerOptions{Level: &o.level})
	if err != nil {
		return nil, err
	}
	return slog.New(h), nil
}

func (o *roleOpts) setLevel() error {
	name, what := o.logLevel, "--log-level"
	if !o.levelFlag && o.fileLevel != "" {
		name, what = o.fileLevel, "log_level in "+o.config
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(name)); err != nil {
		return &usageError{fmt.Errorf("%s %q: use debug, info, warn or error", what, name)}
	}
	o.level.Set(lvl)
	return nil
}

// reloadLevel reads the config file's log_level again (SIGHUP). It says so
// before the new level applies, so that a level above info still reports
// what it became.
func (o *roleOpts) reloadLevel(log *slog.Logger) {
	if o.config != "" {
		lvl, err := readLogLevel(o.config)
		if err != nil {
			log.Error("log level not reloaded", "err", err)
			return
		}
		o.fileLevel = lvl
	}
	was := o.level.Level()
	next := roleOpts{logLevel: o.logLevel, fileLevel: o.fileLevel, levelFlag: o.levelFlag, config: o.config}
	if err := next.setLevel(); err != nil {
		log.Error("log level not reloaded", "err", err)
		return
	}
	now := next.level.Level()
	if o.levelFlag && o.fileLevel != "" {
		log.Info("reloaded", "what", "log level "+now.String()+" (--log-level, which wins over the config file's log_level)")
	} else {
		log.Info("reloaded", "what", "log level "+now.String(), "was", was.String())
	}
	o.level.Set(now)
}

// readLogLevel is the log_level of a config file, "" when it has none.
func readLogLevel(path string) (string, error) {
	rf, err := readRoleFields(path)
	return rf.LogLevel, err
}

// loadConfig fills cfg from the config file, then applies again the flags
// given on the command line, so they win over the file. The file's
// log_level, which every role's file may have, is returned apart.
func loadConfig(cmd *cobra.Command, path string, cfg any) (rf roleFields, err error) {
	if path == "" {
		return rf, nil
	}
	changed := map[string]string{}
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if f.Value.Type() != "stringArray" && f.Value.Type() != "stringSlice" {
			changed[f.Name] = f.Value.String()
		}
	})
	data, err := readConfigFile(path)
	if err != nil {
		return rf, err
	}
	if rf, err = decodeRoleFields(path, data); err != nil {
		return rf, err
	}
	if data, err = withoutRoleFields(data); err != nil {
		return rf, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return roleFields{}, fmt.Errorf("config file %s: %w (fields are the JSON names in 'cairn %s --help', and log_level and log_format)", path, err, cmd.Name())
	}
	for name, v := range changed {
		if err := cmd.Flags().Set(name, v); err != nil {
			return rf, err
		}
	}
	return rf, nil
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
	rf, err := loadConfig(cmd, ro.config, cfg)
	if err != nil {
		return err
	}
	ro.fileLevel, ro.levelFlag = rf.LogLevel, cmd.Flags().Changed("log-level")
	if rf.LogFormat != "" && !cmd.Flags().Changed("log-format") {
		ro.logFormat = rf.LogFormat
	}
	if cmd.Flags().Changed("nats") {
		*natsURL = g.natsURL
	}
	g.applyNATSFlags(cmd, natsAuth)
	log, err := ro.logger(g.errOut)
	if err != nil {
		return err
	}
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
	if _, err := serveMetrics(roleCtx, ro.metricsAddr, reg, log); err != nil {
		return err
	}
	for running := true; running; {
		select {
		case <-hup:
			log.Info("SIGHUP: reloading the log level and certificates")
			ro.reloadLevel(log)
			_ = r.Reload(roleCtx) // it logs what failed; the role goes on with what it had
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

// serverDrainTimeout bounds a stopping leader's leadership transfer.
const serverDrainTimeout = 10 * time.Second

// agentHandBackTimeout bounds a stopping agent's reports of the jobs it
// hands back.
const agentHandBackTimeout = 15 * time.Second

// configError is a role configuration that cannot run, said with what to
// do about it, as every error the CLI prints is.
func configError(cmd *cobra.Command, role string, err error) error {
	return wire.Errorf(wire.CodeInvalidArgument,
		fmt.Sprintf("correct the flag or config file field named; see '%s --help'", cmd.CommandPath()),
		"%s config: %v", role, err)
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
	f.DurationVar(&cfg.LivenessTimeout, "liveness-timeout", cfg.LivenessTimeout, "a node or agent silent this long is offline")
	f.DurationVar(&cfg.QueueTimeout, "queue-timeout", cfg.QueueTimeout, "a job waiting this long for its agent or a storage node fails")
	f.StringVar(&cfg.DefaultPool, "default-pool", cfg.DefaultPool, "pool for backups that name none")
	ro.bind(f, "127.0.0.1:9464")
	return c
}

// parsePool reads NAME=DIR[:MAXSIZE].
func parsePool(s string) (storagenode.PoolConfig, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok || name == "" || rest == "" {
		return storagenode.PoolConfig{}, &usageError{fmt.Errorf("--pool %q: use NAME=DIR or NAME=DIR:MAXVOLUMESIZE (e.g. Default=/srv/cairn/pool:50G)", s)}
	}
	p := storagenode.PoolConfig{Name: name, Dir: rest}
	if i := strings.LastIndex(rest, ":"); i > 0 {
		size, err := parseSize(rest[i+1:])
		if err == nil {
			p.Dir, p.MaxVolumeBytes = rest[:i], size
		}
	}
	abs, err := filepath.Abs(p.Dir)
	if err != nil {
		return p, err
	}
	p.Dir = abs
	return p, nil
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
					p, err := parsePool(s)
					if err != nil {
						return nil, err
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
	f.StringArrayVar(&pools, "pool", nil, "disk pool NAME=DIR[:MAXVOLUMESIZE]; repeat for several")
	f.IntVar(&cfg.Workers, "workers", cfg.Workers, "compress-and-encrypt goroutines per stream")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "on SIGTERM, how long running sessions may go on before they are handed back to the servers (a second SIGTERM cuts it short)")
	ro.bind(f, "127.0.0.1:9465")
	return c
}

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
				return agent.New(cfg, log, reg)
			})
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.Name, "name", cfg.Name, "client name")
	ro.bind(f, "127.0.0.1:9466")
	return c
}

func newDevCmd(g *globals) *cobra.Command {
	var ro roleOpts
	var dir, client, maxVol, raftAddr, pprofAddr string
	var natsPort int
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
			ro.levelFlag = cmd.Flags().Changed("log-level")
			if dir == "" {
				return &usageError{fmt.Errorf("pass --data DIR (it keeps the catalog and volumes across restarts)")}
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			log, err := ro.logger(g.errOut)
			if err != nil {
				return err
			}
			var maxBytes int64
			if maxVol != "" {
				if maxBytes, err = parseSize(maxVol); err != nil {
					return &usageError{err}
				}
			}
			ctx := cmd.Context()
			reg := newRegistry()
			st, err := devstack.Start(ctx, devstack.Config{
				Dir: abs, NATSPort: natsPort, RaftAddr: raftAddr, Client: client,
				MaxVolumeBytes: maxBytes, Logger: log, Registry: reg,
			})
			if err != nil {
				return err
			}
			defer st.Close()
			metricsAddr, err := serveMetrics(ctx, ro.metricsAddr, reg, log)
			if err != nil {
				return err
			}
			if err := servePprof(ctx, pprofAddr, log); err != nil {
				return err
			}
			clientFile := publishDevClientFile(st, log)
			if clientFile != "" {
				defer withdrawDevClientFile(clientFile, st)
			}
			printDevBanner(g.out, st, clientFile, metricsAddr, pprofAddr)
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
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	f := c.Flags()
	f.StringVar(&dir, "data", "", "directory for all state")
	f.IntVar(&natsPort, "nats-port", 4222, "port of the embedded NATS server on 127.0.0.1")
	f.StringVar(&raftAddr, "raft-addr", "127.0.0.1:7010", "address of the server's Raft transport")
	f.StringVar(&client, "client", sanitizeName(host), "client name of the local agent")
	f.StringVar(&maxVol, "max-volume-size", "", "size at which a volume is full, e.g. 4G (unlimited when empty)")
	f.StringVar(&pprofAddr, "pprof-addr", "", "serve net/http/pprof on this address (/debug/pprof/), for profiling; empty to disable")
	ro.bind(f, "127.0.0.1:9464")
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
