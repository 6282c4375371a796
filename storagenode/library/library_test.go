package library_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/cairnbackup/cairn/internal/poll"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/storagenode/library"
	"github.com/cairnbackup/cairn/wire"
)

// recorder is a Reporter that keeps what it is told.
type recorder struct {
	mu      sync.Mutex
	moves   []wire.TapeMoved
	waiting map[uint64][]string
}

func (r *recorder) TapeMoved(m wire.TapeMoved) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.moves = append(r.moves, m)
}

func (r *recorder) JobWaiting(job uint64, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.waiting == nil {
		r.waiting = map[uint64][]string{}
	}
	r.waiting[job] = append(r.waiting[job], reason)
}

func (r *recorder) reasons(job uint64) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.waiting[job]...)
}

func (r *recorder) lastReason(job uint64) string {
	w := r.reasons(job)
	if len(w) == 0 {
		return ""
	}
	return w[len(w)-1]
}

func (r *recorder) movesOf(barcode string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.moves {
		if m.Barcode == barcode {
			out = append(out, m.From+" -> "+m.To+" ("+m.Reason+")")
		}
	}
	return out
}

var barcodes = []string{"CRN001L9", "CRN002L9", "CRN003L9", "CRN004L9"}

// open opens the emulated library of a test. Its robot moves and drive
// commands fsync the library's files: on a loaded machine one can take
// seconds, so the timeouts are generous. A test of what a timeout does
// shortens them with tune and runs in a synctest bubble, where time passes
// only while every goroutine waits, never during a slow fsync.
func open(t *testing.T, tune ...func(*library.Config)) (*library.Manager, *recorder) {
	t.Helper()
	rec := &recorder{}
	cfg := library.Config{
		Name: "lib1",
		Emulated: &library.EmulatedConfig{
			Dir: filepath.Join(t.TempDir(), "lib1"), Drives: 2, Slots: 8, MailSlots: 2,
			Barcodes: barcodes, CartridgeBytes: 256 << 20, VirtualClock: true,
		},
		CommandTimeout: 30 * time.Second,
		MountPoll:      20 * time.Millisecond,
		MoveTimeout:    30 * time.Second,
	}
	for _, f := range tune {
		f(&cfg)
	}
	m, err := library.Open(context.Background(), cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, rec
}

// shortTimeouts make a hung drive or a stuck robot show at once.
func shortTimeouts(c *library.Config) {
	c.CommandTimeout, c.MoveTimeout = 300*time.Millisecond, 200*time.Millisecond
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newLabel(barcode string) volume.Label {
	return volume.Label{VolumeID: uuid.New(), Name: barcode, Pool: "Weekly", BlockSize: volume.DefaultBlockSize}
}

// labelAll labels every configured tape and returns the volume of each.
func labelAll(t *testing.T, m *library.Manager) map[string]uuid.UUID {
	t.Helper()
	vols := map[string]uuid.UUID{}
	for i, b := range barcodes {
		l := newLabel(b)
		if err := m.Label(ctxT(t), i+1, b, l, false); err != nil {
			t.Fatalf("label %s: %v", b, err)
		}
		vols[b] = l.VolumeID
	}
	return vols
}

// wantKind holds err to a library error of kind that says what to do,
// and no wire error: codes are the storage node's to give, at its edge.
func wantKind(t *testing.T, err error, kind error) {
	t.Helper()
	var le *library.Error
	if !errors.Is(err, kind) || !errors.As(err, &le) || le.Library == "" {
		t.Fatalf("error %v (%T), want a *library.Error of kind %q", err, err, kind)
	}
	if le.Hint == "" {
		t.Fatalf("error %v has no hint", err)
	}
	var we *wire.Error
	if errors.As(err, &we) {
		t.Fatalf("error %v is a wire error (code %s) made in the library", err, we.Code)
	}
}

func driveOf(t *testing.T, m *library.Manager, n int) wire.DriveInfo {
	t.Helper()
	st, err := m.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return st.Drives[n]
}

// Label writes and reads back the label and puts the tape back; a mount
// loads it, reads the label, and a second mount of the same tape uses it
// where it is; a mount of another tape into the only free drive puts the
// first back home.
func TestMountUnmountReuse(t *testing.T) {
	m, rec := open(t)
	vols := labelAll(t, m)
	if got := rec.movesOf("CRN001L9"); strings.Join(got, "; ") != "slot 1 -> drive 0 (label); drive 0 -> slot 1 (label)" {
		t.Fatalf("label moves: %q", got)
	}

	ctx := ctxT(t)
	mt, err := m.Mount(ctx, library.MountRequest{Job: 7, Barcode: "CRN002L9", Volume: vols["CRN002L9"], Why: "writing volume CRN002L9"})
	if err != nil {
		t.Fatal(err)
	}
	if mt.Label().VolumeID != vols["CRN002L9"] || mt.Barcode() != "CRN002L9" {
		t.Fatalf("mounted %s with label %+v", mt.Barcode(), mt.Label())
	}
	info := driveOf(t, m, mt.DriveNumber())
	if info.State != "busy" || info.Job != 7 || info.Doing != "writing volume CRN002L9" || info.Barcode != "CRN002L9" {
		t.Fatalf("drive while mounted: %+v", info)
	}
	// Write a little through the mount: the figures count it.
	a, err := tape.OpenAppender(ctx, mt.Drive(), vols["CRN002L9"], int64(volume.DefaultBlockSize), 0, tape.AppenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write(make([]byte, 4*volume.DefaultBlockSize)); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	if st := mt.Stats(); st.DriveBytes != int64(4*volume.DefaultBlockSize) || st.DriveSeconds <= 0 || st.Stops != 0 {
		t.Fatalf("mount stats %+v", st)
	}
	drive := mt.DriveNumber()
	mt.Release(nil)
	if info := driveOf(t, m, drive); info.State != "idle" || info.Barcode != "CRN002L9" || info.Job != 0 {
		t.Fatalf("drive after release: %+v", info)
	}

	before := len(rec.movesOf("CRN002L9"))
	mt, err = m.Mount(ctx, library.MountRequest{Job: 8, Barcode: "CRN002L9", Volume: vols["CRN002L9"]})
	if err != nil {
		t.Fatal(err)
	}
	if mt.DriveNumber() != drive || len(rec.movesOf("CRN002L9")) != before {
		t.Fatalf("a tape loaded in a free drive was moved: drive %d, moves %q", mt.DriveNumber(), rec.movesOf("CRN002L9"))
	}
	// Hold it; the other drive is empty and takes the next tape.
	mt2, err := m.Mount(ctx, library.MountRequest{Job: 9, Barcode: "CRN003L9", Volume: vols["CRN003L9"]})
	if err != nil {
		t.Fatal(err)
	}
	mt2.Release(nil)
	// Now the other drive holds CRN003L9 and is the only free one:
	// mounting CRN004L9 sends CRN003L9 home first.
	mt3, err := m.Mount(ctx, library.MountRequest{Job: 10, Barcode: "CRN004L9", Volume: vols["CRN004L9"]})
	if err != nil {
		t.Fatal(err)
	}
	defer mt3.Release(nil)
	mt.Release(nil)
	if got := rec.movesOf("CRN003L9"); got[len(got)-1] != fmt.Sprintf("drive %d -> slot 3 (job 10)", mt3.DriveNumber()) {
		t.Fatalf("CRN003L9 moves: %q", got)
	}
	if got := rec.movesOf("CRN004L9"); got[len(got)-1] != fmt.Sprintf("slot 4 -> drive %d (job 10)", mt3.DriveNumber()) {
		t.Fatalf("CRN004L9 moves: %q", got)
	}
	if w := rec.reasons(10); len(w) != 0 {
		t.Fatalf("a mount with a free drive waited: %q", w)
	}
}

// Two mounts hold both drives; a third waits with the reason naming them,
// and gets a drive when one is released.
func TestThirdMountWaitsForABusyDrive(t *testing.T) {
	m, rec := open(t)
	vols := labelAll(t, m)
	ctx := ctxT(t)
	mt1, err := m.Mount(ctx, library.MountRequest{Job: 1, Barcode: "CRN001L9", Volume: vols["CRN001L9"], Why: "writing CRN001L9"})
	if err != nil {
		t.Fatal(err)
	}
	mt2, err := m.Mount(ctx, library.MountRequest{Job: 2, Barcode: "CRN002L9", Volume: vols["CRN002L9"], Why: "reading CRN002L9"})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	var mt3 *library.Mount
	go func() {
		var err error
		mt3, err = m.Mount(ctx, library.MountRequest{Job: 3, Barcode: "CRN003L9", Volume: vols["CRN003L9"]})
		got <- err
	}()
	want := "all 2 drives of library lib1 are busy (job 1 writing CRN001L9, job 2 reading CRN002L9)"
	poll.Until(t, 10*time.Second, func() error { // the waiting reason
		if r := rec.lastReason(3); r != want {
			return fmt.Errorf("reason %q, want %q", r, want)
		}
		return nil
	})
	select {
	case err := <-got:
		t.Fatalf("the third mount did not wait: %v", err)
	default:
	}
	mt2.Release(nil)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	defer mt3.Release(nil)
	mt1.Release(nil)
	if r := rec.lastReason(3); r != "" {
		t.Fatalf("the waiting reason was not cleared: %q", rec.reasons(3))
	}
	if mt3.DriveNumber() != mt2.DriveNumber() {
		t.Fatalf("the third mount got drive %d, not the released drive %d", mt3.DriveNumber(), mt2.DriveNumber())
	}
}

// A tape not in the library: the job asks for it, and goes on once an
// operator puts it into a mail slot (the Mount imports it).
func TestMountWaitsForAnInsertedTape(t *testing.T) {
	m, rec := open(t)
	vols := labelAll(t, m)
	ctx := ctxT(t)
	// Take CRN004L9 out of the library.
	if _, err := m.Move(ctx, wire.LibraryMoveReq{Op: wire.MoveExport, Barcode: "CRN004L9"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Emulated().Remove(9); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		mt, err := m.Mount(ctx, library.MountRequest{Job: 5, Barcode: "CRN004L9", Volume: vols["CRN004L9"]})
		if err == nil {
			mt.Release(nil)
		}
		got <- err
	}()
	want := "insert tape CRN004L9 into library lib1 (import it with 'cairn library import')"
	poll.Until(t, 10*time.Second, func() error { // the insert request
		if r := rec.lastReason(5); r != want {
			return fmt.Errorf("reason %q, want %q", r, want)
		}
		return nil
	})
	if _, err := m.Emulated().Insert(0, "CRN004L9"); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	moves := rec.movesOf("CRN004L9")
	if !strings.HasPrefix(moves[len(moves)-2], "mail slot 9 -> slot ") || !strings.HasSuffix(moves[len(moves)-2], "(job 5)") {
		t.Fatalf("moves of CRN004L9: %q", moves)
	}
	if w := rec.reasons(5); w[len(w)-1] != "" {
		t.Fatalf("waiting reasons %q", w)
	}
}

// The barcode the library reads is not the tape's: the label found names
// another volume, and the mount says so.
func TestMountBarcodeMismatch(t *testing.T) {
	m, _ := open(t)
	vols := labelAll(t, m)
	ctx := ctxT(t)
	// The reader takes CRN001L9 (slot 1) for CRN002L9: slot 1 comes first.
	m.Emulated().Misread("CRN001L9", "CRN002L9")
	_, err := m.Mount(ctx, library.MountRequest{Job: 1, Barcode: "CRN002L9", Volume: vols["CRN002L9"]})
	wantKind(t, err, library.ErrBarcodeMismatch)
	if msg := err.Error(); !strings.Contains(msg, vols["CRN001L9"].String()) || !strings.Contains(msg, "CRN002L9") {
		t.Fatalf("the error does not name the tape and the label found: %v", err)
	}
	// The drive is free again.
	m.Emulated().Misread("CRN001L9", "")
	mt, err := m.Mount(ctx, library.MountRequest{Job: 2, Barcode: "CRN002L9", Volume: vols["CRN002L9"]})
	if err != nil {
		t.Fatal(err)
	}
	mt.Release(nil)
}

// Label refuses a write-protected tape and a tape with a label (Cairn's
// or a foreign one) unless told to overwrite, and a barcode the library
// reads differently at the drive.
func TestLabelRefusals(t *testing.T) {
	m, _ := open(t)
	ctx := ctxT(t)
	if err := tape.SetWriteProtect(m.CartridgePath("CRN001L9"), true); err != nil {
		t.Fatal(err)
	}
	wantKind(t, m.Label(ctx, 1, "CRN001L9", newLabel("CRN001L9"), false), library.ErrWriteProtected)
	wantKind(t, m.Label(ctx, 1, "CRN001L9", newLabel("CRN001L9"), true), library.ErrWriteProtected)

	first := newLabel("CRN002L9")
	if err := m.Label(ctx, 2, "CRN002L9", first, false); err != nil {
		t.Fatal(err)
	}
	err := m.Label(ctx, 2, "CRN002L9", newLabel("CRN002L9"), false)
	wantKind(t, err, library.ErrForeignLabel)
	if !strings.Contains(err.Error(), first.VolumeID.String()) {
		t.Fatalf("the refusal does not name the volume on the tape: %v", err)
	}
	second := newLabel("CRN002L9")
	if err := m.Label(ctx, 2, "CRN002L9", second, true); err != nil {
		t.Fatalf("overwrite: %v", err)
	}
	mt, err := m.Mount(ctx, library.MountRequest{Barcode: "CRN002L9", Volume: second.VolumeID})
	if err != nil {
		t.Fatal(err)
	}
	mt.Release(nil)

	// A foreign tape: data that is no Cairn label.
	mt, err = m.Mount(ctx, library.MountRequest{Barcode: "CRN002L9", Volume: second.VolumeID})
	if err != nil {
		t.Fatal(err)
	}
	d := mt.Drive()
	if err := d.Rewind(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteRecord(ctx, []byte(strings.Repeat("VOL1 foreign ", volume.DefaultBlockSize/13+1)[:volume.DefaultBlockSize])); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteFileMark(ctx); err != nil {
		t.Fatal(err)
	}
	mt.Release(nil)
	err = m.Label(ctx, 2, "CRN002L9", newLabel("CRN002L9"), false)
	wantKind(t, err, library.ErrForeignLabel)
	if err := m.Label(ctx, 2, "CRN002L9", newLabel("CRN002L9"), true); err != nil {
		t.Fatalf("overwrite a foreign tape: %v", err)
	}

	// The order names a barcode the slot does not hold.
	wantKind(t, m.Label(ctx, 3, "CRN004L9", newLabel("CRN004L9"), false), library.ErrBarcodeMismatch)

	st, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Slots[:4] {
		if !s.Full || s.Barcode != barcodes[s.Number-1] {
			t.Fatalf("after labeling the tapes are not home: %+v", st.Slots)
		}
	}
}

// A drive that hangs while labeling goes offline with CodeDriveOffline;
// jobs use the other drive; 'online' brings it back once it answers.
func TestHungDriveGoesOffline(t *testing.T) {
	synctest.Test(t, testHungDriveGoesOffline)
}

func testHungDriveGoesOffline(t *testing.T) {
	m, rec := open(t, shortTimeouts)
	vols := labelAll(t, m)
	ctx := ctxT(t)
	// A new tape, imported into slot 5.
	if _, err := m.Emulated().Insert(0, "CRN005L9"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Move(ctx, wire.LibraryMoveReq{Op: wire.MoveImport}); err != nil {
		t.Fatal(err)
	}
	// Both drives are empty; labeling picks drive 0, which hangs.
	m.EmulatedDrive(0).SetFaults(tape.Faults{Hang: true})
	err := m.Label(ctx, 5, "CRN005L9", newLabel("CRN005L9"), false)
	wantKind(t, err, library.ErrDriveOffline)
	info := driveOf(t, m, 0)
	if info.State != "offline" || !strings.Contains(info.Reason, "did not answer") {
		t.Fatalf("hung drive: %+v", info)
	}
	// While it still hangs, 'online' refuses and the drive stays offline.
	_, err = m.Move(ctx, wire.LibraryMoveReq{Op: wire.MoveOnline, Drive: 0})
	wantKind(t, err, library.ErrDriveOffline)

	// A job uses drive 1.
	mt, err := m.Mount(ctx, library.MountRequest{Job: 4, Barcode: "CRN001L9", Volume: vols["CRN001L9"], Why: "writing"})
	if err != nil {
		t.Fatal(err)
	}
	if mt.DriveNumber() != 1 {
		t.Fatalf("mounted on drive %d, the offline one", mt.DriveNumber())
	}
	// With drive 1 busy and drive 0 offline, the next job says both.
	go func() {
		mt, err := m.Mount(ctx, library.MountRequest{Job: 6, Barcode: "CRN002L9", Volume: vols["CRN002L9"]})
		if err == nil {
			mt.Release(nil)
		}
	}()
	want := "all 2 drives of library lib1 are busy (job 4 writing, drive 0 offline)"
	poll.Until(t, 10*time.Second, func() error { // the waiting reason
		if r := rec.lastReason(6); r != want {
			return fmt.Errorf("reason %q, want %q", r, want)
		}
		return nil
	})
	// A job whose drive hangs gives it back offline.
	mt.Release(&tape.HungError{Drive: "lib1/drive1", Op: "write", Err: context.DeadlineExceeded})
	if info := driveOf(t, m, 1); info.State != "offline" {
		t.Fatalf("drive released with a hang: %+v", info)
	}
	poll.Until(t, 10*time.Second, func() error { // the waiting reason
		if r := rec.lastReason(6); !strings.HasPrefix(r, "every drive of library lib1 is offline") {
			return fmt.Errorf("reason %q", r)
		}
		return nil
	})

	m.EmulatedDrive(0).SetFaults(tape.Faults{})
	if _, err := m.Move(ctx, wire.LibraryMoveReq{Op: wire.MoveOnline, Drive: 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Move(ctx, wire.LibraryMoveReq{Op: wire.MoveOnline, Drive: 1}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() error { // the waiting job to run
		if r := rec.lastReason(6); r != "" {
			return fmt.Errorf("reason %q", r)
		}
		return nil
	})
	if info := driveOf(t, m, 0); info.State != "idle" || info.Reason != "" {
		t.Fatalf("drive 0 after online: %+v", info)
	}
}

// A stuck robot: the job waits saying so, and goes on once the robot is
// freed.
func TestStuckRobot(t *testing.T) {
	synctest.Test(t, testStuckRobot)
}

func testStuckRobot(t *testing.T) {
	m, rec := open(t, shortTimeouts)
	vols := labelAll(t, m)
	ctx := ctxT(t)
	m.Emulated().StickRobot(true)
	got := make(chan error, 1)
	go func() {
		mt, err := m.Mount(ctx, library.MountRequest{Job: 3, Barcode: "CRN003L9", Volume: vols["CRN003L9"]})
		if err == nil {
			mt.Release(nil)
		}
		got <- err
	}()
	poll.Until(t, 10*time.Second, func() error { // the robot reason
		if r := rec.lastReason(3); !strings.HasPrefix(r, "the robot of library lib1 does not answer (load tape CRN003L9 into drive") {
			return fmt.Errorf("reason %q", r)
		}
		return nil
	})
	m.Emulated().StickRobot(false)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if r := rec.lastReason(3); r != "" {
		t.Fatalf("reasons %q", rec.reasons(3))
	}
}

// Operator moves: load, unload, transfer, export and import, reported as
// moves; a busy drive's tape is not moved.
func TestOperatorMovesAndStatus(t *testing.T) {
	m, rec := open(t)
	vols := labelAll(t, m)
	ctx := ctxT(t)
	if info := m.Info(); info != (wire.NodeLibrary{Name: "lib1", Changer: info.Changer, Drives: 2, Slots: 8, MailSlots: 2}) || !strings.HasPrefix(info.Changer, "emulated:") {
		t.Fatalf("info %+v", info)
	}
	move := func(req wire.LibraryMoveReq) []wire.TapeMove {
		t.Helper()
		resp, err := m.Move(ctx, req)
		if err != nil {
			t.Fatalf("%+v: %v", req, err)
		}
		return resp.Moves
	}
	if mv := move(wire.LibraryMoveReq{Op: wire.MoveLoad, Barcode: "CRN001L9", Drive: 1}); len(mv) != 1 || mv[0] != (wire.TapeMove{Barcode: "CRN001L9", From: "slot 1", To: "drive 1"}) {
		t.Fatalf("load: %+v", mv)
	}
	if mv := move(wire.LibraryMoveReq{Op: wire.MoveTransfer, Slot: 2, To: 7}); len(mv) != 1 || mv[0] != (wire.TapeMove{Barcode: "CRN002L9", From: "slot 2", To: "slot 7"}) {
		t.Fatalf("transfer: %+v", mv)
	}
	// A mount of the tape in drive 1 uses it there.
	mt, err := m.Mount(ctx, library.MountRequest{Job: 11, Barcode: "CRN001L9", Volume: vols["CRN001L9"], Why: "reading volume CRN001L9"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Move(ctx, wire.LibraryMoveReq{Op: wire.MoveUnload, Drive: 1})
	wantKind(t, err, library.ErrWrongState)
	if !strings.Contains(err.Error(), "job 11 reading volume CRN001L9") {
		t.Fatalf("refusal: %v", err)
	}
	_, err = m.Move(ctx, wire.LibraryMoveReq{Op: wire.MoveExport, Barcode: "CRN001L9"})
	wantKind(t, err, library.ErrWrongState)

	st, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d1 := st.Drives[1]
	if st.Library != "lib1" || len(st.Drives) != 2 || len(st.Slots) != 10 || d1.State != "busy" || d1.Job != 11 || d1.Barcode != "CRN001L9" ||
		d1.BlockSize != volume.DefaultBlockSize || d1.Density != tape.LTO9.Density || d1.Loads != 1 || d1.Device != "lib1/drive1" {
		t.Fatalf("status: %+v", st)
	}
	if s := st.Slots[8]; !s.Mail || s.Number != 9 || s.Full {
		t.Fatalf("mail slot: %+v", s)
	}
	if s := st.Slots[6]; s.Barcode != "CRN002L9" || !s.Full {
		t.Fatalf("slot 7: %+v", s)
	}
	mt.Release(nil)

	if mv := move(wire.LibraryMoveReq{Op: wire.MoveUnload, Drive: 1}); len(mv) != 1 || mv[0].To != "slot 1" {
		t.Fatalf("unload: %+v", mv)
	}
	if mv := move(wire.LibraryMoveReq{Op: wire.MoveExport, Slot: 3}); len(mv) != 1 || mv[0] != (wire.TapeMove{Barcode: "CRN003L9", From: "slot 3", To: "mail slot 9"}) {
		t.Fatalf("export: %+v", mv)
	}
	if mv := move(wire.LibraryMoveReq{Op: wire.MoveImport}); len(mv) != 1 || mv[0] != (wire.TapeMove{Barcode: "CRN003L9", From: "mail slot 9", To: "slot 2"}) {
		t.Fatalf("import: %+v", mv)
	}
	if _, err := m.Move(ctx, wire.LibraryMoveReq{Op: "shuffle"}); !errors.Is(err, library.ErrInvalid) {
		t.Fatalf("unknown move: %v", err)
	}
	// Every operator move was reported.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	ops := 0
	for _, mv := range rec.moves {
		if mv.Reason == "operator" {
			ops++
			if mv.Library != "lib1" || mv.Time.IsZero() {
				t.Fatalf("report %+v", mv)
			}
		}
	}
	if ops != 5 {
		t.Fatalf("%d operator moves reported, want 5: %+v", ops, rec.moves)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []library.Config{
		{Name: "lib 1", Changer: "/dev/sg3", Drives: []string{"/dev/nst0"}},
		{Name: "lib1"},
		{Name: "lib1", Changer: "/dev/sg3"},
		{Name: "lib1", Changer: "/dev/sg3", Drives: []string{"/dev/nst0"}, Emulated: &library.EmulatedConfig{Dir: "/x"}},
		{Name: "lib1", Emulated: &library.EmulatedConfig{Dir: "rel", Drives: 1, Slots: 1}},
		{Name: "lib1", Emulated: &library.EmulatedConfig{Dir: "/x", Drives: 1, Slots: 1, Profile: "lto5"}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v was accepted", c)
		}
	}
}
