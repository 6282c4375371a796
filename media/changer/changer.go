package changer

import (
	"context"
	"errors"
	"fmt"
)

// Changer is a tape library's robot: it reports what the library holds and
// moves cartridges between elements. It is a plug-in point; the MTX driver
// (a SCSI library through the mtx command) and the emulated Library both
// implement it and both pass the contract suite in changertest.
//
// # Elements
//
// Elements are numbered the way `mtx status` numbers them, so a number in a
// log or an error is the number an administrator types at mtx:
//   - drives (data transfer elements) from 0;
//   - storage elements from 1: the storage slots and the import/export
//     (mail) slots share this one numbering. A mail slot is a storage
//     element with a door to the outside; an operator puts cartridges in
//     and takes them out there. Libraries usually number the mail slots
//     after the storage slots, but nothing in the contract relies on it:
//     Inventory says which number is which.
//
// # Inventory
//
// Inventory reports every element: each drive, storage slot and mail slot,
// whether it is full, the barcode (volume tag) the library's reader
// reports for the cartridge in it, and for a drive the storage element the
// cartridge was loaded from when the library knows it. It is what the
// library believes, which is not always the truth: a reader can misread a
// label and a slot can report full and be empty. The volume label read in
// a drive is the truth about a cartridge; a barcode is the way to find it.
//
// # Moves
//
// Load, Unload and Transfer are synchronous: when one returns nil the
// cartridge is where it was sent, and the next Inventory says so. Moves are
// serialized (a library has one robot); a call waits for the robot inside
// its context. Every call is bounded by its context: when the context ends
// first, the call returns an error wrapping ErrNoAnswer and the context's
// error, and where the cartridge is afterwards is unknown until the next
// Inventory (a real robot may finish the move, or drop it half way). A
// call whose context has already ended does nothing and returns the
// context's error.
//
// A move that fails returns a *MoveError that wraps one of the errors
// below, so callers decide with errors.Is:
//   - ErrSourceEmpty: nothing to move at the source (including a slot that
//     reports full but is empty: the robot finds nothing there);
//   - ErrDestinationFull: the destination slot or drive already holds a
//     cartridge (or says it does);
//   - ErrDriveBusy: the drive still holds its cartridge in use (the tape
//     is not rewound and ejected) and will not give it up;
//   - ErrNoElement: the number names no element of that kind;
//   - ErrNoHomeSlot: Unload to the home slot of a cartridge whose home
//     the library does not know;
//   - ErrNoAnswer: the robot did not finish before the context ended.
//
// Finding a cartridge by barcode (LoadBarcode, Export) fails with
// ErrNotFound when no element reports that barcode. Nothing is moved by a
// call that fails with any error but ErrNoAnswer.
//
// A Changer is safe for concurrent use.
type Changer interface {
	// Inventory reports every element of the library.
	Inventory(ctx context.Context) (*Inventory, error)
	// Load moves the cartridge in storage element slot (a storage or a
	// mail slot) into drive.
	Load(ctx context.Context, slot, drive int) error
	// Unload moves the cartridge in drive into storage element slot; slot
	// 0 means the element it was loaded from.
	Unload(ctx context.Context, drive, slot int) error
	// Transfer moves a cartridge from one storage element to another, for
	// example from a mail slot into a storage slot (an import) or back (an
	// export).
	Transfer(ctx context.Context, from, to int) error
}

// Kind is the kind of an element.
type Kind int

const (
	// KindDrive is a data transfer element: a tape drive.
	KindDrive Kind = iota + 1
	// KindSlot is a storage element that holds a cartridge inside the
	// library.
	KindSlot
	// KindMailSlot is an import/export element: a storage element an
	// operator can reach from outside.
	KindMailSlot
)

func (k Kind) String() string {
	switch k {
	case KindDrive:
		return "drive"
	case KindSlot:
		return "slot"
	case KindMailSlot:
		return "mail slot"
	}
	return fmt.Sprintf("element kind %d", int(k))
}

// Addr names one element: a drive by its number from 0, a slot or a mail
// slot by its storage element number from 1.
type Addr struct {
	Kind   Kind
	Number int
}

func (a Addr) String() string { return fmt.Sprintf("%s %d", a.Kind, a.Number) }

// Element is the state of one element as the library reports it.
type Element struct {
	Addr
	// Full is whether the library says the element holds a cartridge.
	Full bool
	// Barcode is the primary volume tag the reader reports for the
	// cartridge, trailing blanks removed; "" when the library has no
	// reader, the label is missing or unreadable, or the element is empty.
	Barcode string
	// AltBarcode is the alternate volume tag, which few libraries report.
	AltBarcode string
	// Source is, for a full drive, the storage element the cartridge was
	// loaded from (its home slot); 0 when the library does not know.
	Source int
}

// String says what the element holds, for logs and errors. (Without it
// fmt would print only the promoted Addr.String.)
func (e Element) String() string {
	if !e.Full {
		return e.Addr.String() + ": empty"
	}
	s := e.Addr.String() + ": full"
	if e.Barcode != "" {
		s += ", " + e.Barcode
	} else {
		s += ", no barcode"
	}
	if e.Kind == KindDrive && e.Source != 0 {
		s += fmt.Sprintf(", from storage element %d", e.Source)
	}
	return s
}

// Inventory is what a library holds, element by element.
type Inventory struct {
	// Drives holds drive i at index i.
	Drives []Element
	// Slots and MailSlots hold the storage elements of each kind in
	// ascending number.
	Slots     []Element
	MailSlots []Element
}

// Drive returns drive n.
func (inv *Inventory) Drive(n int) (Element, bool) {
	if n < 0 || n >= len(inv.Drives) {
		return Element{}, false
	}
	return inv.Drives[n], true
}

// Storage returns storage element n, a slot or a mail slot.
func (inv *Inventory) Storage(n int) (Element, bool) {
	for _, list := range [][]Element{inv.Slots, inv.MailSlots} {
		for _, e := range list {
			if e.Number == n {
				return e, true
			}
		}
	}
	return Element{}, false
}

// Find returns the element that reports barcode, looking at drives first,
// then slots, then mail slots. Barcodes are compared exactly.
func (inv *Inventory) Find(barcode string) (Element, bool) {
	if barcode == "" {
		return Element{}, false
	}
	for _, list := range [][]Element{inv.Drives, inv.Slots, inv.MailSlots} {
		for _, e := range list {
			if e.Full && e.Barcode == barcode {
				return e, true
			}
		}
	}
	return Element{}, false
}

// FreeSlot returns the lowest empty storage slot.
func (inv *Inventory) FreeSlot() (int, bool) { return firstEmpty(inv.Slots) }

// FreeMailSlot returns the lowest empty mail slot.
func (inv *Inventory) FreeMailSlot() (int, bool) { return firstEmpty(inv.MailSlots) }

func firstEmpty(list []Element) (int, bool) {
	for _, e := range list {
		if !e.Full {
			return e.Number, true
		}
	}
	return 0, false
}

// Errors a caller acts on; see the Changer contract.
var (
	// ErrSourceEmpty: there is no cartridge at the source of a move.
	ErrSourceEmpty = errors.New("source element is empty")
	// ErrDestinationFull: the destination of a move holds a cartridge.
	ErrDestinationFull = errors.New("destination element is full")
	// ErrDriveBusy: the drive holds its cartridge in use; rewind and eject
	// (or close) the tape before unloading it.
	ErrDriveBusy = errors.New("drive is busy with its cartridge")
	// ErrNotFound: no element of the library reports the barcode.
	ErrNotFound = errors.New("cartridge is not in the library")
	// ErrNoAnswer: the robot did not finish before the context ended.
	ErrNoAnswer = errors.New("robot did not answer")
	// ErrNoElement: no element of the library has that number and kind.
	ErrNoElement = errors.New("no such element")
	// ErrNoHomeSlot: the library does not know which slot a cartridge in a
	// drive came from.
	ErrNoHomeSlot = errors.New("home slot of the cartridge is unknown")
	// ErrNoFreeSlot: every slot of the kind needed is full.
	ErrNoFreeSlot = errors.New("no free slot")
	// ErrNoDevice: the changer device cannot be opened, or is not a SCSI
	// medium changer.
	ErrNoDevice = errors.New("changer device is not available")
)

// MoveError is a move that failed. Err is one of the sentinels above (or
// a cause they do not cover), so errors.Is sees through it.
type MoveError struct {
	Changer  string // the library's device or directory
	Op       string // "load", "unload" or "transfer"
	From, To Addr
	// Barcode is what the library reported at From, when it was known.
	Barcode string
	Err     error
}

func (e *MoveError) Error() string {
	what := ""
	if e.Barcode != "" {
		what = fmt.Sprintf(" (cartridge %s)", e.Barcode)
	}
	return fmt.Sprintf("changer %s: %s %s%s to %s: %v", e.Changer, e.Op, e.From, what, e.To, e.Err)
}

func (e *MoveError) Unwrap() error { return e.Err }

// noAnswer is the error of a call whose context ended while the robot had
// it: it wraps ErrNoAnswer and the context's error.
func noAnswer(ctx context.Context) error {
	return fmt.Errorf("%w (%w): check the library, then take an inventory before trusting where the cartridge is", ErrNoAnswer, context.Cause(ctx))
}

// Move is one cartridge moved by Import or Export.
type Move struct {
	Barcode  string
	From, To Addr
}

// LoadBarcode loads the cartridge whose barcode is barcode into drive and
// returns where it was. A cartridge already in that drive is left there
// (and its element returned); one in another drive is ErrDriveBusy, and
// one the library does not report is ErrNotFound: the caller asks an
// operator to insert it into a mail slot and calls Import.
func LoadBarcode(ctx context.Context, c Changer, barcode string, drive int) (Element, error) {
	inv, err := c.Inventory(ctx)
	if err != nil {
		return Element{}, err
	}
	e, ok := inv.Find(barcode)
	if !ok {
		return Element{}, fmt.Errorf("cartridge %s: %w: insert it into a mail slot and import it", barcode, ErrNotFound)
	}
	if e.Kind == KindDrive {
		if e.Number == drive {
			return e, nil
		}
		return e, fmt.Errorf("cartridge %s is in drive %d, not drive %d: %w", barcode, e.Number, drive, ErrDriveBusy)
	}
	return e, c.Load(ctx, e.Number, drive)
}

// Import moves every cartridge in a mail slot into a free storage slot,
// lowest first, and returns the moves made. When the slots run out it
// stops with ErrNoFreeSlot, keeping the moves already made.
func Import(ctx context.Context, c Changer) ([]Move, error) {
	inv, err := c.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	free := make([]int, 0, len(inv.Slots))
	for _, s := range inv.Slots {
		if !s.Full {
			free = append(free, s.Number)
		}
	}
	var moves []Move
	for _, m := range inv.MailSlots {
		if !m.Full {
			continue
		}
		if len(free) == 0 {
			return moves, fmt.Errorf("import cartridge %q from mail slot %d: every storage slot is full: export a cartridge first: %w", m.Barcode, m.Number, ErrNoFreeSlot)
		}
		to := free[0]
		if err := c.Transfer(ctx, m.Number, to); err != nil {
			return moves, err
		}
		free = free[1:]
		moves = append(moves, Move{Barcode: m.Barcode, From: m.Addr, To: Addr{KindSlot, to}})
	}
	return moves, nil
}

// Export moves the cartridge whose barcode is barcode into the lowest free
// mail slot, straight from a drive if it is in one, so an operator can
// take it out. A cartridge already in a mail slot is left there.
func Export(ctx context.Context, c Changer, barcode string) (Move, error) {
	inv, err := c.Inventory(ctx)
	if err != nil {
		return Move{}, err
	}
	e, ok := inv.Find(barcode)
	if !ok {
		return Move{}, fmt.Errorf("export cartridge %s: %w", barcode, ErrNotFound)
	}
	if e.Kind == KindMailSlot {
		return Move{Barcode: barcode, From: e.Addr, To: e.Addr}, nil
	}
	to, ok := inv.FreeMailSlot()
	if !ok {
		return Move{}, fmt.Errorf("export cartridge %s: every mail slot is full: empty one and retry: %w", barcode, ErrNoFreeSlot)
	}
	if e.Kind == KindDrive {
		err = c.Unload(ctx, e.Number, to)
	} else {
		err = c.Transfer(ctx, e.Number, to)
	}
	if err != nil {
		return Move{}, err
	}
	return Move{Barcode: barcode, From: e.Addr, To: Addr{KindMailSlot, to}}, nil
}
