package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cairnbackup/cairn/devstack"
	"github.com/cairnbackup/cairn/natsauth"
	"github.com/cairnbackup/cairn/wire"
)

// defaultNATSURL is where the admin commands look for NATS when not told
// (--nats, CAIRN_NATS): the port 'cairn dev' takes by default.
const defaultNATSURL = "nats://127.0.0.1:4222"

// globals are the options every admin command shares.
type globals struct {
	natsURL  string
	natsAuth wire.NATSAuth
	// natsAdmin is the admin's name in the NATS configuration, which
	// names its inbox; see adminName.
	natsAdmin string
	// group is the id of the group of servers the commands are for
	// (--group, CAIRN_GROUP); empty: any, as long as one group alone
	// runs on the NATS.
	group   string
	json    bool
	timeout time.Duration
	// progressEvery is how often --wait prints progress off a terminal.
	progressEvery time.Duration
	// retryFor bounds the retries of a start after unclear answers.
	retryFor time.Duration
	out      io.Writer
	errOut   io.Writer
	// flags are the global flags as parsed, to tell a --nats given from
	// its default; nil in tests that fill globals by hand, which is taken
	// as everything given.
	flags *pflag.FlagSet
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
Tape:       cairn media label, cairn library status|load|unload|import|export, cairn drive status

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.SetErr(errOut)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{err} })
	defURL := os.Getenv("CAIRN_NATS")
	if defURL == "" {
		defURL = defaultNATSURL
	}
	pf := root.PersistentFlags()
	g.flags = pf
	pf.StringVar(&g.natsURL, "nats", defURL, "NATS URL of the Cairn system (env CAIRN_NATS; default: the 'cairn dev' this user runs, see 'cairn dev --help')")
	bindNATSAuth(pf, &g.natsAuth)
	pf.StringVar(&g.natsAdmin, "nats-admin", "", "admin name in the NATS configuration, which names this admin's inbox _INBOX.admin.NAME "+
		"(env CAIRN_NATS_ADMIN; default: NAME of a --nats-nkey file admin-NAME.nk, else --nats-user, else the --nats-cert common name, else admin)")
	g.natsAdmin = os.Getenv("CAIRN_NATS_ADMIN")
	pf.StringVar(&g.group, "group", os.Getenv("CAIRN_GROUP"), "id of the group of servers to ask, needed where servers of several groups share the NATS "+
		"('cairn cluster status' shows it; env CAIRN_GROUP; default: the one group on the NATS)")
	pf.BoolVar(&g.json, "json", false, "print JSON for scripts instead of tables")
	pf.DurationVar(&g.timeout, "timeout", 30*time.Second, "how long to wait for a server's answer")

	root.AddCommand(
		newServerCmd(g), newStorageNodeCmd(g), newAgentCmd(g), newDevCmd(g), newDemoCmd(g),
		newStatusCmd(g), newClientCmd(g), newPoolCmd(g), newVolumeCmd(g), newJobCmd(g),
		newBackupCmd(g), newLsCmd(g), newRestoreCmd(g), newKeyCmd(g), newClusterCmd(g),
		newCertCmd(g), newMediaCmd(g), newLibraryCmd(g), newDriveCmd(g), newConfigCmd(g), newPolicyCmd(g),
		newPruneCmd(g),
	)
	addVersion(root, g)
	root.AddCommand(newManCmd(g))
	// Added now rather than when the command runs, as cobra would, so
	// that guardGroups sees them too.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	strictHelp(root)
	guardGroups(root)
	return root
}

// guardGroups makes every command group under c (a command with
// subcommands and no action of its own) refuse a subcommand it does not
// know, or any argument, as a usage error. Left to cobra, 'cairn job
// cancel 19' finds the group 'job', which cannot run, prints its help and
// exits 0: a script believes the job was cancelled. The root is cobra's
// own business (it says "unknown command" there already). A group given
// nothing prints its help, as asked.
func guardGroups(c *cobra.Command) {
	for _, sub := range c.Commands() {
		guardGroups(sub)
	}
	if !c.HasParent() || !c.HasSubCommands() || c.Runnable() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		return unknownCommand(cmd, args[0])
	}
}

// unknownCommandError is a subcommand a group does not have: a usage
// error whose hint points at the group's help, not at the command that
// found it (help).
type unknownCommandError struct {
	group string
	msg   string
}

func (e *unknownCommandError) Error() string { return e.msg }

// unknownCommand says that group has no subcommand name, as cobra says it
// of the root, with its suggestions and the subcommands it has.
func unknownCommand(group *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, group.CommandPath())
	if s := group.SuggestionsFor(name); len(s) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
	}
	if subs := availableSubcommands(group); len(subs) > 0 {
		msg += fmt.Sprintf("\n\n%s has: %s", group.CommandPath(), strings.Join(subs, ", "))
	}
	return &unknownCommandError{group: group.CommandPath(), msg: msg}
}

func availableSubcommands(group *cobra.Command) []string {
	var names []string
	for _, sub := range group.Commands() {
		if sub.IsAvailableCommand() {
			names = append(names, sub.Name())
		}
	}
	return names
}

// strictHelp makes 'cairn help TOPIC' fail on a topic that names no
// command, where cobra's prints the usage and exits 0.
func strictHelp(root *cobra.Command) {
	for _, help := range root.Commands() {
		if help.Name() != "help" {
			continue
		}
		help.Run = nil
		help.RunE = func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if err != nil {
				return unknownCommand(c.Root(), args[0])
			}
			if len(rest) > 0 {
				return unknownCommand(cmd, rest[0])
			}
			return cmd.Help()
		}
	}
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

// connect opens an admin connection to NATS, with the credential given or,
// when none is, the one of the 'cairn dev' this user runs (devCredentials).
// Its replies come to _INBOX.admin.NAME (adminName), the one inbox this
// admin's NATS user may read.
func (g *globals) connect() (*nats.Conn, error) {
	devNote, err := g.devCredentials()
	if err != nil {
		return nil, err
	}
	name, err := g.adminName()
	if err != nil {
		return nil, err
	}
	opts, err := wire.ConnectOptions("cairn-admin-"+name, g.natsAuth, wire.Inbox(wire.KindAdmin, name))
	if err != nil {
		return nil, err
	}
	// Once connected, never give up the connection: nats.go's default
	// closes it after 60 tries (about two minutes), and a --wait through
	// a longer outage then failed with 'connection closed' while its job
	// went on. Each request has its own timeout all the same.
	opts = append(opts, nats.MaxReconnects(-1))
	nc, err := nats.Connect(g.natsURL, opts...)
	if err != nil {
		we := wire.ConnectError(g.natsURL, err, "start 'cairn dev' (or the servers), or point --nats / CAIRN_NATS at your NATS server")
		switch {
		case devNote != "" && we.Code == wire.CodeInvalidArgument:
			we.Message += "; " + devNote
		case g.natsAuth == (wire.NATSAuth{}) && wire.IsAuthError(err):
			// No credential at all: most often a command run while
			// 'cairn dev' starts, before it wrote its client file.
			we.Message += "; no credential was given, and no client file of 'cairn dev' is in " + strings.Join(devClientFiles(), " or ")
			we.Hint = "if 'cairn dev' is starting on this machine, run the command again once it prints 'cairn dev is running' (it writes its client file then); else " + we.Hint
		}
		return nil, we
	}
	return nc, nil
}

// natsGiven reports whether the NATS URL was given (--nats or CAIRN_NATS).
func (g *globals) natsGiven() bool {
	if g.flags == nil {
		return true
	}
	f := g.flags.Lookup("nats")
	return (f != nil && f.Changed) || os.Getenv("CAIRN_NATS") != ""
}

// devCredentials fills in the URL and credential of the 'cairn dev' that
// this user runs on this machine, from its client file (devClientFiles),
// when no credential was given: so that on the machine of 'cairn dev', as
// the user who started it, the admin commands need no flags. With --nats,
// only a client file for that very URL is used. A client file that exists
// but is not this user's to read is an error when nothing else was given
// (and a note for the error otherwise): that user's stack is not this
// one's to run.
func (g *globals) devCredentials() (note string, err error) {
	if g.natsAuth != (wire.NATSAuth{}) {
		return "", nil
	}
	for _, path := range devClientFiles() {
		f, err := devstack.ReadClientFile(path)
		switch {
		case err == nil:
			if g.natsGiven() && g.natsURL != f.URL {
				continue
			}
			g.natsURL, g.natsAuth.NkeyFile = f.URL, f.NkeyFile
			if g.natsAdmin == "" {
				g.natsAdmin = f.Admin
			}
			return "", nil
		case errors.Is(err, devstack.ErrNoClientFile):
			continue
		case errors.Is(err, fs.ErrPermission):
			if g.natsGiven() {
				note = fmt.Sprintf("the credentials of the 'cairn dev' in %s are not yours to read (permission denied)", path)
				continue
			}
			return "", wire.Errorf(wire.CodePermissionDenied,
				"run the command as the user who started 'cairn dev', or pass a credential of your own (--nats URL --nats-nkey FILE)",
				"permission denied: cannot read the credentials of 'cairn dev' in %s, and no NATS credential was given", path)
		default:
			return "", wire.Errorf(wire.CodeInvalidArgument, "start 'cairn dev' again to write it, or remove it", "%w", err)
		}
	}
	return note, nil
}

// devFileEnv names the client file 'cairn dev' writes and the admin
// commands read, in place of devClientFile's: for running more than one
// stack on a machine (and tests).
const devFileEnv = "CAIRN_DEV_FILE"

// systemDevClientFile is where 'cairn dev' run by root writes its client
// file: /run/cairn is root's alone (0700), and /run is cleared at boot.
const systemDevClientFile = "/run/cairn/dev.json"

// devClientFile is where 'cairn dev' run by this user writes its client
// file (URL and admin seed, mode 0600): $CAIRN_DEV_FILE, /run/cairn/dev.json
// for root, else $XDG_CONFIG_HOME/cairn/dev.json (~/.config/cairn/dev.json).
func devClientFile() string {
	if p := os.Getenv(devFileEnv); p != "" {
		return p
	}
	return defaultDevClientFile()
}

// defaultDevClientFile is devClientFile where $CAIRN_DEV_FILE is not set,
// as in a new terminal.
func defaultDevClientFile() string {
	if os.Geteuid() == 0 {
		return systemDevClientFile
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "cairn", "dev.json")
}

// devClientFiles are where the admin commands look for a running 'cairn
// dev': this user's own client file, then root's, which another user
// cannot read and is told so.
func devClientFiles() []string {
	own := devClientFile()
	if own == "" {
		return []string{systemDevClientFile}
	}
	if own == systemDevClientFile || os.Getenv(devFileEnv) != "" {
		return []string{own}
	}
	return []string{own, systemDevClientFile}
}

// adminName is this admin's name in the NATS configuration, which names
// its inbox (_INBOX.admin.NAME) and is the only one its NATS user may
// read: --nats-admin; else NAME of a seed file admin-NAME.nk as 'cairn cert
// nats-config' names them; else the --nats-user; else the common name of
// the --nats-cert; else admin.
func (g *globals) adminName() (string, error) {
	if g.natsAdmin != "" {
		if err := wire.ValidateName("admin", g.natsAdmin); err != nil {
			return "", &usageError{fmt.Errorf("--nats-admin: %w", err)}
		}
		return g.natsAdmin, nil
	}
	if name, ok := natsauth.NameOfSeedFile(g.natsAuth.NkeyFile, wire.KindAdmin); ok {
		return name, nil
	}
	if g.natsAuth.User != "" && wire.ValidateName("admin", g.natsAuth.User) == nil {
		return g.natsAuth.User, nil
	}
	if cn := commonName(g.natsAuth.CertFile); cn != "" && wire.ValidateName("admin", cn) == nil {
		return cn, nil
	}
	return "admin", nil
}

// commonName is the subject common name of the first certificate in a PEM
// file, or empty.
func commonName(path string) string {
	if path == "" {
		return ""
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return ""
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return ""
	}
	return c.Subject.CommonName
}

// call makes one admin request. A request whose subject, or whose reply
// inbox, the NATS server refuses to this credential fails at once with
// "permission denied for subject ..." (wire.Request), rather than at its
// timeout.
func (g *globals) call(ctx context.Context, nc *nats.Conn, op string, req, resp any) error {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	err := wire.RequestIn(ctx, nc, g.group, wire.APISubject(op), req, resp)
	// Nothing answers the subject: no server runs. (A request that timed
	// out reached one, which may have carried it out: that error stays.)
	if wire.CodeOf(err) == wire.CodeUnavailable {
		var e *wire.Error
		if errors.As(err, &e) && strings.Contains(e.Message, wire.APISubject(op)) {
			return wire.Errorf(e.Code, "start 'cairn dev' or 'cairn server' (is --nats right?); a server answers only as a member of a group: "+
				"start the first of a new group with --bootstrap, add the others with 'cairn cluster join'", "no Cairn server answers on %s", g.natsURL)
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
	if len(args) > 0 && cmd.HasSubCommands() {
		// 'cairn backup lsit': the argument was meant as a subcommand.
		return unknownCommand(cmd, args[0])
	}
	if len(args) > 0 {
		return &usageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args)}
	}
	return nil
}
