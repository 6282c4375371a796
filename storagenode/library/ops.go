package library

import (
	"context"
	"errors"
	"fmt"

	"github.com/cairnbackup/cairn/media/changer"
	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/wire"
)

// Status is the inventory and every drive's state. A free drive is asked
// for its status (through its owner); a busy one is reported as its user
// last left it, since its tape is not to be touched.
func (m *Manager) Status(ctx context.Context) (wire.LibraryStatus, error) {
	inv, err := m.inventory(ctx)
	if err != nil {
		return wire.LibraryStatus{}, m.fail(ErrChanger, "check the library and its changer device", "library %s: inventory: %w", m.cfg.Name, err)
	}
	out := wire.LibraryStatus{Library: m.cfg.Name, Changer: m.desc}
	for _, d := range m.drives {
		m.mu.Lock()
		idle := d.state == stateIdle
		m.mu.Unlock()
		if idle {
			err := m.do(ctx, d, func() error {
				m.mu.Lock()
				still := d.state == stateIdle
				m.mu.Unlock()
				if !still {
					return nil
				}
				cctx, cancel := m.cmd(ctx)
				defer cancel()
				st, err := d.dev.Status(cctx)
				m.mu.Lock()
				defer m.mu.Unlock()
				if hung(err) && d.state == stateIdle {
					m.setOffline(d, err)
				} else if err == nil {
					d.status = st
				}
				return nil
			})
			if err != nil {
				return wire.LibraryStatus{}, err
			}
		}
		e, _ := inv.Drive(d.n)
		f := d.figures()
		m.mu.Lock()
		info := wire.DriveInfo{
			Number: d.n, Device: d.device, Barcode: e.Barcode,
			State: d.state, Job: d.job, Doing: d.doing, Reason: d.reason,
			CleaningRequested: d.status.CleaningRequested, SoftErrors: d.status.SoftErrors,
			BytesWritten: f.bytesWritten, BytesRead: f.bytesRead, Loads: d.loads, Locates: f.locates, Stops: f.stops,
		}
		if e.Full && d.status.Medium {
			info.WriteProtected = d.status.WriteProtected
			info.BlockSize = d.status.BlockSize
			info.Density = d.status.Density
			info.Block = d.status.Position.Block
		}
		m.mu.Unlock()
		out.Drives = append(out.Drives, info)
	}
	for _, s := range inv.Slots {
		out.Slots = append(out.Slots, wire.SlotInfo{Number: s.Number, Full: s.Full, Barcode: s.Barcode})
	}
	for _, s := range inv.MailSlots {
		out.Slots = append(out.Slots, wire.SlotInfo{Number: s.Number, Mail: true, Full: s.Full, Barcode: s.Barcode})
	}
	return out, nil
}

// Move runs an operator's move (wire.MoveLoad, ...).
func (m *Manager) Move(ctx context.Context, req wire.LibraryMoveReq) (wire.LibraryMoveResp, error) {
	var moves []wire.TapeMove
	libErr := func(err error) error {
		var le *Error
		if errors.As(err, &le) {
			return err
		}
		if hung(err) {
			return err
		}
		return m.fail(ErrChanger, "check the library ('cairn library status'), then retry", "library %s: %s: %w", m.cfg.Name, req.Op, err)
	}
	inv, err := m.inventory(ctx)
	if err != nil {
		return wire.LibraryMoveResp{}, libErr(fmt.Errorf("inventory: %w", err))
	}
	robot := func(fn func(ctx context.Context) error) error {
		rctx, cancel := m.robot(ctx)
		defer cancel()
		return fn(rctx)
	}
	switch req.Op {
	case wire.MoveLoad:
		slot := req.Slot
		if req.Barcode != "" {
			e, ok := inv.Find(req.Barcode)
			switch {
			case !ok:
				return wire.LibraryMoveResp{}, m.fail(ErrNotFound, "insert it into a mail slot and import it ('cairn library import')", "tape %s is not in library %s", req.Barcode, m.cfg.Name)
			case e.Kind == changer.KindDrive:
				return wire.LibraryMoveResp{}, m.fail(ErrWrongState, "unload it first", "tape %s is already in drive %d of library %s", req.Barcode, e.Number, m.cfg.Name)
			}
			slot = e.Number
		}
		src, ok := inv.Storage(slot)
		if !ok || !src.Full {
			return wire.LibraryMoveResp{}, m.fail(ErrNotFound, "name a full slot ('cairn library status')", "slot %d of library %s holds no tape", slot, m.cfg.Name)
		}
		err = m.withDrive(ctx, req.Drive, "loading "+src.Barcode, func(d *drive) error {
			if err := robot(func(rctx context.Context) error { return m.changer.Load(rctx, slot, d.n) }); err != nil {
				return err
			}
			m.mu.Lock()
			d.barcode = src.Barcode
			d.loads++
			m.mu.Unlock()
			moves = append(moves, m.moved(src.Barcode, src.Addr, changer.Addr{Kind: changer.KindDrive, Number: d.n}, "operator", 0))
			return nil
		})
	case wire.MoveUnload:
		err = m.withDrive(ctx, req.Drive, "unloading", func(d *drive) error {
			cur, _ := inv.Drive(d.n)
			if !cur.Full {
				return m.fail(ErrNotFound, "", "drive %d of library %s is empty", d.n, m.cfg.Name)
			}
			mv, err := m.eject(ctx, d, cur, req.Slot)
			if err == nil {
				moves = append(moves, mv)
			}
			return err
		})
	case wire.MoveTransfer:
		src, _ := inv.Storage(req.Slot)
		err = robot(func(rctx context.Context) error { return m.changer.Transfer(rctx, req.Slot, req.To) })
		if err == nil {
			to, _ := inv.Storage(req.To)
			moves = append(moves, m.moved(src.Barcode, src.Addr, to.Addr, "operator", 0))
		}
	case wire.MoveImport:
		var done []changer.Move
		m.mailMu.Lock()
		err = robot(func(rctx context.Context) error {
			var err error
			done, err = changer.Import(rctx, m.changer)
			return err
		})
		m.mailMu.Unlock()
		for _, mv := range done {
			moves = append(moves, m.moved(mv.Barcode, mv.From, mv.To, "operator", 0))
		}
	case wire.MoveExport:
		moves, err = m.export(ctx, inv, req)
	case wire.MoveOnline:
		err = m.online(ctx, req.Drive)
	default:
		return wire.LibraryMoveResp{}, m.fail(ErrInvalid, "use load, unload, transfer, import, export or online", "library move %q is not known", req.Op)
	}
	if err != nil {
		return wire.LibraryMoveResp{Moves: moves}, libErr(err)
	}
	return wire.LibraryMoveResp{Moves: moves}, nil
}

// withDrive runs fn on drive n's owner, holding the drive for it. A busy
// drive is refused: its tape is in use.
func (m *Manager) withDrive(ctx context.Context, n int, doing string, fn func(d *drive) error) error {
	if n < 0 || n >= len(m.drives) {
		return m.fail(ErrInvalid, "", "library %s has drives 0 to %d, not %d", m.cfg.Name, len(m.drives)-1, n)
	}
	d := m.drives[n]
	m.mu.Lock()
	switch d.state {
	case stateBusy:
		use := d.use()
		m.mu.Unlock()
		return m.fail(ErrWrongState, "wait for the job to finish ('cairn library status' shows the drive), or cancel it",
			"drive %d of library %s is in use (%s); its tape cannot be moved now", n, m.cfg.Name, use)
	case stateIdle:
		d.state, d.doing = stateBusy, doing
	}
	// An offline drive stays offline (nothing picks it), and the owner
	// runs the operator's move on it: unloading a drive that hung is how
	// its tape gets out.
	m.mu.Unlock()
	err := m.do(ctx, d, func() error { return fn(d) })
	m.free(d, err)
	if hung(err) {
		return m.offlineError(d, err)
	}
	return err
}

// eject rewinds and ejects the tape in d and unloads it to slot (0: its
// home slot). It runs on d's owner.
func (m *Manager) eject(ctx context.Context, d *drive, cur changer.Element, slot int) (wire.TapeMove, error) {
	cctx, cancel := m.cmd(ctx)
	err := d.dev.Unload(cctx)
	cancel()
	if err != nil && !errors.Is(err, tape.ErrNoMedium) {
		return wire.TapeMove{}, err
	}
	rctx, cancel := m.robot(ctx)
	defer cancel()
	to := slot
	if to == 0 {
		to = cur.Source
	}
	if err := m.changer.Unload(rctx, d.n, slot); err != nil {
		if errors.Is(err, changer.ErrNoHomeSlot) {
			return wire.TapeMove{}, m.fail(ErrInvalid, "name the slot to unload to (--slot)", "library %s does not know the home slot of tape %s in drive %d", m.cfg.Name, cur.Barcode, d.n)
		}
		return wire.TapeMove{}, err
	}
	m.mu.Lock()
	d.barcode = ""
	m.mu.Unlock()
	inv, err := m.changer.Inventory(rctx)
	toAddr := changer.Addr{Kind: changer.KindSlot, Number: to}
	if err == nil {
		if e, ok := inv.Storage(to); ok {
			toAddr = e.Addr
		}
	}
	return m.moved(cur.Barcode, cur.Addr, toAddr, "operator", 0), nil
}

// export moves a tape (by barcode, or the one in req.Slot) to a mail slot,
// out of its drive first if it is in one that is not busy.
func (m *Manager) export(ctx context.Context, inv *changer.Inventory, req wire.LibraryMoveReq) ([]wire.TapeMove, error) {
	barcode := req.Barcode
	if barcode == "" {
		e, ok := inv.Storage(req.Slot)
		if !ok || !e.Full {
			return nil, m.fail(ErrNotFound, "name a full slot or a barcode", "slot %d of library %s holds no tape", req.Slot, m.cfg.Name)
		}
		if e.Barcode == "" {
			return nil, m.fail(ErrInvalid, "export it by moving it to a mail slot ('cairn library transfer')", "the tape in slot %d of library %s has no readable barcode", req.Slot, m.cfg.Name)
		}
		barcode = e.Barcode
	}
	e, ok := inv.Find(barcode)
	if !ok {
		return nil, m.fail(ErrNotFound, "", "tape %s is not in library %s", barcode, m.cfg.Name)
	}
	var moves []wire.TapeMove
	do := func() error {
		rctx, cancel := m.robot(ctx)
		defer cancel()
		mv, err := changer.Export(rctx, m.changer, barcode)
		if err != nil {
			return err
		}
		if mv.From != mv.To {
			moves = append(moves, m.moved(barcode, mv.From, mv.To, "operator", 0))
		}
		return nil
	}
	if e.Kind != changer.KindDrive {
		return moves, do()
	}
	err := m.withDrive(ctx, e.Number, "exporting "+barcode, func(d *drive) error {
		cctx, cancel := m.cmd(ctx)
		err := d.dev.Unload(cctx)
		cancel()
		if err != nil && !errors.Is(err, tape.ErrNoMedium) {
			return err
		}
		if err := do(); err != nil {
			return err
		}
		m.mu.Lock()
		d.barcode = ""
		m.mu.Unlock()
		return nil
	})
	return moves, err
}

// online brings an offline drive back once it answers a status.
func (m *Manager) online(ctx context.Context, n int) error {
	if n < 0 || n >= len(m.drives) {
		return m.fail(ErrInvalid, "", "library %s has drives 0 to %d, not %d", m.cfg.Name, len(m.drives)-1, n)
	}
	d := m.drives[n]
	m.mu.Lock()
	offline := d.state == stateOffline
	m.mu.Unlock()
	if !offline {
		return nil
	}
	err := m.do(ctx, d, func() error {
		cctx, cancel := m.cmd(ctx)
		defer cancel()
		st, err := d.dev.Status(cctx)
		if err != nil {
			return err
		}
		m.mu.Lock()
		d.status = st
		m.mu.Unlock()
		return nil
	})
	if err != nil {
		m.mu.Lock()
		if hung(err) {
			m.setOffline(d, err)
		}
		m.mu.Unlock()
		return m.fail(ErrDriveOffline, fmt.Sprintf("check drive %d (%s) and retry", n, d.device), "drive %d of library %s still does not answer: %w", n, m.cfg.Name, err)
	}
	m.mu.Lock()
	d.state, d.reason = stateIdle, ""
	m.mu.Unlock()
	m.free(d, nil)
	return nil
}
