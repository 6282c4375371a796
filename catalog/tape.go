package catalog

import (
	"fmt"
	"slices"

	"github.com/google/uuid"
)

// Tape volumes: a cartridge becomes a volume when a storage node has
// written its label and read it back (OpLabelTape); it is named by its
// barcode, so the volume_names index finds a tape by barcode. Its location
// follows the node's reports (OpMoveTape); a tape of the Scratch pool joins
// a pool when that pool has nothing to append to (OpAssignTape).

func (a *applier) labelTape(l *TapeLabel, req *RequestKey) error {
	if l.VolumeID == uuid.Nil {
		return refuse(CodeInvalidArgument, "", "new tape volume without an id")
	}
	if err := validName("barcode", l.Barcode); err != nil {
		return err
	}
	if err := validName("library", l.Library); err != nil {
		return err
	}
	if l.BlockSize <= 0 {
		return refuse(CodeInvalidArgument, "", "tape %s: label block size %d", l.Barcode, l.BlockSize)
	}
	if old, err := a.volume(l.VolumeID); err != nil {
		return err
	} else if old != nil {
		if old.Barcode == l.Barcode && old.Library == l.Library && old.Pool == l.Pool {
			// The same label recorded again: a server that lost the
			// answer to the first record asks once more.
			a.res.VolumeID, a.res.VolumeName = old.ID, old.Name
			return nil
		}
		return refuse(CodeAlreadyExists, "", "volume %s (%s) already exists", old.Name, l.VolumeID)
	}
	if id := a.tx.Bucket(bVolumeNames).Get([]byte(l.Barcode)); id != nil {
		v, err := a.volume(uuid.UUID(id))
		if err != nil {
			return err
		}
		pool := "?"
		if v != nil {
			pool = v.Pool
		}
		return refuse(CodeAlreadyExists, "a labeled tape is never labeled again; see 'cairn volume list'",
			"the catalog already has a volume %s (pool %s)", l.Barcode, pool)
	}
	pool, err := a.pool(l.Pool)
	if err != nil {
		return err
	}
	if pool == nil {
		return refuse(CodeNotFound, "list pools with 'cairn pool list'", "pool %q does not exist", l.Pool)
	}
	if !pool.Type.HasLibrary() {
		return refuse(CodeInvalidArgument, "label tapes into a tape pool (or Scratch)", "pool %s is a %s pool, not a tape pool", pool.Name, pool.Type)
	}
	if pool.Library != "" && pool.Library != l.Library {
		return refuse(CodeInvalidArgument, "label the tape in the pool's library, or into Scratch",
			"pool %s lies in library %s, not %s", pool.Name, pool.Library, l.Library)
	}
	v := &Volume{
		ID: l.VolumeID, Name: l.Barcode, Pool: pool.Name, Node: l.Node, MediaType: pool.Type, State: VolumeAppend,
		Bytes: int64(l.BlockSize), Created: a.now, Barcode: l.Barcode, Library: l.Library, Location: l.Location,
		BlockSize: l.BlockSize,
	}
	v.Moves = []VolumeMove{{Time: a.now, To: l.Location, Reason: "labeled"}}
	if err := a.putVolume(nil, v); err != nil {
		return err
	}
	a.res.VolumeID, a.res.VolumeName = v.ID, v.Name
	return a.recordRequest(req, &Request{Op: OpLabelTape, VolumeID: v.ID})
}

// tapeByBarcode finds the tape volume with a barcode in a library; nil when
// the catalog has none.
func (a *applier) tapeByBarcode(library, barcode string) (*Volume, error) {
	id := a.tx.Bucket(bVolumeNames).Get([]byte(barcode))
	if id == nil {
		return nil, nil
	}
	v, err := a.volume(uuid.UUID(id))
	if err != nil || v == nil {
		return nil, err
	}
	if !v.MediaType.HasLibrary() || v.Barcode != barcode {
		return nil, nil
	}
	if library != "" && v.Library != library && v.Location != LocationVault {
		// A tape of another library that is in its library is not this
		// one: barcodes are unique per library, not everywhere.
		return nil, nil
	}
	return v, nil
}

func (a *applier) moveTape(m *TapeMove) error {
	if m.Barcode == "" || m.To == "" {
		return refuse(CodeInvalidArgument, "", "tape move without a barcode or a destination")
	}
	v, err := a.tapeByBarcode(m.Library, m.Barcode)
	if err != nil || v == nil {
		return err // a blank or foreign cartridge has no location to keep
	}
	if n := len(v.Moves); n > 0 && v.Location == m.To && v.Moves[n-1].From == m.From && v.Moves[n-1].To == m.To {
		// The same move reported twice (by the node's report and by the
		// operator's command that caused it): a cartridge cannot make the
		// same move twice in a row.
		return nil
	}
	old := *v
	if m.Library != "" && m.To != LocationVault {
		v.Library = m.Library // a vaulted tape imported into another library
	}
	v.Location = m.To
	moves := append(slices.Clone(v.Moves), VolumeMove{Time: a.now, From: m.From, To: m.To, Reason: m.Reason})
	if len(moves) > MaxVolumeMoves {
		moves = moves[len(moves)-MaxVolumeMoves:]
	}
	v.Moves = moves
	return a.putVolume(&old, v)
}

func (a *applier) assignTape(t *TapeAssign) error {
	v, err := a.volume(t.VolumeID)
	if err != nil {
		return err
	}
	if v == nil {
		return refuse(CodeNotFound, "", "volume %s does not exist", t.VolumeID)
	}
	if v.Pool == t.Pool {
		return nil // a retried assignment
	}
	switch {
	case !v.MediaType.HasLibrary():
		return refuse(CodeInvalidArgument, "", "volume %s is not a tape", v.Name)
	case v.Pool != ScratchPool:
		return refuse(CodeWrongState, "", "tape %s is in pool %s, not %s", v.Name, v.Pool, ScratchPool)
	case v.State != VolumeAppend || v.Sessions > 0:
		return refuse(CodeWrongState, "", "tape %s is %s with %d sessions: only an empty tape leaves %s", v.Name, v.State, v.Sessions, ScratchPool)
	case v.WriterJob != 0:
		return refuse(CodeWrongState, "", "tape %s is held by job %d", v.Name, v.WriterJob)
	}
	pool, err := a.pool(t.Pool)
	if err != nil {
		return err
	}
	if pool == nil {
		return refuse(CodeNotFound, "list pools with 'cairn pool list'", "pool %q does not exist", t.Pool)
	}
	if !pool.Type.HasLibrary() {
		return refuse(CodeInvalidArgument, "", "pool %s is not a tape pool", pool.Name)
	}
	if pool.Library != "" && pool.Library != v.Library {
		return refuse(CodeInvalidArgument, "", "tape %s is in library %s, pool %s in library %s", v.Name, v.Library, pool.Name, pool.Library)
	}
	if t.WriterJob != 0 {
		if err := a.checkWriter(t.WriterJob); err != nil {
			return err
		}
	}
	if !pool.Serves(v.Node) {
		return refuse(CodeInvalidArgument, "", "tape %s is on storage node %s, which does not serve pool %s", v.Name, v.Node, pool.Name)
	}
	old := *v
	v.Pool = pool.Name
	v.WriterJob = t.WriterJob
	return a.putVolume(&old, v)
}

// TapeByBarcode returns the tape volume with this barcode.
func (s *Store) TapeByBarcode(barcode string) (*Volume, error) {
	v, err := s.VolumeByName(barcode)
	if err != nil {
		return nil, err
	}
	if !v.MediaType.HasLibrary() || v.Barcode != barcode {
		return nil, notFound("tape %q is not a volume of the catalog", barcode)
	}
	return v, nil
}

// LibraryOwner returns the storage node that owns library name.
func (s *Store) LibraryOwner(name string) (*StorageNode, error) {
	nodes, err := s.Nodes()
	if err != nil {
		return nil, err
	}
	for i := range nodes {
		for _, l := range nodes[i].Libraries {
			if l.Name == name {
				return &nodes[i], nil
			}
		}
	}
	return nil, notFound("library %q is not owned by any storage node", name)
}

// SlotLocation is the location of storage slot n.
func SlotLocation(n int) string { return fmt.Sprintf("slot %d", n) }
