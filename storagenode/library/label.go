package library

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cairnbackup/cairn/media/changer"
	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
)

// Label loads the cartridge in slot, checks its barcode, refuses a
// write-protected tape and (unless overwrite) any tape that holds a label,
// writes l, reads it back and compares, and returns the cartridge to its
// slot. Errors are *Error of kind ErrForeignLabel, ErrWriteProtected,
// ErrBarcodeMismatch, ErrDriveOffline or ErrChanger.
//
// It waits (within ctx) for a free drive like a Mount, but reports no
// waiting reason: there is no job.
func (m *Manager) Label(ctx context.Context, slot int, barcode string, l volume.Label, overwrite bool) error {
	if barcode == "" {
		return m.fail(ErrInvalid, "", "label slot %d of library %s: no barcode", slot, m.cfg.Name)
	}
	for {
		m.mu.Lock()
		wake, closed := m.wake, m.closed
		m.mu.Unlock()
		if closed {
			return m.closedErr()
		}
		inv, err := m.inventory(ctx)
		if err != nil {
			return m.fail(ErrChanger, "check the library, then retry", "label slot %d of library %s: inventory: %w", slot, m.cfg.Name, err)
		}
		el, ok := inv.Storage(slot)
		if ok && !el.Full {
			// A tape a job left in a drive is still its slot's.
			if e, found := inv.Find(barcode); found && e.Kind == changer.KindDrive && e.Source == slot {
				el = e
			}
		}
		switch {
		case !ok || el.Kind == changer.KindMailSlot:
			return m.fail(ErrInvalid, "label tapes in storage slots; import them from the mail slots first", "library %s has no storage slot %d", m.cfg.Name, slot)
		case !el.Full:
			return m.fail(ErrNotFound, "take a new inventory ('cairn library status')", "slot %d of library %s is empty", slot, m.cfg.Name)
		case el.Barcode != barcode:
			return m.fail(ErrBarcodeMismatch, "take a new inventory ('cairn library status') and label what is there",
				"slot %d of library %s holds tape %q, not %s", slot, m.cfg.Name, el.Barcode, barcode)
		}
		m.mu.Lock()
		d, _ := m.pick(inv, el, barcode)
		if d != nil {
			d.state, d.job, d.doing = stateBusy, 0, "labeling "+barcode
		}
		m.mu.Unlock()
		if d == nil {
			t := time.NewTimer(m.cfg.MountPoll)
			select {
			case <-ctx.Done():
				t.Stop()
				m.mu.Lock()
				reason := m.busyReason()
				m.mu.Unlock()
				return m.fail(ErrNoFreeDrive, "retry when a drive is free", "label tape %s: no drive became free (%s): %w", barcode, reason, ctx.Err())
			case <-wake:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		err = m.do(ctx, d, func() error { return m.label(ctx, d, inv, slot, barcode, l, overwrite) })
		m.free(d, err)
		if hung(err) {
			return m.offlineError(d, err)
		}
		return err
	}
}

// label does Label's work on d's owner.
func (m *Manager) label(ctx context.Context, d *drive, inv *changer.Inventory, slot int, barcode string, l volume.Label, overwrite bool) error {
	libErr := func(what string, err error) error {
		if hung(err) {
			return err
		}
		return m.fail(ErrChanger, "check the library ('cairn library status'), then retry", "label tape %s in library %s: %s: %w", barcode, m.cfg.Name, what, err)
	}
	if cur, _ := inv.Drive(d.n); !cur.Full || cur.Barcode != barcode {
		if cur.Full {
			if err := m.unloadHome(ctx, d, cur, "label", 0); err != nil {
				return libErr(fmt.Sprintf("empty drive %d", d.n), err)
			}
		}
		rctx, cancel := m.robot(ctx)
		err := m.changer.Load(rctx, slot, d.n)
		cancel()
		if err != nil {
			return libErr(fmt.Sprintf("load slot %d into drive %d", slot, d.n), err)
		}
		m.mu.Lock()
		d.barcode = barcode
		d.loads++
		m.mu.Unlock()
		m.moved(barcode, changer.Addr{Kind: changer.KindSlot, Number: slot}, changer.Addr{Kind: changer.KindDrive, Number: d.n}, "label", 0)
	}

	err := m.labelLoaded(ctx, d, slot, barcode, l, overwrite)
	if hung(err) {
		return err // the cartridge stays in the drive, which goes offline
	}
	if uerr := m.returnToSlot(ctx, d, slot, barcode); uerr != nil {
		if err == nil {
			return libErr(fmt.Sprintf("return the tape to slot %d", slot), uerr)
		}
		// Told, not wrapped: the label's error is the one errors.Is and
		// the node's edge must find, not the return's.
		return fmt.Errorf("%w (and returning it to slot %d failed: %v)", err, slot, uerr)
	}
	return err
}

// labelLoaded checks and labels the cartridge just loaded into d.
func (m *Manager) labelLoaded(ctx context.Context, d *drive, slot int, barcode string, l volume.Label, overwrite bool) error {
	inv, err := m.inventory(ctx)
	if err != nil {
		return m.fail(ErrChanger, "check the library, then retry", "label tape %s: inventory: %w", barcode, err)
	}
	if got, _ := inv.Drive(d.n); got.Barcode != barcode {
		return m.fail(ErrBarcodeMismatch, "check the cartridge's barcode label and take a new inventory",
			"library %s reads barcode %q on the tape it moved from slot %d to drive %d, not %s", m.cfg.Name, got.Barcode, slot, d.n, barcode)
	}
	cctx, cancel := m.cmd(ctx)
	defer cancel()
	if err := d.dev.Load(cctx); err != nil {
		return fmt.Errorf("label tape %s: drive %d: %w", barcode, d.n, err)
	}
	st, err := d.dev.Status(cctx)
	if err != nil {
		return fmt.Errorf("label tape %s: drive %d: %w", barcode, d.n, err)
	}
	m.mu.Lock()
	d.status = st
	m.mu.Unlock()
	if st.WriteProtected {
		return m.fail(ErrWriteProtected, "slide the cartridge's write-protect tab to write, or label another tape",
			"tape %s (slot %d of library %s) is write-protected", barcode, slot, m.cfg.Name)
	}
	d.verified.Store(nil)
	err = m.writeLabel(cctx, d, barcode, l, overwrite)
	switch {
	case errors.Is(err, tape.ErrLabelled):
		if got, rerr := tape.ReadLabel(cctx, d.dev); rerr == nil && got.VolumeID == l.VolumeID && got.Name == l.Name &&
			got.Pool == l.Pool && got.BlockSize == l.BlockSize {
			// Labeled so before: a repeat of an order whose answer was
			// lost, perhaps with a restart of this node in between.
			return nil
		}
		return m.fail(ErrForeignLabel, "check that nothing on the tape is needed, then label it with --overwrite",
			"tape %s (slot %d of library %s) is not blank: %w", barcode, slot, m.cfg.Name, err)
	case errors.Is(err, tape.ErrWriteProtected):
		return m.fail(ErrWriteProtected, "slide the cartridge's write-protect tab to write, or label another tape",
			"tape %s (slot %d of library %s) is write-protected", barcode, slot, m.cfg.Name)
	}
	return err
}

// writeLabel writes l on the cartridge in d and reads it back. It runs on
// d's owner.
func (m *Manager) writeLabel(cctx context.Context, d *drive, barcode string, l volume.Label, overwrite bool) error {
	if err := tape.WriteLabel(cctx, d.dev, l, overwrite); err != nil {
		return fmt.Errorf("label tape %s: %w", barcode, err)
	}
	got, err := tape.ReadLabel(cctx, d.dev)
	if err != nil {
		return fmt.Errorf("label tape %s: read it back: %w", barcode, err)
	}
	if got.VolumeID != l.VolumeID || got.Name != l.Name || got.Pool != l.Pool || got.BlockSize != l.BlockSize {
		return m.fail(ErrReadBack, "the drive does not keep what it writes: check or clean it",
			"label tape %s: read back volume %s (%q, pool %q, block size %d), wrote %s (%q, pool %q, block size %d)",
			barcode, got.VolumeID, got.Name, got.Pool, got.BlockSize, l.VolumeID, l.Name, l.Pool, l.BlockSize)
	}
	return nil
}

// returnToSlot ejects the tape in d and puts it in slot.
func (m *Manager) returnToSlot(ctx context.Context, d *drive, slot int, barcode string) error {
	cctx, cancel := m.cmd(ctx)
	err := d.dev.Unload(cctx)
	cancel()
	if err != nil && !errors.Is(err, tape.ErrNoMedium) {
		return err
	}
	rctx, cancel := m.robot(ctx)
	defer cancel()
	if err := m.changer.Unload(rctx, d.n, slot); err != nil {
		return err
	}
	m.mu.Lock()
	d.barcode = ""
	m.mu.Unlock()
	m.moved(barcode, changer.Addr{Kind: changer.KindDrive, Number: d.n}, changer.Addr{Kind: changer.KindSlot, Number: slot}, "label", 0)
	return nil
}
