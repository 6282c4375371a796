package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/natsauth"
	"github.com/cairnbackup/cairn/pki"
	"github.com/cairnbackup/cairn/server"
	"github.com/cairnbackup/cairn/wire"
)

type natsConfigOpts struct {
	out, creds                     string
	listen, monitor                []string
	logDir                         string
	cluster                        []string
	clusterName                    string
	tls                            pki.Files
	verify                         bool
	servers, nodes, agents, admins []string
	keyAdmins                      []string
	force                          bool
	rotateSeeds                    []string
	finishRotation                 bool
}

func newNATSConfigCmd(g *globals) *cobra.Command {
	var o natsConfigOpts
	c := &cobra.Command{
		Use:   "nats-config --out FILE --servers S1,.. --nodes N1,.. --agents C1,.. [--tls-ca CA --tls-cert CRT --tls-key KEY]",
		Short: "Write a nats-server configuration with TLS and one user per role, each confined to its own subjects",
		Long: `Write a nats-server configuration: TLS with the given certificate (clients
must present one signed by --tls-ca unless --verify-clients=false), and one
user per server, storage node, agent and admin, with exactly the
permissions of its role:

  agent C:   publish cairn.srv.agent.C.>, cairn.beat.agent.C.>;
             subscribe cairn.agent.C.>, _INBOX.agent.C.>; answer the orders it gets
  node N:    publish cairn.srv.node.N.>, cairn.beat.node.N.>;
             subscribe cairn.node.N.>, _INBOX.node.N.>; answer the orders it gets
  admin A:   publish cairn.api.>; subscribe _INBOX.admin.A.>, cairn.evt.>
  key admin: as an admin, and publish cairn.escrow.> (key export)
  server:    everything

Each admin reads only its own replies (_INBOX.admin.NAME): the admin
commands take NAME from --nats-admin, else the seed file's name
admin-NAME.nk, else their certificate's name. Key export hands out every
data key in the clear, so only the admins named in --key-admins may do it;
another admin is told "permission denied".

With client certificates verified (--tls-ca), each user is a certificate:
the NATS server takes the user from the subject of the certificate a role
presents (verify_and_map), so the certificate of NAME ('cairn cert issue
--name NAME', subject CN=NAME,O=Cairn) acts as NAME's roles and no other.
Start each role with --nats-ca, --nats-cert and --nats-key only (no nkey:
such a server lists none, since it would accept a listed nkey with any
certificate of the CA). A name listed as two roles (a storage node and an
agent on one host) is one user with both roles' subjects.

With --verify-clients=false, each user is an nkey whose seed goes to
--creds-dir as KIND-NAME.nk (mode 0600): copy it to that host only, and
start the role with --nats-nkey FILE. Seeds already in --creds-dir are
kept, so adding a client and writing the file again (--force) changes no
other role's credential.

Rotating a seed (with --verify-clients=false; a certificate is renewed with
'cairn cert renew'), without cutting the role off:
  1. --force --rotate-seeds agent-web1: a new seed in --creds-dir, the old
     one kept as agent-web1.nk.old, and the file accepts both;
     nats-server --signal reload;
  2. copy the new agent-web1.nk to web1 and restart its role;
  3. --force --finish-rotation: the old seeds removed, the file accepts
     the new ones only; nats-server --signal reload.

Reload nats-server (nats-server --signal reload) after writing it again.

Run it with: nats-server -c FILE

A NATS cluster, so that NATS is no single point of failure: --cluster
lists the route address of every NATS server, [NAME=]HOST:PORT (NAME is
HOST's first label unless given), and --out is then a directory that gets
one NAME.conf per server, alike but for its name and addresses: copy each
to its host. The servers route to each other over mutual TLS with the same
files as the clients, so each NATS server's certificate is issued with
--client --server, under one name for all (--name nats, each with its own
--dns), and only that certificate may be a route. Start the roles with
every server's URL: --nats tls://nats1:4222,tls://nats2:4222,tls://nats3:4222.
While any one of them runs, every role is served: one may stop, or two.

  cairn cert nats-config --out /etc/cairn/nats \
      --cluster nats1.example.net:6222,nats2.example.net:6222,nats3.example.net:6222 \
      --tls-ca /etc/cairn/tls/ca.crt --tls-cert /etc/cairn/tls/nats.crt \
      --tls-key /etc/cairn/tls/nats.key --servers s1,s2,s3 --nodes sn1 --agents web1

Every file also has a monitoring port on the loopback (--monitor) and a log
file (--log-dir), and says what each setting is for, so it can be edited.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("verify-clients") {
				o.verify = o.tls.CA != ""
			}
			return runNATSConfig(o, g.out, g.errOut)
		},
	}
	f := c.Flags()
	f.StringVar(&o.out, "out", "", "the configuration file to write")
	f.StringVar(&o.creds, "creds-dir", "", "directory for the users' nkey seeds, with --verify-clients=false (default: nkeys/ beside --out)")
	f.StringSliceVar(&o.listen, "listen", []string{"0.0.0.0:4222"}, "the NATS server's client address; with --cluster, one for all or one per server in its order")
	f.StringSliceVar(&o.monitor, "monitor", []string{"127.0.0.1:8222"}, "the HTTP monitoring address, on the loopback (\"\": none); with --cluster, one for all or one per server")
	f.StringVar(&o.logDir, "log-dir", "/var/log/nats", "directory of the NATS server's log file (NAME.log, nats.log without --cluster); \"\": standard error")
	f.StringSliceVar(&o.cluster, "cluster", nil, "route addresses of every NATS server of a cluster, [NAME=]HOST:PORT,...; --out is then a directory")
	f.StringVar(&o.clusterName, "cluster-name", "cairn", "the NATS cluster's name")
	f.StringVar(&o.tls.CA, "tls-ca", "", "CA certificate that signs the clients' certificates")
	f.StringVar(&o.tls.Cert, "tls-cert", "", "the NATS server's certificate ('cairn cert issue --name nats --dns ...')")
	f.StringVar(&o.tls.Key, "tls-key", "", "the NATS server's key")
	f.BoolVar(&o.verify, "verify-clients", true, "require a client certificate signed by --tls-ca, and take each role's user from it (default when --tls-ca is given); false: nkey users")
	f.StringSliceVar(&o.servers, "servers", nil, "backup server names (as in 'cairn server --name')")
	f.StringSliceVar(&o.nodes, "nodes", nil, "storage node names")
	f.StringSliceVar(&o.agents, "agents", nil, "client names of the agents")
	f.StringSliceVar(&o.admins, "admins", []string{"admin"}, "admin user names (all of the admin API but key export)")
	f.StringSliceVar(&o.keyAdmins, "key-admins", nil, "admin user names that may also export the data keys ('cairn key export'); a name may be in --admins too")
	f.BoolVar(&o.force, "force", false, "replace an existing configuration file (the seeds are kept)")
	f.StringSliceVar(&o.rotateSeeds, "rotate-seeds", nil, "with --verify-clients=false: make new nkey seeds for these users, KIND-NAME as their seed files are named (agent-web1), the old ones accepted too until --finish-rotation")
	f.BoolVar(&o.finishRotation, "finish-rotation", false, "remove the seeds --rotate-seeds replaced: the file accepts the new seeds only")
	return c
}

// rotateSeeds makes the new seeds --rotate-seeds asks for, or removes the
// old ones with --finish-rotation, before the users are loaded from
// --creds-dir. It returns what it did, for the operator.
func rotateSeeds(o natsConfigOpts) ([]string, error) {
	var said []string
	if o.finishRotation {
		old, err := natsauth.FinishRotation(o.creds)
		if err != nil {
			return nil, err
		}
		if len(old) == 0 {
			return nil, wire.Errorf(wire.CodeInvalidArgument, "rotate a seed first with --rotate-seeds", "no rotation under way in %s", o.creds)
		}
		for _, f := range old {
			said = append(said, "removed the old seed "+f+": only the new one logs in now")
		}
		return said, nil
	}
	kinds := []string{wire.KindServer, wire.KindNode, wire.KindAgent, wire.KindAdmin}
	for _, spec := range o.rotateSeeds {
		kind, name, _ := strings.Cut(spec, "-")
		if !slices.Contains(kinds, kind) || name == "" {
			return nil, &usageError{fmt.Errorf("--rotate-seeds %q: name the user as its seed file is named, KIND-NAME, KIND one of %s (agent-web1)", spec, strings.Join(kinds, ", "))}
		}
		u, err := natsauth.RotateSeed(o.creds, kind, name)
		if err != nil {
			return nil, wire.Errorf(wire.CodeInvalidArgument, "finish the rotation under way with --finish-rotation once every role has its new seed, or correct the name", "%w", err)
		}
		said = append(said, fmt.Sprintf("new seed %s for %s %s (the old one, %s, is accepted too until --finish-rotation): copy it to its host and restart the role", u.SeedFile, kind, name, u.SeedFile+natsauth.OldSeedSuffix))
	}
	return said, nil
}

// writeConfFile writes a configuration file at once (a rename).
func writeConfFile(path string, text []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	// The file holds only public keys, but it maps them to permissions:
	// readable by its owner (who runs nats-server) only.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, text, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// natsServerConf is one NATS server the command writes a file for.
type natsServerConf struct {
	name, host      string
	route           string // HOST:PORT, as the others dial it
	listen, monitor string
	file, log       string
}

// natsServers resolves the command's files: one without --cluster, one per
// server with it.
func natsServers(o natsConfigOpts) ([]natsServerConf, error) {
	one := func(list []string, i, n int, flag string) (string, error) {
		switch len(list) {
		case 0:
			return "", nil
		case 1:
			return list[0], nil
		case n:
			return list[i], nil
		}
		return "", &usageError{fmt.Errorf("--%s lists %d addresses for %d NATS servers: give one for all, or one per server in --cluster's order", flag, len(list), n)}
	}
	logFile := func(name string) string {
		if o.logDir == "" {
			return ""
		}
		return filepath.Join(o.logDir, name+".log")
	}
	if len(o.cluster) == 0 {
		if len(o.listen) > 1 || len(o.monitor) > 1 {
			return nil, &usageError{errors.New("several --listen or --monitor addresses are for a --cluster")}
		}
		listen, _ := one(o.listen, 0, 1, "listen")
		monitor, _ := one(o.monitor, 0, 1, "monitor")
		return []natsServerConf{{listen: listen, monitor: monitor, file: o.out, log: logFile("nats")}}, nil
	}
	if strings.HasSuffix(o.out, ".conf") {
		return nil, &usageError{fmt.Errorf("with --cluster, --out is a directory that gets one NAME.conf per NATS server, not %s", o.out)}
	}
	if st, err := os.Stat(o.out); err == nil && !st.IsDir() {
		return nil, &usageError{fmt.Errorf("with --cluster, --out is a directory; %s is a file", o.out)}
	}
	if len(o.cluster) < 2 {
		return nil, &usageError{errors.New("--cluster lists every NATS server of the cluster, at least two (three to have one down for maintenance while another fails)")}
	}
	var out []natsServerConf
	names := map[string]bool{}
	for i, entry := range o.cluster {
		name, addr, named := strings.Cut(entry, "=")
		if !named {
			addr, name = entry, ""
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" || port == "" {
			return nil, &usageError{fmt.Errorf("--cluster %q: give each NATS server's route address as [NAME=]HOST:PORT (for example nats1.example.net:6222)", entry)}
		}
		if name == "" {
			name = host
			if net.ParseIP(host) == nil {
				name, _, _ = strings.Cut(host, ".")
			}
		}
		if err := pki.ValidateName(name); err != nil {
			return nil, &usageError{fmt.Errorf("--cluster %q: %w", entry, err)}
		}
		if names[name] {
			return nil, &usageError{fmt.Errorf("--cluster names two NATS servers %s: give each its own name, NAME=HOST:PORT", name)}
		}
		names[name] = true
		listen, err := one(o.listen, i, len(o.cluster), "listen")
		if err != nil {
			return nil, err
		}
		monitor, err := one(o.monitor, i, len(o.cluster), "monitor")
		if err != nil {
			return nil, err
		}
		out = append(out, natsServerConf{name: name, host: host, route: addr, listen: listen, monitor: monitor,
			file: filepath.Join(o.out, name+".conf"), log: logFile(name)})
	}
	return out, nil
}

// routeSubject is the subject of the NATS servers' certificate, which their
// routes present: it must allow client authentication, since a route dials.
func routeSubject(certFile string) (string, error) {
	c, err := pki.ReadCertificate(certFile)
	if err != nil {
		return "", wire.Errorf(wire.CodeInvalidArgument, "make it with 'cairn cert issue', or correct the path", "%w", err)
	}
	if err := pki.CheckUsage(c, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth); err != nil {
		return "", wire.Errorf(wire.CodeInvalidArgument,
			"issue each NATS server's certificate with --client --server: the servers of a cluster both dial and accept routes ('cairn cert issue --name nats --dns HOST --client --server')",
			"--tls-cert %s: %w", certFile, err)
	}
	return c.Subject.String(), nil
}

func runNATSConfig(o natsConfigOpts, out, errOut io.Writer) error {
	if o.out == "" {
		return &usageError{errors.New("pass --out FILE for the configuration (a directory with --cluster)")}
	}
	if len(o.servers) == 0 {
		return &usageError{errors.New("pass --servers with the backup servers' names: without a server user nothing answers")}
	}
	if (len(o.rotateSeeds) > 0 || o.finishRotation) && o.verify {
		return &usageError{errors.New("--rotate-seeds and --finish-rotation are for nkey users (--verify-clients=false): with client certificates, a role's credential is its certificate; renew it with 'cairn cert renew'")}
	}
	if len(o.rotateSeeds) > 0 && o.finishRotation {
		return &usageError{errors.New("pass --rotate-seeds, then, once every role has its new seed, --finish-rotation: not both at once")}
	}
	if !o.tls.Empty() {
		if o.tls.Cert == "" || o.tls.Key == "" {
			return &usageError{errors.New("NATS TLS needs --tls-cert and --tls-key (and --tls-ca to verify clients)")}
		}
		for _, p := range []string{o.tls.CA, o.tls.Cert, o.tls.Key} {
			if p == "" {
				continue
			}
			if _, err := os.Stat(p); err != nil {
				return wire.Errorf(wire.CodeInvalidArgument, "make it with 'cairn cert issue', or correct the path", "%w", err)
			}
		}
	}
	if o.verify && o.tls.CA == "" {
		return &usageError{errors.New("--verify-clients needs --tls-ca, the CA that signs the clients' certificates")}
	}
	if len(o.monitor) == 1 && o.monitor[0] == "" {
		o.monitor = nil
	}
	files, err := natsServers(o)
	if err != nil {
		return err
	}
	for _, f := range files {
		if _, err := os.Stat(f.file); err == nil && !o.force {
			return wire.Errorf(wire.CodeAlreadyExists, "pass --force to write it again (nkey seeds in --creds-dir are kept)", "%s already exists", f.file)
		}
		if f.monitor != "" {
			if !server.IsLoopback(f.monitor) {
				return &usageError{fmt.Errorf("--monitor %q: the monitoring port answers anyone without TLS or a login; bind it to the loopback (127.0.0.1:8222), or pass --monitor \"\" for none", f.monitor)}
			}
		}
	}
	var clusterOf func(natsServerConf) *natsauth.Cluster
	if len(o.cluster) > 0 {
		if o.tls.CA == "" || o.tls.Cert == "" {
			return &usageError{errors.New("a NATS cluster needs --tls-ca, --tls-cert and --tls-key: its routes carry every message, and only the NATS servers' certificate may be one")}
		}
		subject, err := routeSubject(o.tls.Cert)
		if err != nil {
			return err
		}
		clusterOf = func(f natsServerConf) *natsauth.Cluster {
			_, port, _ := net.SplitHostPort(f.route)
			c := &natsauth.Cluster{Name: o.clusterName, Listen: net.JoinHostPort("0.0.0.0", port), RouteSubject: subject}
			for _, other := range files {
				c.Routes = append(c.Routes, other.route)
			}
			return c
		}
	}
	if o.creds == "" {
		dir := o.out
		if len(o.cluster) == 0 {
			dir = filepath.Dir(o.out)
		}
		o.creds = filepath.Join(dir, "nkeys")
	}
	rotated, err := rotateSeeds(o)
	if err != nil {
		return err
	}
	abs := func(p string) string {
		if p == "" {
			return ""
		}
		a, err := filepath.Abs(p)
		if err != nil {
			return p
		}
		return a
	}
	// nats-server resolves relative paths against its working directory,
	// not the file's: absolute paths keep the file usable from anywhere.
	cfg := natsauth.AuthConfig{TLS: pki.Files{CA: abs(o.tls.CA), Cert: abs(o.tls.Cert), Key: abs(o.tls.Key)}, VerifyClients: o.verify}
	keyAdmin := map[string]bool{}
	for _, name := range o.keyAdmins {
		if keyAdmin[name] {
			return &usageError{fmt.Errorf("key admin %s is listed twice", name)}
		}
		keyAdmin[name] = true
	}
	// A key admin is an admin with one more permission: listed in
	// --admins or not, it is one user.
	admins := slices.Clone(o.admins)
	for _, name := range o.keyAdmins {
		if !slices.Contains(admins, name) {
			admins = append(admins, name)
		}
	}
	seen := map[string]bool{}
	for _, group := range []struct {
		kind  string
		names []string
	}{{wire.KindServer, o.servers}, {wire.KindNode, o.nodes}, {wire.KindAgent, o.agents}, {wire.KindAdmin, admins}} {
		for _, name := range group.names {
			if seen[group.kind+"/"+name] {
				return &usageError{fmt.Errorf("%s %s is listed twice", group.kind, name)}
			}
			seen[group.kind+"/"+name] = true
			var u natsauth.User
			var err error
			if o.verify {
				u, err = natsauth.CertUser(group.kind, name)
			} else {
				u, err = natsauth.LoadOrCreateUser(o.creds, group.kind, name)
			}
			if err != nil {
				return wire.Errorf(wire.CodeInvalidArgument, "correct the name or the seed file named", "%w", err)
			}
			u.KeyAdmin = group.kind == wire.KindAdmin && keyAdmin[name]
			cfg.Users = append(cfg.Users, u)
		}
	}
	for _, u := range cfg.Users {
		if clusterOf != nil && u.Subject != "" && u.Subject == clusterOf(files[0]).RouteSubject {
			return &usageError{fmt.Errorf("%s %s has the name of the NATS servers' certificate (%s), which is their routes' identity: give the role another name", u.Kind, u.Name, u.Subject)}
		}
	}
	for _, f := range files {
		c := cfg
		c.ServerName, c.Listen, c.Monitor, c.LogFile = f.name, f.listen, f.monitor, abs(f.log)
		if clusterOf != nil {
			c.Cluster = clusterOf(f)
		}
		text, err := c.Render()
		if err != nil {
			return &usageError{err}
		}
		if err := writeConfFile(f.file, text); err != nil {
			return err
		}
	}
	if cfg.TLS.Empty() {
		fmt.Fprintln(errOut, "warning: no TLS: credentials' signatures and all control messages cross the network in clear; pass --tls-cert/--tls-key/--tls-ca")
	}
	for _, f := range files {
		if f.name == "" {
			fmt.Fprintf(out, "wrote %s (run: nats-server -c %s)\n", f.file, f.file)
			continue
		}
		fmt.Fprintf(out, "wrote %s for the NATS server %s (clients %s, routes %s): copy it to %s, run: nats-server -c FILE\n", f.file, f.name, f.listen, f.route, f.host)
	}
	if len(o.cluster) > 0 {
		var urls []string
		for _, f := range files {
			_, port, _ := net.SplitHostPort(f.listen)
			scheme := "nats"
			if !cfg.TLS.Empty() {
				scheme = "tls"
			}
			urls = append(urls, scheme+"://"+net.JoinHostPort(f.host, port))
		}
		fmt.Fprintf(out, "start every role with --nats %s\n", strings.Join(urls, ","))
	}
	if o.logDir != "" {
		if _, err := os.Stat(o.logDir); err != nil {
			fmt.Fprintf(errOut, "note: make %s on each NATS host, writable by the user nats-server runs as: nats-server does not start without its log directory\n", o.logDir)
		}
	}
	if o.verify {
		fmt.Fprintf(out, "%-9s %-16s %-24s %s\n", "KIND", "NAME", "CERTIFICATE SUBJECT", "START IT WITH")
		for _, u := range cfg.Users {
			kind := u.Kind
			if u.KeyAdmin {
				kind = "key admin"
			}
			fmt.Fprintf(out, "%-9s %-16s %-24s --nats-cert %s.crt --nats-key %s.key (no --nats-nkey)\n", kind, u.Name, u.Subject, u.Name, u.Name)
		}
		if _, err := os.Stat(o.creds); err == nil {
			fmt.Fprintf(errOut, "note: the nkey seeds in %s are no longer used: each role logs in with its certificate; start the roles without --nats-nkey\n", o.creds)
		}
		return nil
	}
	fmt.Fprintln(errOut, "warning: no client certificates: an nkey seed is each role's only credential; keep each on its host only")
	for _, what := range rotated {
		fmt.Fprintln(out, what)
	}
	fmt.Fprintf(out, "%-9s %-16s %s\n", "KIND", "NAME", "START IT WITH")
	for _, u := range cfg.Users {
		kind := u.Kind
		if u.KeyAdmin {
			kind = "key admin"
		}
		fmt.Fprintf(out, "%-9s %-16s --nats-nkey %s\n", kind, u.Name, u.SeedFile)
	}
	return nil
}
