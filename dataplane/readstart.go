package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/varint"
)

// A restore's ReadStart frames name every entry it brings back: in JSON,
// an object per entry, encoded by the node and decoded by the agent, which
// took about 2% of a restore's CPU on the bench tree (50,000 small files).
// An agent that says in its Hello that it reads the packed form (Packed)
// gets them as FrameReadStartPacked; a node that does not know the field
// sends JSON, which the agent still reads, and an agent that does not set
// it gets JSON.
//
// The packed form, every number an unsigned varint (binary.AppendUvarint):
//
//	version (1), the session's 16 bytes, number of entries
//	per entry: flags (1 ancestor, 2 block), the bytes its path shares
//	           with the previous entry's path, the length and bytes of
//	           the rest
//
// Entries come in stream order, which is mostly the tree's, so a path
// shares its directory with the one before it: the form is about a third
// of the JSON's size on the bench tree.
//
// A form that changes is a new version: the agent names the newest it
// reads in its Hello, and a node writes no newer one.
const PackedReadStartVersion = 1

const (
	startAncestor = 1 << iota
	startBlock
	startFlags = startAncestor | startBlock
)

// minJSONEntry is the size of the smallest entry of a ReadStart in JSON:
// {"path":""} and a comma.
const minJSONEntry = len(`{"path":""},`)

// ErrPackedReadStart is a packed ReadStart that does not decode.
var ErrPackedReadStart = errors.New("malformed packed read start")

// PackReadStart writes rs in the packed form.
func PackReadStart(rs *ReadStart) []byte {
	b := binary.AppendUvarint(make([]byte, 0, 32+len(rs.Entries)*16), PackedReadStartVersion)
	b = append(b, rs.SessionID[:]...)
	b = binary.AppendUvarint(b, uint64(len(rs.Entries)))
	var prev fileindex.Path
	for _, e := range rs.Entries {
		var flags uint64
		if e.Ancestor {
			flags |= startAncestor
		}
		if e.Block {
			flags |= startBlock
		}
		shared := 0
		for shared < len(prev) && shared < len(e.Path) && prev[shared] == e.Path[shared] {
			shared++
		}
		b = binary.AppendUvarint(b, flags)
		b = binary.AppendUvarint(b, uint64(shared))
		b = binary.AppendUvarint(b, uint64(len(e.Path)-shared))
		b = append(b, e.Path[shared:]...)
		prev = e.Path
	}
	return b
}

// UnpackReadStart reads what PackReadStart wrote. The bytes come from the
// storage node: no count is believed beyond what the bytes left can hold,
// and the entries are no more, and their paths together no longer, than
// in the JSON ReadStart a frame could carry, however much they share.
func UnpackReadStart(data []byte) (ReadStart, error) {
	rs, err := unpackReadStart(data)
	if err != nil {
		return ReadStart{}, fmt.Errorf("%w: %v", ErrPackedReadStart, err)
	}
	return rs, nil
}

func unpackReadStart(b []byte) (ReadStart, error) {
	var rs ReadStart
	d := varint.Reader{B: b}
	if v := d.Uint(); d.Err == nil && v != PackedReadStartVersion {
		return rs, fmt.Errorf("version %d, this program reads %d", v, PackedReadStartVersion)
	}
	if id := d.Next(uint64(len(rs.SessionID))); d.Err == nil {
		rs.SessionID = uuid.UUID(id)
	}
	// An entry is at least its flags and two lengths; and a frame names
	// no more entries than one in JSON could, where the smallest takes
	// minJSONEntry bytes, so that its few bytes each cannot make the agent
	// hold more entries than before.
	n := d.Count(3)
	if n > MaxFrame/minJSONEntry {
		return rs, fmt.Errorf("%d entries announced, more than a frame of JSON could name", n)
	}
	if n > 0 {
		rs.Entries = make([]ReadEntry, 0, min(n, 4096)) // empty comes back nil, as from JSON
	}
	var prev []byte
	total := 0
	for i := 0; i < n && d.Err == nil; i++ {
		flags := d.Uint()
		if d.Err == nil && flags&^startFlags != 0 {
			return rs, fmt.Errorf("entry %d has flags %#x, which this program does not know", i, flags)
		}
		shared := d.Uint()
		if d.Err == nil && shared > uint64(len(prev)) {
			return rs, fmt.Errorf("entry %d shares %d bytes of a path of %d", i, shared, len(prev))
		}
		rest := d.Bytes()
		if total += int(shared) + len(rest); total > MaxFrame {
			return rs, fmt.Errorf("entry %d: paths of more than %d bytes in all", i, MaxFrame)
		}
		prev = append(prev[:shared], rest...)
		rs.Entries = append(rs.Entries, ReadEntry{Path: fileindex.Path(prev), Ancestor: flags&startAncestor != 0, Block: flags&startBlock != 0})
	}
	if d.Err == nil && len(d.B) > 0 {
		d.Err = fmt.Errorf("%d bytes after the last entry", len(d.B))
	}
	return rs, d.Err
}
