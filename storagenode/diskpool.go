package storagenode

import (
	"context"
	"fmt"
	"io"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/internal/dropbehind"
	"github.com/cairnbackup/cairn/media/disk"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// mediaDisk is the medium type of disk pools, as registration and read
// parts name it ("" in a read part of an older server).
const mediaDisk = "disk"

// diskPool is a medium of volume files in one directory (media/disk). A
// new volume is labeled by the session that is granted it; a failed
// session is truncated off every volume it appended to.
type diskPool struct {
	pool *disk.Pool // shared by every session; never changed after New
}

func newDiskPool(c PoolConfig) *diskPool {
	return &diskPool{pool: &disk.Pool{Name: c.Name, Dir: c.Dir, MaxVolumeBytes: c.MaxVolumeBytes}}
}

func (d *diskPool) register() wire.NodePool {
	return wire.NodePool{Name: d.pool.Name, Type: mediaDisk, Dir: d.pool.Dir, MaxVolumeBytes: d.pool.MaxVolumeBytes}
}

func (d *diskPool) usage() (wire.PoolUsage, bool) {
	free, total, err := d.pool.Usage()
	if err != nil {
		return wire.PoolUsage{}, false
	}
	return wire.PoolUsage{Name: d.pool.Name, FreeBytes: free, TotalBytes: total}, true
}

func (d *diskPool) reads(p wire.ReadPart) bool {
	return (p.MediaType == "" || p.MediaType == mediaDisk) && p.Pool == d.pool.Name
}

func (d *diskPool) appendTo(j *stream) appendSession { return &diskSession{d: d, j: j} }

func (d *diskPool) readFrom(*stream) partReader { return &diskReader{d: d, keptVolumes: keptVolumes{}} }

// diskSession is a backup session's volumes in a disk pool.
type diskSession struct {
	d      *diskPool
	j      *stream
	opened []*openedVolume // every volume the session appended to, in order
}

// openedVolume remembers where a session started on a volume, so a failed
// session can be cut off and leave the volume as it was.
type openedVolume struct {
	app   *disk.Appender
	name  string
	start int64
}

// acquire asks the servers for a volume to append to and opens it,
// labeling it first when it is new, with the grant's block size.
func (s *diskSession) acquire(ctx context.Context, done volume.Appender) (volume.Appender, wire.VolumeGrant, error) {
	var used []uuid.UUID
	for _, o := range s.opened {
		used = append(used, o.app.VolumeID())
	}
	g, err := s.j.grantVolume(ctx, done, used, nil)
	if err != nil {
		return nil, g, err
	}
	if g.New {
		if err := s.j.labelVolume(ctx, &g, mediaDisk, func(l volume.Label) error { return s.d.pool.Create(g.Name, l) }); err != nil {
			return nil, g, err
		}
		s.j.log.Info("labeled volume", "volume", g.Name)
	}
	app, err := s.d.pool.OpenAppend(g.Name, g.ID, g.Bytes)
	if err != nil {
		return nil, g, fmt.Errorf("open volume %s: %w", g.Name, err)
	}
	if app.TornBytes > 0 {
		s.j.log.Warn("cut off an uncommitted tail of a volume (an earlier session did not finish)", "volume", g.Name, "at", g.Bytes, "bytes", app.TornBytes)
	}
	s.opened = append(s.opened, &openedVolume{app: app, name: g.Name, start: g.Bytes})
	return app, g, nil
}

// lost is never called: a disk Appender is not recoverable, and a write
// that fails fails the session.
func (s *diskSession) lost(volume.Appender, error) {}

// finish has nothing to give back before the commit: the volumes stay
// open, so a commit that fails still cuts them back.
func (s *diskSession) finish(*wire.SessionCommitReq, *volume.SessionResult) {}

func (s *diskSession) committing() map[uuid.UUID]string {
	names := map[uuid.UUID]string{}
	for _, o := range s.opened {
		names[o.app.VolumeID()] = o.name
		_ = o.app.Close()
	}
	s.opened = nil
	return names
}

func (s *diskSession) rollback(error) {
	for _, o := range s.opened {
		if err := o.app.Truncate(o.start); err != nil {
			s.j.log.Error("could not cut a failed session off its volume; the next session on it will", "volume", o.name, "err", err)
		}
		_ = o.app.Close()
	}
	s.opened = nil
}

// diskReader opens volume files read-only: any number of streams read a
// volume at once, and one may append to it meanwhile. A stream keeps the
// volumes it opened until it ends.
type diskReader struct {
	d *diskPool
	keptVolumes
}

func (r *diskReader) open(_ context.Context, p wire.ReadPart) (io.ReaderAt, error) {
	return r.keptVolumes.open(p.Volume, func() (readerAtCloser, error) {
		f, _, err := r.d.pool.OpenRead(p.Volume)
		if err != nil {
			return nil, &unreadableError{volume: p.Volume, err: err}
		}
		// A restore or a consolidation reads each block once.
		return dropbehind.NewReader(f), nil
	})
}

func (*diskReader) tune(*volume.ReaderOptions) {}
