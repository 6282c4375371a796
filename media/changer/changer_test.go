package changer

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestInventoryLookups(t *testing.T) {
	inv := &Inventory{
		Drives: []Element{
			{Addr: Addr{KindDrive, 0}, Full: true, Barcode: "A00003L9", Source: 3},
			{Addr: Addr{KindDrive, 1}},
		},
		Slots: []Element{
			{Addr: Addr{KindSlot, 1}, Full: true, Barcode: "A00001L9"},
			{Addr: Addr{KindSlot, 2}, Full: true}, // no label
			{Addr: Addr{KindSlot, 3}},
			{Addr: Addr{KindSlot, 4}},
		},
		MailSlots: []Element{
			{Addr: Addr{KindMailSlot, 5}, Full: true, Barcode: "B00001L9"},
			{Addr: Addr{KindMailSlot, 6}},
		},
	}
	for _, tc := range []struct {
		barcode string
		want    Addr
		ok      bool
	}{
		{"A00003L9", Addr{KindDrive, 0}, true},
		{"A00001L9", Addr{KindSlot, 1}, true},
		{"B00001L9", Addr{KindMailSlot, 5}, true},
		{"A00002L9", Addr{}, false},
		{"", Addr{}, false}, // an unlabelled cartridge is not found by ""
	} {
		e, ok := inv.Find(tc.barcode)
		if ok != tc.ok || e.Addr != tc.want {
			t.Errorf("Find(%q) = %v, %v; want %v, %v", tc.barcode, e.Addr, ok, tc.want, tc.ok)
		}
	}
	if e, ok := inv.Storage(5); !ok || e.Kind != KindMailSlot {
		t.Errorf("Storage(5) = %+v, %v", e, ok)
	}
	if _, ok := inv.Storage(7); ok {
		t.Error("Storage(7) found an element that does not exist")
	}
	if _, ok := inv.Drive(2); ok {
		t.Error("Drive(2) found a drive that does not exist")
	}
	if n, ok := inv.FreeSlot(); n != 3 || !ok {
		t.Errorf("FreeSlot = %d, %v; want 3", n, ok)
	}
	if n, ok := inv.FreeMailSlot(); n != 6 || !ok {
		t.Errorf("FreeMailSlot = %d, %v; want 6", n, ok)
	}
}

func TestMoveError(t *testing.T) {
	err := error(&MoveError{Changer: "/dev/sg1", Op: "load", From: Addr{KindSlot, 3}, To: Addr{KindDrive, 0}, Barcode: "A00003L9", Err: ErrSourceEmpty})
	if !errors.Is(err, ErrSourceEmpty) {
		t.Fatal("errors.Is does not see the sentinel through MoveError")
	}
	want := "changer /dev/sg1: load slot 3 (cartridge A00003L9) to drive 0: source element is empty"
	if err.Error() != want {
		t.Fatalf("Error() = %q\nwant      %q", err.Error(), want)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	na := noAnswer(ctx)
	if !errors.Is(na, ErrNoAnswer) || !errors.Is(na, context.Canceled) || !strings.Contains(na.Error(), "inventory") {
		t.Fatalf("noAnswer = %v", na)
	}
}

func TestElementString(t *testing.T) {
	for _, tc := range []struct {
		e    Element
		want string
	}{
		{Element{Addr: Addr{KindDrive, 0}, Full: true, Barcode: "A00003L9", Source: 3}, "drive 0: full, A00003L9, from storage element 3"},
		{Element{Addr: Addr{KindSlot, 2}, Full: true}, "slot 2: full, no barcode"},
		{Element{Addr: Addr{KindMailSlot, 24}}, "mail slot 24: empty"},
	} {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("String() = %q; want %q", got, tc.want)
		}
	}
}
