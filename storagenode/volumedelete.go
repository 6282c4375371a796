package storagenode

import (
	"context"
	"errors"

	"github.com/cairnbackup/cairn/media/disk"
	"github.com/cairnbackup/cairn/wire"
)

// deleteVolume carries out the servers' order to delete an expired disk
// volume's file (DESIGN.md, "Deleting volumes"). The servers forget the
// volume only after this answered, so a file already gone is success: it
// is the repeat of a deletion whose answer was lost, or that a crash cut
// short.
//
// On an SFTP pool the target deletes the file; an append-only target
// deletes nothing (its owner does, DESIGN.md "Append-only SFTP targets"),
// so the order is refused while the file is there (the volume stays
// expired in the catalog: reclaimable by the owner) and succeeds once the
// owner has deleted it, when the servers forget it.
func (n *Node) deleteVolume(ctx context.Context, o wire.VolumeDeleteOrder) error {
	m := n.byPool[o.Pool]
	if sp, ok := m.(*sftpPool); ok {
		if err := sp.target.Delete(ctx, o.Volume, o.VolumeID); err != nil {
			return edgeError(err)
		}
		n.log.Info("deleted expired volume", "pool", o.Pool, "volume", o.Volume, "id", o.VolumeID, "target", sp.target.Config().Addr())
		return nil
	}
	d, ok := m.(*diskPool)
	if !ok {
		return wire.Errorf(wire.CodeInvalidArgument, "", "storage node %s has no disk pool %q", n.cfg.ID, o.Pool)
	}
	err := d.pool.Delete(o.Volume, o.VolumeID)
	switch {
	case err == nil:
		n.log.Info("deleted expired volume", "pool", o.Pool, "volume", o.Volume, "id", o.VolumeID)
		return nil
	case errors.Is(err, disk.ErrBusy):
		return wire.Errorf(wire.CodeWrongState, "the expiry pass tries again later", "%w", err)
	case errors.Is(err, disk.ErrWrongVolume):
		return wire.Errorf(wire.CodeInvalidArgument, "check the pool directory: the file is not the catalog's volume, and is kept", "%w", err)
	}
	return edgeError(err)
}
