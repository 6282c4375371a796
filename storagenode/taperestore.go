package storagenode

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/storagenode/library"
	"github.com/cairnbackup/cairn/wire"
)

// heldTape is the tape a restore stream has mounted. It stays mounted
// across read requests while they need it, and is released when a read
// needs another tape (a library may have one free drive) or the stream
// ends.
type heldTape struct {
	barcode string
	library string
	mount   *library.Mount
	reader  *tape.Reader
	starts  []int64
	size    int64
}

// tapeVolume is a part's volume on tape for the session reader: each read
// makes sure the tape is mounted and reads through one tape.Reader, so a
// file is one locate and sequential reads.
type tapeVolume struct {
	r    *reader
	ctx  context.Context
	part wire.ReadPart
}

func (v *tapeVolume) ReadAt(p []byte, off int64) (int, error) {
	tr, err := v.r.tapeReader(v.ctx, v.part)
	if err != nil {
		return 0, err
	}
	return tr.ReadAt(p, off)
}

// tapeReader returns a reader of the part's tape, mounting it (and
// releasing the tape held before) when it is not the one held.
func (r *reader) tapeReader(ctx context.Context, p wire.ReadPart) (*tape.Reader, error) {
	// The catalog's committed end bounds reads, unless it does not cover
	// this part (a part a medium error cut short lies past it).
	size := p.VolumeBytes
	if partEnd := p.DataStart + int64(p.StreamEnd-p.StreamStart); size < partEnd {
		size = 0
	}
	h := r.held
	if h != nil && h.barcode == p.Barcode && h.library == p.Library {
		if !slices.Equal(h.starts, p.PartStarts) || h.size != size {
			// Another session's part on the same tape: the same drive, a
			// map of the volume that reaches that part.
			h.reader = r.newTapeReader(ctx, h.mount, p, size)
			h.starts, h.size = p.PartStarts, size
		}
		return h.reader, nil
	}
	r.releaseTape(nil)
	m, err := r.n.library(p.Library)
	if err != nil {
		return nil, &unreadableError{volume: p.Volume, err: err}
	}
	mt, err := m.Mount(ctx, library.MountRequest{Job: r.t.JobID, Barcode: p.Barcode, Volume: p.VolumeID, Why: "reading volume " + p.Volume})
	if err != nil {
		return nil, &unreadableError{volume: p.Volume, err: fmt.Errorf("mount tape %s: %w", p.Barcode, err)}
	}
	r.log.Info("reading tape", "barcode", p.Barcode, "volume", p.Volume, "drive", mt.Drive().Name())
	r.held = &heldTape{barcode: p.Barcode, library: p.Library, mount: mt, starts: p.PartStarts, size: size}
	r.held.reader = r.newTapeReader(ctx, mt, p, size)
	return r.held.reader, nil
}

func (r *reader) newTapeReader(ctx context.Context, mt *library.Mount, p wire.ReadPart, size int64) *tape.Reader {
	bs := p.BlockSize
	if bs == 0 {
		bs = mt.Label().BlockSize
	}
	return tape.NewReader(ctx, mt.Drive(), bs, p.PartStarts, tape.ReaderOptions{
		Size: size, Timeout: r.commandTimeout(p.Library),
		// The record reads as zeros; the volume format's CRCs then name
		// the damaged blocks and the files they hurt.
		OnMediumError: func(e *tape.MediumError) {
			r.log.Error("medium error reading tape", "barcode", p.Barcode, "volume", p.Volume, "block", e.Block, "err", e)
		},
	})
}

func (r *reader) commandTimeout(lib string) time.Duration {
	for _, l := range r.n.cfg.Libraries {
		if l.Name == lib {
			return l.CommandTimeout
		}
	}
	return 0
}

// releaseTape gives the held drive back; err is the stream's failure.
func (r *reader) releaseTape(err error) {
	if r.held == nil {
		return
	}
	r.held.mount.Release(err)
	r.held = nil
}
