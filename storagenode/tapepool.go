package storagenode

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/storagenode/library"
	"github.com/cairnbackup/cairn/wire"
)

// mediaTape is the medium type of tape pools.
const mediaTape = "tape"

// tapePool is a medium of labeled cartridges in one of the node's
// libraries. A session mounts each tape it is granted (the library's
// drive is its own until it moves on), appends through a disk spool when
// the pool has one, gives a full tape's drive back at early warning, and
// goes on on another tape after a medium error, reporting the bad one. A
// failed session leaves its blocks past the catalog's committed end,
// where the next session overwrites them. A restore mounts each tape once
// and keeps it mounted while its reads need it.
//
// A tapePool with no name only reads: the node makes one for each library
// that no tape pool of its configuration names, so a tape moved into that
// library is read there.
type tapePool struct {
	n   *Node
	cfg TapePoolConfig
}

func newTapePool(n *Node, c TapePoolConfig) *tapePool { return &tapePool{n: n, cfg: c} }

func (p *tapePool) register() wire.NodePool {
	return wire.NodePool{Name: p.cfg.Name, Type: mediaTape, Library: p.cfg.Library}
}

// usage is unknown: the catalog counts a tape pool's cartridges.
func (p *tapePool) usage() (wire.PoolUsage, bool) { return wire.PoolUsage{}, false }

func (p *tapePool) reads(rp wire.ReadPart) bool {
	return rp.MediaType == mediaTape && rp.Library == p.cfg.Library
}

// library is the pool's library, open once the node started.
func (p *tapePool) library() (*library.Manager, error) {
	if m := p.n.libs[p.cfg.Library]; m != nil {
		return m, nil
	}
	return nil, wire.Errorf(wire.CodeInternal, "check the storage node's log", "tape pool %s: library %s is not open", p.cfg.Name, p.cfg.Library)
}

func (p *tapePool) commandTimeout() time.Duration {
	for _, l := range p.n.cfg.Libraries {
		if l.Name == p.cfg.Library {
			return l.CommandTimeout
		}
	}
	return 0
}

func (p *tapePool) spoolDir(j *stream) string {
	return filepath.Join(p.cfg.SpoolDir, fmt.Sprintf("job-%d", j.t.JobID))
}

func (p *tapePool) appendTo(j *stream) appendSession { return &tapeSession{p: p, j: j} }

func (p *tapePool) readFrom(j *stream) partReader { return &tapeReader{p: p, j: j} }

// tapeSession is a backup session's tapes: every tape it was granted, the
// figures of the drives it gave back, and what the next acquire reports
// about the tape given up (WriterOptions.Lost).
type tapeSession struct {
	p        *tapePool
	j        *stream
	tapes    []*openedTape
	stats    wire.TapeStats
	lostTape uuid.UUID
	lostWhy  error
}

// openedTape is a tape a session writes or wrote: its drive is held until
// the session moves on or ends.
type openedTape struct {
	grant wire.VolumeGrant
	mount *library.Mount
	app   *tape.Appender
	spool *spool
}

// acquire gives up the tape the writer is done with (full, or lost to a
// medium error: lost said so just before), then asks the servers for a
// tape of the pool to append to, mounts it and opens it. While the pool
// has none (CodeNoVolume) the job waits, with the servers' reason
// reported, and asks again every VolumeWaitPoll until it gets one or its
// context ends. A tape that cannot be written (write-protected, not the
// volume the catalog says, its layout not what the catalog recorded) is
// reported bad with the next request, and another is asked for.
func (s *tapeSession) acquire(ctx context.Context, done volume.Appender) (volume.Appender, wire.VolumeGrant, error) {
	req := wire.VolumeAcquireReq{JobID: s.j.t.JobID, Pool: s.j.t.Pool}
	if done != nil {
		req.Full = done.VolumeID()
		var cause error
		if s.lostTape == done.VolumeID() {
			cause = s.lostWhy
			if !errors.Is(s.lostWhy, tape.ErrEndOfMedium) {
				// A medium error: the tape is bad. (An end of medium in the
				// early warning zone only means it is full.)
				req.Full, req.Bad, req.BadReason = uuid.Nil, done.VolumeID(), s.lostWhy.Error()
			}
			s.lostTape, s.lostWhy = uuid.Nil, nil
		}
		s.release(done.VolumeID(), cause)
	}
	waiting := ""
	defer func() {
		if waiting != "" {
			reporter{s.j.n}.JobWaiting(s.j.t.JobID, "")
		}
	}()
	for {
		req.Used = req.Used[:0]
		for _, o := range s.tapes {
			req.Used = append(req.Used, o.grant.ID)
		}
		var g wire.VolumeGrant
		err := s.j.n.request(ctx, wire.OpVolumeAcquire, req, &g)
		if wire.CodeOf(err) == wire.CodeNoVolume {
			// What to do goes with it: the operator reads it in 'cairn
			// job show' and 'cairn job list --queued'.
			e := wire.AsError(err)
			reason := e.Message
			if e.Hint != "" {
				reason += ": " + e.Hint
			}
			if reason != waiting {
				waiting = reason
				reporter{s.j.n}.JobWaiting(s.j.t.JobID, reason)
				s.j.log.Info("backup waits for a tape", "reason", reason)
			}
			select {
			case <-ctx.Done():
				return nil, g, fmt.Errorf("waiting for a tape in pool %s (%s): %w", s.j.t.Pool, waiting, ctx.Err())
			case <-time.After(s.j.n.cfg.VolumeWaitPoll):
			}
			continue
		}
		if err != nil {
			return nil, g, fmt.Errorf("get a tape in pool %s: %w", s.j.t.Pool, err)
		}
		// What was reported is recorded now.
		req.Full, req.Bad, req.BadReason = uuid.Nil, uuid.Nil, ""
		if waiting != "" {
			reporter{s.j.n}.JobWaiting(s.j.t.JobID, "")
			waiting = ""
		}
		app, bad, err := s.open(ctx, g)
		if bad != nil {
			s.j.log.Warn("tape cannot be written; reporting it bad and asking for another", "barcode", g.Barcode, "volume", g.Name, "err", bad)
			req.Bad, req.BadReason = g.ID, bad.Error()
			s.tapes = append(s.tapes, &openedTape{grant: g}) // never granted again to this session
			continue
		}
		if err != nil {
			return nil, g, err
		}
		return app, g, nil
	}
}

// open mounts the granted tape and opens it for appending (through the
// spool when the pool has one). bad is set when the tape itself is the
// problem; err when the job cannot go on.
func (s *tapeSession) open(ctx context.Context, g wire.VolumeGrant) (app volume.Appender, bad, err error) {
	lib, err := s.p.library()
	if err != nil {
		return nil, nil, err
	}
	mt, err := lib.Mount(ctx, library.MountRequest{Job: s.j.t.JobID, Barcode: g.Barcode, Volume: g.ID, Relabel: g.Relabel, Why: "writing volume " + g.Name})
	if err != nil {
		if errors.Is(err, library.ErrBarcodeMismatch) || errors.Is(err, library.ErrForeignLabel) || errors.Is(err, library.ErrWriteProtected) {
			return nil, err, nil
		}
		return nil, nil, fmt.Errorf("mount tape %s (volume %s): %w", g.Barcode, g.Name, err)
	}
	if g.Relabel != uuid.Nil {
		if bad, err := s.relabel(ctx, mt, g); bad != nil || err != nil {
			mt.Release(cmp.Or(bad, err))
			return nil, bad, err
		}
	} else if bad, err := s.upgradeLabel(ctx, mt, g); bad != nil || err != nil {
		mt.Release(cmp.Or(bad, err))
		return nil, bad, err
	}
	end := g.Bytes
	if end == 0 {
		end = int64(g.BlockSize)
	}
	a, err := tape.OpenAppender(ctx, mt.Drive(), g.ID, end, g.Parts, tape.AppenderOptions{Timeout: s.p.commandTimeout()})
	if err != nil {
		mt.Release(err)
		if errors.Is(err, tape.ErrWriteProtected) || errors.Is(err, tape.ErrWrongVolume) || errors.Is(err, tape.ErrLayout) || errors.Is(err, tape.ErrMedium) {
			return nil, err, nil
		}
		return nil, nil, fmt.Errorf("open tape %s (volume %s): %w", g.Barcode, g.Name, err)
	}
	if a.TornBlocks > 0 {
		s.j.log.Warn("an uncommitted tail on the tape (an earlier session did not finish) is overwritten", "barcode", g.Barcode, "volume", g.Name, "blocks", a.TornBlocks)
	}
	o := &openedTape{grant: g, mount: mt, app: a}
	app = a
	if s.p.cfg.SpoolDir != "" {
		sp, err := newSpool(a, s.p.spoolDir(s.j), s.p.cfg.chunkBytes())
		if err != nil {
			mt.Release(err)
			return nil, nil, fmt.Errorf("tape pool %s: %w", s.j.t.Pool, err)
		}
		o.spool, app = sp, sp
	}
	s.tapes = append(s.tapes, o)
	s.j.log.Info("writing tape", "barcode", g.Barcode, "volume", g.Name, "drive", mt.Drive().Name(), "at", end, "spooled", o.spool != nil)
	return app, nil, nil
}

// relabel writes the label of the volume the servers recycled the mounted
// tape into, unless the tape has it already, and tells the servers: the
// old volume's sessions go with the old label, before a byte of the new
// session is written. bad is set when the tape is the problem.
func (s *tapeSession) relabel(ctx context.Context, mt *library.Mount, g wire.VolumeGrant) (bad, err error) {
	if mt.Label().VolumeID != g.ID {
		old := mt.Label()
		l := volume.Label{FormatVersion: volume.FormatVersion, PartAlign: g.BlockSize, VolumeID: g.ID, Name: g.Name, Barcode: g.Barcode,
			Pool: g.Pool, BlockSize: g.BlockSize, Created: g.Created, MediaType: mediaTape}
		if err := mt.Relabel(ctx, l); err != nil {
			if labelIsBad(err) {
				return err, nil
			}
			return nil, fmt.Errorf("relabel recycled tape %s (volume %s): %w", g.Barcode, g.Name, err)
		}
		s.j.log.Info("recycled tape relabeled", "barcode", g.Barcode, "volume", g.ID, "was", old.VolumeID, "pool", g.Pool)
	}
	if err := s.j.n.request(ctx, wire.OpVolumeLabeled, wire.VolumeLabeled{JobID: s.j.t.JobID, VolumeID: g.ID}, nil); err != nil {
		return nil, fmt.Errorf("report recycled tape %s relabeled: %w", g.Barcode, err)
	}
	return nil, nil
}

// labelIsBad tells whether a label that could not be written says the
// tape is the problem (reported bad, and another asked for), not the job.
func labelIsBad(err error) bool {
	return errors.Is(err, tape.ErrWriteProtected) || errors.Is(err, tape.ErrMedium) || errors.Is(err, library.ErrReadBack)
}

// upgradeLabel writes the label of an empty tape of an S2 pool again at
// this format, the same volume in every other field, when it was labeled
// at a format that holds no S2 (before 5). Scratch tapes labeled before an
// upgrade would otherwise take the pool's sessions as zstd, and a session
// whose tape fails with S2 blocks in flight could not go on to one: those
// blocks, sealed again as zstd, would reuse their nonces (volume.
// SessionWriter stops the session instead). Nothing is lost: the catalog
// has no part on the tape, and an uncommitted tail after the label would
// be written over anyway. bad is set when the tape is the problem.
func (s *tapeSession) upgradeLabel(ctx context.Context, mt *library.Mount, g wire.VolumeGrant) (bad, err error) {
	l := mt.Label()
	if g.DataCodec() != volume.CompressionS2 || l.FormatVersion >= volume.FormatS2 || g.Parts > 0 || g.Bytes > int64(g.BlockSize) {
		return nil, nil
	}
	was := l.FormatVersion
	l.FormatVersion = volume.FormatVersion
	if l.PartAlign == 0 {
		// Format 1 had no part alignment; a tape's parts start on blocks.
		l.PartAlign = l.BlockSize
	}
	if err := mt.Relabel(ctx, l); err != nil {
		if labelIsBad(err) {
			return err, nil
		}
		return nil, fmt.Errorf("write the label of empty tape %s (volume %s) at format %d: %w", g.Barcode, g.Name, volume.FormatVersion, err)
	}
	s.j.log.Info("empty tape labeled again at this format, for the pool's S2 compression", "barcode", g.Barcode, "volume", g.ID, "was", was, "format", volume.FormatVersion, "pool", g.Pool)
	return nil, nil
}

func (s *tapeSession) lost(v volume.Appender, cause error) {
	s.lostTape, s.lostWhy = v.VolumeID(), cause
}

// release closes the tape's spool and gives its drive back, adding the
// drive's figures to the session's.
func (s *tapeSession) release(id uuid.UUID, err error) {
	for _, o := range s.tapes {
		if o.grant.ID != id || o.mount == nil {
			continue
		}
		if o.spool != nil {
			st := o.spool.stats()
			if cerr := o.spool.Close(); cerr != nil {
				s.j.log.Warn("close the spool", "err", cerr)
			}
			s.stats.Spooled = true
			s.j.log.Info("spool done", "barcode", o.grant.Barcode, "chunks", st.Chunks, "bytes", st.Bytes)
		}
		ms := o.mount.Stats()
		s.stats.DriveBytes += ms.DriveBytes
		s.stats.DriveSeconds += ms.DriveSeconds
		s.stats.Stops += ms.Stops
		o.mount.Release(err)
		o.mount = nil
	}
}

// releaseAll gives every drive back; err is the session's failure, if
// any.
func (s *tapeSession) releaseAll(err error) {
	for _, o := range s.tapes {
		if o.mount != nil {
			s.release(o.grant.ID, err)
		}
	}
	if s.p.cfg.SpoolDir != "" {
		_ = os.Remove(s.p.spoolDir(s.j))
	}
}

// finish gives the drives back before the index and the commit go out
// (another job may wait for a drive), and puts their figures in the
// commit.
func (s *tapeSession) finish(req *wire.SessionCommitReq, res *volume.SessionResult) {
	s.releaseAll(nil)
	used := map[uuid.UUID]bool{}
	for _, p := range res.Parts {
		used[p.VolumeID] = true
	}
	st := s.stats
	st.Tapes = len(used)
	req.Tape = &st
	s.j.log.Info("tape session written", "tapes", st.Tapes, "drive_bytes", st.DriveBytes, "drive_seconds", st.DriveSeconds, "stops", st.Stops, "spooled", st.Spooled)
}

func (s *tapeSession) committing() map[uuid.UUID]string {
	names := map[uuid.UUID]string{}
	for _, o := range s.tapes {
		names[o.grant.ID] = o.grant.Name
	}
	return names
}

// rollback gives every drive back. A tape keeps nothing of a failed
// session that counts: the catalog's committed end stays, and the next
// session overwrites what lies after it.
func (s *tapeSession) rollback(err error) { s.releaseAll(err) }

// tapeReader is a restore stream's tapes: the tape mounted last stays
// mounted across read requests while they need it, and is released when
// a read needs another tape (a library may have one free drive) or the
// stream ends.
type tapeReader struct {
	p    *tapePool
	j    *stream
	held *heldTape
}

// heldTape is the tape a restore stream has mounted.
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
	r    *tapeReader
	ctx  context.Context
	part wire.ReadPart
}

func (v *tapeVolume) ReadAt(p []byte, off int64) (int, error) {
	tr, err := v.r.reader(v.ctx, v.part)
	if err != nil {
		return 0, err
	}
	return tr.ReadAt(p, off)
}

// open mounts nothing yet: the tape is mounted at the first read, so a
// read request whose entries all lie on one tape of several mounts only
// that one.
func (r *tapeReader) open(ctx context.Context, p wire.ReadPart) (io.ReaderAt, error) {
	return &tapeVolume{r: r, ctx: ctx, part: p}, nil
}

// tune: reading on costs a tape far less than a locate; and the part
// header, a locate away from the file wanted, is read only if a block
// does not decrypt.
func (r *tapeReader) tune(o *volume.ReaderOptions) {
	o.SeekGap = 256 << 20
	o.CheckKeyLazily = true
}

// reader returns a reader of the part's tape, mounting it (and releasing
// the tape held before) when it is not the one held.
func (r *tapeReader) reader(ctx context.Context, p wire.ReadPart) (*tape.Reader, error) {
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
			h.reader = r.newReader(ctx, h.mount, p, size)
			h.starts, h.size = p.PartStarts, size
		}
		return h.reader, nil
	}
	r.release(nil)
	lib, err := r.p.library()
	if err != nil {
		return nil, &unreadableError{volume: p.Volume, err: err}
	}
	mt, err := lib.Mount(ctx, library.MountRequest{Job: r.j.t.JobID, Barcode: p.Barcode, Volume: p.VolumeID, Why: "reading volume " + p.Volume})
	if err != nil {
		return nil, &unreadableError{volume: p.Volume, err: fmt.Errorf("mount tape %s: %w", p.Barcode, err)}
	}
	r.j.log.Info("reading tape", "barcode", p.Barcode, "volume", p.Volume, "drive", mt.Drive().Name())
	r.held = &heldTape{barcode: p.Barcode, library: p.Library, mount: mt, starts: p.PartStarts, size: size}
	r.held.reader = r.newReader(ctx, mt, p, size)
	return r.held.reader, nil
}

func (r *tapeReader) newReader(ctx context.Context, mt *library.Mount, p wire.ReadPart, size int64) *tape.Reader {
	bs := p.BlockSize
	if bs == 0 {
		bs = mt.Label().BlockSize
	}
	return tape.NewReader(ctx, mt.Drive(), bs, p.PartStarts, tape.ReaderOptions{
		Size: size, Timeout: r.p.commandTimeout(),
		// The record reads as zeros; the volume format's CRCs then name
		// the damaged blocks and the files they hurt.
		OnMediumError: func(e *tape.MediumError) {
			r.j.log.Error("medium error reading tape", "barcode", p.Barcode, "volume", p.Volume, "block", e.Block, "err", e)
		},
	})
}

// release gives the held drive back; err is the stream's failure.
func (r *tapeReader) release(err error) {
	if r.held == nil {
		return
	}
	r.held.mount.Release(err)
	r.held = nil
}
