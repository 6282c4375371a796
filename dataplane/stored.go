package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A StoredBlock frame carries a data block of a volume as the storage node
// read it, decrypted but still compressed, where the agent would otherwise
// get its records one by one after the node decompressed them: the bytes
// on the connection (and so TLS's work at both ends) shrink to what the
// volume stores, and the decompression moves to the agent, which needs no
// walk of its own beyond the one it makes of any Records frame. The node
// sends one only for a block that lies wholly inside a run of a read's
// locations that are consecutive entries of the session's index
// (wire.ReadLoc.Follows, wire.ReadRequest.Adjacent;
// volume.SessionReader.ReadAdjacent); decompressed, it
// is exactly what a Records frame of that block's records would carry.
//
// Payload: uvarint version (StoredBlockVersion), uvarint codec (the
// volume's compression flag: 1 zstd, 4 s2, media/volume/FORMAT.md section
// 2), uvarint length of the records once decompressed, then the compressed
// bytes.

// StoredBlockVersion is the form of StoredBlock frames this program writes
// and reads.
const StoredBlockVersion = 1

// ErrStoredBlock is a StoredBlock frame that does not decode.
var ErrStoredBlock = errors.New("malformed stored block")

// AppendStoredHead appends the head of a StoredBlock frame's payload; the
// compressed bytes follow it.
func AppendStoredHead(dst []byte, codec uint16, rawLen int) []byte {
	dst = binary.AppendUvarint(dst, StoredBlockVersion)
	dst = binary.AppendUvarint(dst, uint64(codec))
	return binary.AppendUvarint(dst, uint64(rawLen))
}

// ParseStoredBlock splits a StoredBlock frame's payload. The length is
// bounded by MaxFrame here; the decompressor checks the codec and holds
// the records to that length.
func ParseStoredBlock(p []byte) (codec uint16, rawLen int, data []byte, err error) {
	v, n := binary.Uvarint(p)
	if n <= 0 || v != StoredBlockVersion {
		return 0, 0, nil, fmt.Errorf("%w: version %d (%d bytes), this program reads %d", ErrStoredBlock, v, n, StoredBlockVersion)
	}
	p = p[n:]
	c, n := binary.Uvarint(p)
	if n <= 0 || c == 0 || c > 0xffff {
		return 0, 0, nil, fmt.Errorf("%w: codec %d", ErrStoredBlock, c)
	}
	p = p[n:]
	l, n := binary.Uvarint(p)
	if n <= 0 || l == 0 || l > MaxFrame {
		return 0, 0, nil, fmt.Errorf("%w: %d bytes of records, outside 1..%d", ErrStoredBlock, l, MaxFrame)
	}
	return uint16(c), int(l), p[n:], nil
}
