package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cairnbackup/cairn/internal/configfile"
	"github.com/cairnbackup/cairn/wire"
)

// roleFields are the flags every long-running role has, which its config
// file sets too, beside the fields of the role's own Config.
type roleFields struct {
	// LogLevel is the least severe level logged: debug, info, warn or
	// error. SIGHUP reads it again from the file, unless --log-level was
	// given.
	LogLevel string `json:"log_level"`
	// LogFormat is "text" for people, or "json" for a log shipper: one
	// JSON object a line (time, level, msg and the attributes as fields).
	LogFormat string `json:"log_format"`
	// MetricsAddr is the address Prometheus metrics are served on
	// (http://ADDR/metrics); empty serves none.
	MetricsAddr string `json:"metrics_addr"`
	// MemoryLimit is a soft limit on the memory the process's Go runtime
	// holds ("96M"): nearing it, the garbage collector runs sooner than
	// its usual heap goal of twice the live heap, trading CPU for resident
	// memory (the buffers of a stream are short-lived, so most of a
	// role's heap between collections is garbage). It is not a cap: a
	// live heap above it costs CPU (at most half of it on collection),
	// not a failure. 0 sets none. GOMEMLIMIT in the environment wins over
	// the role's default, not over a value given here or as a flag.
	MemoryLimit int64 `json:"memory_limit" config:"size"`
}

const defaultLogLevel = "info"

// Validate names a log level or format that no logger takes.
func (r *roleFields) Validate() error {
	var errs []error
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(r.LogLevel)); err != nil {
		errs = append(errs, configfile.Fieldf("log_level", "%q is no log level: use debug, info, warn or error", r.LogLevel))
	}
	if r.LogFormat != "text" && r.LogFormat != "json" {
		errs = append(errs, configfile.Fieldf("log_format", "%q is no log format: use text or json", r.LogFormat))
	}
	if r.MemoryLimit < 0 {
		errs = append(errs, configfile.Fieldf("memory_limit", "%d is below 0: give a size such as 96M, or 0 for no limit", r.MemoryLimit))
	}
	return errors.Join(errs...)
}

// loadConfig fills targets (pointers to the structs the role's flags are
// bound to) from the config file at path, then applies again the flags
// given on the command line, so they win over the file. It returns what
// the file says that still works but should change, for the role to log.
func loadConfig(cmd *cobra.Command, path string, targets ...any) ([]configfile.Warning, error) {
	if path == "" {
		return nil, nil
	}
	changed := map[string]string{}
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if f.Value.Type() != "stringArray" && f.Value.Type() != "stringSlice" {
			changed[f.Name] = f.Value.String()
		}
	})
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, wire.Errorf(wire.CodeInvalidArgument, "give --config the path of a config file; 'cairn config example' writes one",
			"read config file: %w", err)
	}
	warns, err := configfile.Decode(data, targets...)
	if err != nil {
		return warns, configFileError(path, cmd.Name(), err)
	}
	for name, v := range changed {
		if err := cmd.Flags().Set(name, v); err != nil {
			return warns, err
		}
	}
	return warns, nil
}

// configFileError says everything wrong with a config file, a field a
// line, and where to look.
func configFileError(path, role string, err error) error {
	var b strings.Builder
	fmt.Fprintf(&b, "config file %s:", path)
	for _, p := range configfile.Problems(err) {
		b.WriteString("\n  " + p.Error())
	}
	return wire.Errorf(wire.CodeInvalidArgument,
		fmt.Sprintf("correct each field named; 'cairn config example --role %s' shows every field, with what it takes", role),
		"%s", b.String())
}

// readLogLevel is the log_level of a config file, "" when it has none; the
// rest of the file is not looked at, as SIGHUP reloads only the level.
func readLogLevel(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read config file: %w", err)
	}
	var rf roleFields
	if _, err := (configfile.Decoder{IgnoreUnknown: true}).Decode(data, &rf); err != nil {
		return "", configFileError(path, "", err)
	}
	return rf.LogLevel, nil
}

// sizeValue is a flag of a size in bytes, given with a unit ("50G") as
// the config file gives it.
type sizeValue int64

func (s *sizeValue) Set(v string) error {
	n, err := configfile.ParseSize(v)
	if err != nil {
		return err
	}
	*s = sizeValue(n)
	return nil
}

func (s *sizeValue) String() string { return configfile.FormatSize(int64(*s)) }
func (s *sizeValue) Type() string   { return "size" }
