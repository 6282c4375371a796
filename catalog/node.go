package catalog

import "slices"

// Storage nodes: a node announces its pools and the libraries it owns
// (OpRegisterNode). A pool it serves is created on its first announcement; a
// library has one owner, the node that announced it last. DESIGN.md, "Tape
// volumes, libraries and locations".

func (a *applier) registerNode(n *StorageNode) error {
	if err := validName("storage node", n.ID); err != nil {
		return err
	}
	libs := map[string]bool{}
	for _, l := range n.Libraries {
		if err := validName("library", l.Name); err != nil {
			return err
		}
		if libs[l.Name] {
			return refuse(CodeInvalidArgument, "list each library once in the storage node's configuration",
				"storage node %s owns library %s twice", n.ID, l.Name)
		}
		libs[l.Name] = true
	}
	seen := map[string]bool{}
	var create []*Pool
	for _, np := range n.Pools {
		if err := validName("pool", np.Name); err != nil {
			return err
		}
		if seen[np.Name] {
			return refuse(CodeInvalidArgument, "list each pool once in the storage node's configuration",
				"storage node %s serves pool %s twice", n.ID, np.Name)
		}
		seen[np.Name] = true
		typ, ok := ParsePoolType(string(np.Type))
		switch {
		case !ok:
			return refuse(CodeInvalidArgument, "use type disk, tape, sftp or s3", "pool %s: type %q is not known", np.Name, np.Type)
		case typ.HasLibrary() && np.Library != "" && !libs[np.Library]:
			return refuse(CodeInvalidArgument, "configure the library on the same storage node as its pools",
				"storage node %s serves %s pool %s in library %s, which it does not own", n.ID, typ, np.Name, np.Library)
		}
		p, err := a.pool(np.Name)
		if err != nil {
			return err
		}
		switch {
		case p == nil:
			np := &Pool{
				Name: np.Name, Type: typ, Nodes: []string{n.ID}, MaxVolumeBytes: np.MaxVolumeBytes, Library: np.Library,
				BlockSize: DefaultBlockSize, BlockRawSize: DefaultBlockRawSize, LabelPrefix: np.Name,
				NextVolume: 1, Compression: true, Created: a.now,
			}
			if !typ.FileBacked() {
				np.MaxVolumeBytes = 0 // a cartridge ends where its tape does
			}
			create = append(create, np)
			continue
		case p.Type != typ:
			return refuse(CodeInvalidArgument, "give the pool another name in the storage node's configuration",
				"storage node %s serves pool %s as a %s pool, but it is a %s pool", n.ID, p.Name, typ, p.Type)
		case typ.HasLibrary() && p.Library != np.Library:
			return refuse(CodeInvalidArgument, "a tape pool lies in one library: give the pool another name",
				"storage node %s serves pool %s in library %q, but the pool is in library %q", n.ID, p.Name, np.Library, p.Library)
		}
		if !p.Serves(n.ID) {
			// Another node joins the pool with volumes of its own.
			p.Nodes = append(p.Nodes, n.ID)
			create = append(create, p)
		}
	}
	var old StorageNode
	found, err := getJSON(a.tx, bNodes, []byte(n.ID), &old)
	if err != nil {
		return err
	}
	rec := *n
	rec.Registered, rec.LastSeen = a.now, a.now
	if found {
		rec.Registered = old.Registered
	}
	if len(libs) > 0 {
		// A library has one owner: the node that announced it last (it
		// moved to this node, or the other node's record is stale).
		if err := a.disownLibraries(n.ID, libs); err != nil {
			return err
		}
	}
	for _, p := range create {
		if err := putJSON(a.tx, bPools, []byte(p.Name), p); err != nil {
			return err
		}
	}
	return putJSON(a.tx, bNodes, []byte(rec.ID), &rec)
}

// disownLibraries drops libs from every other node's record.
func (a *applier) disownLibraries(owner string, libs map[string]bool) error {
	var changed []StorageNode
	err := a.tx.Bucket(bNodes).ForEach(func(k, v []byte) error {
		var n StorageNode
		if err := jsonUnmarshal(bNodes, k, v, &n); err != nil {
			return err
		}
		if n.ID == owner {
			return nil
		}
		kept := slices.DeleteFunc(slices.Clone(n.Libraries), func(l NodeLibrary) bool { return libs[l.Name] })
		if len(kept) != len(n.Libraries) {
			n.Libraries = kept
			changed = append(changed, n)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := range changed {
		if err := putJSON(a.tx, bNodes, []byte(changed[i].ID), &changed[i]); err != nil {
			return err
		}
	}
	return nil
}
