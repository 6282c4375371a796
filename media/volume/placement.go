package volume

import (
	"fmt"
	"sort"

	"github.com/cairnbackup/cairn/fileindex"
)

// placements remember where the Data records of one entry lie, so that the
// blocks of its block list that were sent with it (Session 0) get their
// locations: the FileEnd that carries the list comes after the data.
type placements struct{ at []placement }

type placement struct {
	off    int64  // file offset of the record's first byte
	n      int64  // content bytes
	seq    uint64 // block holding the record
	in     uint32 // the record's offset in the block's plaintext
	stream uint64 // the block's stream offset, when known
}

func (p *placements) reset() { p.at = p.at[:0] }

func (p *placements) add(off int64, n int, seq uint64, in int, stream uint64) {
	p.at = append(p.at, placement{off: off, n: int64(n), seq: seq, in: uint32(in), stream: stream})
}

// locate sets the location of each block of bl that lies in the entry's
// own session, from the Data records: the blocks tile the file from offset
// 0 (or its data runs), and one sent in the stream starts a Data record of
// its own.
func (p *placements) locate(bl *fileindex.BlockList) error {
	offs := bl.Offsets()
	for i := range bl.Blocks {
		b := &bl.Blocks[i]
		start := offs[i]
		end := start + int64(b.Loc.Len)
		if b.Session != 0 {
			continue
		}
		k := sort.Search(len(p.at), func(k int) bool { return p.at[k].off >= start })
		if k == len(p.at) || p.at[k].off != start {
			return fmt.Errorf("block %d of the list, at file offset %d, starts no Data record of the entry", i, start)
		}
		first := p.at[k]
		last := first
		for j := k; j < len(p.at) && p.at[j].off < end; j++ {
			last = p.at[j]
		}
		if last.off+last.n < end {
			return fmt.Errorf("block %d of the list, at file offset %d, runs past the entry's Data records", i, start)
		}
		b.Loc = fileindex.Location{Seq: first.seq, Off: first.stream, InBlock: first.in, EndSeq: last.seq, Len: b.Loc.Len}
	}
	return nil
}
