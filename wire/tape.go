package wire

import (
	"time"

	"github.com/google/uuid"
)

// Tape: libraries, drives and tape volumes. A storage node owns its
// libraries (changers and drives); the servers own the catalog's view of
// the cartridges (which volume, which pool, where it is). The admin
// commands go to the servers, which order the node that owns the library.

// Admin API operations (cairn.api.<op>).
const (
	OpLibraryStatus = "library.status"
	OpLibraryMove   = "library.move"
	OpMediaLabel    = "media.label"
)

// Storage node orders (cairn.node.<id>.<op>).
const (
	OpNodeLibraryStatus = "library.status"
	OpNodeLibraryMove   = "library.move"
	OpNodeTapeLabel     = "tape.label"
)

// Storage node reports to the servers (cairn.srv.node.<id>.<op>).
const (
	// OpJobWaiting: a running job waits for something (a drive, a tape, a
	// volume); JobWaitingReq.Reason is what `cairn job show` prints.
	OpJobWaiting = "job.waiting"
	// OpTapeMoved: a cartridge moved (the node loaded or unloaded it for
	// a job, or an admin command moved it); the servers record the new
	// location of the volume with that barcode.
	OpTapeMoved = "tape.moved"
)

// Error codes of tape operations.
const (
	// CodeNoVolume: no volume of the pool can be appended to now; the
	// message says what would help (label or import tapes).
	CodeNoVolume = "no_volume"
	// CodeForeignLabel: the tape holds a label Cairn did not write, or one
	// of another volume; it is never overwritten unless the operator says
	// so (--overwrite).
	CodeForeignLabel = "foreign_label"
	// CodeWriteProtected: the cartridge's write-protect tab is set.
	CodeWriteProtected = "write_protected"
	// CodeBarcodeMismatch: the label on the tape names another volume
	// than the barcode on its case.
	CodeBarcodeMismatch = "barcode_mismatch"
	// CodeDriveOffline: a drive stopped answering and was taken offline.
	CodeDriveOffline = "drive_offline"
	// CodeLibrary: the changer failed a move or an inventory.
	CodeLibrary = "library"
)

// NodeLibrary announces a library at registration.
type NodeLibrary struct {
	Name      string `json:"name"`
	Changer   string `json:"changer"` // "emulated:DIR" or the mtx device
	Drives    int    `json:"drives"`
	Slots     int    `json:"slots"`
	MailSlots int    `json:"mail_slots"`
}

// LibraryStatusReq asks for a library's inventory and drives. Library may
// be empty when the system has one library.
type LibraryStatusReq struct {
	Library string `json:"library,omitempty"`
}

// DriveInfo is one drive as its owner on the storage node sees it.
type DriveInfo struct {
	Number  int    `json:"number"`
	Device  string `json:"device"`
	Barcode string `json:"barcode,omitempty"` // the cartridge loaded, "" when empty
	// State is "idle", "busy", "offline" (a command hung or failed and
	// the drive is out of use until `cairn library` brings it back, or the
	// node restarts).
	State string `json:"state"`
	// Job is the job using the drive, 0 for none; Doing what it does
	// ("writing volume W00012", "locating", "loading W00003").
	Job   uint64 `json:"job,omitempty"`
	Doing string `json:"doing,omitempty"`
	// Reason is why the drive is offline.
	Reason            string `json:"reason,omitempty"`
	WriteProtected    bool   `json:"write_protected,omitempty"`
	CleaningRequested bool   `json:"cleaning_requested,omitempty"`
	SoftErrors        int    `json:"soft_errors,omitempty"`
	BlockSize         int    `json:"block_size,omitempty"`
	Density           int    `json:"density,omitempty"`
	Block             int64  `json:"block,omitempty"` // logical block position
	// Stats since the node started.
	BytesWritten int64 `json:"bytes_written"`
	BytesRead    int64 `json:"bytes_read"`
	Loads        int64 `json:"loads"`
	Locates      int64 `json:"locates"`
	Stops        int64 `json:"stops"`
}

// SlotInfo is one storage or mail slot. The servers add what the catalog
// knows of the cartridge (Volume, Pool, State).
type SlotInfo struct {
	Number  int    `json:"number"`
	Mail    bool   `json:"mail,omitempty"`
	Full    bool   `json:"full"`
	Barcode string `json:"barcode,omitempty"`
	Volume  string `json:"volume,omitempty"`
	Pool    string `json:"pool,omitempty"`
	State   string `json:"state,omitempty"`
}

// LibraryStatus answers library.status (API and node order).
type LibraryStatus struct {
	Library string      `json:"library"`
	Node    string      `json:"node"`
	Changer string      `json:"changer"`
	Drives  []DriveInfo `json:"drives"`
	Slots   []SlotInfo  `json:"slots"` // storage slots then mail slots
	// Error: the library's node did not answer (offline, or its changer
	// failed); the other libraries of a listing are still reported.
	Error *Error `json:"error,omitempty"`
}

// LibraryStatusResp answers the API's library.status: every library, or
// the one asked for.
type LibraryStatusResp struct {
	Libraries []LibraryStatus `json:"libraries"`
}

// Library move operations.
const (
	MoveLoad     = "load"     // Slot (or Barcode) into Drive
	MoveUnload   = "unload"   // Drive into Slot (0: its home slot)
	MoveTransfer = "transfer" // Slot to To
	MoveImport   = "import"   // every cartridge in the mail slots into free slots
	MoveExport   = "export"   // Barcode (or Slot) to a free mail slot; the volume's location becomes "vault" once removed
	MoveOnline   = "online"   // bring an offline Drive back into use
)

// LibraryMoveReq is an operator's move in a library.
type LibraryMoveReq struct {
	Library string `json:"library,omitempty"`
	Op      string `json:"op"`
	Slot    int    `json:"slot,omitempty"`
	Drive   int    `json:"drive,omitempty"`
	To      int    `json:"to,omitempty"`
	Barcode string `json:"barcode,omitempty"`
	// Start names the move: the node does it once per request id and
	// answers a repeat with the first one's result.
	Start
}

// TapeMove is one cartridge movement.
type TapeMove struct {
	Barcode string `json:"barcode"`
	From    string `json:"from"` // "slot 3", "drive 0", "mail slot 25"
	To      string `json:"to"`
}

// LibraryMoveResp lists the moves done.
type LibraryMoveResp struct {
	Moves []TapeMove `json:"moves"`
}

// TapeMoved reports a cartridge movement (OpTapeMoved). Location is
// "slot N", "drive N", "mail slot N" in Library, or "vault" (taken out
// of the library).
type TapeMoved struct {
	Library string    `json:"library"`
	Barcode string    `json:"barcode"`
	From    string    `json:"from"`
	To      string    `json:"to"`
	Reason  string    `json:"reason"` // "job 12", "operator", "label"
	JobID   uint64    `json:"job_id,omitempty"`
	Time    time.Time `json:"time"`
}

// MediaLabelReq (API) labels the cartridge in one slot of a library for a
// pool. The CLI sends one per slot, so a long run shows its progress and a
// failed tape does not stop the others.
type MediaLabelReq struct {
	Library string `json:"library,omitempty"`
	Slot    int    `json:"slot"`
	Pool    string `json:"pool"`
	// Overwrite allows labeling a tape that holds a foreign label or a
	// Cairn volume the catalog does not know; a volume the catalog knows
	// is never relabeled this way.
	Overwrite bool `json:"overwrite,omitempty"`
	Start
}

// MediaLabelResp is the volume recorded.
type MediaLabelResp struct {
	Volume VolumeInfo `json:"volume"`
	// Repeated says an earlier request with this id labeled it.
	Repeated bool `json:"repeated,omitempty"`
}

// TapeLabelOrder (node order) writes a label on the tape in Slot, reads it
// back, and returns the cartridge to its slot. The node refuses a tape
// that holds any label unless Overwrite, and a write-protected tape.
type TapeLabelOrder struct {
	Library   string    `json:"library"`
	Slot      int       `json:"slot"`
	Barcode   string    `json:"barcode"` // as the inventory reported it: checked again at the drive
	VolumeID  uuid.UUID `json:"volume_id"`
	Name      string    `json:"name"` // the barcode, as a rule
	Pool      string    `json:"pool"`
	BlockSize int       `json:"block_size"`
	Created   time.Time `json:"created"`
	Overwrite bool      `json:"overwrite,omitempty"`
	// RequestID names the order: the node labels once per request id and
	// answers a repeat with the first one's result.
	RequestID string `json:"request_id,omitempty"`
}

// TapeLabelResult answers tape.label.
type TapeLabelResult struct {
	Barcode  string    `json:"barcode"`
	VolumeID uuid.UUID `json:"volume_id"`
	Slot     int       `json:"slot"`
}

// JobWaitingReq reports what a running job waits for; "" when it no
// longer waits.
type JobWaitingReq struct {
	JobID  uint64 `json:"job_id"`
	Reason string `json:"reason"`
}

// TapeStats are a tape session's drive figures, in the job report.
type TapeStats struct {
	// DriveBytes went to tape in DriveSeconds of drive time (writing,
	// file marks and restarts; not loads or locates).
	DriveBytes   int64   `json:"drive_bytes"`
	DriveSeconds float64 `json:"drive_seconds"`
	// Stops counts the times the drive ran out of data and had to stop
	// and reposition before it could write again.
	Stops int64 `json:"stops"`
	// Tapes is how many cartridges the session wrote to.
	Tapes int `json:"tapes"`
	// Spooled: the session went through the disk spool.
	Spooled bool `json:"spooled,omitempty"`
}
