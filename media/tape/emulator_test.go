package tape_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/tape/tapetest"
	"github.com/cairnbackup/cairn/media/volume"
)

const testBS = volume.MinBlockSize

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newCartridge(t *testing.T, spec tape.CartridgeSpec) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cart.tape")
	if err := tape.CreateCartridge(path, spec); err != nil {
		t.Fatal(err)
	}
	return path
}

// newEmulator is an emulated LTO-9 on a virtual clock: realistic timings
// that cost no wall time.
func newEmulator(t *testing.T, clock tape.Clock) *tape.Emulator {
	if clock == nil {
		clock = tape.NewVirtualClock()
	}
	return tape.NewEmulator(tape.EmulatorConfig{Name: "lto0", Clock: clock, BlockSize: testBS})
}

func loadedEmulator(t *testing.T, path string) *tape.Emulator {
	t.Helper()
	e := newEmulator(t, nil)
	if err := e.Insert(path); err != nil {
		t.Fatal(err)
	}
	if err := e.Load(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestEmulatorContract(t *testing.T) {
	tapetest.TestDrive(t, tapetest.Harness{
		BlockSize: testBS,
		New: func(t *testing.T, spec tape.CartridgeSpec) tape.Drive {
			return loadedEmulator(t, newCartridge(t, spec))
		},
		Empty:  func(t *testing.T) tape.Drive { return newEmulator(t, nil) },
		Inject: func(t *testing.T, d tape.Drive, f tape.Faults) { d.(*tape.Emulator).SetFaults(f) },
		SetWriteProtect: func(t *testing.T, d tape.Drive, on bool) {
			e := d.(*tape.Emulator)
			if err := e.Unload(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			path, err := e.Remove()
			if err != nil {
				t.Fatal(err)
			}
			if err := tape.SetWriteProtect(path, on); err != nil {
				t.Fatal(err)
			}
			if err := e.Insert(path); err != nil {
				t.Fatal(err)
			}
			if err := e.Load(ctxT(t)); err != nil {
				t.Fatal(err)
			}
		},
		Reopen: func(t *testing.T, d tape.Drive) tape.Drive {
			return loadedEmulator(t, d.(*tape.Emulator).Cartridge())
		},
	})
}
