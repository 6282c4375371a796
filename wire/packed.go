package wire

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/varint"
)

// A restore plan's page in JSON took the servers and the storage node
// about a twentieth of a restore's CPU: tens of thousands of read locations
// per page, each an object with a path and five numbers. A node that asks
// for packed pages (RestorePlanReq.Packed) gets the reads of each page in
// the form PackReads writes; a server that does not know the field answers
// in JSON, which the node still reads. A page holds what it would hold in
// JSON (pages go by their JSON size, and a new leader must cut the same
// pages), in fewer bytes; but the packed bytes go as base64 in the JSON
// envelope, so a page of long paths, which packing hardly shrinks, would
// outgrow its message packed, and the server sends that one in JSON.
//
// The packed form, every number an unsigned varint (binary.AppendUvarint):
//
//	version (1), number of reads
//	per read:    length and bytes of the read in JSON without its locs
//	             (session, key and parts: a handful per read), number of locs
//	per loc:     flags (1 ancestor, 2 block, 4 len), length and bytes of the
//	             path, Seq, Off, InBlock, EndSeq, Len if flag 4,
//	             and with flag 2 the number of offsets of the block and
//	             each (signed: binary.AppendVarint)
//
// Every field of ReadLoc, fileindex.Location and BlockRead is in it; a test
// fails when one of them gains a field this form does not carry.
//
// A form that changes is a new version: the node says in its request the
// newest it reads, and the servers write no newer one.
const PackedVersion = 1

const (
	packedAncestor = 1 << iota
	packedBlock
	packedLen
	packedFlags = packedAncestor | packedBlock | packedLen
)

// PackReads writes reads in the packed form.
func PackReads(reads []ReadRequest) ([]byte, error) {
	b := binary.AppendUvarint(nil, PackedVersion)
	b = binary.AppendUvarint(b, uint64(len(reads)))
	for i := range reads {
		head := reads[i]
		head.Locs = nil
		js, err := json.Marshal(&head)
		if err != nil {
			return nil, fmt.Errorf("pack read %d: %w", i, err)
		}
		b = binary.AppendUvarint(b, uint64(len(js)))
		b = append(b, js...)
		b = binary.AppendUvarint(b, uint64(len(reads[i].Locs)))
		for j := range reads[i].Locs {
			b = appendLoc(b, &reads[i].Locs[j])
		}
	}
	return b, nil
}

func appendLoc(b []byte, l *ReadLoc) []byte {
	var flags uint64
	if l.Ancestor {
		flags |= packedAncestor
	}
	if l.Block != nil {
		flags |= packedBlock
	}
	if l.Loc.Len != 0 {
		flags |= packedLen
	}
	b = binary.AppendUvarint(b, flags)
	b = binary.AppendUvarint(b, uint64(len(l.Path)))
	b = append(b, l.Path...)
	b = binary.AppendUvarint(b, l.Loc.Seq)
	b = binary.AppendUvarint(b, l.Loc.Off)
	b = binary.AppendUvarint(b, uint64(l.Loc.InBlock))
	b = binary.AppendUvarint(b, l.Loc.EndSeq)
	if l.Loc.Len != 0 {
		b = binary.AppendUvarint(b, l.Loc.Len)
	}
	if l.Block != nil {
		b = binary.AppendUvarint(b, uint64(len(l.Block.At)))
		for _, at := range l.Block.At {
			b = binary.AppendVarint(b, at)
		}
	}
	return b
}

// ErrPacked is packed reads that do not decode.
var ErrPacked = errors.New("malformed packed restore reads")

// UnpackReads reads what PackReads wrote. The bytes come from the servers:
// no count is believed beyond what the bytes left can hold.
func UnpackReads(data []byte) ([]ReadRequest, error) {
	d := unpacker{b: data}
	if v := d.uint(); d.err == nil && v != PackedVersion {
		return nil, fmt.Errorf("%w: version %d, this program reads %d", ErrPacked, v, PackedVersion)
	}
	// A read is at least its head's length, a head of "{}" and its
	// locations' count. What is reserved ahead stays small whatever the
	// counts say: a count the bytes cannot back fails on the way.
	n := d.count(4)
	reads := make([]ReadRequest, 0, min(n, 256))
	for i := 0; i < n && d.err == nil; i++ {
		var rr ReadRequest
		if js := d.bytes(); d.err == nil {
			if err := json.Unmarshal(js, &rr); err != nil {
				return nil, fmt.Errorf("%w: read %d: %v", ErrPacked, i, err)
			}
		}
		// A loc is at least its flags, its path's length and four
		// numbers.
		m := d.count(6)
		rr.Locs = nil // empty lists come back nil, as from no JSON list
		if m > 0 {
			rr.Locs = make([]ReadLoc, 0, min(m, 4096))
		}
		for j := 0; j < m && d.err == nil; j++ {
			var l ReadLoc
			d.loc(&l)
			rr.Locs = append(rr.Locs, l)
		}
		reads = append(reads, rr)
	}
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%d bytes after the last read", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPacked, d.err)
	}
	return reads, nil
}

// unpacker reads varints and byte strings off b; the first error stops it.
type unpacker struct {
	b   []byte
	err error
}

func (d *unpacker) uint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := varint.Uvarint(d.b)
	switch {
	case n == 0:
		d.err = errors.New("a number runs past the end")
	case n < 0:
		d.err = errors.New("a number longer than 64 bits, or padded")
	default:
		d.b = d.b[n:]
	}
	return v
}

// int reads a signed number, zigzag on an unsigned one as
// binary.AppendVarint writes it.
func (d *unpacker) int() int64 {
	u := d.uint()
	return int64(u>>1) ^ -int64(u&1)
}

// count reads a number of items of at least min bytes each.
func (d *unpacker) count(min int) int {
	v := d.uint()
	if d.err == nil && v > uint64(len(d.b)/min) {
		d.err = fmt.Errorf("%d items announced, with %d bytes left", v, len(d.b))
	}
	if d.err != nil {
		return 0
	}
	return int(v)
}

func (d *unpacker) bytes() []byte {
	n := d.uint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%d bytes announced, %d left", n, len(d.b))
	}
	if d.err != nil {
		return nil
	}
	out := d.b[:n:n]
	d.b = d.b[n:]
	return out
}

func (d *unpacker) loc(l *ReadLoc) {
	flags := d.uint()
	if d.err == nil && flags&^packedFlags != 0 {
		d.err = fmt.Errorf("unknown flags %#x", flags)
		return
	}
	l.Ancestor = flags&packedAncestor != 0
	l.Path = fileindex.Path(d.bytes())
	l.Loc.Seq = d.uint()
	l.Loc.Off = d.uint()
	inBlock := d.uint()
	if d.err == nil && inBlock > 1<<32-1 {
		d.err = fmt.Errorf("in-block offset %d", inBlock)
		return
	}
	l.Loc.InBlock = uint32(inBlock)
	l.Loc.EndSeq = d.uint()
	if flags&packedLen != 0 {
		if l.Loc.Len = d.uint(); d.err == nil && l.Loc.Len == 0 {
			d.err = errors.New("a length flagged and zero")
		}
	}
	if flags&packedBlock != 0 {
		l.Block = &BlockRead{}
		n := d.count(1)
		if n > 0 {
			l.Block.At = make([]int64, 0, min(n, 64))
		}
		for i := 0; i < n && d.err == nil; i++ {
			l.Block.At = append(l.Block.At, d.int())
		}
	}
}
