package changer_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// The emulated library keeps the contract, with drives attached.
func TestLibraryContract(t *testing.T) {
	changertest.Run(t, changertest.Library{New: func(t *testing.T, s changertest.Setup) (changer.Changer, changertest.Faults) {
		lib, drives := openLibrary(t, s)
		return lib, libraryFaults{lib, drives}
	}})
}

func openLibrary(t *testing.T, s changertest.Setup) (*changer.Library, []*recordingDrive) {
	t.Helper()
	carts := make([]string, s.Slots+s.MailSlots)
	for n, b := range s.Cartridges {
		carts[n-1] = b
	}
	lib, err := changer.OpenLibrary(changer.LibraryConfig{Dir: t.TempDir(), Drives: s.Drives, Slots: s.Slots, MailSlots: s.MailSlots, Cartridges: carts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	drives := make([]*recordingDrive, s.Drives)
	for i := range drives {
		drives[i] = &recordingDrive{}
		if err := lib.Attach(i, drives[i]); err != nil {
			t.Fatal(err)
		}
	}
	return lib, drives
}

type libraryFaults struct {
	*changer.Library
	drives []*recordingDrive
}

func (f libraryFaults) HoldDrive(drive int, hold bool) { f.drives[drive].setHold(hold) }

// recordingDrive is a DriveSlot that remembers what it was told, and can
// be made to keep its cartridge.
type recordingDrive struct {
	mu      sync.Mutex
	barcode string
	log     []string
	hold    bool
	refuse  error // LoadCartridge fails with it when set
}

var errTapeOpen = errors.New("the tape is open for writing")

func (d *recordingDrive) LoadCartridge(barcode string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.log = append(d.log, "load "+barcode)
	if d.refuse != nil {
		return d.refuse
	}
	d.barcode = barcode
	return nil
}

func (d *recordingDrive) UnloadCartridge() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.log = append(d.log, "unload "+d.barcode)
	if d.hold {
		return errTapeOpen
	}
	d.barcode = ""
	return nil
}

func (d *recordingDrive) setHold(hold bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hold = hold
}

func (d *recordingDrive) state() (string, []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.barcode, append([]string(nil), d.log...)
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
	must(t, m.Load(ctx, 1, 0))
	out, _ = dev.Run(ctx, []string{"mtx", "-f", "/dev/sg7", "status"})
	if !strings.Contains(string(out.Stdout), "Data Transfer Element 0:Full (Storage Element 1 Loaded):VolumeTag = A1\n") {
		t.Fatalf("status after a load:\n%s", out.Stdout)
	}
	calls := dev.Calls()
	if got := calls[len(calls)-2]; strings.Join(got, " ") != "mtx -f /dev/sg7 load 1 0" {
		t.Fatalf("the driver ran %q to load", got)
	}
}
