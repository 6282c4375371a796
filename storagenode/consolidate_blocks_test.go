package storagenode

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/assemble/assembletest"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// TestRebuildAssemblesBlocks: a large file whose version kept a block of
// an earlier session (twice) is assembled by the node (the block's read
// comes before the entry goes to the writer) and written whole with every
// block starting a Data record of its own and a block list that names no
// other session; a block that does not come, or comes wrong, fails the
// consolidation, named.
func TestRebuildAssemblesBlocks(t *testing.T) {
	f := assembletest.Sample()
	want := f.Content
	rr := &wire.ReadRequest{SessionID: uuid.New(), Locs: []wire.ReadLoc{
		{Path: fileindex.Path(f.Entry.Path), Loc: f.List.Blocks[0].Loc, Block: &wire.BlockRead{At: f.At}},
	}}
	block := func(a *rebuild, data string) error {
		if took, err := a.record(rr, volume.RecBlockStart, []byte{0}); !took || err != nil {
			return err
		}
		_, body, _, _ := volume.ParseRecord(f.BlockData([]byte(data)))
		_, err := a.record(rr, volume.RecData, body)
		return err
	}
	entry := func(a *rebuild, put func([]byte) error) error {
		recs := f.EntryRecords()
		for len(recs) > 0 {
			t, body, n, err := volume.ParseRecord(recs)
			if err != nil {
				return err
			}
			recs = recs[n:]
			switch t {
			case volume.RecFileHeader:
				var held bool
				if held, err = a.header(&f.Entry, body); err == nil && !held {
					err = errors.New("the entry's header was not held for the assembly")
				}
			case volume.RecData:
				err = a.data(body)
			case volume.RecFileEnd:
				err = a.end(body, put)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	for _, c := range []struct {
		name, data, fails string
	}{
		{"whole", "abcd", ""},
		{"block missing", "", "8 of the 8 bytes of its blocks kept from earlier backups did not come"},
		{"block wrong", "abcX", "does not match the digest"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := newRebuild(t.TempDir())
			defer a.close()
			a.expect(rr)
			if c.data != "" {
				if err := block(a, c.data); err != nil {
					t.Fatal(err)
				}
			}
			var out []byte
			err := entry(a, func(b []byte) error { out = append(out, b...); return nil })
			if err == nil {
				err = a.finish()
			}
			if c.fails != "" {
				if err == nil || !strings.Contains(err.Error(), c.fails) {
					t.Fatalf("err %v, want one saying %q", err, c.fails)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var content []byte
			var starts []int64
			var list *fileindex.BlockList
			for len(out) > 0 {
				rt, body, n, err := volume.ParseRecord(out)
				if err != nil {
					t.Fatal(err)
				}
				out = out[n:]
				switch rt {
				case volume.RecData:
					off, data, _ := volume.DecodeData(body)
					starts = append(starts, off)
					content = append(content, data...)
				case volume.RecFileEnd:
					_, _, list, _ = volume.DecodeFileEnd(body)
				}
			}
			if string(content) != string(want) || len(starts) != 3 || starts[1] != 4 || starts[2] != 8 {
				t.Fatalf("written %q in records at %v, want %q a record per block", content, starts, want)
			}
			if list == nil || len(list.Sessions) != 0 || len(list.Blocks) != 3 || list.Bits != 20 {
				t.Fatalf("block list %+v: want the three blocks in the new session", list)
			}
			for i, b := range list.Blocks {
				if b.Session != 0 || b.Loc != (fileindex.Location{Len: 4}) || b.Hash != f.Hashes[[]int{0, 1, 0}[i]] {
					t.Fatalf("block %d: %+v", i, b)
				}
			}
		})
	}
}
