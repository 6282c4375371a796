package fileindex

import (
	"encoding/binary"
	"fmt"

	"github.com/cairnbackup/cairn/internal/varint"
)

// BlockList is how a large file's version is made of content-defined
// blocks (package chunk): each block's digest, and where its bytes lie,
// in the session of the entry or in the session of an earlier version of
// the same file. An incremental sends only the blocks its base version did
// not have; a restore reads each block where it lies.
//
// Blocks come only from the file's own earlier versions, in the chain of
// the backup that holds the entry, never from another client or another
// path: a restore of one client never needs another's media.
type BlockList struct {
	// Bits is the size class the file was cut with (chunk.Bits): the next
	// version is cut the same way while the class still suits its size.
	Bits uint8 `json:"bits"`
	// Sessions are the other sessions the blocks lie in, referred to by
	// Block.Session 1 to len(Sessions); 0 is the entry's own session.
	Sessions [][16]byte `json:"sessions,omitempty"`
	Blocks   []Block    `json:"blocks"`
	// Runs are the data regions of a file with holes, sent by its data
	// regions (volume format 4): in offset order, apart, the bytes between
	// them holes. The blocks tile the runs in order, and none crosses from
	// one run into the next, so a block always lies in one piece of the
	// file in every version that holds it. Empty: the blocks tile the file
	// from offset 0.
	Runs []Run `json:"runs,omitempty"`
}

// Run is a data region of a file with holes: Len bytes at offset Off.
type Run struct {
	Off uint64 `json:"off"`
	Len uint64 `json:"len"`
}

// Block is one block of a file's content, in file order: the blocks of a
// list tile the file from offset 0, or its Runs.
type Block struct {
	Hash [32]byte `json:"hash"` // SHA-256 of the block's bytes
	// Session says which session holds the bytes: 0 the entry's own, n
	// BlockList.Sessions[n-1].
	Session uint32 `json:"session,omitempty"`
	// Loc is where the block's first Data record lies in that session,
	// Loc.Len its length in bytes, Loc.EndSeq the block (of the volume)
	// holding its last byte. In the FileEnd record of a stream, a block
	// sent in that stream has only Len: the storage node places it.
	Loc Location `json:"loc"`
}

// Size is the number of content bytes the list covers.
func (bl *BlockList) Size() uint64 {
	var n uint64
	for i := range bl.Blocks {
		n += bl.Blocks[i].Loc.Len
	}
	return n
}

// End is the file offset just past the content the list covers: the end
// of its last run, or its Size for a list without runs.
func (bl *BlockList) End() uint64 {
	if n := len(bl.Runs); n > 0 {
		return bl.Runs[n-1].Off + bl.Runs[n-1].Len
	}
	return bl.Size()
}

// Offsets are the file offsets the blocks start at, in list order.
func (bl *BlockList) Offsets() []int64 {
	out := make([]int64, len(bl.Blocks))
	var y uint64
	r, left := -1, uint64(0) // the run being tiled, and its bytes not yet
	for i := range bl.Blocks {
		if len(bl.Runs) > 0 {
			if left == 0 && r+1 < len(bl.Runs) {
				r++
				y, left = bl.Runs[r].Off, bl.Runs[r].Len
			}
			left -= min(left, bl.Blocks[i].Loc.Len)
		}
		out[i] = int64(y)
		y += bl.Blocks[i].Loc.Len
	}
	return out
}

// SessionOf is the session that holds block i, with own standing for
// the entry's own session.
func (bl *BlockList) SessionOf(i int, own [16]byte) [16]byte {
	if s := bl.Blocks[i].Session; s > 0 {
		return bl.Sessions[s-1]
	}
	return own
}

// minBlockEncoding is the fewest bytes a block's encoding takes: its
// digest and six one-byte varints.
const minBlockEncoding = 32 + 6

// AppendBlockList appends the encoding of bl: uvarint bits, uvarint count
// of sessions and their 16 bytes each, uvarint count of blocks, and per
// block its 32-byte digest, then uvarints session, length, seq, off,
// in_block and end_seq - seq; then, for a list with runs only, uvarint
// count of runs and per run uvarints off - the end of the run before, and
// length (media/volume/FORMAT.md, section 6). A list without runs encodes
// as it did before runs existed.
func AppendBlockList(dst []byte, bl *BlockList) []byte {
	dst = binary.AppendUvarint(dst, uint64(bl.Bits))
	dst = binary.AppendUvarint(dst, uint64(len(bl.Sessions)))
	for _, s := range bl.Sessions {
		dst = append(dst, s[:]...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(bl.Blocks)))
	for i := range bl.Blocks {
		b := &bl.Blocks[i]
		dst = append(dst, b.Hash[:]...)
		dst = binary.AppendUvarint(dst, uint64(b.Session))
		dst = binary.AppendUvarint(dst, b.Loc.Len)
		dst = binary.AppendUvarint(dst, b.Loc.Seq)
		dst = binary.AppendUvarint(dst, b.Loc.Off)
		dst = binary.AppendUvarint(dst, uint64(b.Loc.InBlock))
		dst = binary.AppendUvarint(dst, b.Loc.EndSeq-min(b.Loc.EndSeq, b.Loc.Seq))
	}
	if len(bl.Runs) == 0 {
		return dst
	}
	dst = binary.AppendUvarint(dst, uint64(len(bl.Runs)))
	var end uint64
	for _, r := range bl.Runs {
		dst = binary.AppendUvarint(dst, r.Off-min(r.Off, end))
		dst = binary.AppendUvarint(dst, r.Len)
		end = r.Off + r.Len
	}
	return dst
}

// DecodeBlockList decodes what AppendBlockList wrote, all of b. Counts
// are checked against the bytes left before anything is allocated by
// them.
func DecodeBlockList(b []byte) (*BlockList, error) {
	var err error
	next := func() uint64 {
		if err != nil {
			return 0
		}
		v, n := varint.Uvarint(b)
		if n <= 0 {
			err = fmt.Errorf("%w: block list: bad varint", ErrCorrupt)
			return 0
		}
		b = b[n:]
		return v
	}
	bl := &BlockList{}
	bits := next()
	ns := next()
	if err != nil {
		return nil, err
	}
	if bits > 63 {
		return nil, fmt.Errorf("%w: block list: size class %d", ErrCorrupt, bits)
	}
	bl.Bits = uint8(bits)
	if ns > uint64(len(b)/16) {
		return nil, fmt.Errorf("%w: block list: %d sessions in %d bytes", ErrCorrupt, ns, len(b))
	}
	if ns > 0 {
		bl.Sessions = make([][16]byte, ns)
		for i := range bl.Sessions {
			copy(bl.Sessions[i][:], b[:16])
			b = b[16:]
		}
	}
	nb := next()
	if err != nil {
		return nil, err
	}
	if nb > uint64(len(b)/minBlockEncoding) {
		return nil, fmt.Errorf("%w: block list: %d blocks in %d bytes", ErrCorrupt, nb, len(b))
	}
	if nb > 0 {
		bl.Blocks = make([]Block, nb)
	}
	for i := range bl.Blocks {
		blk := &bl.Blocks[i]
		if len(b) < 32 {
			return nil, fmt.Errorf("%w: block list: block %d cut short", ErrCorrupt, i)
		}
		copy(blk.Hash[:], b[:32])
		b = b[32:]
		s := next()
		blk.Loc.Len = next()
		blk.Loc.Seq = next()
		blk.Loc.Off = next()
		in := next()
		end := next()
		if err != nil {
			return nil, err
		}
		if s > ns || in > 1<<32-1 || end > ^uint64(0)-blk.Loc.Seq || blk.Loc.Len == 0 {
			return nil, fmt.Errorf("%w: block list: block %d: session %d of %d, in_block %d, length %d", ErrCorrupt, i, s, ns, in, blk.Loc.Len)
		}
		blk.Session = uint32(s)
		blk.Loc.InBlock = uint32(in)
		blk.Loc.EndSeq = blk.Loc.Seq + end
	}
	if len(b) == 0 {
		return bl, nil
	}
	nr := next()
	if err != nil {
		return nil, err
	}
	if nr == 0 || nr > uint64(len(b)/2) {
		return nil, fmt.Errorf("%w: block list: %d runs in %d bytes", ErrCorrupt, nr, len(b))
	}
	bl.Runs = make([]Run, nr)
	var end uint64
	for i := range bl.Runs {
		gap, n := next(), next()
		if err != nil {
			return nil, err
		}
		// Runs apart (a gap before all but the first), not empty, and
		// within int64: a restore writes at their offsets.
		if (i > 0 && gap == 0) || n == 0 || gap > 1<<63-1-end || n > 1<<63-1-end-gap {
			return nil, fmt.Errorf("%w: block list: run %d: %d bytes %d after the run before", ErrCorrupt, i, n, gap)
		}
		bl.Runs[i] = Run{Off: end + gap, Len: n}
		end += gap + n
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: block list: %d bytes after its last run", ErrCorrupt, len(b))
	}
	if err := bl.tilesRuns(); err != nil {
		return nil, err
	}
	return bl, nil
}

// tilesRuns checks that the blocks tile the runs, none crossing from one
// run into the next.
func (bl *BlockList) tilesRuns() error {
	r, left := 0, bl.Runs[0].Len
	for i := range bl.Blocks {
		n := bl.Blocks[i].Loc.Len
		if left == 0 && r+1 < len(bl.Runs) {
			r++
			left = bl.Runs[r].Len
		}
		if n > left {
			return fmt.Errorf("%w: block list: block %d of %d bytes crosses the end of data run %d", ErrCorrupt, i, n, r)
		}
		left -= n
	}
	if left != 0 || r+1 != len(bl.Runs) {
		return fmt.Errorf("%w: block list: its blocks do not fill its %d data runs", ErrCorrupt, len(bl.Runs))
	}
	return nil
}

// Rebased is bl with the blocks of the entry's own session (Session 0)
// referring to own instead, so that the list means the same away from
// that session's index: in the base tree an agent compares a new version
// of the file with.
func (bl *BlockList) Rebased(own [16]byte) *BlockList {
	out := &BlockList{Bits: bl.Bits, Sessions: bl.Sessions, Blocks: make([]Block, len(bl.Blocks)), Runs: bl.Runs}
	copy(out.Blocks, bl.Blocks)
	ref := uint32(0)
	for i := range out.Blocks {
		if out.Blocks[i].Session != 0 {
			continue
		}
		if ref == 0 {
			out.Sessions = append(append([][16]byte(nil), bl.Sessions...), own)
			ref = uint32(len(out.Sessions))
		}
		out.Blocks[i].Session = ref
	}
	return out
}
