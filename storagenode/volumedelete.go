package storagenode

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/media/disk"
	"github.com/cairnbackup/cairn/media/s3vol"
	"github.com/cairnbackup/cairn/wire"
)

// volumeDeleter is a medium whose expired volumes the node deletes: a
// disk pool's files, an SFTP target's (an append-only target refuses
// while the file is there: its owner deletes), an S3 pool's objects once
// their lock has passed.
type volumeDeleter interface {
	deleteVolume(ctx context.Context, name string, id uuid.UUID) error
}

// deleteVolume carries out the servers' order to delete an expired
// volume (DESIGN.md, "Deleting volumes"). The servers forget the volume
// only after this answered, so a volume already gone is success: it is
// the repeat of a deletion whose answer was lost, or that a crash cut
// short.
//
// On an append-only SFTP target the order is refused while the file is
// there (the volume stays expired in the catalog: reclaimable by the
// owner) and succeeds once the owner has deleted it, when the servers
// forget it (DESIGN.md "Append-only SFTP targets").
func (n *Node) deleteVolume(ctx context.Context, o wire.VolumeDeleteOrder) error {
	d, ok := n.byPool[o.Pool].(volumeDeleter)
	if !ok {
		return wire.Errorf(wire.CodeInvalidArgument, "", "storage node %s has no disk, SFTP or S3 pool %q", n.cfg.ID, o.Pool)
	}
	err := d.deleteVolume(ctx, o.Volume, o.VolumeID)
	switch {
	case err == nil:
		n.log.Info("deleted expired volume", "pool", o.Pool, "volume", o.Volume, "id", o.VolumeID)
		return nil
	case errors.Is(err, disk.ErrBusy):
		return wire.Errorf(wire.CodeWrongState, "the expiry pass tries again later", "%w", err)
	case errors.Is(err, s3vol.ErrLocked):
		return wire.Errorf(wire.CodeWrongState, "the expiry pass tries again once the lock's date has passed", "%w", err)
	case errors.Is(err, disk.ErrWrongVolume), errors.Is(err, s3vol.ErrWrongVolume):
		return wire.Errorf(wire.CodeInvalidArgument, "check the pool: it holds another volume under that name than the catalog's, which is kept", "%w", err)
	}
	return edgeError(err)
}

func (d *diskPool) deleteVolume(_ context.Context, name string, id uuid.UUID) error {
	return d.pool.Delete(name, id)
}

func (d *sftpPool) deleteVolume(ctx context.Context, name string, id uuid.UUID) error {
	return d.target.Delete(ctx, name, id)
}

// deleteVolume deletes every object of the volume, after checking its
// label names the catalog's volume; a volume with no object is gone.
func (d *s3Pool) deleteVolume(ctx context.Context, name string, id uuid.UUID) error {
	if err := d.target.CheckLabel(ctx, name, id); err != nil {
		if errors.Is(err, s3vol.ErrNoVolume) {
			return nil
		}
		return err
	}
	return d.target.Delete(ctx, name)
}
