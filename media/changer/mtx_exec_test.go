package changer

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// needMTX returns the path of the real mtx binary. Without it the test
// fails under CI (scripts/install-test-deps.sh installs it) and skips,
// loudly, elsewhere.
func needMTX(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath(defaultMTX())
	if err == nil {
		return path
	}
	if os.Getenv("CAIRN_CI") != "" {
		t.Fatalf("this test needs the mtx binary (apt-get install mtx, or make deps): %v", err)
	}
	t.Skipf("SKIPPED: this test needs the mtx binary (it fails instead under CAIRN_CI=1): %v", err)
	return ""
}

// No SCSI library is attached where the tests run, so the real mtx runs
// only as far as a machine without one lets it: its version and usage,
// and the errors of a device that is missing or is not a changer.

func TestRealMTXCheck(t *testing.T) {
	path := needMTX(t)
	m, err := NewMTX(MTXConfig{Device: "/dev/cairn-no-such-changer", Binary: path})
	if err != nil {
		t.Fatal(err)
	}
	v, err := m.Check(context.Background())
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if !strings.HasPrefix(v, "1.3.") {
		t.Fatalf("version %q", v)
	}
	t.Logf("%s is mtx %s", path, v)
}

func TestRealMTXNoDevice(t *testing.T) {
	path := needMTX(t)
	ctx := context.Background()
	const dev = "/dev/cairn-no-such-changer"
	m, err := NewMTX(MTXConfig{Device: dev, Binary: path})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Inventory(ctx)
	var ce *CommandError
	if !errors.Is(err, ErrNoDevice) || !errors.As(err, &ce) {
		t.Fatalf("Inventory of a missing device = %v; want a *CommandError wrapping ErrNoDevice", err)
	}
	if ce.ExitCode != 1 || ce.Device != dev || !strings.Contains(ce.Message, "cannot open SCSI device '"+dev+"'") || !strings.Contains(ce.Message, "No such file or directory") {
		t.Fatalf("CommandError %+v", ce)
	}
	t.Log(err)

	// A move fails the same way, before any robot could move, as a
	// *MoveError naming the move.
	err = m.Load(ctx, 1, 0)
	var me *MoveError
	if !errors.Is(err, ErrNoDevice) || !errors.As(err, &me) || me.Op != "load" || me.From != (Addr{KindSlot, 1}) || me.To != (Addr{KindDrive, 0}) {
		t.Fatalf("Load on a missing device = %v", err)
	}
}

func TestRealMTXNotAChanger(t *testing.T) {
	path := needMTX(t)
	m, err := NewMTX(MTXConfig{Device: "/dev/null", Binary: path})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Inventory(context.Background())
	var ce *CommandError
	if !errors.Is(err, ErrNoDevice) || !errors.As(err, &ce) || !strings.Contains(ce.Message, "is not an sg device") {
		t.Fatalf("Inventory of /dev/null = %v; want ErrNoDevice saying it is not an sg device", err)
	}
}

func TestExecRunner(t *testing.T) {
	ctx := context.Background()
	out, err := ExecRunner{}.Run(ctx, []string{"sh", "-c", "echo out; echo err >&2; exit 3"})
	if err != nil || string(out.Stdout) != "out\n" || string(out.Stderr) != "err\n" || out.ExitCode != 3 {
		t.Fatalf("Run = %+v, %v", out, err)
	}
	if _, err := (ExecRunner{}).Run(ctx, []string{"cairn-no-such-program"}); !errors.Is(err, exec.ErrNotFound) {
		t.Fatalf("Run of a missing program = %v", err)
	}

	// A command that outlives its context is killed and Run returns at
	// the deadline.
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = ExecRunner{}.Run(tctx, []string{"sleep", "30"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run past its deadline = %v", err)
	}
	if d := time.Since(start); d > killGrace {
		t.Fatalf("Run returned %s after a 100ms deadline", d)
	}
}

func TestRealMTXMissingBinary(t *testing.T) {
	m, err := NewMTX(MTXConfig{Device: "/dev/sg1", Binary: "/nonexistent/mtx"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Inventory(context.Background())
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/mtx -f /dev/sg1 status") {
		t.Fatalf("Inventory with no mtx binary = %v", err)
	}
	if _, err := m.Check(context.Background()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Check with no mtx binary = %v", err)
	}
}
