// Package library is a storage node's ownership of one tape library: its
// changer (media/changer) and its drives (media/tape), one owner goroutine
// per drive, so that jobs, labeling and operator moves never use a drive at
// the same time, and a job that cannot have a drive or a tape now waits
// with a reason it reports instead of hanging silently.
//
// The catalog is not here: the Manager knows barcodes, slots and labels;
// which volume a barcode holds, which pool it is in and whether it is
// appendable are the servers' to say (package server), and the storage
// node passes them in.
package library

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/internal/configfile"
	"github.com/cairnbackup/cairn/media/changer"
	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/wire"
)

// Config describes one library of a storage node. Exactly one of Emulated
// and Changer is set.
type Config struct {
	// Name is the library's name in the catalog and the CLI ("lib1").
	Name string `json:"name"`
	// Emulated makes an emulated library with emulated drives (cairn dev,
	// demo, tests and benchmarks).
	Emulated *EmulatedConfig `json:"emulated,omitempty"`
	// Changer is the changer's SCSI generic device, which mtx drives
	// ("/dev/sg3"; 'lsscsi -g' lists them: the mediumx line).
	Changer string `json:"changer,omitempty"`
	// Drives are the drives' non-rewinding st devices ("/dev/nst0", ...)
	// in the order of the library's data transfer elements ('mtx -f
	// /dev/sgN status' numbers them from 0).
	Drives []string `json:"drives,omitempty"`
	// CommandTimeout bounds every drive command; a drive whose command
	// takes longer is marked offline. 0 means 15m
	// (tape.DefaultCommandTimeout: a locate or a rewind of a full
	// cartridge takes minutes).
	CommandTimeout time.Duration `json:"command_timeout,omitempty"`
	// MountPoll is how often a job waiting for a tape or a drive looks
	// again; 0 means 5s.
	MountPoll time.Duration `json:"mount_poll,omitempty"`
	// MoveTimeout bounds every robot move and inventory; a robot that
	// takes longer is taken to have failed, and a waiting job tries again
	// after an inventory. 0 means 5 minutes: a robot move takes seconds
	// to a minute or two.
	MoveTimeout time.Duration `json:"move_timeout,omitempty"`
}

const (
	defaultMountPoll   = 5 * time.Second
	defaultMoveTimeout = 5 * time.Minute
)

func (c *Config) withDefaults() Config {
	out := *c
	if out.CommandTimeout == 0 {
		out.CommandTimeout = tape.DefaultCommandTimeout
	}
	if out.MountPoll == 0 {
		out.MountPoll = defaultMountPoll
	}
	if out.MoveTimeout == 0 {
		out.MoveTimeout = defaultMoveTimeout
	}
	return out
}

// Validate names the first field that is wrong, as a config file names it
// (configfile.FieldError), and how to fix it.
func (c *Config) Validate() error {
	if err := wire.ValidateName("library", c.Name); err != nil {
		return configfile.AtField("name", err)
	}
	switch {
	case c.Emulated != nil && c.Changer != "":
		return configfile.Fieldf("changer", "library %s: both emulated and changer %s are set; configure one", c.Name, c.Changer)
	case c.Emulated == nil && c.Changer == "":
		return configfile.Fieldf("changer", "library %s: neither emulated nor changer is set; give the changer's device (/dev/sgN) and its drives, or an emulated library", c.Name)
	case c.Changer != "" && len(c.Drives) == 0:
		return configfile.Fieldf("drives", "library %s: changer %s has no drives; list its /dev/nstN devices in the order of its drive elements", c.Name, c.Changer)
	case c.CommandTimeout < 0:
		return configfile.Fieldf("command_timeout", "library %s: negative; give a duration, or 0 for the default", c.Name)
	case c.MountPoll < 0:
		return configfile.Fieldf("mount_poll", "library %s: negative; give a duration, or 0 for the default", c.Name)
	case c.MoveTimeout < 0:
		return configfile.Fieldf("move_timeout", "library %s: negative; give a duration, or 0 for the default", c.Name)
	}
	if e := c.Emulated; e != nil {
		switch {
		case e.Dir == "" || !filepath.IsAbs(e.Dir):
			return configfile.Fieldf("emulated.dir", "library %s: emulated dir %q must be an absolute path", c.Name, e.Dir)
		case len(e.Barcodes) > e.Slots:
			return configfile.Fieldf("emulated.barcodes", "library %s: %d barcodes do not fit %d slots; add slots or list fewer barcodes", c.Name, len(e.Barcodes), e.Slots)
		case e.CartridgeBytes < 0:
			return configfile.Fieldf("emulated.cartridge_size", "library %s: negative; give a size, or 0 for LTO-9's", c.Name)
		case e.EarlyWarningBytes < 0:
			return configfile.Fieldf("emulated.early_warning_size", "library %s: negative; give a size, or 0 for the default", c.Name)
		}
		if _, err := tape.ProfileNamed(e.Profile); err != nil {
			return configfile.Fieldf("emulated.profile", "library %s: %w", c.Name, err)
		}
	}
	return nil
}

// EmulatedConfig is an emulated library: its state and cartridge files in
// Dir, created with blank barcoded cartridges on first use.
type EmulatedConfig struct {
	// Dir holds the library's state and its cartridge files (an absolute
	// path).
	Dir string `json:"dir"`
	// Drives is the number of emulated drives.
	Drives int `json:"drives"`
	// Slots is the number of storage slots.
	Slots int `json:"slots"`
	// MailSlots is the number of import/export slots.
	MailSlots int `json:"mail_slots"`
	// Barcodes of the blank cartridges put in slots 1, 2, ... when the
	// library is created ("CRN001L9" ...).
	Barcodes []string `json:"barcodes"`
	// CartridgeBytes is each cartridge's capacity; 0 is LTO-9's, 18T.
	CartridgeBytes int64 `json:"cartridge_size,omitempty" config:"size,alias=cartridge_bytes"`
	// EarlyWarningBytes is the zone before the end of a cartridge where
	// a drive warns that the end is near; 0 is a thousandth of the
	// capacity, at least 1M.
	EarlyWarningBytes int64 `json:"early_warning_size,omitempty" config:"size,alias=early_warning_bytes"`
	// Profile is "lto9" (400 MB/s, 10 s average locate, real load and
	// robot times) or "fast" (the same speed, times divided by 100, for
	// cairn dev and demo).
	Profile string `json:"profile,omitempty"`
	// VirtualClock makes every drive and robot time free (tests).
	VirtualClock bool `json:"virtual_clock,omitempty"`
}

// Manager owns a library. Its methods are safe for concurrent use.
type Manager struct {
	cfg     Config
	report  Reporter
	changer changer.Changer
	desc    string           // the changer as NodeLibrary.Changer names it
	emu     *changer.Library // the emulated library, nil for a real one
	cartDir string           // emulated cartridge files
	drives  []*drive
	slots   int
	mail    int

	// mailMu is held from the inventory to the last transfer of an
	// import, so an operator's import and a job pulling its tape in from
	// a mail slot do not both move the same cartridge.
	mailMu sync.Mutex

	mu     sync.Mutex
	wake   chan struct{} // closed and replaced when a drive is freed
	closed bool
	done   chan struct{}
	wg     sync.WaitGroup
}

// Open opens (creating an emulated one on first use) the library and
// starts one owner goroutine per drive. It inventories the library and
// reads nothing from the tapes.
func Open(ctx context.Context, cfg Config, report Reporter) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if report == nil {
		report = nopReporter{}
	}
	m := &Manager{cfg: cfg.withDefaults(), report: report, wake: make(chan struct{}), done: make(chan struct{})}
	var err error
	if cfg.Emulated != nil {
		err = m.openEmulated()
	} else {
		err = m.openReal()
	}
	if err != nil {
		m.closeDevices()
		return nil, err
	}
	ictx, cancel := context.WithTimeout(ctx, m.cfg.MoveTimeout)
	defer cancel()
	inv, err := m.changer.Inventory(ictx)
	if err != nil {
		m.closeDevices()
		return nil, m.fail(ErrChanger, "check the changer and its cabling, then restart the storage node", "library %s: inventory of %s: %w", cfg.Name, m.desc, err)
	}
	if len(inv.Drives) != len(m.drives) {
		m.closeDevices()
		return nil, m.fail(ErrInvalid, "list one st device per drive of the library, in the order of its drive elements",
			"library %s: the changer %s has %d drives, the configuration names %d", cfg.Name, m.desc, len(inv.Drives), len(m.drives))
	}
	m.slots, m.mail = len(inv.Slots), len(inv.MailSlots)
	for i, d := range m.drives {
		d.barcode = inv.Drives[i].Barcode
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			d.own(m.done)
		}()
	}
	return m, nil
}

func (m *Manager) openEmulated() error {
	e := m.cfg.Emulated
	prof, _ := tape.ProfileNamed(e.Profile)
	m.cartDir = filepath.Join(e.Dir, "cartridges")
	if err := os.MkdirAll(m.cartDir, 0o750); err != nil {
		return fmt.Errorf("library %s: %w", m.cfg.Name, err)
	}
	for _, b := range e.Barcodes {
		if err := m.ensureCartridge(b); err != nil {
			return err
		}
	}
	lcfg := changer.LibraryConfig{Dir: e.Dir, Drives: e.Drives, Slots: e.Slots, MailSlots: e.MailSlots, Cartridges: e.Barcodes}
	switch {
	case e.VirtualClock:
	case e.Profile == "fast":
		lcfg.MoveTime = 100 * time.Millisecond
	default:
		lcfg.MoveTime = 10 * time.Second // a robot's move, of the order libraries take
	}
	lib, err := changer.OpenLibrary(lcfg)
	if err != nil {
		return fmt.Errorf("library %s: %w", m.cfg.Name, err)
	}
	m.emu, m.changer, m.desc = lib, lib, lib.String()
	for i := range e.Drives {
		var clock tape.Clock = tape.RealClock()
		if e.VirtualClock {
			// One clock per drive: a drive waiting on a shared clock
			// would make another look fed too slowly.
			clock = tape.NewVirtualClock()
		}
		name := fmt.Sprintf("%s/drive%d", m.cfg.Name, i)
		em := tape.NewEmulator(tape.EmulatorConfig{Name: name, Profile: prof, Clock: clock})
		d := newDrive(i, name, em)
		d.emu = em
		m.drives = append(m.drives, d)
		if err := lib.Attach(i, &driveSlot{m: m, emu: em}); err != nil {
			return fmt.Errorf("library %s: %w", m.cfg.Name, err)
		}
	}
	return nil
}

func (m *Manager) openReal() error {
	mtx, err := changer.NewMTX(changer.MTXConfig{Device: m.cfg.Changer})
	if err != nil {
		return fmt.Errorf("library %s: %w", m.cfg.Name, err)
	}
	m.changer, m.desc = mtx, mtx.Device()
	for i, path := range m.cfg.Drives {
		l, err := tape.NewLinux(tape.LinuxConfig{Path: path})
		if err != nil {
			return fmt.Errorf("library %s: drive %d: %w", m.cfg.Name, i, err)
		}
		m.drives = append(m.drives, newDrive(i, path, &countingDrive{Drive: l}))
	}
	return nil
}

// ensureCartridge creates the blank cartridge file of barcode when it
// has none yet: a new tape from the shelf.
func (m *Manager) ensureCartridge(barcode string) error {
	if err := changer.ValidBarcode(barcode); err != nil {
		return fmt.Errorf("library %s: %w", m.cfg.Name, err)
	}
	path := m.CartridgePath(barcode)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	e := m.cfg.Emulated
	spec := tape.LTO9Cartridge(barcode)
	if e.CartridgeBytes > 0 {
		spec.Capacity = e.CartridgeBytes
	}
	spec.EarlyWarningZone = e.EarlyWarningBytes
	if err := tape.CreateCartridge(path, spec); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("library %s: %w", m.cfg.Name, err)
	}
	return nil
}

// CartridgePath is the file of an emulated cartridge ("" for a real
// library): what tests and `cairn dev` write-protect or inspect.
func (m *Manager) CartridgePath(barcode string) string {
	if m.cartDir == "" {
		return ""
	}
	return filepath.Join(m.cartDir, barcode+".tape")
}

// Emulated is the emulated library, for an operator's hands (Insert,
// Remove) and faults; nil for a real library.
func (m *Manager) Emulated() *changer.Library { return m.emu }

// EmulatedDrive is emulated drive n, for faults and figures; nil for a
// real library or no such drive.
func (m *Manager) EmulatedDrive(n int) *tape.Emulator {
	if n < 0 || n >= len(m.drives) {
		return nil
	}
	return m.drives[n].emu
}

// driveSlot puts an emulated drive in the library: a barcode becomes its
// cartridge file.
type driveSlot struct {
	m   *Manager
	emu *tape.Emulator
}

func (s *driveSlot) LoadCartridge(barcode string) error {
	if err := s.m.ensureCartridge(barcode); err != nil {
		return err
	}
	return s.emu.Insert(s.m.CartridgePath(barcode))
}

func (s *driveSlot) UnloadCartridge() error {
	if s.emu.Cartridge() == "" {
		return nil // the library's state and the drive already agree
	}
	_, err := s.emu.Remove()
	return err
}

// Reporter is told what the storage node must tell the servers: cartridge
// movements (wire.OpTapeMoved) and a job's waiting reason
// (wire.OpJobWaiting). Calls must not block for long.
type Reporter interface {
	TapeMoved(m wire.TapeMoved)
	JobWaiting(job uint64, reason string)
}

type nopReporter struct{}

func (nopReporter) TapeMoved(wire.TapeMoved)  {}
func (nopReporter) JobWaiting(uint64, string) {}

// Info describes the library for registration.
func (m *Manager) Info() wire.NodeLibrary {
	return wire.NodeLibrary{Name: m.cfg.Name, Changer: m.desc, Drives: len(m.drives), Slots: m.slots, MailSlots: m.mail}
}

// Name is the library's name.
func (m *Manager) Name() string { return m.cfg.Name }

// Close stops the drive owners and closes the changer and drives.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	m.mu.Unlock()
	m.wg.Wait()
	return m.closeDevices()
}

func (m *Manager) closeDevices() error {
	var errs []error
	for _, d := range m.drives {
		if err := d.dev.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if m.emu != nil {
		if err := m.emu.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
