// Package assembletest is the large file both assemblers of package
// assemble are tested with (the agent's restore and the storage node's
// synthetic full), so that the two are held to the same case.
package assembletest

import (
	"crypto/sha256"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
)

// File is a file of 12 bytes in three blocks of 4: the first and the last
// are one block kept from an earlier session (Kept, held at offsets 0 and
// 8), the middle one was sent with the entry.
type File struct {
	Entry   fileindex.Entry
	Content []byte
	Kept    []byte
	At      []int64
	Hashes  [2][32]byte // of the kept block and of the one sent
	List    *fileindex.BlockList
}

// Sample is the file, at path /db.
func Sample() File {
	f := File{
		Entry:   fileindex.Entry{Path: "/db", Type: fileindex.TypeFile, Size: 12, Mode: 0o640},
		Content: []byte("abcdefghabcd"),
		Kept:    []byte("abcd"),
		At:      []int64{0, 8},
		Hashes:  [2][32]byte{sha256.Sum256([]byte("abcd")), sha256.Sum256([]byte("efgh"))},
	}
	kept := fileindex.Block{Hash: f.Hashes[0], Session: 1, Loc: fileindex.Location{Seq: 3, Len: 4}}
	f.List = &fileindex.BlockList{Bits: 20, Sessions: [][16]byte{{1}}, Blocks: []fileindex.Block{
		kept, {Hash: f.Hashes[1], Loc: fileindex.Location{Len: 4}}, kept,
	}}
	return f
}

// EntryRecords are the entry's records as its own session's read gives
// them: FileHeader, the Data record of the block it sent, and FileEnd
// with the digest of the whole content and the block list.
func (f File) EntryRecords() []byte {
	sum := sha256.Sum256(f.Content)
	b := volume.AppendRecord(nil, volume.RecFileHeader, fileindex.AppendEntry(nil, &f.Entry))
	b = volume.AppendDataRecord(b, 4, f.Content[4:8])
	return volume.AppendFileEndBlocks(b, volume.EndOK, sum[:], f.List)
}

// BlockData is the Data record of the kept block, data standing for its
// bytes, at the offset it had in the version that stored it.
func (f File) BlockData(data []byte) []byte {
	return volume.AppendDataRecord(nil, 100, data)
}
