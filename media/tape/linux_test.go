package tape_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/tape/tapetest"
)

// linuxRig is the Linux driver over a model of st and a drive.
type linuxRig struct {
	mu    sync.Mutex
	fakes map[tape.Drive]*tape.FakeST
}

func (r *linuxRig) driver(t *testing.T, k *tape.FakeST) *tape.Linux {
	t.Helper()
	d, err := tape.NewLinux(tape.LinuxConfig{Name: "nst0", Path: "/dev/nst0", BlockSize: testBS, Open: k.Open})
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.fakes[d] = k
	r.mu.Unlock()
	return d
}

func (r *linuxRig) fake(d tape.Drive) *tape.FakeST {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fakes[d]
}

func (r *linuxRig) harness() tapetest.Harness {
	return tapetest.Harness{
		BlockSize: testBS,
		New: func(t *testing.T, spec tape.CartridgeSpec) tape.Drive {
			k := tape.NewFakeST()
			t.Cleanup(func() { k.SetFaults(tape.Faults{}) })
			k.Insert(newCartridge(t, spec))
			d := r.driver(t, k)
			if err := d.Load(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			return d
		},
		Empty:  func(t *testing.T) tape.Drive { return r.driver(t, tape.NewFakeST()) },
		Inject: func(t *testing.T, d tape.Drive, f tape.Faults) { r.fake(d).SetFaults(f) },
		SetWriteProtect: func(t *testing.T, d tape.Drive, on bool) {
			if err := d.Unload(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if err := tape.SetWriteProtect(r.fake(d).Cartridge(), on); err != nil {
				t.Fatal(err)
			}
			if err := d.Load(ctxT(t)); err != nil {
				t.Fatal(err)
			}
		},
		Reopen: func(t *testing.T, d tape.Drive) tape.Drive {
			d2 := r.driver(t, r.fake(d))
			if err := d2.Load(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			return d2
		},
	}
}

func TestLinuxContract(t *testing.T) {
	r := &linuxRig{fakes: map[tape.Drive]*tape.FakeST{}}
	tapetest.TestDrive(t, r.harness())
}

func TestLinuxRefusesARewindingNode(t *testing.T) {
	for _, path := range []string{"/dev/st0", "/dev/tape0", ""} {
		if _, err := tape.NewLinux(tape.LinuxConfig{Path: path}); err == nil {
			t.Errorf("NewLinux(%q) accepted a device that is not a non-rewinding tape node", path)
		}
	}
	for _, path := range []string{"/dev/nst0", "/dev/nst12l", "/dev/tape/by-id/scsi-35000e11156304001-nst"} {
		if _, err := tape.NewLinux(tape.LinuxConfig{Path: path}); err != nil {
			t.Errorf("NewLinux(%q): %v", path, err)
		}
	}
}

// A drive that does not take the block size must not be used: every
// record would be read wrong.
func TestLinuxChecksTheBlockSizeAfterLoad(t *testing.T) {
	r := &linuxRig{fakes: map[tape.Drive]*tape.FakeST{}}
	k := tape.NewFakeST()
	k.KeepBlockSize = true
	k.Insert(newCartridge(t, tape.CartridgeSpec{Capacity: 1 << 30}))
	d := r.driver(t, k)
	defer d.Close()
	if err := d.Load(ctxT(t)); !errors.Is(err, tape.ErrBlockSize) {
		t.Fatalf("load on a drive that ignores MTSETBLK: %v, want ErrBlockSize", err)
	}
}

func TestLinuxBusyWhenAnotherProcessHoldsTheDrive(t *testing.T) {
	r := &linuxRig{fakes: map[tape.Drive]*tape.FakeST{}}
	k := tape.NewFakeST()
	k.Insert(newCartridge(t, tape.CartridgeSpec{Capacity: 1 << 30}))
	d1 := r.driver(t, k)
	defer d1.Close()
	if err := d1.Load(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	d2 := r.driver(t, k)
	defer d2.Close()
	if err := d2.Load(ctxT(t)); !errors.Is(err, tape.ErrBusy) {
		t.Fatalf("load of a drive another process holds: %v, want ErrBusy", err)
	}
}

func TestLinuxStatusDecoding(t *testing.T) {
	r := &linuxRig{fakes: map[tape.Drive]*tape.FakeST{}}
	h := r.harness()
	d := h.New(t, tape.CartridgeSpec{Capacity: 1 << 30})
	defer d.Close()
	h.Inject(t, d, tape.Faults{CleaningRequested: true, SoftErrors: 7})
	st, err := d.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	want := tape.Status{Medium: true, BlockSize: testBS, Density: 0x60, SoftErrors: 7, CleaningRequested: true,
		BeginningOfMedium: true, Position: tape.Position{Block: 0, File: 0, Record: 0}}
	if st != want {
		t.Fatalf("status %+v\nwant   %+v", st, want)
	}
}
