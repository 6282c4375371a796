package changer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// LibraryConfig describes an emulated library. Elements are numbered as a
// SCSI library reports them to mtx: drives from 0, storage slots from 1,
// and the mail slots after the storage slots.
type LibraryConfig struct {
	// Dir holds the library's state, library.json, and its lock file. It
	// is created if missing.
	Dir string
	// Drives is the number of drives, 1 to 64.
	Drives int
	// Slots is the number of storage slots, 1 to 10000; they are storage
	// elements 1 to Slots.
	Slots int
	// MailSlots is the number of import/export slots, 0 to 64; they are
	// storage elements Slots+1 to Slots+MailSlots.
	MailSlots int
	// Cartridges are the barcodes put into storage elements 1, 2, ...
	// (the mail slots follow the slots) when the library is created; ""
	// leaves an element empty. An existing library keeps what it holds.
	Cartridges []string
	// NoBarcodeReader makes Inventory report no barcodes, as a library
	// without a reader does.
	NoBarcodeReader bool
	// MoveTime is how long a move takes; 0 moves at once. A real robot
	// takes from ten seconds to a minute or two.
	MoveTime time.Duration
}

// StateFile is the name of the emulated library's state file in its Dir.
const StateFile = "library.json"

const lockFile = "library.lock"

var validBarcode = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)

// ValidBarcode says what is wrong with barcode as the label of an emulated
// cartridge, or returns nil. Emulated barcodes name the cartridge's file,
// so they are stricter than the volume tags of a real library: 1 to 32
// letters, digits, '.', '_' or '-', starting with a letter or digit.
func ValidBarcode(barcode string) error {
	if !validBarcode.MatchString(barcode) {
		return fmt.Errorf("barcode %q is not valid: use 1 to 32 letters, digits, '.', '_' or '-', starting with a letter or digit", barcode)
	}
	return nil
}

// Validate names the first field that is wrong and how to fix it.
func (c *LibraryConfig) Validate() error {
	switch {
	case c.Dir == "" || !filepath.IsAbs(c.Dir):
		return fmt.Errorf("emulated library: directory %q must be an absolute path", c.Dir)
	case c.Drives < 1 || c.Drives > 64:
		return fmt.Errorf("emulated library %s: %d drives; use 1 to 64", c.Dir, c.Drives)
	case c.Slots < 1 || c.Slots > 10000:
		return fmt.Errorf("emulated library %s: %d slots; use 1 to 10000", c.Dir, c.Slots)
	case c.MailSlots < 0 || c.MailSlots > 64:
		return fmt.Errorf("emulated library %s: %d mail slots; use 0 to 64", c.Dir, c.MailSlots)
	case len(c.Cartridges) > c.Slots+c.MailSlots:
		return fmt.Errorf("emulated library %s: %d cartridges do not fit %d slots and %d mail slots", c.Dir, len(c.Cartridges), c.Slots, c.MailSlots)
	case c.MoveTime < 0:
		return fmt.Errorf("emulated library %s: move time %s is negative", c.Dir, c.MoveTime)
	}
	seen := map[string]bool{}
	for _, b := range c.Cartridges {
		if b == "" {
			continue
		}
		if err := ValidBarcode(b); err != nil {
			return fmt.Errorf("emulated library %s: cartridges: %w", c.Dir, err)
		}
		if seen[b] {
			return fmt.Errorf("emulated library %s: cartridge %s is listed twice; barcodes name cartridges and must be unique", c.Dir, b)
		}
		seen[b] = true
	}
	return nil
}

// DriveSlot is an emulated tape drive as the library sees it: a place
// that holds one cartridge. The tape emulator's drive stands behind it,
// through an adapter that maps a barcode to its cartridge file (insert
// that file; remove it, which a drive refuses while the tape is loaded);
// the library knows nothing of cartridge files.
//
// Both methods are called with the library's lock held, so the state
// file and the drive agree on where a cartridge is; they must not call
// back into the Library.
type DriveSlot interface {
	// LoadCartridge is called once the robot has put the cartridge with
	// this barcode into the drive (and when a drive is attached to a
	// library that already holds a cartridge in it, as after a restart).
	// An error fails the move, and the cartridge stays where it was.
	LoadCartridge(barcode string) error
	// UnloadCartridge is called before the robot takes the cartridge
	// out. A drive that is using its tape returns an error and keeps the
	// cartridge; the move fails with ErrDriveBusy.
	UnloadCartridge() error
}

// Errors of the emulated library.
var (
	// ErrLibraryLocked: another Library (in this process or another) has
	// the directory open.
	ErrLibraryLocked = errors.New("emulated library is open elsewhere")
	// ErrLibraryClosed: the Library was closed.
	ErrLibraryClosed = errors.New("emulated library is closed")
	// ErrDuplicateBarcode: a cartridge with that barcode is already in
	// the library.
	ErrDuplicateBarcode = errors.New("a cartridge with that barcode is already in the library")
)

// Library is an emulated tape library: storage slots, mail slots and
// drives holding barcoded cartridges, a robot that moves them one at a
// time, and a barcode reader. Its state is saved to Dir/library.json after
// every move, so it survives a restart; an exclusive lock on the directory
// keeps a second process from sharing it.
//
// Besides the Changer contract it has an operator's hands (Insert and
// Remove at the mail slots) and faults to inject: StickRobot, Misread and
// Phantom. Faults live in memory only; a restart clears them.
type Library struct {
	cfg  LibraryConfig
	lock *os.File

	// robot holds one token: one move at a time.
	robot chan struct{}

	mu       sync.Mutex // guards the fields below
	st       libraryState
	attached []DriveSlot
	closed   bool
	stuck    chan struct{} // non-nil while the robot is stuck; closed to free it
	misread  map[string]string
	phantoms map[int]string // storage element -> barcode it reports while empty
}

var _ Changer = (*Library)(nil)

// libraryState is library.json.
type libraryState struct {
	Version   int          `json:"version"`
	Drives    []driveState `json:"drives"`
	Slots     []string     `json:"slots"`      // barcode per slot, "" when empty
	MailSlots []string     `json:"mail_slots"` // likewise
}

type driveState struct {
	Barcode string `json:"barcode,omitempty"`
	Source  int    `json:"source,omitempty"` // storage element it came from
}

const stateVersion = 1

// OpenLibrary opens the emulated library in cfg.Dir, creating it with
// cfg.Cartridges in its first slots when the directory holds none. The
// shape of an existing library must match cfg.
func OpenLibrary(cfg LibraryConfig) (*Library, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("emulated library %s: %w", cfg.Dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(cfg.Dir, lockFile), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("emulated library %s: %w", cfg.Dir, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("emulated library %s: %w: stop the other cairn using it", cfg.Dir, ErrLibraryLocked)
		}
		return nil, fmt.Errorf("emulated library %s: lock: %w", cfg.Dir, err)
	}
	l := &Library{
		cfg:      cfg,
		lock:     lock,
		robot:    make(chan struct{}, 1),
		attached: make([]DriveSlot, cfg.Drives),
		misread:  map[string]string{},
		phantoms: map[int]string{},
	}
	if err := l.load(); err != nil {
		lock.Close()
		return nil, err
	}
	return l, nil
}

func (l *Library) load() error {
	path := filepath.Join(l.cfg.Dir, StateFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		l.st = libraryState{
			Version:   stateVersion,
			Drives:    make([]driveState, l.cfg.Drives),
			Slots:     make([]string, l.cfg.Slots),
			MailSlots: make([]string, l.cfg.MailSlots),
		}
		for i, b := range l.cfg.Cartridges {
			*l.storagePtr(i + 1) = b
		}
		return l.save()
	}
	if err != nil {
		return fmt.Errorf("emulated library %s: %w", l.cfg.Dir, err)
	}
	var st libraryState
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("emulated library %s: %s is damaged (%w): fix it, or move it away to start an empty library", l.cfg.Dir, path, err)
	}
	if st.Version != stateVersion {
		return fmt.Errorf("emulated library %s: %s is version %d; this cairn reads version %d", l.cfg.Dir, path, st.Version, stateVersion)
	}
	if len(st.Drives) != l.cfg.Drives || len(st.Slots) != l.cfg.Slots || len(st.MailSlots) != l.cfg.MailSlots {
		return fmt.Errorf("emulated library %s holds %d drives, %d slots and %d mail slots, the configuration asks for %d, %d and %d: configure it as it is, or move %s away to start an empty library",
			l.cfg.Dir, len(st.Drives), len(st.Slots), len(st.MailSlots), l.cfg.Drives, l.cfg.Slots, l.cfg.MailSlots, path)
	}
	seen := map[string]bool{}
	check := func(where, b string) error {
		if b == "" {
			return nil
		}
		if err := ValidBarcode(b); err != nil {
			return fmt.Errorf("emulated library %s: %s in %s: %w", l.cfg.Dir, where, path, err)
		}
		if seen[b] {
			return fmt.Errorf("emulated library %s: %s holds cartridge %s twice: fix it by hand", l.cfg.Dir, path, b)
		}
		seen[b] = true
		return nil
	}
	storage := l.cfg.Slots + l.cfg.MailSlots
	for i, d := range st.Drives {
		if err := check(fmt.Sprintf("drive %d", i), d.Barcode); err != nil {
			return err
		}
		if d.Source < 0 || d.Source > storage || (d.Barcode == "" && d.Source != 0) {
			return fmt.Errorf("emulated library %s: %s: drive %d has source %d: fix it by hand", l.cfg.Dir, path, i, d.Source)
		}
	}
	for i, b := range st.Slots {
		if err := check(fmt.Sprintf("slot %d", i+1), b); err != nil {
			return err
		}
	}
	for i, b := range st.MailSlots {
		if err := check(fmt.Sprintf("mail slot %d", l.cfg.Slots+i+1), b); err != nil {
			return err
		}
	}
	l.st = st
	return nil
}

// save writes the state durably: a new file, synced, renamed over the
// old one, and the directory synced, so a crash leaves the old state or
// the new one, never a torn file.
func (l *Library) save() error {
	data, err := json.MarshalIndent(&l.st, "", "\t")
	if err != nil {
		return err
	}
	path := filepath.Join(l.cfg.Dir, StateFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("emulated library %s: save state: %w", l.cfg.Dir, err)
	}
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(l.cfg.Dir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("emulated library %s: save state: %w", l.cfg.Dir, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Close releases the library's directory. Attached drives are not told:
// their cartridges stay in them, as the state file says.
func (l *Library) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.stuck != nil {
		close(l.stuck)
		l.stuck = nil
	}
	return l.lock.Close()
}

// String names the library in errors and logs.
func (l *Library) String() string { return "emulated:" + l.cfg.Dir }

// Attach puts an emulated drive in drive's place; nil takes it out. A
// cartridge the library has in that drive is loaded into d at once, so a
// library reopened after a restart hands each drive its tape again.
func (l *Library) Attach(drive int, d DriveSlot) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("%s: %w", l, ErrLibraryClosed)
	}
	if drive < 0 || drive >= len(l.attached) {
		return fmt.Errorf("%s: attach drive %d: %w: the library has drives 0 to %d", l, drive, ErrNoElement, len(l.attached)-1)
	}
	if d != nil {
		if b := l.st.Drives[drive].Barcode; b != "" {
			if err := d.LoadCartridge(b); err != nil {
				return fmt.Errorf("%s: attach drive %d holding cartridge %s: %w", l, drive, b, err)
			}
		}
	}
	l.attached[drive] = d
	return nil
}

// Inventory reports the library as its reader sees it, faults included.
func (l *Library) Inventory(ctx context.Context) (*Inventory, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("%s: %w", l, ErrLibraryClosed)
	}
	inv := &Inventory{
		Drives:    make([]Element, len(l.st.Drives)),
		Slots:     make([]Element, len(l.st.Slots)),
		MailSlots: make([]Element, len(l.st.MailSlots)),
	}
	for i, d := range l.st.Drives {
		inv.Drives[i] = Element{Addr: Addr{KindDrive, i}, Full: d.Barcode != "", Barcode: l.read(d.Barcode), Source: d.Source}
	}
	for i := range l.st.Slots {
		inv.Slots[i] = l.reported(i + 1)
	}
	for i := range l.st.MailSlots {
		inv.MailSlots[i] = l.reported(l.cfg.Slots + i + 1)
	}
	return inv, nil
}

// read is the barcode the reader reports for a cartridge.
func (l *Library) read(barcode string) string {
	if l.cfg.NoBarcodeReader || barcode == "" {
		return ""
	}
	if as, ok := l.misread[barcode]; ok {
		return as
	}
	return barcode
}

// storage returns a pointer to the barcode held by storage element n and
// the element's address, or nil.
func (l *Library) storage(n int) (*string, Addr) {
	switch {
	case n >= 1 && n <= len(l.st.Slots):
		return &l.st.Slots[n-1], Addr{KindSlot, n}
	case n > len(l.st.Slots) && n <= len(l.st.Slots)+len(l.st.MailSlots):
		return &l.st.MailSlots[n-len(l.st.Slots)-1], Addr{KindMailSlot, n}
	}
	return nil, Addr{KindSlot, n}
}

func (l *Library) storagePtr(n int) *string {
	p, _ := l.storage(n)
	return p
}

// reported is storage element n as the library reports it: a phantom
// reports full with the barcode it was given.
func (l *Library) reported(n int) Element {
	b, a := l.storage(n)
	if p, ok := l.phantoms[n]; ok && *b == "" {
		return Element{Addr: a, Full: true, Barcode: l.read(p)}
	}
	return Element{Addr: a, Full: *b != "", Barcode: l.read(*b)}
}

func (l *Library) noElement(a Addr) error {
	if a.Kind == KindDrive {
		return fmt.Errorf("%w: drive %d: the library has drives 0 to %d", ErrNoElement, a.Number, len(l.st.Drives)-1)
	}
	return fmt.Errorf("%w: storage element %d: the library has storage elements 1 to %d", ErrNoElement, a.Number, len(l.st.Slots)+len(l.st.MailSlots))
}

// A plan is a move checked against the state (under mu): check reports
// why it cannot be made, commit makes it. Both run again after the robot's
// travel time, because an operator may have used a mail slot meanwhile.
type plan struct {
	e      *MoveError
	check  func() error
	commit func() error
}

// Load moves the cartridge in storage element slot into drive.
func (l *Library) Load(ctx context.Context, slot, drive int) error {
	e := &MoveError{Changer: l.String(), Op: "load", From: Addr{KindSlot, slot}, To: Addr{KindDrive, drive}}
	var src *string
	p := plan{e: e}
	p.check = func() error {
		if drive < 0 || drive >= len(l.st.Drives) {
			return l.noElement(e.To)
		}
		src, e.From = l.storage(slot)
		if src == nil {
			return l.noElement(e.From)
		}
		r := l.reported(slot)
		e.Barcode = r.Barcode
		if !r.Full || *src == "" {
			return fmt.Errorf("%w: the robot found %s empty", ErrSourceEmpty, e.From)
		}
		if d := l.st.Drives[drive]; d.Barcode != "" {
			return fmt.Errorf("%w: drive %d holds %s", ErrDestinationFull, drive, l.read(d.Barcode))
		}
		return nil
	}
	p.commit = func() error {
		b := *src
		if a := l.attached[drive]; a != nil {
			if err := a.LoadCartridge(b); err != nil {
				return fmt.Errorf("drive %d did not take cartridge %s: %w", drive, b, err)
			}
		}
		*src, l.st.Drives[drive] = "", driveState{Barcode: b, Source: slot}
		if err := l.save(); err != nil {
			*src, l.st.Drives[drive] = b, driveState{}
			if a := l.attached[drive]; a != nil {
				a.UnloadCartridge()
			}
			return err
		}
		return nil
	}
	return l.move(ctx, p)
}

// Unload moves the cartridge in drive into storage element slot, or to
// the element it was loaded from when slot is 0.
func (l *Library) Unload(ctx context.Context, drive, slot int) error {
	e := &MoveError{Changer: l.String(), Op: "unload", From: Addr{KindDrive, drive}, To: Addr{KindSlot, slot}}
	var dst *string
	to := slot
	p := plan{e: e}
	p.check = func() error {
		if drive < 0 || drive >= len(l.st.Drives) {
			return l.noElement(e.From)
		}
		d := l.st.Drives[drive]
		e.Barcode = l.read(d.Barcode)
		if d.Barcode == "" {
			return fmt.Errorf("%w: drive %d is empty", ErrSourceEmpty, drive)
		}
		to = slot
		if to == 0 {
			if d.Source == 0 {
				return fmt.Errorf("%w: name the slot to unload drive %d to", ErrNoHomeSlot, drive)
			}
			to = d.Source
		}
		dst, e.To = l.storage(to)
		if dst == nil {
			return l.noElement(e.To)
		}
		if r := l.reported(to); r.Full {
			return fmt.Errorf("%w: %s", ErrDestinationFull, r)
		}
		return nil
	}
	p.commit = func() error {
		d := l.st.Drives[drive]
		if a := l.attached[drive]; a != nil {
			if err := a.UnloadCartridge(); err != nil {
				return fmt.Errorf("%w: drive %d keeps cartridge %s: %w", ErrDriveBusy, drive, d.Barcode, err)
			}
		}
		*dst, l.st.Drives[drive] = d.Barcode, driveState{}
		if err := l.save(); err != nil {
			*dst, l.st.Drives[drive] = "", d
			if a := l.attached[drive]; a != nil {
				a.LoadCartridge(d.Barcode)
			}
			return err
		}
		return nil
	}
	return l.move(ctx, p)
}

// Transfer moves a cartridge between two storage elements.
func (l *Library) Transfer(ctx context.Context, from, to int) error {
	e := &MoveError{Changer: l.String(), Op: "transfer", From: Addr{KindSlot, from}, To: Addr{KindSlot, to}}
	var src, dst *string
	p := plan{e: e}
	p.check = func() error {
		src, e.From = l.storage(from)
		if src == nil {
			return l.noElement(e.From)
		}
		dst, e.To = l.storage(to)
		if dst == nil {
			return l.noElement(e.To)
		}
		r := l.reported(from)
		e.Barcode = r.Barcode
		if !r.Full || *src == "" {
			return fmt.Errorf("%w: the robot found %s empty", ErrSourceEmpty, e.From)
		}
		if r := l.reported(to); r.Full {
			return fmt.Errorf("%w: %s", ErrDestinationFull, r)
		}
		return nil
	}
	p.commit = func() error {
		b := *src
		*src, *dst = "", b
		if err := l.save(); err != nil {
			*src, *dst = b, ""
			return err
		}
		return nil
	}
	return l.move(ctx, p)
}

// move runs p as the robot: it waits for the robot, checks, travels
// (MoveTime, or until freed if stuck), checks again and commits.
func (l *Library) move(ctx context.Context, p plan) error {
	fail := func(err error) error {
		p.e.Err = err
		return p.e
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	select {
	case l.robot <- struct{}{}:
	case <-ctx.Done():
		return fail(noAnswer(ctx))
	}
	defer func() { <-l.robot }()

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return fail(ErrLibraryClosed)
	}
	stuck := l.stuck
	err := p.check()
	l.mu.Unlock()
	if err != nil {
		return fail(err)
	}
	if stuck != nil {
		select {
		case <-stuck:
		case <-ctx.Done():
			return fail(noAnswer(ctx))
		}
	}
	if l.cfg.MoveTime > 0 {
		t := time.NewTimer(l.cfg.MoveTime)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return fail(noAnswer(ctx))
		}
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fail(ErrLibraryClosed)
	}
	if err := p.check(); err != nil {
		return fail(err)
	}
	if err := p.commit(); err != nil {
		return fail(err)
	}
	return nil
}

// Insert puts the cartridge barcode into mail slot mail from outside, as
// an operator does; mail 0 means the lowest empty mail slot. It returns
// the mail slot used. The robot is not involved.
func (l *Library) Insert(mail int, barcode string) (int, error) {
	if err := ValidBarcode(barcode); err != nil {
		return 0, fmt.Errorf("%s: insert: %w", l, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, fmt.Errorf("%s: %w", l, ErrLibraryClosed)
	}
	if len(l.st.MailSlots) == 0 {
		return 0, fmt.Errorf("%s: insert %s: %w: the library has no mail slots", l, barcode, ErrNoElement)
	}
	if where, ok := l.locate(barcode); ok {
		return 0, fmt.Errorf("%s: insert %s: %w (%s)", l, barcode, ErrDuplicateBarcode, where)
	}
	if mail == 0 {
		for i, b := range l.st.MailSlots {
			if b == "" {
				mail = l.cfg.Slots + i + 1
				break
			}
		}
		if mail == 0 {
			return 0, fmt.Errorf("%s: insert %s: every mail slot is full: import or remove a cartridge first: %w", l, barcode, ErrNoFreeSlot)
		}
	}
	b, a := l.storage(mail)
	if b == nil || a.Kind != KindMailSlot {
		return 0, fmt.Errorf("%s: insert %s: %w: mail slots are storage elements %d to %d", l, barcode, ErrNoElement, l.cfg.Slots+1, l.cfg.Slots+l.cfg.MailSlots)
	}
	if *b != "" {
		return 0, fmt.Errorf("%s: insert %s into %s: %w: it holds %s", l, barcode, a, ErrDestinationFull, *b)
	}
	*b = barcode
	if err := l.save(); err != nil {
		*b = ""
		return 0, err
	}
	// An operator who reached into a phantom slot knows it is empty.
	delete(l.phantoms, mail)
	return mail, nil
}

// Remove takes the cartridge out of mail slot mail, as an operator does,
// and returns its barcode.
func (l *Library) Remove(mail int) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return "", fmt.Errorf("%s: %w", l, ErrLibraryClosed)
	}
	b, a := l.storage(mail)
	if b == nil || a.Kind != KindMailSlot {
		return "", fmt.Errorf("%s: remove from storage element %d: %w: mail slots are storage elements %d to %d", l, mail, ErrNoElement, l.cfg.Slots+1, l.cfg.Slots+l.cfg.MailSlots)
	}
	if *b == "" {
		return "", fmt.Errorf("%s: remove from %s: %w", l, a, ErrSourceEmpty)
	}
	barcode := *b
	*b = ""
	if err := l.save(); err != nil {
		*b = barcode
		return "", err
	}
	delete(l.phantoms, mail)
	return barcode, nil
}

// locate says where the library really holds barcode.
func (l *Library) locate(barcode string) (string, bool) {
	for i, d := range l.st.Drives {
		if d.Barcode == barcode {
			return fmt.Sprintf("in drive %d", i), true
		}
	}
	for n := 1; n <= len(l.st.Slots)+len(l.st.MailSlots); n++ {
		if b, a := l.storage(n); *b == barcode {
			return "in " + a.String(), true
		}
	}
	return "", false
}

// StickRobot makes the robot stop answering (stuck true): every move
// from then on, and any waiting for it, hangs until its context ends or
// the robot is freed again with StickRobot(false).
func (l *Library) StickRobot(stuck bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case stuck && l.stuck == nil:
		l.stuck = make(chan struct{})
	case !stuck && l.stuck != nil:
		close(l.stuck)
		l.stuck = nil
	}
}

// Misread makes the barcode reader report the cartridge barcode as as,
// wherever the cartridge is; as "" makes it read barcode right again.
func (l *Library) Misread(barcode, as string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if as == "" {
		delete(l.misread, barcode)
		return
	}
	l.misread[barcode] = as
}

// Phantom makes the empty storage element n report full, with barcode
// (which may be ""), while it stays empty: moves from it fail with
// ErrSourceEmpty and moves into it with ErrDestinationFull, as on a
// library whose element status is wrong. ClearPhantom ends it, and so
// does an operator's Insert or Remove at a mail slot.
func (l *Library) Phantom(n int, barcode string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, a := l.storage(n)
	if b == nil {
		return fmt.Errorf("%s: phantom: %w", l, l.noElement(a))
	}
	if *b != "" {
		return fmt.Errorf("%s: phantom: %s holds %s; a phantom needs an empty slot: %w", l, a, *b, ErrDestinationFull)
	}
	l.phantoms[n] = barcode
	return nil
}

// ClearPhantom makes storage element n report what it holds again.
func (l *Library) ClearPhantom(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.phantoms, n)
}
