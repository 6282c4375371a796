package changer_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/media/changer"
	"github.com/cairnbackup/cairn/media/changer/changertest"
)

// The mtx driver keeps the contract against a simulated library that
// answers as mtx 1.3.12 does.
func TestMTXContract(t *testing.T) {
	changertest.Run(t, changertest.Library{New: func(t *testing.T, s changertest.Setup) (changer.Changer, changertest.Faults) {
		dev := changertest.NewMTXDevice("/dev/sg7", s)
		m, err := changer.NewMTX(changer.MTXConfig{Device: "/dev/sg7", Binary: "mtx", Runner: dev})
		if err != nil {
			t.Fatal(err)
		}
		return m, dev
	}})
}

// The simulated library prints what the real mtx prints, where the real
// one can run here.
func TestMTXDeviceAnswersAsMTX(t *testing.T) {
	ctx := context.Background()
	dev := changertest.NewMTXDevice("/dev/sg7", changertest.Setup{Drives: 1, Slots: 2, MailSlots: 1, Cartridges: map[int]string{1: "A1"}})
	real, err := os.ReadFile(filepath.Join("testdata", "mtx", "version-1.3.12.stderr"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := dev.Run(ctx, []string{"mtx", "--version"})
	if err != nil || string(out.Stderr) != string(real) || out.ExitCode != 1 || len(out.Stdout) != 0 {
		t.Fatalf("--version: %q, exit %d, %v; mtx 1.3.12 prints %q on stderr and exits 1", out.Stderr, out.ExitCode, err, real)
	}
	out, err = dev.Run(ctx, []string{"mtx", "-f", "/dev/sg8", "status"})
	if err != nil || string(out.Stderr) != "cannot open SCSI device '/dev/sg8' - No such file or directory\n" || out.ExitCode != 1 {
		t.Fatalf("another device: %q, exit %d, %v", out.Stderr, out.ExitCode, err)
	}
	out, err = dev.Run(ctx, []string{"mtx", "-f", "/dev/sg7", "status"})
	want := "  Storage Changer /dev/sg7:1 Drives, 3 Slots ( 1 Import/Export )\n" +
		"Data Transfer Element 0:Empty\n" +
		"      Storage Element 1:Full :VolumeTag=A1\n" +
		"      Storage Element 2:Empty\n" +
		"      Storage Element 3 IMPORT/EXPORT:Empty\n"
	if err != nil || string(out.Stdout) != want || out.ExitCode != 0 {
		t.Fatalf("status:\n%s(exit %d, %v)\nwant\n%s", out.Stdout, out.ExitCode, err, want)
	}
	m, err := changer.NewMTX(changer.MTXConfig{Device: "/dev/sg7", Binary: "mtx", Runner: dev})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := m.Check(ctx); v != "1.3.12" || err != nil {
		t.Fatalf("Check = %q, %v", v, err)
	}
	if err := m.Load(ctx, 1, 0); err != nil {
		t.Fatal(err)
	}
	out, _ = dev.Run(ctx, []string{"mtx", "-f", "/dev/sg7", "status"})
	if !strings.Contains(string(out.Stdout), "Data Transfer Element 0:Full (Storage Element 1 Loaded):VolumeTag = A1\n") {
		t.Fatalf("status after a load:\n%s", out.Stdout)
	}
	calls := dev.Calls()
	if got := calls[len(calls)-2]; strings.Join(got, " ") != "mtx -f /dev/sg7 load 1 0" {
		t.Fatalf("the driver ran %q to load", got)
	}
}
