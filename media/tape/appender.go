package tape

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cairnbackup/cairn/media/volume"
	"github.com/google/uuid"
)

// AppenderOptions tune an Appender.
type AppenderOptions struct {
	// Timeout bounds each drive command; 0 means DefaultCommandTimeout.
	// A command that takes longer fails with a *HungError and the
	// Appender stops.
	Timeout time.Duration
}

// Appender writes session parts to a tape volume: it implements
// volume.Appender over a Drive. See doc.go for the mapping rules; in
// short, the byte stream goes out in records of the label's block size
// (a partial record waits in memory for the rest), Sync at the end of a
// part writes the file mark that closes it, and early warning turns
// Remaining to 0 so the session writer closes the part and moves on.
//
// The Appender has no context per call (volume.Appender has none): the one
// given to OpenAppender bounds its life, and each drive command gets
// Timeout on top of it.
type Appender struct {
	ctx   context.Context
	d     Drive
	label volume.Label
	bs    int
	opts  AppenderOptions

	off   int64  // volume offset of the next byte
	buf   []byte // the partial record at off - len(buf)
	block int64  // logical block where the record holding buf goes
	parts int    // part files on the volume, closed by their file marks
	check bool   // the tape may have moved since the last command (after Sync): check before writing
	dirty bool   // records written since the last file mark

	// hist keeps the last records written, each in slot record%len, so
	// ReadBack can give a session writer a block the drive lost the end
	// of; histRec is the record held in each slot.
	hist    []byte
	histRec []int64

	ew      bool // the drive gave early warning
	trailer bool // the last block written was an Index block
	err     error

	// TornBlocks counts the logical blocks past the committed end that
	// OpenAppender found: a part a crash left unfinished, overwritten by
	// the next write. The caller logs it.
	TornBlocks int64
}

var _ volume.RecoverableAppender = (*Appender)(nil)

// OpenAppender opens the volume on the tape in d for appending after its
// committed data: the catalog says volume id has end bytes in parts session
// parts (a new volume: end = block size, parts = 0; without a catalog,
// Layout.Committed). It reads the label (setting the drive's block size),
// checks that a file mark closes the last committed part, and leaves the
// tape after it. Anything recorded after that (a part a crash left torn)
// is overwritten by the first write and counted in TornBlocks.
func OpenAppender(ctx context.Context, d Drive, id uuid.UUID, end int64, parts int, opts AppenderOptions) (*Appender, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultCommandTimeout
	}
	cctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	l, err := ReadLabel(cctx, d)
	if err != nil {
		return nil, err
	}
	if l.VolumeID != id {
		return nil, fmt.Errorf("tape drive %s: the cartridge holds volume %s, the catalog expects %s: %w", d.Name(), l.VolumeID, id, ErrWrongVolume)
	}
	bs := int64(l.BlockSize)
	if end < bs || end%bs != 0 || parts < 0 || (parts == 0) != (end == bs) {
		return nil, fmt.Errorf("tape volume %s: committed end %d with %d parts is impossible: the end is a multiple of the block size %d past the label, and only an empty volume ends there", id, end, parts, bs)
	}
	// Records before end, plus the file marks after the label and after
	// each part.
	block := end/bs + 1 + int64(parts)
	a := &Appender{ctx: ctx, d: d, label: l, bs: l.BlockSize, opts: opts, off: end, block: block, parts: parts}
	if err := a.do("seek end of data", d.SeekEndOfData); err != nil {
		return nil, err
	}
	var eod Position
	var st Status
	if err := a.do("position", func(ctx context.Context) (err error) { eod, err = d.Position(ctx); return err }); err != nil {
		return nil, err
	}
	if eod.Block < block {
		return nil, fmt.Errorf("tape volume %s: the tape ends at block %d, before the committed end at block %d (%d bytes in %d parts): data is missing; mark the volume damaged: %w", id, eod.Block, block, end, parts, ErrLayout)
	}
	a.TornBlocks = eod.Block - block
	// The block before must be the file mark that closes the last part.
	if err := a.do("locate", func(ctx context.Context) error { return d.Locate(ctx, block-1) }); err != nil {
		return nil, err
	}
	err = a.do("read", func(ctx context.Context) error {
		_, err := d.ReadRecord(ctx, make([]byte, a.bs))
		return err
	})
	if !errors.Is(err, ErrFileMark) {
		if err == nil {
			err = errors.New("a record")
		}
		return nil, fmt.Errorf("tape volume %s: block %d should be the file mark closing part %d, found %w: %w", id, block-1, parts, err, ErrLayout)
	}
	if err := a.do("status", func(ctx context.Context) (err error) { st, err = d.Status(ctx); return err }); err != nil {
		return nil, err
	}
	if st.WriteProtected {
		return nil, fmt.Errorf("tape volume %s (cartridge in %s): %w", id, d.Name(), ErrWriteProtected)
	}
	// A drive that knows the tape is past early warning: no new part here.
	a.ew = st.EarlyWarning
	return a, nil
}

func (a *Appender) do(op string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(a.ctx, a.opts.Timeout)
	defer cancel()
	if err := fn(ctx); err != nil {
		return fmt.Errorf("tape volume %s: %s: %w", a.label.VolumeID, op, err)
	}
	return nil
}

func (a *Appender) VolumeID() uuid.UUID { return a.label.VolumeID }
func (a *Appender) BlockSize() int      { return a.bs }
func (a *Appender) Label() volume.Label { return a.label }
func (a *Appender) Offset() int64       { return a.off }

// Durable is the volume offset up to which the drive took every record.
// After a medium error the record that failed, and the bytes after it,
// are not on the tape.
func (a *Appender) Durable() int64 { return a.off - int64(len(a.buf)) }

// ReadBack copies the bytes written at volume offset off into p, from the
// records the Appender remembers (at least volume.MaxBlockBytes before
// Durable) and the partial record it holds; see volume.RecoverableAppender.
func (a *Appender) ReadBack(p []byte, off int64) error {
	durable := a.Durable()
	if off < 0 || off+int64(len(p)) > a.off {
		return fmt.Errorf("tape volume %s: read back %d bytes at offset %d: only bytes up to %d were written", a.label.VolumeID, len(p), off, a.off)
	}
	bs := int64(a.bs)
	for len(p) > 0 {
		var n int
		if off >= durable {
			n = copy(p, a.buf[off-durable:])
		} else {
			rec := off / bs
			slots := int64(len(a.histRec))
			if slots == 0 || a.histRec[rec%slots] != rec {
				return fmt.Errorf("tape volume %s: read back offset %d: the record is no longer held (durable up to %d)", a.label.VolumeID, off, durable)
			}
			slot := a.hist[(rec%slots)*bs : (rec%slots+1)*bs]
			n = copy(p, slot[off-rec*bs:])
		}
		p = p[n:]
		off += int64(n)
	}
	return nil
}

// remember keeps rec, the record at volume offset off, for ReadBack.
func (a *Appender) remember(off int64, rec []byte) {
	if a.hist == nil {
		slots := (volume.MaxBlockBytes+a.bs-1)/a.bs + 1
		a.hist = make([]byte, slots*a.bs)
		a.histRec = make([]int64, slots)
		for i := range a.histRec {
			a.histRec[i] = -1
		}
	}
	r := off / int64(a.bs)
	slot := r % int64(len(a.histRec))
	copy(a.hist[slot*int64(a.bs):], rec)
	a.histRec[slot] = r
}

// Parts is the number of session parts on the volume, each closed by its
// file mark: what the catalog records with the end, for the next
// OpenAppender.
func (a *Appender) Parts() int { return a.parts }

// Remaining is unbounded until the drive gives early warning (st says
// nothing of the capacity left), then 0, except inside a trailer. See
// doc.go for why this lets the session writer close its part, and finish
// a trailer it started, in the early-warning zone.
func (a *Appender) Remaining() int64 {
	if a.ew && !a.trailer {
		return 0
	}
	return math.MaxInt64 - a.off
}

// Write adds p to the volume: whole records go to the drive, the rest
// waits for the next Write or Sync. After an error the Appender is stopped
// and returns it again.
func (a *Appender) Write(p []byte) (int, error) {
	if a.err != nil {
		return 0, a.err
	}
	if err := a.reposition(); err != nil {
		return 0, err
	}
	// The session writer writes one block per call: note whether it is in
	// its trailer (see Remaining). Padding and other bytes leave it as is.
	if h, err := volume.ParseBlockHeader(p); err == nil {
		a.trailer = h.Kind == volume.KindIndex
	}
	n := 0
	for len(p) > 0 {
		if a.buf == nil {
			a.buf = make([]byte, 0, a.bs)
		}
		k := copy(a.buf[len(a.buf):a.bs], p)
		a.buf = a.buf[:len(a.buf)+k]
		p = p[k:]
		n += k
		a.off += int64(k)
		if len(a.buf) == a.bs {
			if err := a.writeRecord(a.buf); err != nil {
				return n, err
			}
			a.remember(a.off-int64(a.bs), a.buf)
			a.buf = a.buf[:0]
			a.block++
		}
	}
	return n, nil
}

// writeRecord writes one record at a.block. Early warning refuses it once:
// it is written again (the drive takes it now) and the Appender reports
// no room from then on.
func (a *Appender) writeRecord(rec []byte) error {
	err := a.do("write", func(ctx context.Context) error { return a.d.WriteRecord(ctx, rec) })
	if errors.Is(err, ErrEarlyWarning) {
		a.ew = true
		err = a.do("write", func(ctx context.Context) error { return a.d.WriteRecord(ctx, rec) })
	}
	if err != nil {
		a.err = fmt.Errorf("%w (at block %d, volume offset %d)", err, a.block, a.off-int64(len(a.buf)))
		return a.err
	}
	a.dirty = true
	return nil
}

// reposition puts the tape back where the Appender writes if something
// moved it between parts (a reader on the same drive, a rewind).
func (a *Appender) reposition() error {
	if !a.check {
		return nil
	}
	var p Position
	if err := a.do("position", func(ctx context.Context) (err error) { p, err = a.d.Position(ctx); return err }); err != nil {
		a.err = err
		return err
	}
	if p.Block != a.block {
		if err := a.do("locate", func(ctx context.Context) error { return a.d.Locate(ctx, a.block) }); err != nil {
			a.err = err
			return err
		}
	}
	a.check = false
	return nil
}

// Sync makes everything written durable. At the end of a part (the offset
// on a record boundary, as the session writer leaves it) it writes the
// file mark that closes the part: a file mark is also the drive's flush.
// Anywhere else the partial record is written padded with zeros, and a
// file mark after it; the next Write goes back and rewrites that record
// whole, which also removes the mark.
func (a *Appender) Sync() error {
	if a.err != nil {
		return a.err
	}
	if err := a.reposition(); err != nil {
		return err
	}
	aligned := len(a.buf) == 0
	if aligned && !a.dirty {
		return nil // nothing since the last file mark; a second one would end the data
	}
	if !aligned {
		rec := make([]byte, a.bs)
		copy(rec, a.buf)
		if err := a.writeRecord(rec); err != nil {
			return err
		}
	}
	if err := a.do("write file mark", a.d.WriteFileMark); err != nil {
		a.err = err
		return err
	}
	if aligned {
		a.block++
		a.parts++
	}
	a.dirty = false
	a.check = true
	return nil
}
