package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/agent"
	"github.com/cairnbackup/cairn/internal/configfile"
	"github.com/cairnbackup/cairn/pki"
	"github.com/cairnbackup/cairn/server"
	"github.com/cairnbackup/cairn/storagenode"
	"github.com/cairnbackup/cairn/storagenode/library"
	"github.com/cairnbackup/cairn/wire"
)

// The doc comments of the config structs, then the examples the package
// installs, which show them: two runs, so that the second is built with
// what the first wrote.
//go:generate go test -run TestConfigDocs -update-config-docs .
//go:generate go test -run TestPackagedConfigExamples -update-packaged-examples .

// configRole is a role that reads a config file: how to fill one and
// check it, and its commented example.
type configRole struct {
	// name is the role's command and its --role.
	name string
	// command makes the role's command, whose flags the file's fields are.
	command func(*globals) *cobra.Command
	// defaults are the structs the file fills, holding the role's
	// defaults, and the check the role makes of them before it starts.
	defaults func() roleConfig
	// example is the role's example file, shown over its defaults.
	example func(defaults roleConfig) configfile.Example
}

// roleConfig are the structs a role's config file fills: the role's own
// Config and the fields every role has, and what checks them.
type roleConfig struct {
	cfg      any
	common   *roleFields
	validate func() error
}

func (rc roleConfig) targets() []any { return []any{rc.cfg, rc.common} }

// check validates the role's config as the role does before it starts,
// and the fields every role has.
func (rc roleConfig) check() error {
	return errors.Join(rc.validate(), rc.common.Validate())
}

func commonDefaults(metricsAddr string, memoryLimit int64) *roleFields {
	return &roleFields{LogLevel: defaultLogLevel, LogFormat: "text", MetricsAddr: metricsAddr, MemoryLimit: memoryLimit}
}

// configRoles are the roles with a config file, in the order 'cairn config
// example' lists them.
var configRoles = []configRole{
	{
		name: "server", command: newServerCmd,
		defaults: func() roleConfig {
			cfg := server.DefaultConfig()
			return roleConfig{&cfg, commonDefaults("127.0.0.1:9464", 0), cfg.Validate}
		},
		example: serverExample,
	},
	{
		name: "storagenode", command: newStorageNodeCmd,
		defaults: func() roleConfig {
			cfg := storagenode.DefaultConfig()
			return roleConfig{&cfg, commonDefaults("127.0.0.1:9465", 0), cfg.Validate}
		},
		example: storageNodeExample,
	},
	{
		name: "agent", command: newAgentCmd,
		defaults: func() roleConfig {
			cfg := agent.DefaultConfig()
			return roleConfig{&cfg, commonDefaults("127.0.0.1:9466", agentMemoryLimit), cfg.Validate}
		},
		example: agentExample,
	},
	{
		name: "dev", command: newDevCmd,
		defaults: func() roleConfig {
			cfg := defaultDevConfig()
			return roleConfig{&cfg, commonDefaults("127.0.0.1:9464", devMemoryLimit), cfg.Validate}
		},
		example: devExample,
	},
}

func configRoleNamed(name string) (configRole, error) {
	var names []string
	for _, r := range configRoles {
		if r.name == name {
			return r, nil
		}
		names = append(names, r.name)
	}
	return configRole{}, &usageError{fmt.Errorf("--role %q: use %s", name, strings.Join(names, ", "))}
}

func roleNames() string {
	var names []string
	for _, r := range configRoles {
		names = append(names, r.name)
	}
	return strings.Join(names, ", ")
}

// Validate is what cairn dev needs before it starts.
func (c *devConfig) Validate() error {
	if c.Data == "" {
		return configfile.Fieldf("data", "empty: give the directory that keeps the stack's state (--data)")
	}
	return nil
}

// commonHeader is what every example says about the format.
const commonHeader = `

Written by 'cairn config example --role %[1]s'; 'cairn config check FILE'
checks a file. A line starting with // is a comment; a field left out keeps
its default, so delete the // before a field to set it. The fields are the
flags of 'cairn %[1]s' ('man cairn-%[1]s'), with _ for - (--data-addr is
data_addr); a flag given on the command line wins over the file. Durations
are written "30s", "5m", "1h30m"; sizes "512M", "50G".

`

func serverExample(def roleConfig) configfile.Example {
	cfg := server.DefaultConfig()
	cfg.Name = "s1"
	cfg.DataDir = "/var/lib/cairn/server"
	cfg.NATSAuth = exampleNATSAuth("s1", "server-s1")
	cfg.RaftTLS = pki.Files{CA: "/etc/cairn/hosts/s1/ca.crt", Cert: "/etc/cairn/hosts/s1/s1.crt", Key: "/etc/cairn/hosts/s1/s1.key"}
	cfg.SecretsFile = "/etc/cairn/secrets.json"
	cfg.KEKFile = "/mnt/kek/cairn-kek"
	cfg.PoolJobLimits = []server.PoolJobLimit{{Pool: "Offsite", MaxJobs: 2}}
	common := *def.common
	common.LogFormat = "json"
	return configfile.Example{
		Header: `Cairn backup server, read by cairn-server.service:
  cairn server --config /etc/cairn/server.json` + fmt.Sprintf(commonHeader, "server") + `
The service runs as the user cairn: every file named here must be readable
by it (chgrp cairn FILE; chmod 640 FILE). Its StateDirectory= makes
/var/lib/cairn/server; a data directory elsewhere must be added to the
unit's ReadWritePaths=. On the first server of a new group only, set
"bootstrap": true. After a change:
  systemctl restart cairn-server   (certificates: systemctl reload cairn-server)`,
		Values:   []any{&cfg, &common},
		Defaults: def.targets(),
		Live:     []string{"data", "nats", "raft_addr", "bootstrap", "default_pool"},
		Docs:     configDocs,
	}
}

func storageNodeExample(def roleConfig) configfile.Example {
	cfg := storagenode.DefaultConfig()
	cfg.ID = "sn1"
	cfg.DataDir = "/var/lib/cairn/storagenode"
	cfg.NATSAuth = exampleNATSAuth("sn1", "node-sn1")
	cfg.AdvertiseAddr = "sn1.example.net:7020"
	cfg.Site = "dc1"
	cfg.Pools = []storagenode.PoolConfig{{Name: "Default", Dir: "/var/lib/cairn/pool", MaxVolumeBytes: 50 << 30}}
	cfg.Libraries = []library.Config{{Name: "lib1", Changer: "/dev/sg3", Drives: []string{"/dev/nst0", "/dev/nst1"}}}
	cfg.TapePools = []storagenode.TapePoolConfig{{Name: "Weekly", Library: "lib1", SpoolDir: "/var/lib/cairn/storagenode/spool"}}
	cfg.SFTPPools = []storagenode.SFTPPoolConfig{{Name: "Offsite", Host: "vault.example.net", User: "cairn-sn1",
		KeyFile: "/etc/cairn/sftp/id_ed25519", KnownHosts: "/etc/cairn/sftp/known_hosts", Dir: "/srv/cairn/sn1", MaxVolumeBytes: 50 << 30}}
	cfg.S3Pools = []storagenode.S3PoolConfig{{Name: "Vault", Endpoint: "https://s3.eu-central-1.amazonaws.com", Bucket: "example-cairn-vault",
		Region: "eu-central-1", Prefix: "sn1/", CredentialsFile: "/etc/cairn/s3/vault.json", LockMode: "compliance", MaxVolumeBytes: 50 << 30}}
	common := *def.common
	common.LogFormat = "json"
	return configfile.Example{
		Header: `Cairn storage node, read by cairn-storagenode.service:
  cairn storagenode --config /etc/cairn/storagenode.json` + fmt.Sprintf(commonHeader, "storagenode") + `
The service runs as the user cairn: every file named here must be readable
by it, every pool and spool directory writable by it and listed in the
unit's ReadWritePaths=, and every tape device allowed by DeviceAllow= (see
the unit file for the drop-in). After a change:
  systemctl restart cairn-storagenode`,
		Values:   []any{&cfg, &common},
		Defaults: def.targets(),
		Live:     []string{"data", "nats", "data_addr", "pools"},
		Docs:     configDocs,
	}
}

func agentExample(def roleConfig) configfile.Example {
	cfg := agent.DefaultConfig()
	cfg.Name = "web1"
	cfg.NATSAuth = exampleNATSAuth("web1", "agent-web1")
	cfg.Site = "dc1"
	cfg.Labels = []string{"role=web", "env=prod"}
	cfg.MaxBytesPerSecond = 20 << 20
	cfg.AllowedCommandDirs = []string{"/etc/cairn/scripts"}
	cfg.AllowedCommands = []string{"/usr/sbin/runuser -u postgres -- /usr/bin/pg_dump appdb"}
	common := *def.common
	common.LogFormat = "json"
	return configfile.Example{
		Header: `Cairn agent, read by cairn-agent.service:
  cairn agent --config /etc/cairn/agent.json` + fmt.Sprintf(commonHeader, "agent") + `
The agent runs as root: it reads every file to back it up and writes any
path a restore asks for. It connects out to NATS only; a client needs no
inbound port. After a change:
  systemctl restart cairn-agent`,
		Values:   []any{&cfg, &common},
		Defaults: def.targets(),
		Live:     []string{"nats"},
		Docs:     configDocs,
	}
}

func devExample(def roleConfig) configfile.Example {
	cfg := defaultDevConfig()
	cfg.Data = "/var/tmp/cairn"
	cfg.Client = "web1"
	cfg.MaxVolumeSize = 4 << 30
	cfg.PprofAddr = "127.0.0.1:6060"
	cfg.S3Pools = []storagenode.S3PoolConfig{{Name: "Vault", Endpoint: "http://127.0.0.1:7070", Bucket: "cairn-dev", Region: "us-east-1",
		CredentialsFile: "/var/tmp/cairn-s3.json", LockMode: "governance", DefaultLock: 24 * time.Hour}}
	common := *def.common
	common.LogLevel = "debug"
	return configfile.Example{
		Header: `Cairn all in one process, for trying it and for tests:
  cairn dev --config dev.json` + fmt.Sprintf(commonHeader, "dev"),
		Values:   []any{&cfg, &common},
		Defaults: def.targets(),
		Live:     []string{"data"},
		Docs:     configDocs,
	}
}

func exampleNATSAuth(host, seed string) wire.NATSAuth {
	return wire.NATSAuth{
		CAFile:   "/etc/cairn/hosts/" + host + "/ca.crt",
		CertFile: "/etc/cairn/hosts/" + host + "/" + host + ".crt",
		KeyFile:  "/etc/cairn/hosts/" + host + "/" + host + ".key",
		NkeyFile: "/etc/cairn/nkeys/" + seed + ".nk",
	}
}

func newConfigCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "config",
		Short: "Write an example config file of a role, or check one",
		Long: `A role's config file (--config) is JSON with comment lines: a line whose
first characters are // is a comment, and a comma may end the last item of
an object or a list. Its fields are the role's flags, with _ for -; a flag
given on the command line wins over the file. Durations are written "30s",
"5m", "1h30m", sizes "512M", "50G". Tape libraries and tape pools are set in
the storage node's file only.

  cairn config example --role storagenode > /etc/cairn/storagenode.json
  cairn config check /etc/cairn/storagenode.json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return &usageError{fmt.Errorf("%s needs a subcommand: example or check", cmd.CommandPath())}
		},
	}
	c.AddCommand(newConfigExampleCmd(g), newConfigCheckCmd(g))
	return c
}

func newConfigExampleCmd(g *globals) *cobra.Command {
	var role string
	c := &cobra.Command{
		Use:   "example --role ROLE",
		Short: "Print a role's config file with every field documented",
		Long: `Print a role's config file: every field it takes, under what it is for and
its default. The fields a role needs are set; the others are commented out,
with their default or a suggestion. The packaged files in /etc/cairn are
this command's output.`,
		Example: "  cairn config example --role storagenode > storagenode.json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := configRoleNamed(role)
			if err != nil {
				return err
			}
			out, err := r.example(r.defaults()).Write()
			if err != nil {
				return err
			}
			_, err = g.out.Write(out)
			return err
		},
	}
	c.Flags().StringVar(&role, "role", "", "the role: "+roleNames())
	_ = c.MarkFlagRequired("role")
	return c
}

// configCheckResult is what 'cairn config check --json' prints.
type configCheckResult struct {
	File     string          `json:"file"`
	Role     string          `json:"role"`
	Valid    bool            `json:"valid"`
	Warnings []configFinding `json:"warnings"`
	Errors   []configFinding `json:"errors"`
}

// configFinding is one thing said of a field of a config file.
type configFinding struct {
	Line    int    `json:"line,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

func newConfigCheckCmd(g *globals) *cobra.Command {
	var role string
	c := &cobra.Command{
		Use:   "check FILE",
		Short: "Check a role's config file, naming each bad field and its fix",
		Long: `Check a role's config file as the role reads it when it starts with only
--config: every field known and of its kind (an unknown one gets the
closest name it may have meant), then the values the role needs. Fields
under an older name, and durations or sizes as bare numbers, still work and
are warned of. The role is --role, else the file's name (server.json,
storagenode.json, agent.json, dev.json), else the one whose fields the file
has.

Exit status: 0 when the file is valid (warnings or not), 1 when it is not.`,
		Example: "  cairn config check /etc/cairn/storagenode.json",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return &usageError{fmt.Errorf("%s takes one FILE, got %d arguments", cmd.CommandPath(), len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConfigCheck(g, args[0], role)
		},
	}
	c.Flags().StringVar(&role, "role", "", "the role the file is for: "+roleNames()+" (default: from the file's name or fields)")
	return c
}

func runConfigCheck(g *globals, path, roleName string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return wire.Errorf(wire.CodeInvalidArgument, "give the path of a config file", "read config file: %w", err)
	}
	var r configRole
	if roleName != "" {
		if r, err = configRoleNamed(roleName); err != nil {
			return err
		}
	} else if r, err = detectRole(path, data); err != nil {
		return err
	}
	res := configCheckResult{File: path, Role: r.name, Warnings: []configFinding{}, Errors: []configFinding{}}
	rc := r.defaults()
	warns, err := configfile.Decode(data, rc.targets()...)
	if err == nil {
		err = rc.check()
	}
	for _, w := range warns {
		res.Warnings = append(res.Warnings, configFinding{Line: w.Line, Field: w.Field, Message: w.Msg})
	}
	for _, p := range configfile.Problems(err) {
		f := configFinding{Message: p.Error()}
		var fe *configfile.FieldError
		if errors.As(p, &fe) {
			f = configFinding{Line: fe.Line, Field: fe.Field, Message: fe.Err.Error()}
		}
		res.Errors = append(res.Errors, f)
	}
	res.Valid = len(res.Errors) == 0
	if g.json {
		if err := printJSON(g.out, res); err != nil {
			return err
		}
	} else {
		for _, w := range warns {
			fmt.Fprintf(g.out, "warning: %s\n", printable(w.String()))
		}
		if res.Valid {
			fmt.Fprintf(g.out, "%s: a valid %s config file", printable(path), r.name)
			if n := len(warns); n > 0 {
				fmt.Fprintf(g.out, " (%d %s)", n, plural(n, "warning", "warnings"))
			}
			fmt.Fprintln(g.out)
		}
	}
	if res.Valid {
		return nil
	}
	return configFileError(path, r.name, err)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// detectRole tells the role of a config file by its name (server.json,
// cairn-storagenode.json), else by its fields: the one role whose fields
// it has the most of, with none unknown to it.
func detectRole(path string, data []byte) (configRole, error) {
	base := strings.TrimPrefix(strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)), "cairn-")
	if r, err := configRoleNamed(base); err == nil {
		return r, nil
	}
	best, bestUnknown, tie := -1, 0, false
	for i, r := range configRoles {
		_, err := configfile.Decode(data, r.defaults().targets()...)
		var fe *configfile.FieldError
		if err != nil && errors.As(err, &fe) && len(configfile.Problems(err)) == 1 && fe.Field == "" {
			// Not JSON at all: no role reads it, and any role's check
			// says why.
			return r, nil
		}
		unknown := 0
		for _, p := range configfile.Problems(err) {
			if errors.Is(p, configfile.ErrUnknownField) && errors.As(p, &fe) && !strings.ContainsAny(fe.Field, ".[") {
				unknown++
			}
		}
		switch {
		case best < 0 || unknown < bestUnknown:
			best, bestUnknown, tie = i, unknown, false
		case unknown == bestUnknown:
			tie = true
		}
	}
	if tie {
		return configRole{}, &usageError{fmt.Errorf("cannot tell the role of %s from its name or its fields: pass --role (%s)", path, roleNames())}
	}
	return configRoles[best], nil
}
