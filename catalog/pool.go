package catalog

// Pools: OpCreatePool makes one by hand; a node's announcement makes the
// others (node.go). Both refuse a type they do not know, and a library or a
// size limit the type has no use for. OpSetPoolCompression changes the
// codec of the sessions a pool's volumes get from then on.

func (a *applier) createPool(p *Pool) error {
	if err := validName("pool", p.Name); err != nil {
		return err
	}
	if old, err := a.pool(p.Name); err != nil {
		return err
	} else if old != nil {
		return refuse(CodeAlreadyExists, "choose another name, or list pools with 'cairn pool list'", "pool %s already exists", p.Name)
	}
	n := *p
	typ, ok := ParsePoolType(string(n.Type))
	n.Type = typ
	switch {
	case !ok:
		return refuse(CodeInvalidArgument, "use type disk, tape, sftp or s3", "pool %s: type %q is not known", p.Name, p.Type)
	case !typ.HasLibrary() && n.Library != "":
		return refuse(CodeInvalidArgument, "", "%s pool %s cannot be in library %s", typ, p.Name, p.Library)
	case !typ.FileBacked() && n.MaxVolumeBytes != 0:
		return refuse(CodeInvalidArgument, "leave the maximum volume size unset: a cartridge ends where its tape does",
			"%s pool %s: a maximum volume size makes no sense", typ, p.Name)
	}
	if n.BlockSize <= 0 {
		n.BlockSize = DefaultBlockSize
	}
	if n.BlockRawSize <= 0 {
		n.BlockRawSize = DefaultBlockRawSize
	}
	if n.MaxVolumeBytes < 0 {
		return refuse(CodeInvalidArgument, "give a positive size, or 0 for no limit", "pool %s: maximum volume size %d is negative", p.Name, p.MaxVolumeBytes)
	}
	if n.LabelPrefix == "" {
		n.LabelPrefix = n.Name
	}
	if n.NextVolume < 1 {
		n.NextVolume = 1
	}
	if n.Codec != "" {
		if err := checkCodec(p.Name, n.Codec); err != nil {
			return err
		}
		n.Compression = n.Codec != CodecNone
	}
	if n.KeyID != "" {
		if a.tx.Bucket(bKeys).Get([]byte(n.KeyID)) == nil {
			return refuse(CodeNotFound, "store the key first (put_key), then create the pool", "pool %s: key %s does not exist", p.Name, n.KeyID)
		}
	}
	n.Created = a.now
	return putJSON(a.tx, bPools, []byte(n.Name), &n)
}

func (a *applier) setPoolCompression(pc *PoolCompression) error {
	if pc == nil {
		return missing(OpSetPoolCompression)
	}
	p, err := a.pool(pc.Pool)
	if err != nil {
		return err
	}
	if p == nil {
		return refuse(CodeNotFound, "list pools with 'cairn pool list'", "pool %q does not exist", pc.Pool)
	}
	if err := checkCodec(p.Name, pc.Codec); err != nil {
		return err
	}
	// Compression stays what it says to a server that predates Codec:
	// one that reads this record compresses with zstd, or not at all.
	p.Compression, p.Codec = pc.Codec != CodecNone, pc.Codec
	return putJSON(a.tx, bPools, []byte(p.Name), p)
}

// checkCodec refuses a codec this version cannot write. Every server of a
// group must know a codec before a pool is set to it: one that does not
// would refuse what the others applied.
func checkCodec(pool, codec string) error {
	if !ValidCodec(codec) {
		return refuse(CodeInvalidArgument, "use zstd (the default: smallest), s2 (fastest, stores more) or none",
			"pool %s: compression %q is not known", pool, codec)
	}
	return nil
}
