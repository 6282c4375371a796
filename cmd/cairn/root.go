package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cairnbackup/cairn/wire"
)

// globals are the options every admin command shares.
type globals struct {
	natsURL  string
	natsAuth wire.NATSAuth
	json     bool
	timeout  time.Duration
	out      io.Writer
	errOut   io.Writer
}

func newRootCmd(out, errOut io.Writer) *cobra.Command {
	g := &globals{out: out, errOut: errOut}
	root := &cobra.Command{
		Use:   "cairn",
		Short: "Cairn backs up hosts to disk pools and gets their files back",
		Long: `Cairn backs up hosts to disk pools and gets their files back.

Roles:      cairn server | storagenode | agent, or all in one: cairn dev
Try it:     cairn demo
Admin:      cairn client|pool|volume|job list, cairn backup, cairn ls, cairn restore
Tape:       cairn media label, cairn library status|load|unload|import|export, cairn drive status`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.SetErr(errOut)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{err} })
	defURL := os.Getenv("CAIRN_NATS")
	if defURL == "" {
		defURL = "nats://127.0.0.1:4222"
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.natsURL, "nats", defURL, "NATS URL of the Cairn system (env CAIRN_NATS)")
	bindNATSAuth(pf, &g.natsAuth)
	pf.BoolVar(&g.json, "json", false, "print JSON for scripts instead of tables")
	pf.DurationVar(&g.timeout, "timeout", 30*time.Second, "how long to wait for a server's answer")

	root.AddCommand(
		newServerCmd(g), newStorageNodeCmd(g), newAgentCmd(g), newDevCmd(g), newDemoCmd(g),
		newStatusCmd(g), newClientCmd(g), newPoolCmd(g), newVolumeCmd(g), newJobCmd(g),
		newBackupCmd(g), newLsCmd(g), newRestoreCmd(g), newKeyCmd(g), newClusterCmd(g),
		newCertCmd(g), newMediaCmd(g), newLibraryCmd(g), newDriveCmd(g),
	)
	return root
}

func isFlagError(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown flag") || strings.HasPrefix(msg, "unknown shorthand flag") ||
		strings.HasPrefix(msg, "unknown command") || strings.Contains(msg, "invalid argument") ||
		strings.HasPrefix(msg, "flag needs an argument") || strings.HasPrefix(msg, "required flag") ||
		strings.HasPrefix(msg, "accepts ") || strings.HasPrefix(msg, "requires ")
}

// natsFlags are the global flags of the NATS connection's TLS and
// credential, with the environment variables that set their defaults.
var natsFlags = []struct{ name, env, usage string }{
	{"nats-ca", "CAIRN_NATS_CA", "CA certificate that signed the NATS server's (turns TLS on)"},
	{"nats-cert", "CAIRN_NATS_CERT", "client certificate for NATS, when it verifies clients"},
	{"nats-key", "CAIRN_NATS_KEY", "key of --nats-cert"},
	{"nats-nkey", "CAIRN_NATS_NKEY", "nkey seed file of this role's NATS user ('cairn cert nats-config' writes them)"},
	{"nats-user", "CAIRN_NATS_USER", "NATS user name, for a password user"},
	{"nats-password", "CAIRN_NATS_PASSWORD", "NATS password (prefer the environment variable: a flag shows in ps)"},
}

func natsAuthField(a *wire.NATSAuth, flag string) *string {
	switch flag {
	case "nats-ca":
		return &a.CAFile
	case "nats-cert":
		return &a.CertFile
	case "nats-key":
		return &a.KeyFile
	case "nats-nkey":
		return &a.NkeyFile
	case "nats-user":
		return &a.User
	case "nats-password":
		return &a.Password
	}
	panic("unknown NATS flag " + flag)
}

func bindNATSAuth(f *pflag.FlagSet, a *wire.NATSAuth) {
	for _, fl := range natsFlags {
		p := natsAuthField(a, fl.name)
		f.StringVar(p, fl.name, "", fl.usage+" (env "+fl.env+")")
		// Set after binding, so --help never prints the environment's
		// value as the default: one of them is a password.
		*p = os.Getenv(fl.env)
	}
}

// applyNATSFlags copies the NATS flags given on the command line into a
// role's config, over what its config file says.
func (g *globals) applyNATSFlags(cmd *cobra.Command, a *wire.NATSAuth) {
	for _, fl := range natsFlags {
		if cmd.Flags().Changed(fl.name) {
			*natsAuthField(a, fl.name) = *natsAuthField(&g.natsAuth, fl.name)
		}
	}
}

// connect opens an admin connection to NATS. Its replies come to
// _INBOX.admin, which the admin users' permissions allow.
func (g *globals) connect() (*nats.Conn, error) {
	opts, err := wire.ConnectOptions("cairn-admin", g.natsAuth, wire.Inbox(wire.KindAdmin, ""))
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(g.natsURL, opts...)
	if err != nil {
		return nil, wire.ConnectError(g.natsURL, err, "start 'cairn dev' (or the servers), or point --nats / CAIRN_NATS at your NATS server")
	}
	return nc, nil
}

// call makes one admin request.
func (g *globals) call(ctx context.Context, nc *nats.Conn, op string, req, resp any) error {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	err := wire.Request(ctx, nc, wire.APISubject(op), req, resp)
	if wire.CodeOf(err) == wire.CodeUnavailable || wire.CodeOf(err) == wire.CodeTimeout {
		if e, ok := err.(*wire.Error); ok && strings.Contains(e.Message, wire.APISubject(op)) {
			return wire.Errorf(e.Code, "start 'cairn dev' or 'cairn server' (is --nats right?)", "no Cairn server answers on %s", g.natsURL)
		}
	}
	return err
}

// request connects, makes one admin request and disconnects.
func (g *globals) request(ctx context.Context, op string, req, resp any) error {
	nc, err := g.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	return g.call(ctx, nc, op, req, resp)
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return &usageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args)}
	}
	return nil
}
