package tape

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// Drive is one tape drive: the plug-in point between Cairn and a tape
// device. Linux (over the st driver's non-rewinding node) and Emulator
// implement it; both pass the contract suite in media/tape/tapetest.
//
// The contract is the Linux st driver's semantics in fixed block mode,
// stated in Go terms:
//
// Medium. Load makes the cartridge in the drive ready, puts the drive in
// fixed block mode with its configured block size and checks that the
// drive took it; it does so on every load, because a drive forgets the
// block size with the cartridge. With no cartridge in the drive, Load and
// every command that needs a medium return an error wrapping ErrNoMedium.
// Unload rewinds and ejects; the cartridge can then be taken out.
//
// Records. In fixed block mode every record is BlockSize bytes.
// WriteRecord takes exactly BlockSize bytes; ReadRecord reads the next
// record into a buffer of at least BlockSize bytes and returns BlockSize.
// A record of another length cannot be read: ReadRecord fails and leaves
// the tape before that record (st backs up over it), so the caller may set
// the right block size and read it again.
//
// File marks. WriteFileMark writes one file mark and returns once every
// record before it is on the medium: it is the synchronisation point.
// ReadRecord at a file mark moves past it and returns (0, ErrFileMark);
// the next read returns the first record of the next file. Two file marks
// in a row, or a file mark followed by blank tape, mean end of data: the
// read that finds the second returns ErrEndOfData, and so does every read
// after it until the tape is moved. A read at end of data returns
// ErrEndOfData.
//
// Implicit file marks (st does this, so every Drive does): if the last
// command was a WriteRecord, then Rewind, Unload, Locate, a backward
// SpaceFileMarks and Close first write a file mark, so what was written is
// always terminated. A backward SpaceFileMarks counts that mark too, as
// st's MTBSF does.
//
// Writing in the middle. A record or file mark written before end of data
// becomes the new end of data: everything after it is gone (tape cannot
// overwrite in place).
//
// Early warning and end of medium. Some distance before the physical end
// the drive reports early warning. The WriteRecord that reaches that
// point is accepted; the next one returns ErrEarlyWarning and writes
// nothing (st's single ENOSPC). From then on records and file marks are
// accepted, so the caller can close what it is writing (a trailer, a file
// mark), until the physical end, where WriteRecord returns an
// *EndOfMediumError and writes nothing. A tape can also end early, with no
// warning: the same *EndOfMediumError. Repositioning re-arms the warning.
// Status.EarlyWarning reports the zone.
//
// Write protection. A write-protected cartridge can be read; WriteRecord
// and WriteFileMark return an error wrapping ErrWriteProtected.
//
// Position. Position.Block is the logical object number from the
// beginning of the tape: every record and every file mark counts one, as
// in SCSI READ POSITION and LOCATE (st's MTIOCPOS and MTSEEK). Locate
// moves to a block; past end of data it stops at end of data and returns
// ErrEndOfData. SpaceFileMarks(n) moves forward past n file marks (to the
// first record of the file after the n-th), or for n < 0 backward over -n
// marks, stopping before (on the BOT side of) the last one; it returns
// ErrEndOfData or ErrBeginningOfMedium when it runs out of tape.
// SeekEndOfData moves to end of data, where appending starts.
//
// Errors. A medium error is an *MediumError naming the block; after it the
// position is undefined until the next Locate or Rewind. Status reports
// cleaning requests and soft (recovered) errors; they are not errors of
// the command.
//
// Bounding calls. Every command takes a context and returns when the drive
// answers or the context is done, whichever comes first. A drive that does
// not answer before the context's deadline gives a *HungError
// (errors.Is(err, ErrHung), and context.DeadlineExceeded); what the
// command did is then unknown. A hung command may still be running inside
// the kernel: until it returns, the drive answers every command with
// ErrBusy. Callers give every command a deadline sized for it (a record
// takes milliseconds, a locate or rewind up to minutes on a full
// cartridge) and take a drive that hangs out of service.
//
// Busy. A Drive runs one command at a time. A command issued while another
// is running returns an error wrapping ErrBusy at once; it never queues.
// Opening a drive that another process holds is also ErrBusy.
//
// A Drive is meant to be used by one goroutine at a time; it is safe for
// concurrent use only in the sense above (a second caller gets ErrBusy).
type Drive interface {
	// Name identifies the drive in errors and logs.
	Name() string
	// Load makes the cartridge in the drive ready, in fixed block mode
	// with the drive's configured block size. A cartridge just loaded is
	// at the beginning of the tape; one that was loaded already (a drive
	// reopened after a restart) stays where it is.
	Load(ctx context.Context) error
	// Unload rewinds and ejects the cartridge.
	Unload(ctx context.Context) error
	// Status reports the drive and the cartridge. With no medium it
	// returns Status{Medium: false} and no error.
	Status(ctx context.Context) (Status, error)
	// SetBlockSize sets the fixed record size and checks that the drive
	// took it.
	SetBlockSize(ctx context.Context, size int) error
	// ReadRecord reads the next record into p, which holds at least one
	// block, and returns its length.
	ReadRecord(ctx context.Context, p []byte) (int, error)
	// WriteRecord writes p, exactly one block, as the next record.
	WriteRecord(ctx context.Context, p []byte) error
	// WriteFileMark writes a file mark and flushes the drive's buffer.
	WriteFileMark(ctx context.Context) error
	// Rewind moves to the beginning of the tape.
	Rewind(ctx context.Context) error
	// Locate moves to logical block block.
	Locate(ctx context.Context, block int64) error
	// SpaceFileMarks moves over n file marks, forward for n > 0 and
	// backward for n < 0.
	SpaceFileMarks(ctx context.Context, n int) error
	// SeekEndOfData moves to the end of the recorded data.
	SeekEndOfData(ctx context.Context) error
	// Position reports where the tape is.
	Position(ctx context.Context) (Position, error)
	// Close releases the drive. The cartridge stays where it is (the
	// device is non-rewinding); a file mark is written first if the last
	// command was a WriteRecord.
	Close() error
}

// Position is where the tape is: before the object (record or file mark)
// at Block.
type Position struct {
	// Block counts every record and every file mark from the beginning of
	// the tape: the SCSI logical object number that Locate takes.
	Block int64
	// File is the number of file marks before Block, and Record the number
	// of records between the last of them (or the beginning of the tape)
	// and Block. Either is -1 when the drive does not know it: Linux st
	// loses both after a locate by block.
	File, Record int64
}

// Status is what a drive reports about itself and its cartridge.
type Status struct {
	// Medium: a cartridge is loaded and ready.
	Medium         bool
	WriteProtected bool
	// BlockSize is the fixed record size; 0 means variable block mode,
	// which Cairn never uses.
	BlockSize int
	// Density is the SCSI density code of the medium (LTO-9: 0x60).
	Density int
	// SoftErrors counts errors the drive recovered from, as the drive
	// reports them; a growing count is an early sign of a worn cartridge
	// or a dirty head.
	SoftErrors int
	// CleaningRequested: the drive asks for a cleaning cartridge.
	CleaningRequested bool
	// BeginningOfMedium, EarlyWarning, EndOfData and FileMark are st's
	// GMT_BOT, GMT_EOT, GMT_EOD and GMT_EOF: at the beginning of the tape,
	// past the early warning point, at end of data, just past a file mark.
	BeginningOfMedium bool
	EarlyWarning      bool
	EndOfData         bool
	FileMark          bool
	// Position is where the tape is, when Medium.
	Position Position
	// Cartridge is the cartridge memory, nil when the drive cannot read it
	// (st gives no access to it).
	Cartridge *CartridgeMemory
}

// CartridgeMemory is what an LTO cartridge's memory chip records about the
// cartridge, independently of what is written on the tape.
type CartridgeMemory struct {
	Barcode string
	// VolumeID is the Cairn volume the cartridge holds, written there when
	// it was labelled; uuid.Nil when never set.
	VolumeID     uuid.UUID
	LoadCount    int64
	BytesWritten int64
	BytesRead    int64
}

// CartridgeMemoryWriter is implemented by drives that can write the
// cartridge memory. WriteLabel records the volume id there when it can.
type CartridgeMemoryWriter interface {
	SetVolumeID(ctx context.Context, id uuid.UUID) error
}

// DefaultCommandTimeout bounds each drive command that Appender and Reader
// issue when their options leave it zero. It is st's own default SCSI
// timeout (900 s): the kernel gives up on a command there too.
const DefaultCommandTimeout = 900 * time.Second
