package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/natsauth"
	"github.com/cairnbackup/cairn/pki"
	"github.com/cairnbackup/cairn/wire"
)

type natsConfigOpts struct {
	out, creds, listen             string
	tls                            pki.Files
	verify                         bool
	servers, nodes, agents, admins []string
	keyAdmins                      []string
	force                          bool
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

Reload nats-server (nats-server --signal reload) after writing it again.

Run it with: nats-server -c FILE`,
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
	f.StringVar(&o.listen, "listen", "0.0.0.0:4222", "the NATS server's client address")
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
	return c
}

func runNATSConfig(o natsConfigOpts, out, errOut io.Writer) error {
	if o.out == "" {
		return &usageError{errors.New("pass --out FILE for the configuration")}
	}
	if len(o.servers) == 0 {
		return &usageError{errors.New("pass --servers with the backup servers' names: without a server user nothing answers")}
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
				return wire.Errorf(wire.CodeInvalidArgument, "make it with 'cairn cert issue', or correct the path", "%v", err)
			}
		}
	}
	if o.verify && o.tls.CA == "" {
		return &usageError{errors.New("--verify-clients needs --tls-ca, the CA that signs the clients' certificates")}
	}
	if _, err := os.Stat(o.out); err == nil && !o.force {
		return wire.Errorf(wire.CodeAlreadyExists, "pass --force to write it again (nkey seeds in --creds-dir are kept)", "%s already exists", o.out)
	}
	if o.creds == "" {
		o.creds = filepath.Join(filepath.Dir(o.out), "nkeys")
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
	cfg := natsauth.AuthConfig{Listen: o.listen, TLS: pki.Files{CA: abs(o.tls.CA), Cert: abs(o.tls.Cert), Key: abs(o.tls.Key)}, VerifyClients: o.verify}
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
				return wire.Errorf(wire.CodeInvalidArgument, "correct the name or the seed file named", "%v", err)
			}
			u.KeyAdmin = group.kind == wire.KindAdmin && keyAdmin[name]
			cfg.Users = append(cfg.Users, u)
		}
	}
	text, err := cfg.Render()
	if err != nil {
		return &usageError{err}
	}
	if err := os.MkdirAll(filepath.Dir(o.out), 0o700); err != nil {
		return err
	}
	// The file holds only public keys, but it maps them to permissions:
	// readable by its owner (who runs nats-server) only.
	tmp := o.out + ".tmp"
	if err := os.WriteFile(tmp, text, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", o.out, err)
	}
	if err := os.Rename(tmp, o.out); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", o.out, err)
	}
	if cfg.TLS.Empty() {
		fmt.Fprintln(errOut, "warning: no TLS: credentials' signatures and all control messages cross the network in clear; pass --tls-cert/--tls-key/--tls-ca")
	}
	fmt.Fprintf(out, "wrote %s (run: nats-server -c %s)\n", o.out, o.out)
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
