package volume

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
)

// TestBlocksPlacedAndReadByLocation: the writer gives each block a file
// sent by blocks carried with it the place of its first Data record, the
// index entry keeps the list, and ReadEntries reads one block by that
// place alone, announced by a BlockStart, and no more than it.
func TestBlocksPlacedAndReadByLocation(t *testing.T) {
	key := testKey("blocks")
	vol := newMemVolume(t, MinBlockSize, 0)
	info := sessionInfo()
	w, err := NewSessionWriter(info, key, vol, WriterOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	// A file before, so the blocks do not start the stream.
	stream := AppendRecord(nil, RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: "/a", Type: fileindex.TypeFile, Size: 5}))
	stream = AppendDataRecord(stream, 0, []byte("hello"))
	stream = AppendFileEnd(stream, EndOK, make([]byte, 32))
	if err := w.Write(append(stream, blocksSeed()...)); err != nil {
		t.Fatal(err)
	}
	res, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	es := indexEntries(t, res)
	db := es[1]
	if db.Path != "/db" || db.Blocks == nil || len(db.Blocks.Blocks) != 3 {
		t.Fatalf("index entry of /db: %+v", db)
	}
	b0, b1, b2 := db.Blocks.Blocks[0].Loc, db.Blocks.Blocks[1].Loc, db.Blocks.Blocks[2].Loc
	if b0.Seq != db.Loc.Seq || b0.InBlock <= db.Loc.InBlock || b0.Off != db.Loc.Off || b2.InBlock <= b0.InBlock || b0.Len != 1000 {
		t.Fatalf("blocks sent with the entry placed at %+v and %+v; the entry at %+v", b0, b2, db.Loc)
	}
	if b1.Seq != 4 || b1.Off != 9000 || b1.InBlock != 12 || db.Blocks.Blocks[1].Session != 1 {
		t.Fatalf("the block kept from another session was moved: %+v", b1)
	}
	sr := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vol), ReaderOptions{})
	defer sr.Close()
	var got []string
	err = sr.ReadEntries(context.Background(), []fileindex.Location{es[0].Loc, b2}, func(rt RecordType, body []byte) error {
		switch rt {
		case RecBlockStart:
			i, err := BlockIndex(body)
			if err != nil || i != 1 {
				t.Fatalf("BlockStart names location %d (%v), want 1", i, err)
			}
			got = append(got, "start")
		case RecData:
			off, data, _ := DecodeData(body)
			if off == 2000 && !bytes.Equal(data, bytes.Repeat([]byte{3}, 1000)) {
				t.Fatal("the block's data differs")
			}
			got = append(got, "data")
		default:
			got = append(got, rt.String())
		}
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The entry /a whole, then the block: its start and its one record,
	// not the FileEnd after it nor the other block.
	if want := []string{"FileHeader", "data", "FileEnd", "start", "data"}; !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
}
