package library

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/media/changer"
	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// MountRequest asks for a drive with one cartridge in it.
type MountRequest struct {
	Job     uint64
	Barcode string
	// Volume is the volume the catalog says the cartridge holds: the label
	// read at the drive must name it (else ErrBarcodeMismatch).
	Volume uuid.UUID
	// Relabel, when set, is a volume the label may name instead: the
	// catalog recycled the cartridge into Volume, and its label is to be
	// written again (Mount.Relabel) before anything else.
	Relabel uuid.UUID
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
//
// A cartridge found in a mail slot is imported into a free storage slot
// by the Mount itself (reported as a move for the job): the operator who
// inserted it for a waiting job need not also run 'cairn library import'.
func (m *Manager) Mount(ctx context.Context, req MountRequest) (*Mount, error) {
	if req.Barcode == "" {
		return nil, m.fail(ErrInvalid, "", "mount in library %s: no barcode", m.cfg.Name)
	}
	waiting := ""
	defer func() {
		if waiting != "" {
			m.report.JobWaiting(req.Job, "")
		}
	}()
	for {
		m.mu.Lock()
		wake, closed := m.wake, m.closed
		m.mu.Unlock()
		if closed {
			return nil, m.closedErr()
		}
		mt, reason, err := m.tryMount(ctx, req)
		if mt != nil || err != nil {
			return mt, err
		}
		if reason != waiting {
			waiting = reason
			m.report.JobWaiting(req.Job, reason)
		}
		t := time.NewTimer(m.cfg.MountPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("mount tape %s in library %s (waiting: %s): %w", req.Barcode, m.cfg.Name, reason, context.Cause(ctx))
		case <-m.done:
			t.Stop()
			return nil, m.closedErr()
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// retry is a mount attempt that failed in a way waiting may cure (the
// robot, a tape moved meanwhile): the job waits with reason.
type retry struct{ reason string }

func (r *retry) Error() string { return r.reason }

// tryMount makes one attempt: a Mount, a reason to wait, or an error that
// ends the wait.
func (m *Manager) tryMount(ctx context.Context, req MountRequest) (*Mount, string, error) {
	inv, err := m.inventory(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		return nil, fmt.Sprintf("library %s does not answer an inventory (%v); trying again", m.cfg.Name, err), nil
	}
	el, ok := inv.Find(req.Barcode)
	if !ok {
		return nil, fmt.Sprintf("insert tape %s into library %s (import it with 'cairn library import')", req.Barcode, m.cfg.Name), nil
	}
	if el.Kind == changer.KindMailSlot {
		if reason := m.importFromMail(ctx, el, req.Job); reason != "" {
			return nil, reason, nil
		}
		if inv, err = m.inventory(ctx); err != nil {
			return nil, fmt.Sprintf("library %s does not answer an inventory (%v); trying again", m.cfg.Name, err), nil
		}
		if el, ok = inv.Find(req.Barcode); !ok || el.Kind == changer.KindMailSlot {
			return nil, fmt.Sprintf("tape %s was imported into library %s but the inventory does not show it in a slot; trying again", req.Barcode, m.cfg.Name), nil
		}
	}

	m.mu.Lock()
	d, reason := m.pick(inv, el, req.Barcode)
	if d == nil {
		m.mu.Unlock()
		return nil, reason, nil
	}
	d.state, d.job, d.doing = stateBusy, req.Job, "loading "+req.Barcode
	m.mu.Unlock()

	var mt *Mount
	err = m.do(ctx, d, func() error {
		var err error
		mt, err = m.load(ctx, d, inv, req)
		return err
	})
	if err == nil {
		m.mu.Lock()
		d.doing = req.Why
		m.mu.Unlock()
		return mt, "", nil
	}
	m.free(d, err)
	var r *retry
	switch {
	case errors.As(err, &r):
		return nil, r.reason, nil
	case hung(err):
		return nil, "", m.offlineError(d, err)
	}
	return nil, "", err
}

// importFromMail takes the cartridge an operator put in a mail slot into
// a free storage slot. It returns a reason to wait when it cannot.
func (m *Manager) importFromMail(ctx context.Context, el changer.Element, job uint64) string {
	m.mailMu.Lock()
	defer m.mailMu.Unlock()
	// The inventory may be from before an operator's import: look again
	// now that no import can run.
	inv, err := m.inventory(ctx)
	if err != nil {
		return fmt.Sprintf("library %s does not answer an inventory (%v); trying again", m.cfg.Name, err)
	}
	el, ok := inv.Find(el.Barcode)
	if !ok || el.Kind != changer.KindMailSlot {
		return "" // imported meanwhile (or taken out: the caller looks again)
	}
	to, free := inv.FreeSlot()
	if !free {
		return fmt.Sprintf("tape %s is in mail slot %d of library %s, but every storage slot is full: export a tape ('cairn library export') to make room", el.Barcode, el.Number, m.cfg.Name)
	}
	rctx, cancel := m.robot(ctx)
	defer cancel()
	if err := m.changer.Transfer(rctx, el.Number, to); err != nil {
		return fmt.Sprintf("the robot of library %s could not import tape %s from mail slot %d (%v); trying again", m.cfg.Name, el.Barcode, el.Number, err)
	}
	m.moved(el.Barcode, el.Addr, changer.Addr{Kind: changer.KindSlot, Number: to}, jobReason(job), job)
	return ""
}

func jobReason(job uint64) string {
	if job == 0 {
		return "operator"
	}
	return fmt.Sprintf("job %d", job)
}

// pick chooses the drive for a cartridge at el: the drive it is in, or
// a free drive (an empty one first, then the one used least recently).
// The caller holds m.mu.
func (m *Manager) pick(inv *changer.Inventory, el changer.Element, barcode string) (*drive, string) {
	if el.Kind == changer.KindDrive {
		d := m.drives[el.Number]
		switch d.state {
		case stateIdle:
			return d, ""
		case stateOffline:
			return nil, fmt.Sprintf("tape %s is in drive %d of library %s, which is offline (%s): check the drive and bring it back with 'cairn library online --drive %d'", barcode, d.n, m.cfg.Name, d.reason, d.n)
		}
		return nil, fmt.Sprintf("tape %s is in drive %d of library %s, in use (%s)", barcode, d.n, m.cfg.Name, d.use())
	}
	var best *drive
	for _, d := range m.drives {
		if d.state != stateIdle {
			continue
		}
		if e, ok := inv.Drive(d.n); ok && !e.Full {
			return d, ""
		}
		if best == nil || d.lastUsed.Before(best.lastUsed) {
			best = d
		}
	}
	if best != nil {
		return best, ""
	}
	return nil, m.busyReason()
}

// use says what a busy drive does; the caller holds m.mu.
func (d *drive) use() string {
	switch {
	case d.job != 0 && d.doing != "":
		return fmt.Sprintf("job %d %s", d.job, d.doing)
	case d.job != 0:
		return fmt.Sprintf("job %d", d.job)
	case d.doing != "":
		return d.doing
	}
	return "busy"
}

// busyReason says why no drive is free; the caller holds m.mu.
func (m *Manager) busyReason() string {
	var busy, offline []string
	for _, d := range m.drives {
		switch d.state {
		case stateBusy:
			busy = append(busy, d.use())
		case stateOffline:
			offline = append(offline, fmt.Sprintf("drive %d offline", d.n))
		}
	}
	if len(busy) == 0 {
		return fmt.Sprintf("every drive of library %s is offline (%s): check them and bring one back with 'cairn library online --drive N'", m.cfg.Name, strings.Join(offline, ", "))
	}
	return fmt.Sprintf("all %d drives of library %s are busy (%s)", len(m.drives), m.cfg.Name, strings.Join(append(busy, offline...), ", "))
}

// load puts req's cartridge into d and checks its label. It runs on d's
// owner.
func (m *Manager) load(ctx context.Context, d *drive, inv *changer.Inventory, req MountRequest) (*Mount, error) {
	cur, _ := inv.Drive(d.n)
	reason := jobReason(req.Job)
	if !cur.Full || cur.Barcode != req.Barcode {
		if cur.Full {
			if err := m.unloadHome(ctx, d, cur, reason, req.Job); err != nil {
				return nil, err
			}
		}
		rctx, cancel := m.robot(ctx)
		from, err := changer.LoadBarcode(rctx, m.changer, req.Barcode, d.n)
		cancel()
		if err != nil {
			return nil, m.robotRetry(ctx, fmt.Sprintf("load tape %s into drive %d", req.Barcode, d.n), err)
		}
		m.mu.Lock()
		d.barcode = req.Barcode
		d.loads++
		m.mu.Unlock()
		m.moved(req.Barcode, from.Addr, changer.Addr{Kind: changer.KindDrive, Number: d.n}, reason, req.Job)
	}
	cctx, cancel := m.cmd(ctx)
	defer cancel()
	if err := d.dev.Load(cctx); err != nil {
		return nil, fmt.Errorf("library %s: drive %d: load tape %s: %w", m.cfg.Name, d.n, req.Barcode, err)
	}
	if v := d.verified.Load(); v != nil && v.barcode == req.Barcode && req.names(v.label.VolumeID) {
		// Load sets the drive's default block size; ReadLabel would
		// have set the label's.
		if err := d.dev.SetBlockSize(cctx, v.label.BlockSize); err != nil {
			return nil, fmt.Errorf("library %s: drive %d: set the block size of tape %s: %w", m.cfg.Name, d.n, req.Barcode, err)
		}
		return m.mounted(cctx, d, v.label, req)
	}
	d.verified.Store(nil)
	lbl, err := tape.ReadLabel(cctx, d.dev)
	switch {
	case errors.Is(err, volume.ErrNotVolume):
		return nil, m.fail(ErrBarcodeMismatch, "check the cartridge: its barcode may be on the wrong tape; find the tape that holds the volume, or mark this volume missing",
			"tape %s in drive %d of library %s holds no Cairn label (%w); the catalog says it holds volume %s", req.Barcode, d.n, m.cfg.Name, err, req.Volume)
	case err != nil:
		return nil, fmt.Errorf("library %s: drive %d: read the label of tape %s: %w", m.cfg.Name, d.n, req.Barcode, err)
	case !req.names(lbl.VolumeID):
		return nil, m.fail(ErrBarcodeMismatch, "the barcode on the cartridge does not match the volume on the tape (a swapped or misread barcode): check the cartridge, relabel its case, or correct the catalog before using it",
			"tape %s in drive %d of library %s holds volume %s (name %q, pool %q), not volume %s that the catalog has for barcode %s", req.Barcode, d.n, m.cfg.Name, lbl.VolumeID, lbl.Name, lbl.Pool, req.Volume, req.Barcode)
	}
	d.verified.Store(&verifiedLabel{barcode: req.Barcode, label: lbl})
	return m.mounted(cctx, d, lbl, req)
}

// names reports whether a label of volume id is the one req expects.
func (req MountRequest) names(id uuid.UUID) bool {
	return id == req.Volume || (req.Relabel != uuid.Nil && id == req.Relabel)
}

// mounted completes a mount of the cartridge whose label is lbl.
func (m *Manager) mounted(cctx context.Context, d *drive, lbl volume.Label, req MountRequest) (*Mount, error) {
	st, err := d.dev.Status(cctx)
	if err != nil {
		return nil, fmt.Errorf("library %s: drive %d: status: %w", m.cfg.Name, d.n, err)
	}
	m.mu.Lock()
	d.status = st
	m.mu.Unlock()
	return &Mount{m: m, d: d, label: lbl, barcode: req.Barcode, start: d.figures()}, nil
}

// unloadHome ejects the cartridge in d and puts it back in its home slot
// (any free slot when the library does not know it). It runs on d's owner.
func (m *Manager) unloadHome(ctx context.Context, d *drive, cur changer.Element, reason string, job uint64) error {
	cctx, cancel := m.cmd(ctx)
	err := d.dev.Unload(cctx)
	cancel()
	if err != nil && !errors.Is(err, tape.ErrNoMedium) {
		return fmt.Errorf("library %s: drive %d: eject tape %s: %w", m.cfg.Name, d.n, cur.Barcode, err)
	}
	rctx, cancel := m.robot(ctx)
	defer cancel()
	to := cur.Source
	err = m.changer.Unload(rctx, d.n, 0)
	if errors.Is(err, changer.ErrNoHomeSlot) {
		inv, ierr := m.changer.Inventory(rctx)
		if ierr != nil {
			return m.robotRetry(ctx, fmt.Sprintf("unload tape %s from drive %d", cur.Barcode, d.n), ierr)
		}
		free, ok := inv.FreeSlot()
		if !ok {
			return &retry{fmt.Sprintf("tape %s in drive %d of library %s has no home slot and every slot is full: export a tape ('cairn library export')", cur.Barcode, d.n, m.cfg.Name)}
		}
		to = free
		err = m.changer.Unload(rctx, d.n, free)
	}
	if err != nil {
		return m.robotRetry(ctx, fmt.Sprintf("unload tape %s from drive %d", cur.Barcode, d.n), err)
	}
	m.mu.Lock()
	d.barcode = ""
	m.mu.Unlock()
	m.moved(cur.Barcode, cur.Addr, changer.Addr{Kind: changer.KindSlot, Number: to}, reason, job)
	return nil
}

// robotRetry turns a failed move into a reason to wait, unless the
// caller gave up.
func (m *Manager) robotRetry(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("library %s: %s: %w", m.cfg.Name, what, context.Cause(ctx))
	}
	switch {
	case errors.Is(err, changer.ErrNoAnswer):
		return &retry{fmt.Sprintf("the robot of library %s does not answer (%s): check the library; trying again after an inventory", m.cfg.Name, what)}
	case errors.Is(err, changer.ErrDriveBusy):
		return &retry{fmt.Sprintf("library %s cannot %s: the tape is in use in another drive (%v); trying again", m.cfg.Name, what, err)}
	}
	return &retry{fmt.Sprintf("the robot of library %s failed to %s (%v); trying again after an inventory", m.cfg.Name, what, err)}
}

func (m *Manager) inventory(ctx context.Context) (*changer.Inventory, error) {
	rctx, cancel := m.robot(ctx)
	defer cancel()
	return m.changer.Inventory(rctx)
}

// moved reports a cartridge movement.
func (m *Manager) moved(barcode string, from, to changer.Addr, reason string, job uint64) wire.TapeMove {
	for _, a := range []changer.Addr{from, to} {
		if a.Kind == changer.KindDrive && a.Number >= 0 && a.Number < len(m.drives) {
			m.drives[a.Number].verified.Store(nil)
		}
	}
	mv := wire.TapeMoved{Library: m.cfg.Name, Barcode: barcode, From: from.String(), To: to.String(), Reason: reason, JobID: job, Time: time.Now().UTC()}
	m.report.TapeMoved(mv)
	return wire.TapeMove{Barcode: barcode, From: mv.From, To: mv.To}
}

// Mount is a drive held by one user, with its cartridge loaded and the
// label read (the drive set to the label's block size).
type Mount struct {
	m       *Manager
	d       *drive
	label   volume.Label
	barcode string
	start   driveFigures
	once    sync.Once
}

// Drive is the drive, for tape.OpenAppender and tape.NewReader. Commands
// that time out mark the drive offline when the Mount is released.
func (mt *Mount) Drive() tape.Drive { return mt.d.dev }

// Label is the label read at mount.
func (mt *Mount) Label() volume.Label { return mt.label }

// Barcode is the cartridge's barcode.
func (mt *Mount) Barcode() string { return mt.barcode }

// DriveNumber is the drive's element number in the library.
func (mt *Mount) DriveNumber() int { return mt.d.n }

// SetDoing changes what DriveInfo.Doing says the job does ("locating").
func (mt *Mount) SetDoing(doing string) {
	mt.m.mu.Lock()
	defer mt.m.mu.Unlock()
	if mt.d.state == stateBusy {
		mt.d.doing = doing
	}
}

// Stats are the drive's figures since the mount: bytes, drive time and
// stops (the drive ran out of data and repositioned).
func (mt *Mount) Stats() wire.TapeStats {
	f := mt.d.figures()
	st := wire.TapeStats{
		DriveBytes:   f.bytesWritten - mt.start.bytesWritten,
		DriveSeconds: (f.writing - mt.start.writing).Seconds(),
		Stops:        f.stops - mt.start.stops,
	}
	if st.DriveBytes > 0 {
		st.Tapes = 1
	}
	return st
}

// Relabel writes l over the label of the mounted cartridge and reads it
// back: everything after the label on the tape is gone with it (a tape
// ends where it was last written), so what a recycled tape held before
// can no more be read, nor taken for the new volume's by a scan that has
// no catalog. The Mount's label is l from then on.
func (mt *Mount) Relabel(ctx context.Context, l volume.Label) error {
	cctx, cancel := mt.m.cmd(ctx)
	defer cancel()
	mt.d.verified.Store(nil)
	if err := mt.m.writeLabel(cctx, mt.d, mt.barcode, l, true); err != nil {
		return err
	}
	mt.label = l
	mt.d.verified.Store(&verifiedLabel{barcode: mt.barcode, label: l})
	return nil
}

// Release gives the drive back; the cartridge stays loaded until another
// mount needs the drive or the slot. err is the user's last error: a
// *tape.HungError marks the drive offline.
func (mt *Mount) Release(err error) {
	mt.once.Do(func() { mt.m.free(mt.d, err) })
}
