package main

import (
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/cairnbackup/cairn/storagenode"
)

// TestMemoryLimit: --memory-limit and memory_limit set the process's soft
// memory limit; a role's default gives way to GOMEMLIMIT, a value given
// does not; 0 sets none; a negative one in a file is refused.
func TestMemoryLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	log := slog.New(slog.DiscardHandler)
	limit := func() int64 { return debug.SetMemoryLimit(-1) }
	bind := func(def int64, args ...string) *roleOpts {
		t.Helper()
		o := &roleOpts{}
		f := pflag.NewFlagSet("role", pflag.ContinueOnError)
		o.bind(f, "", def)
		if err := f.Parse(args); err != nil {
			t.Fatal(err)
		}
		return o
	}

	debug.SetMemoryLimit(math.MaxInt64)
	t.Setenv("GOMEMLIMIT", "")
	os.Unsetenv("GOMEMLIMIT")
	bind(agentMemoryLimit).applyMemoryLimit(log)
	if got := limit(); got != agentMemoryLimit {
		t.Errorf("the agent's default: limit %d, want %d", got, agentMemoryLimit)
	}
	bind(agentMemoryLimit, "--memory-limit", "40M").applyMemoryLimit(log)
	if got := limit(); got != 40<<20 {
		t.Errorf("--memory-limit 40M: limit %d, want %d", got, 40<<20)
	}

	// The runtime applied GOMEMLIMIT before main: the default leaves it.
	debug.SetMemoryLimit(123 << 20)
	t.Setenv("GOMEMLIMIT", "123MiB")
	bind(devMemoryLimit).applyMemoryLimit(log)
	if got := limit(); got != 123<<20 {
		t.Errorf("the default under GOMEMLIMIT=123MiB: limit %d, want GOMEMLIMIT's", got)
	}
	bind(devMemoryLimit, "--memory-limit", "50M").applyMemoryLimit(log)
	if got := limit(); got != 50<<20 {
		t.Errorf("--memory-limit 50M under GOMEMLIMIT: limit %d, want %d", got, 50<<20)
	}

	// 0 given over a role's default sets none, GOMEMLIMIT's neither.
	bind(devMemoryLimit, "--memory-limit", "0").applyMemoryLimit(log)
	if got := limit(); got != math.MaxInt64 {
		t.Errorf("--memory-limit 0 under GOMEMLIMIT: limit %d, want none", got)
	}

	// 0 sets none: the limit stays what it was.
	debug.SetMemoryLimit(math.MaxInt64)
	os.Unsetenv("GOMEMLIMIT")
	bind(0).applyMemoryLimit(log)
	if got := limit(); got != math.MaxInt64 {
		t.Errorf("no limit asked: limit %d", got)
	}

	// In a config file, beside the role's own fields.
	path := filepath.Join(t.TempDir(), "storagenode.json")
	os.WriteFile(path, []byte(`{"memory_limit": "200M", "workers": 3}`), 0o600)
	cfg := storagenode.DefaultConfig()
	var rf roleFields
	rf.LogLevel, rf.LogFormat = "info", "text"
	if _, err := loadConfig(newStorageNodeCmd(&globals{}), path, &cfg, &rf); err != nil || rf.MemoryLimit != 200<<20 || cfg.Workers != 3 {
		t.Fatalf("memory_limit in a file: %v, %+v", err, rf)
	}
	os.WriteFile(path, []byte(`{"memory_limit": -5}`), 0o600)
	if _, err := loadConfig(newStorageNodeCmd(&globals{}), path, &cfg, &rf); err == nil || !strings.Contains(err.Error(), "memory_limit") {
		t.Fatalf("a negative memory_limit was accepted: %v", err)
	}
}
