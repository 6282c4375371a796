package storagenode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/storagenode/library"
	"github.com/cairnbackup/cairn/wire"
)

// openedTape is a tape a session writes or wrote: its drive is held until
// the session moves on or ends.
type openedTape struct {
	grant wire.VolumeGrant
	mount *library.Mount
	app   *tape.Appender
	spool *spool
}

// acquireTape asks the servers for a tape of the pool to append to, mounts
// it and opens it. While the pool has none (CodeNoVolume) the job waits,
// with the servers' reason reported, and asks again every VolumeWaitPoll
// until it gets one or its context ends. A tape that cannot be written
// (write-protected, not the volume the catalog says, its layout not what
// the catalog recorded) is reported bad with the next request, and
// another is asked for.
func (s *session) acquireTape(ctx context.Context, req wire.VolumeAcquireReq) (volume.Appender, wire.VolumeGrant, error) {
	waiting := ""
	defer func() {
		if waiting != "" {
			reporter{s.n}.JobWaiting(s.t.JobID, "")
		}
	}()
	for {
		req.Used = req.Used[:0]
		for _, o := range s.tapes {
			req.Used = append(req.Used, o.grant.ID)
		}
		var g wire.VolumeGrant
		err := s.n.request(ctx, wire.OpVolumeAcquire, req, &g)
		if wire.CodeOf(err) == wire.CodeNoVolume {
			if reason := wire.AsError(err).Message; reason != waiting {
				waiting = reason
				reporter{s.n}.JobWaiting(s.t.JobID, reason)
				s.log.Info("backup waits for a tape", "reason", reason)
			}
			select {
			case <-ctx.Done():
				return nil, g, fmt.Errorf("waiting for a tape in pool %s (%s): %w", s.t.Pool, waiting, ctx.Err())
			case <-time.After(s.n.cfg.VolumeWaitPoll):
			}
			continue
		}
		if err != nil {
			return nil, g, fmt.Errorf("get a tape in pool %s: %w", s.t.Pool, err)
		}
		// What was reported is recorded now.
		req.Full, req.Bad, req.BadReason = uuid.Nil, uuid.Nil, ""
		if waiting != "" {
			reporter{s.n}.JobWaiting(s.t.JobID, "")
			waiting = ""
		}
		app, bad, err := s.openTape(ctx, g)
		if bad != nil {
			s.log.Warn("tape cannot be written; reporting it bad and asking for another", "barcode", g.Barcode, "volume", g.Name, "err", bad)
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

// openTape mounts the granted tape and opens it for appending (through the
// spool when the pool has one). bad is set when the tape itself is the
// problem; err when the job cannot go on.
func (s *session) openTape(ctx context.Context, g wire.VolumeGrant) (app volume.Appender, bad, err error) {
	mt, err := s.lib.Mount(ctx, library.MountRequest{Job: s.t.JobID, Barcode: g.Barcode, Volume: g.ID, Why: "writing volume " + g.Name})
	if err != nil {
		if errors.Is(err, library.ErrBarcodeMismatch) || errors.Is(err, library.ErrForeignLabel) || errors.Is(err, library.ErrWriteProtected) {
			return nil, err, nil
		}
		return nil, nil, fmt.Errorf("mount tape %s (volume %s): %w", g.Barcode, g.Name, err)
	}
	end := g.Bytes
	if end == 0 {
		end = int64(g.BlockSize)
	}
	a, err := tape.OpenAppender(ctx, mt.Drive(), g.ID, end, g.Parts, tape.AppenderOptions{Timeout: s.commandTimeout()})
	if err != nil {
		mt.Release(err)
		if errors.Is(err, tape.ErrWriteProtected) || errors.Is(err, tape.ErrWrongVolume) || errors.Is(err, tape.ErrLayout) || errors.Is(err, tape.ErrMedium) {
			return nil, err, nil
		}
		return nil, nil, fmt.Errorf("open tape %s (volume %s): %w", g.Barcode, g.Name, err)
	}
	if a.TornBlocks > 0 {
		s.log.Warn("an uncommitted tail on the tape (an earlier session did not finish) is overwritten", "barcode", g.Barcode, "volume", g.Name, "blocks", a.TornBlocks)
	}
	o := &openedTape{grant: g, mount: mt, app: a}
	app = a
	if s.tape.SpoolDir != "" {
		sp, err := newSpool(a, filepath.Join(s.tape.SpoolDir, fmt.Sprintf("job-%d", s.t.JobID)), s.tape.chunkBytes())
		if err != nil {
			mt.Release(err)
			return nil, nil, fmt.Errorf("tape pool %s: %w", s.t.Pool, err)
		}
		o.spool, app = sp, sp
	}
	s.tapes = append(s.tapes, o)
	s.log.Info("writing tape", "barcode", g.Barcode, "volume", g.Name, "drive", mt.Drive().Name(), "at", end, "spooled", o.spool != nil)
	return app, nil, nil
}

func (s *session) commandTimeout() time.Duration {
	for _, l := range s.n.cfg.Libraries {
		if l.Name == s.tape.Library {
			return l.CommandTimeout
		}
	}
	return 0
}

// nextTape gives up the tape the writer is done with (full, or lost to a
// medium error: WriterOptions.Lost said so just before) and acquires the
// next one.
func (s *session) nextTape(ctx context.Context, done volume.Appender) (volume.Appender, error) {
	req := wire.VolumeAcquireReq{JobID: s.t.JobID, Pool: s.t.Pool, Full: done.VolumeID()}
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
	app, _, err := s.acquireTape(ctx, req)
	return app, err
}

// release closes the tape's spool and gives its drive back, adding the
// drive's figures to the session's.
func (s *session) release(id uuid.UUID, err error) {
	for _, o := range s.tapes {
		if o.grant.ID != id || o.mount == nil {
			continue
		}
		if o.spool != nil {
			st := o.spool.stats()
			if cerr := o.spool.Close(); cerr != nil {
				s.log.Warn("close the spool", "err", cerr)
			}
			s.tapeStats.Spooled = true
			s.log.Info("spool done", "barcode", o.grant.Barcode, "chunks", st.Chunks, "bytes", st.Bytes)
		}
		ms := o.mount.Stats()
		s.tapeStats.DriveBytes += ms.DriveBytes
		s.tapeStats.DriveSeconds += ms.DriveSeconds
		s.tapeStats.Stops += ms.Stops
		o.mount.Release(err)
		o.mount = nil
	}
}

// releaseTapes gives every drive back; err is the session's failure, if
// any. A tape keeps nothing of a failed session that counts: the catalog's
// committed end stays, and the next session overwrites what lies after it.
func (s *session) releaseTapes(err error) {
	for _, o := range s.tapes {
		if o.mount != nil {
			s.release(o.grant.ID, err)
		}
	}
	if s.tape != nil && s.tape.SpoolDir != "" {
		_ = os.Remove(filepath.Join(s.tape.SpoolDir, fmt.Sprintf("job-%d", s.t.JobID)))
	}
}

// commitTape releases the drives and commits with the drive's figures.
func (s *session) commitTape(ctx context.Context, sessionID uuid.UUID, res *volume.SessionResult, end dataplane.End) (*dataplane.Result, error) {
	s.releaseTapes(nil)
	req, err := s.sendIndex(ctx, sessionID, res, end)
	if err != nil {
		return nil, err
	}
	names := map[uuid.UUID]string{}
	for _, o := range s.tapes {
		names[o.grant.ID] = o.grant.Name
	}
	used := map[uuid.UUID]bool{}
	for _, p := range res.Parts {
		used[p.VolumeID] = true
	}
	st := s.tapeStats
	st.Tapes = len(used)
	req.Tape = &st
	s.log.Info("tape session written", "tapes", st.Tapes, "drive_bytes", st.DriveBytes, "drive_seconds", st.DriveSeconds, "stops", st.Stops, "spooled", st.Spooled)
	return s.sendCommit(ctx, req, res, names)
}
