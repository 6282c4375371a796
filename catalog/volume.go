package catalog

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Disk volumes: OpCreateVolume names a new volume from its pool's counter
// and may hand it to the job that writes it; OpUpdateVolume changes its
// state, end or writer. Tape volumes come from a label (tape.go).

func (a *applier) createVolume(v *Volume) error {
	if v.ID == uuid.Nil {
		return refuse(CodeInvalidArgument, "", "new volume without an id")
	}
	if old, err := a.volume(v.ID); err != nil {
		return err
	} else if old != nil {
		return refuse(CodeAlreadyExists, "", "volume %s (%s) already exists", old.Name, v.ID)
	}
	pool, err := a.pool(v.Pool)
	if err != nil {
		return err
	}
	if pool == nil {
		return refuse(CodeNotFound, "list pools with 'cairn pool list'", "pool %q does not exist", v.Pool)
	}
	if pool.Type.HasLibrary() {
		return refuse(CodeInvalidArgument, "label tapes with 'cairn media label'",
			"pool %s is a %s pool: its volumes are labeled cartridges", pool.Name, pool.Type)
	}
	n := *v
	if n.Node == "" && len(pool.Nodes) == 1 {
		n.Node = pool.Nodes[0]
	}
	if !pool.Serves(n.Node) {
		return refuse(CodeInvalidArgument, "", "storage node %q does not serve pool %s (served by %s)", n.Node, pool.Name, strings.Join(pool.Nodes, ", "))
	}
	if n.MediaType == "" {
		n.MediaType = pool.Type
	}
	if n.WriterJob != 0 {
		if err := a.checkWriter(n.WriterJob); err != nil {
			return err
		}
	}
	names := a.tx.Bucket(bVolumeNames)
	no := max(pool.NextVolume, 1)
	for names.Get([]byte(volumeName(pool.LabelPrefix, no))) != nil {
		no++
	}
	n.Name = volumeName(pool.LabelPrefix, no)
	n.State = VolumeLabeling
	n.Bytes, n.Sessions, n.Error = 0, 0, ""
	n.Created, n.LastWritten = a.now, time.Time{}
	pool.NextVolume = no + 1
	if err := putJSON(a.tx, bPools, []byte(pool.Name), pool); err != nil {
		return err
	}
	if err := a.putVolume(nil, &n); err != nil {
		return err
	}
	a.res.VolumeID, a.res.VolumeName = n.ID, n.Name
	return nil
}

func volumeName(prefix string, no int) string { return fmt.Sprintf("%s-%04d", prefix, no) }

// checkWriter refuses a job that cannot hold a volume.
func (a *applier) checkWriter(id uint64) error {
	j, err := a.job(id)
	if err != nil {
		return err
	}
	if j == nil {
		return refuse(CodeNotFound, "", "job %d does not exist", id)
	}
	if j.State.Done() {
		return refuse(CodeWrongState, "", "job %d already ended (%s) and cannot hold a volume", id, j.State)
	}
	return nil
}

func (a *applier) updateVolume(u *VolumeUpdate) error {
	v, err := a.volume(u.ID)
	if err != nil {
		return err
	}
	if v == nil {
		return refuse(CodeNotFound, "list volumes with 'cairn media list'", "volume %s does not exist", u.ID)
	}
	old := *v
	if v.State == VolumeExpired && u.State != "" && u.State != VolumeExpired {
		// Its backups are gone and its node is deleting it: a late report
		// must not make it writable again.
		return refuse(CodeWrongState, "", "volume %s expired: its file is being deleted", v.Name)
	}
	if u.State != "" {
		if !u.State.Valid() {
			return refuse(CodeInvalidArgument, "", "volume state %q is not known", u.State)
		}
		v.State = u.State
		if u.State != VolumeError {
			v.Error = ""
		}
	}
	if u.Error != "" {
		v.Error = u.Error
	}
	if u.Bytes != nil {
		if *u.Bytes < 0 {
			return refuse(CodeInvalidArgument, "", "volume %s: negative size %d", v.Name, *u.Bytes)
		}
		if *u.Bytes < v.Bytes && v.Sessions > 0 {
			return refuse(CodeWrongState, "", "volume %s holds %d committed sessions up to byte %d; moving its end back to %d would lose them",
				v.Name, v.Sessions, v.Bytes, *u.Bytes)
		}
		v.Bytes = *u.Bytes
	}
	if !u.LastWritten.IsZero() {
		v.LastWritten = u.LastWritten
	}
	if u.LockedUntil.After(v.LockedUntil) {
		v.LockedUntil = u.LockedUntil
	}
	if u.Relabeled {
		v.Relabel = uuid.Nil
	}
	if u.WriterJob != nil && *u.WriterJob != v.WriterJob {
		if w := *u.WriterJob; w != 0 {
			if err := a.checkWriter(w); err != nil {
				return err
			}
			if v.WriterJob != 0 {
				holder, err := a.job(v.WriterJob)
				if err != nil {
					return err
				}
				// A hold by a job that ended is stale and may be taken over.
				if holder != nil && !holder.State.Done() {
					return refuse(CodeWrongState, "", "volume %s is held by job %d", v.Name, v.WriterJob)
				}
			}
			if v.State != VolumeLabeling && v.State != VolumeAppend {
				return refuse(CodeWrongState, "", "volume %s is %s: it takes no more sessions", v.Name, v.State)
			}
		}
		v.WriterJob = *u.WriterJob
	}
	return a.putVolume(&old, v)
}
