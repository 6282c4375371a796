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
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
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
	// Changer is the changer's SCSI generic device for mtx (/dev/sg3), and
	// Drives the non-rewinding st devices (/dev/nst0, ...) in the order of
	// the library's data transfer elements.
	Changer string   `json:"changer,omitempty"`
	Drives  []string `json:"drives,omitempty"`
	// CommandTimeout bounds every drive command; a drive whose command
	// takes longer is marked offline. 0 means tape.DefaultCommandTimeout.
	CommandTimeout time.Duration `json:"command_timeout,omitempty"`
	// MountPoll is how often a job waiting for a tape or a drive looks
	// again; 0 means 5s.
	MountPoll time.Duration `json:"mount_poll,omitempty"`
}

// EmulatedConfig is an emulated library: its state and cartridge files in
// Dir, created with Scratch blank barcoded cartridges on first use.
type EmulatedConfig struct {
	Dir       string `json:"dir"`
	Drives    int    `json:"drives"`
	Slots     int    `json:"slots"`
	MailSlots int    `json:"mail_slots"`
	// Barcodes of the blank cartridges put in slots 1, 2, ... when the
	// library is created ("CRN001L9" ...); cartridges get CartridgeBytes of
	// capacity (0: LTO-9, 18 TB) and EarlyWarningBytes of zone.
	Barcodes          []string `json:"barcodes"`
	CartridgeBytes    int64    `json:"cartridge_bytes,omitempty"`
	EarlyWarningBytes int64    `json:"early_warning_bytes,omitempty"`
	// Profile is "lto9" (400 MB/s, 10 s average locate, real load and
	// robot times) or "fast" (the same speed, times divided by 100, for
	// cairn dev and demo); VirtualClock makes every drive time free (tests).
	Profile      string `json:"profile,omitempty"`
	VirtualClock bool   `json:"virtual_clock,omitempty"`
}

// Manager owns a library. Its methods are safe for concurrent use.
type Manager struct{}

// Open opens (creating an emulated one on first use) the library and
// starts one owner goroutine per drive. It inventories the library and
// reads nothing from the tapes.
func Open(ctx context.Context, cfg Config, report Reporter) (*Manager, error) {
	return nil, errors.New("library: not built yet")
}

// Reporter is told what the storage node must tell the servers: cartridge
// movements (wire.OpTapeMoved) and a job's waiting reason
// (wire.OpJobWaiting). Calls must not block for long.
type Reporter interface {
	TapeMoved(m wire.TapeMoved)
	JobWaiting(job uint64, reason string)
}

// Info describes the library for registration.
func (m *Manager) Info() wire.NodeLibrary { return wire.NodeLibrary{} }

// Status is the inventory and every drive's state.
func (m *Manager) Status(ctx context.Context) (wire.LibraryStatus, error) {
	return wire.LibraryStatus{}, errors.New("library: not built yet")
}

// Move runs an operator's move (wire.MoveLoad, ...).
func (m *Manager) Move(ctx context.Context, req wire.LibraryMoveReq) (wire.LibraryMoveResp, error) {
	return wire.LibraryMoveResp{}, errors.New("library: not built yet")
}

// Label loads the cartridge in slot, checks its barcode, refuses a
// write-protected tape and (unless overwrite) any tape that holds a label,
// writes l, reads it back and compares, and returns the cartridge to its
// slot. Errors are *wire.Error with CodeForeignLabel, CodeWriteProtected,
// CodeBarcodeMismatch, CodeDriveOffline or CodeLibrary.
func (m *Manager) Label(ctx context.Context, slot int, barcode string, l volume.Label, overwrite bool) error {
	return errors.New("library: not built yet")
}

// MountRequest asks for a drive with one cartridge in it.
type MountRequest struct {
	Job     uint64
	Barcode string
	// Volume is the volume the catalog says the cartridge holds: the label
	// read at the drive must name it (else CodeBarcodeMismatch).
	Volume uuid.UUID
	// Why is what the job will do, for DriveInfo.Doing ("writing volume
	// W00012").
	Why string
}

// Mount waits for a free drive, loads the cartridge with req.Barcode
// (unloading another tape to its home slot if need be), reads the label and
// checks it against req.Volume, and returns the drive for the caller's
// exclusive use until Release. While it waits (every drive busy, the
// cartridge not in the library: "insert tape W00012 into library lib1",
// the robot failing) it reports the reason with Reporter.JobWaiting and
// looks again every MountPoll, until ctx ends. A cartridge already in a
// free drive is used where it is, without a move.
func (m *Manager) Mount(ctx context.Context, req MountRequest) (*Mount, error) {
	return nil, errors.New("library: not built yet")
}

// Mount is a drive held by one user, with its cartridge loaded and the
// label read (the drive set to the label's block size).
type Mount struct{}

// Drive is the drive, for tape.OpenAppender and tape.NewReader. Commands
// that time out mark the drive offline when the Mount is released.
func (mt *Mount) Drive() tape.Drive { return nil }

// Label is the label read at mount.
func (mt *Mount) Label() volume.Label { return volume.Label{} }

// Barcode is the cartridge's barcode.
func (mt *Mount) Barcode() string { return "" }

// Stats are the drive's figures since the mount: bytes, drive time and
// stops (the drive ran out of data and repositioned).
func (mt *Mount) Stats() wire.TapeStats { return wire.TapeStats{} }

// Release gives the drive back; the cartridge stays loaded until another
// mount needs the drive or the slot. err is the user's last error: a
// *tape.HungError marks the drive offline.
func (mt *Mount) Release(err error) {}

// Close stops the drive owners and closes the changer and drives.
func (m *Manager) Close() error { return nil }
