// Package changertest is the contract test suite of changer.Changer:
// every implementation (the mtx driver, the emulated library) runs it in a
// few lines, so they all keep the contract the storage node relies on.
// It also holds MTXDevice, a simulated SCSI library behind the mtx command
// line, for tests of code that drives a library through mtx.
package changertest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/media/changer"
)

// Setup is the library a test starts from. Storage elements are numbered
// as the contract says: slots 1 to Slots, then mail slots.
type Setup struct {
	Drives, Slots, MailSlots int
	// Cartridges maps storage element numbers to the barcodes of the
	// cartridges in them; drives start empty.
	Cartridges map[int]string
}

// Faults are the failures the suite injects. Each implementation brings
// them about its own way: the emulated library natively, MTXDevice by
// printing what a failing library makes mtx print.
type Faults interface {
	// StickRobot makes every move hang until its context ends (true), or
	// lets the robot move again (false).
	StickRobot(stuck bool)
	// Misread makes the reader report barcode as as.
	Misread(barcode, as string)
	// Phantom makes the empty storage element n report full with barcode.
	Phantom(n int, barcode string) error
	// HoldDrive makes drive keep its cartridge, as a drive whose tape is
	// in use does (true), or give it up again (false).
	HoldDrive(drive int, hold bool)
}

// Library is what the suite needs from an implementation.
type Library struct {
	// New returns a changer over a fresh library laid out as s, and the
	// way to make it fail.
	New func(t *testing.T, s Setup) (changer.Changer, Faults)
}

// The library most tests start from: 2 drives, slots 1-6, mail slots 7
// and 8, three cartridges in slots and one waiting in a mail slot.
var standard = Setup{
	Drives: 2, Slots: 6, MailSlots: 2,
	Cartridges: map[int]string{1: "A00001L9", 2: "A00002L9", 3: "A00003L9", 8: "B00001L9"},
}

// Run runs the contract tests.
func Run(t *testing.T, lib Library) {
	t.Run("Inventory", func(t *testing.T) { testInventory(t, lib) })
	t.Run("LoadUnload", func(t *testing.T) { testLoadUnload(t, lib) })
	t.Run("Transfer", func(t *testing.T) { testTransfer(t, lib) })
	t.Run("Refused", func(t *testing.T) { testRefused(t, lib) })
	t.Run("ImportExport", func(t *testing.T) { testImportExport(t, lib) })
	t.Run("LoadBarcode", func(t *testing.T) { testLoadBarcode(t, lib) })
	t.Run("Cancelled", func(t *testing.T) { testCancelled(t, lib) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, lib) })
	t.Run("StuckRobot", func(t *testing.T) { testStuckRobot(t, lib) })
	t.Run("Misread", func(t *testing.T) { testMisread(t, lib) })
	t.Run("Phantom", func(t *testing.T) { testPhantom(t, lib) })
	t.Run("DriveBusy", func(t *testing.T) { testDriveBusy(t, lib) })
}

// state renders an inventory as a map from element to what it reports:
// "-" for empty, the barcode, "?" for full with no barcode, and for a
// drive "<N" for its source.
func state(t *testing.T, c changer.Changer) map[changer.Addr]string {
	t.Helper()
	inv, err := c.Inventory(context.Background())
	if err != nil {
		t.Fatalf("Inventory: %v", err)
	}
	m := map[changer.Addr]string{}
	for _, list := range [][]changer.Element{inv.Drives, inv.Slots, inv.MailSlots} {
		for _, e := range list {
			v := "-"
			if e.Full {
				v = e.Barcode
				if v == "" {
					v = "?"
				}
				if e.Kind == changer.KindDrive {
					v += fmt.Sprintf("<%d", e.Source)
				}
			}
			m[e.Addr] = v
		}
	}
	return m
}

func drive(n int) changer.Addr { return changer.Addr{Kind: changer.KindDrive, Number: n} }
func slot(n int) changer.Addr  { return changer.Addr{Kind: changer.KindSlot, Number: n} }
func mail(n int) changer.Addr  { return changer.Addr{Kind: changer.KindMailSlot, Number: n} }

// expect checks the elements named in want, and that nothing else is
// full.
func expect(t *testing.T, c changer.Changer, want map[changer.Addr]string) {
	t.Helper()
	got := state(t, c)
	for a, v := range got {
		w, ok := want[a]
		if !ok {
			w = "-"
		}
		if v != w {
			t.Errorf("%s reports %q; want %q", a, v, w)
		}
	}
	for a := range want {
		if _, ok := got[a]; !ok {
			t.Errorf("inventory has no %s", a)
		}
	}
}

func standardState() map[changer.Addr]string {
	return map[changer.Addr]string{slot(1): "A00001L9", slot(2): "A00002L9", slot(3): "A00003L9", mail(8): "B00001L9"}
}

func testInventory(t *testing.T, lib Library) {
	c, _ := lib.New(t, standard)
	inv, err := c.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Drives) != 2 || len(inv.Slots) != 6 || len(inv.MailSlots) != 2 {
		t.Fatalf("%d drives, %d slots, %d mail slots; want 2, 6, 2", len(inv.Drives), len(inv.Slots), len(inv.MailSlots))
	}
	for i, e := range inv.Drives {
		if e.Addr != drive(i) || e.Full || e.Barcode != "" || e.Source != 0 {
			t.Errorf("drive %d: %+v", i, e)
		}
	}
	for i, e := range inv.Slots {
		if e.Addr != slot(i+1) {
			t.Errorf("slot %d is %v", i+1, e.Addr)
		}
	}
	for i, e := range inv.MailSlots {
		if e.Addr != mail(7+i) {
			t.Errorf("mail slot %d is %v", 7+i, e.Addr)
		}
	}
	expect(t, c, standardState())
	if e, ok := inv.Find("B00001L9"); !ok || e.Addr != mail(8) {
		t.Errorf("Find(B00001L9) = %v, %v", e, ok)
	}
}

func testLoadUnload(t *testing.T, lib Library) {
	ctx := context.Background()
	c, _ := lib.New(t, standard)
	must(t, c.Load(ctx, 1, 0))
	must(t, c.Load(ctx, 2, 1))
	want := standardState()
	delete(want, slot(1))
	delete(want, slot(2))
	want[drive(0)], want[drive(1)] = "A00001L9<1", "A00002L9<2"
	expect(t, c, want)

	// Home, then elsewhere.
	must(t, c.Unload(ctx, 0, 0))
	must(t, c.Unload(ctx, 1, 5))
	want = standardState()
	delete(want, slot(2))
	want[slot(5)] = "A00002L9"
	expect(t, c, want)

	// Straight from a mail slot and back to it.
	must(t, c.Load(ctx, 8, 1))
	want2 := copyState(want)
	delete(want2, mail(8))
	want2[drive(1)] = "B00001L9<8"
	expect(t, c, want2)
	must(t, c.Unload(ctx, 1, 0))
	expect(t, c, want)
}

func copyState(m map[changer.Addr]string) map[changer.Addr]string {
	c := make(map[changer.Addr]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func testTransfer(t *testing.T, lib Library) {
	ctx := context.Background()
	c, _ := lib.New(t, standard)
	must(t, c.Transfer(ctx, 1, 6)) // slot to slot
	must(t, c.Transfer(ctx, 8, 1)) // mail slot to slot: an import
	must(t, c.Transfer(ctx, 2, 7)) // slot to mail slot: an export
	must(t, c.Transfer(ctx, 7, 8)) // mail slot to mail slot
	expect(t, c, map[changer.Addr]string{slot(1): "B00001L9", slot(3): "A00003L9", slot(6): "A00001L9", mail(8): "A00002L9"})
}

func testRefused(t *testing.T, lib Library) {
	ctx := context.Background()
	c, _ := lib.New(t, standard)
	must(t, c.Load(ctx, 3, 1))
	// Drive 1 holds A00003L9 from slot 3; slot 3 now takes A00002L9, so
	// drive 1's home is full.
	must(t, c.Transfer(ctx, 2, 3))
	before := state(t, c)
	for _, tc := range []struct {
		name     string
		move     func() error
		want     error
		op       string
		from, to changer.Addr
	}{
		{"load from an empty slot", func() error { return c.Load(ctx, 4, 0) }, changer.ErrSourceEmpty, "load", slot(4), drive(0)},
		{"load from an empty mail slot", func() error { return c.Load(ctx, 7, 0) }, changer.ErrSourceEmpty, "load", mail(7), drive(0)},
		{"load into a full drive", func() error { return c.Load(ctx, 1, 1) }, changer.ErrDestinationFull, "load", slot(1), drive(1)},
		{"unload an empty drive", func() error { return c.Unload(ctx, 0, 4) }, changer.ErrSourceEmpty, "unload", drive(0), slot(4)},
		{"unload into a full slot", func() error { return c.Unload(ctx, 1, 1) }, changer.ErrDestinationFull, "unload", drive(1), slot(1)},
		{"unload into a full mail slot", func() error { return c.Unload(ctx, 1, 8) }, changer.ErrDestinationFull, "unload", drive(1), mail(8)},
		{"unload home when home is full", func() error { return c.Unload(ctx, 1, 0) }, changer.ErrDestinationFull, "unload", drive(1), slot(3)},
		{"transfer from an empty slot", func() error { return c.Transfer(ctx, 5, 6) }, changer.ErrSourceEmpty, "transfer", slot(5), slot(6)},
		{"transfer into a full slot", func() error { return c.Transfer(ctx, 1, 3) }, changer.ErrDestinationFull, "transfer", slot(1), slot(3)},
		{"transfer onto itself", func() error { return c.Transfer(ctx, 1, 1) }, changer.ErrDestinationFull, "transfer", slot(1), slot(1)},
		{"load from no slot", func() error { return c.Load(ctx, 9, 0) }, changer.ErrNoElement, "load", slot(9), drive(0)},
		{"load from slot 0", func() error { return c.Load(ctx, 0, 0) }, changer.ErrNoElement, "load", slot(0), drive(0)},
		{"load into no drive", func() error { return c.Load(ctx, 1, 2) }, changer.ErrNoElement, "load", slot(1), drive(2)},
		{"unload no drive", func() error { return c.Unload(ctx, -1, 4) }, changer.ErrNoElement, "unload", drive(-1), slot(4)},
		{"unload into no slot", func() error { return c.Unload(ctx, 1, 99) }, changer.ErrNoElement, "unload", drive(1), slot(99)},
		{"transfer from no slot", func() error { return c.Transfer(ctx, 9, 4) }, changer.ErrNoElement, "transfer", slot(9), slot(4)},
		{"transfer into no slot", func() error { return c.Transfer(ctx, 1, -4) }, changer.ErrNoElement, "transfer", slot(1), slot(-4)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.move()
			var me *changer.MoveError
			if !errors.Is(err, tc.want) || !errors.As(err, &me) {
				t.Fatalf("err = %v; want a *changer.MoveError wrapping %v", err, tc.want)
			}
			if me.Op != tc.op || me.From != tc.from || me.To != tc.to || me.Changer == "" {
				t.Fatalf("MoveError{Changer %q, Op %q, From %v, To %v}; want %q from %v to %v", me.Changer, me.Op, me.From, me.To, tc.op, tc.from, tc.to)
			}
			if errors.Is(err, changer.ErrNoAnswer) {
				t.Fatalf("err = %v; a refused move is not a robot that did not answer", err)
			}
			if after := state(t, c); !reflect.DeepEqual(after, before) {
				t.Fatalf("a refused move changed the library:\n%v\nwas\n%v", after, before)
			}
		})
	}
}

func testImportExport(t *testing.T, lib Library) {
	ctx := context.Background()
	c, _ := lib.New(t, standard)
	moves, err := changer.Import(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if want := []changer.Move{{Barcode: "B00001L9", From: mail(8), To: slot(4)}}; !reflect.DeepEqual(moves, want) {
		t.Fatalf("Import = %+v; want %+v", moves, want)
	}
	if moves, err := changer.Import(ctx, c); err != nil || len(moves) != 0 {
		t.Fatalf("Import with empty mail slots = %+v, %v", moves, err)
	}

	m, err := changer.Export(ctx, c, "A00002L9")
	if err != nil || m != (changer.Move{Barcode: "A00002L9", From: slot(2), To: mail(7)}) {
		t.Fatalf("Export(A00002L9) = %+v, %v", m, err)
	}
	// From a drive, straight out.
	must(t, c.Load(ctx, 3, 0))
	m, err = changer.Export(ctx, c, "A00003L9")
	if err != nil || m != (changer.Move{Barcode: "A00003L9", From: drive(0), To: mail(8)}) {
		t.Fatalf("Export(A00003L9) from a drive = %+v, %v", m, err)
	}
	// Already out: nothing to move.
	if m, err := changer.Export(ctx, c, "A00003L9"); err != nil || m.From != mail(8) || m.To != mail(8) {
		t.Fatalf("Export of a cartridge in a mail slot = %+v, %v", m, err)
	}
	if _, err := changer.Export(ctx, c, "A00001L9"); !errors.Is(err, changer.ErrNoFreeSlot) {
		t.Fatalf("Export with every mail slot full = %v; want ErrNoFreeSlot", err)
	}
	if _, err := changer.Export(ctx, c, "Z99999L9"); !errors.Is(err, changer.ErrNotFound) {
		t.Fatalf("Export of a cartridge not in the library = %v; want ErrNotFound", err)
	}
	expect(t, c, map[changer.Addr]string{slot(1): "A00001L9", slot(4): "B00001L9", mail(7): "A00002L9", mail(8): "A00003L9"})

	// A full library imports what fits and says why it stopped.
	c, _ = lib.New(t, Setup{Drives: 1, Slots: 2, MailSlots: 2, Cartridges: map[int]string{1: "C1", 3: "C3", 4: "C4"}})
	moves, err = changer.Import(ctx, c)
	if !errors.Is(err, changer.ErrNoFreeSlot) || !reflect.DeepEqual(moves, []changer.Move{{Barcode: "C3", From: mail(3), To: slot(2)}}) {
		t.Fatalf("Import into a library with one free slot = %+v, %v", moves, err)
	}
}

func testLoadBarcode(t *testing.T, lib Library) {
	ctx := context.Background()
	c, _ := lib.New(t, standard)
	e, err := changer.LoadBarcode(ctx, c, "A00002L9", 1)
	if err != nil || e.Addr != slot(2) {
		t.Fatalf("LoadBarcode = %v, %v", e, err)
	}
	if e, err := changer.LoadBarcode(ctx, c, "A00002L9", 1); err != nil || e.Addr != drive(1) {
		t.Fatalf("LoadBarcode of a cartridge already in the drive = %v, %v", e, err)
	}
	if _, err := changer.LoadBarcode(ctx, c, "A00002L9", 0); !errors.Is(err, changer.ErrDriveBusy) {
		t.Fatalf("LoadBarcode of a cartridge in another drive = %v; want ErrDriveBusy", err)
	}
	if _, err := changer.LoadBarcode(ctx, c, "Z99999L9", 0); !errors.Is(err, changer.ErrNotFound) {
		t.Fatalf("LoadBarcode of a cartridge not in the library = %v; want ErrNotFound", err)
	}
	// From a mail slot, as a restore does with the tape an operator just
	// put in.
	if e, err := changer.LoadBarcode(ctx, c, "B00001L9", 0); err != nil || e.Addr != mail(8) {
		t.Fatalf("LoadBarcode from a mail slot = %v, %v", e, err)
	}
	want := standardState()
	delete(want, slot(2))
	delete(want, mail(8))
	want[drive(0)], want[drive(1)] = "B00001L9<8", "A00002L9<2"
	expect(t, c, want)
}

func testCancelled(t *testing.T, lib Library) {
	c, _ := lib.New(t, standard)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for name, move := range map[string]func() error{
		"load":     func() error { return c.Load(ctx, 1, 0) },
		"unload":   func() error { return c.Unload(ctx, 0, 1) },
		"transfer": func() error { return c.Transfer(ctx, 1, 4) },
	} {
		if err := move(); !errors.Is(err, context.Canceled) || errors.Is(err, changer.ErrNoAnswer) {
			t.Errorf("%s with a cancelled context = %v; want context.Canceled and no ErrNoAnswer: nothing was attempted", name, err)
		}
	}
	if _, err := c.Inventory(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Inventory with a cancelled context = %v", err)
	}
	expect(t, c, standardState())
}

func testConcurrent(t *testing.T, lib Library) {
	ctx := context.Background()
	c, _ := lib.New(t, standard)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for d := 0; d < 2; d++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Load(ctx, d+1, d); err != nil {
				errs <- err
				return
			}
			if err := c.Unload(ctx, d, 0); err != nil {
				errs <- err
				return
			}
			errs <- c.Load(ctx, d+1, d)
		}()
	}
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				if _, err := c.Inventory(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	want := standardState()
	delete(want, slot(1))
	delete(want, slot(2))
	want[drive(0)], want[drive(1)] = "A00001L9<1", "A00002L9<2"
	expect(t, c, want)
}

func testStuckRobot(t *testing.T, lib Library) {
	c, f := lib.New(t, standard)
	f.StickRobot(true)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := c.Load(ctx, 1, 0)
	var me *changer.MoveError
	if !errors.Is(err, changer.ErrNoAnswer) || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &me) {
		t.Fatalf("Load with a stuck robot = %v; want a *MoveError wrapping ErrNoAnswer and the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Load with a 200ms deadline returned after %s", d)
	}
	// Where the cartridge is after a move that did not answer is for an
	// inventory to say; the robot, freed, moves again.
	f.StickRobot(false)
	if _, err := c.Inventory(context.Background()); err != nil {
		t.Fatal(err)
	}
	must(t, c.Load(context.Background(), 2, 1))
	if s := state(t, c); s[drive(1)] != "A00002L9<2" {
		t.Fatalf("drive 1 reports %q after a load once the robot was freed", s[drive(1)])
	}
}

func testMisread(t *testing.T, lib Library) {
	ctx := context.Background()
	c, f := lib.New(t, standard)
	f.Misread("A00002L9", "A00O02L9")
	want := standardState()
	want[slot(2)] = "A00O02L9"
	expect(t, c, want)
	// The library finds the cartridge by what it reads; the volume label,
	// read in the drive, is what tells the truth.
	if _, err := changer.LoadBarcode(ctx, c, "A00002L9", 0); !errors.Is(err, changer.ErrNotFound) {
		t.Fatalf("LoadBarcode of a misread barcode = %v; want ErrNotFound", err)
	}
	if _, err := changer.LoadBarcode(ctx, c, "A00O02L9", 0); err != nil {
		t.Fatal(err)
	}
	delete(want, slot(2))
	want[drive(0)] = "A00O02L9<2"
	expect(t, c, want)
}

func testPhantom(t *testing.T, lib Library) {
	ctx := context.Background()
	c, f := lib.New(t, standard)
	if err := f.Phantom(4, "P00004L9"); err != nil {
		t.Fatal(err)
	}
	want := standardState()
	want[slot(4)] = "P00004L9"
	expect(t, c, want)
	if err := c.Load(ctx, 4, 0); !errors.Is(err, changer.ErrSourceEmpty) {
		t.Fatalf("Load from a slot that reports full but is empty = %v; want ErrSourceEmpty", err)
	}
	if err := c.Transfer(ctx, 4, 5); !errors.Is(err, changer.ErrSourceEmpty) {
		t.Fatalf("Transfer from a slot that reports full but is empty = %v; want ErrSourceEmpty", err)
	}
	if err := c.Transfer(ctx, 1, 4); !errors.Is(err, changer.ErrDestinationFull) {
		t.Fatalf("Transfer into a slot that reports full = %v; want ErrDestinationFull", err)
	}
	expect(t, c, want)
}

func testDriveBusy(t *testing.T, lib Library) {
	ctx := context.Background()
	c, f := lib.New(t, standard)
	must(t, c.Load(ctx, 1, 0))
	f.HoldDrive(0, true)
	err := c.Unload(ctx, 0, 0)
	var me *changer.MoveError
	if !errors.Is(err, changer.ErrDriveBusy) || !errors.As(err, &me) || me.Barcode != "A00001L9" {
		t.Fatalf("Unload of a drive using its tape = %v; want a *MoveError for A00001L9 wrapping ErrDriveBusy", err)
	}
	want := standardState()
	delete(want, slot(1))
	want[drive(0)] = "A00001L9<1"
	expect(t, c, want)
	f.HoldDrive(0, false)
	must(t, c.Unload(ctx, 0, 0))
	expect(t, c, standardState())
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
