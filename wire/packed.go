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
//	version (1 or 2), number of reads
//	per read:    length and bytes of the read in JSON without its locs
//	             (session, key and parts: a handful per read), number of locs
//	per loc:     flags (1 ancestor, 2 block, 4 len, and from version 2
//	             8 follows), length and bytes of the
//	             path, Seq, Off, InBlock, EndSeq, Len if flag 4,
//	             and with flag 2 the number of offsets of the block and
//	             each (signed: binary.AppendVarint)
//
// Every field of ReadLoc, fileindex.Location and BlockRead is in it; a test
// fails when one of them gains a field this form does not carry.
//
// A form that changes is a new version: the node says in its request the
// newest it reads, and the servers write no newer one. Version 2 added
// ReadLoc.Follows, which version 1 cannot carry: it is left out.
const PackedVersion = 2

const (
	packedAncestor = 1 << iota
	packedBlock
	packedLen
	packedFollows
	packedFlags1 = packedAncestor | packedBlock | packedLen
	packedFlags  = packedFlags1 | packedFollows
)

// PackReads writes reads in the packed form of version (1 up to
// PackedVersion).
func PackReads(reads []ReadRequest, version int) ([]byte, error) {
	if version < 1 || version > PackedVersion {
		return nil, fmt.Errorf("pack reads: version %d, this program writes 1 to %d", version, PackedVersion)
	}
	b := binary.AppendUvarint(nil, uint64(version))
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
			b = appendLoc(b, &reads[i].Locs[j], version)
		}
	}
	return b, nil
}

func appendLoc(b []byte, l *ReadLoc, version int) []byte {
	var flags uint64
	if l.Follows && version >= 2 {
		flags |= packedFollows
	}
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
	d := varint.Reader{B: data}
	version := d.Uint()
	if d.Err == nil && (version < 1 || version > PackedVersion) {
		return nil, fmt.Errorf("%w: version %d, this program reads 1 to %d", ErrPacked, version, PackedVersion)
	}
	known := uint64(packedFlags)
	if version < 2 {
		known = packedFlags1
	}
	// A read is at least its head's length, a head of "{}" and its
	// locations' count. What is reserved ahead stays small whatever the
	// counts say: a count the bytes cannot back fails on the way.
	n := d.Count(4)
	reads := make([]ReadRequest, 0, min(n, 256))
	for i := 0; i < n && d.Err == nil; i++ {
		var rr ReadRequest
		if js := d.Bytes(); d.Err == nil {
			if err := json.Unmarshal(js, &rr); err != nil {
				return nil, fmt.Errorf("%w: read %d: %v", ErrPacked, i, err)
			}
		}
		// A loc is at least its flags, its path's length and four
		// numbers.
		m := d.Count(6)
		rr.Locs = nil // empty lists come back nil, as from no JSON list
		if m > 0 {
			rr.Locs = make([]ReadLoc, 0, min(m, 4096))
		}
		for j := 0; j < m && d.Err == nil; j++ {
			var l ReadLoc
			loc(&d, &l, known)
			rr.Locs = append(rr.Locs, l)
		}
		reads = append(reads, rr)
	}
	if d.Err == nil && len(d.B) > 0 {
		d.Err = fmt.Errorf("%d bytes after the last read", len(d.B))
	}
	if d.Err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPacked, d.Err)
	}
	return reads, nil
}

// loc reads one location of a read.
func loc(d *varint.Reader, l *ReadLoc, known uint64) {
	flags := d.Uint()
	if d.Err == nil && flags&^known != 0 {
		d.Err = fmt.Errorf("unknown flags %#x", flags)
		return
	}
	l.Ancestor = flags&packedAncestor != 0
	l.Follows = flags&packedFollows != 0
	l.Path = fileindex.Path(d.Bytes())
	l.Loc.Seq = d.Uint()
	l.Loc.Off = d.Uint()
	inBlock := d.Uint()
	if d.Err == nil && inBlock > 1<<32-1 {
		d.Err = fmt.Errorf("in-block offset %d", inBlock)
		return
	}
	l.Loc.InBlock = uint32(inBlock)
	l.Loc.EndSeq = d.Uint()
	if flags&packedLen != 0 {
		if l.Loc.Len = d.Uint(); d.Err == nil && l.Loc.Len == 0 {
			d.Err = errors.New("a length flagged and zero")
		}
	}
	if flags&packedBlock != 0 {
		l.Block = &BlockRead{}
		n := d.Count(1)
		if n > 0 {
			l.Block.At = make([]int64, 0, min(n, 64))
		}
		for i := 0; i < n && d.Err == nil; i++ {
			l.Block.At = append(l.Block.At, d.Int())
		}
	}
}
