package volume

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cairnbackup/cairn/chunk"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/google/uuid"
)

// The golden volume of format 4: a full backup of a disk image with holes
// (8 MiB, two data runs, a hole at its end) sent by blocks run by run, and
// an incremental after 4 KiB of it changed in place and 64 KiB were
// written into a hole, which sends the blocks around the changes and the
// new run, and lists the others where the full put them. Written once, by
//
//	go test ./media/volume -run TestGoldenGenerateV4 -update-golden
//
// (which refuses to overwrite it), with the golden key of version 1.
const (
	goldenV4Volume = "testdata/golden-v4.cvol"
	goldenV4Key    = "testdata/golden-v4.key.json"
	// goldenV4SHA256 is the digest of the committed golden-v4 volume.
	goldenV4SHA256 = "0c4cdd5750695ff1b867afffc5fadb170ddb9dd9130d4187c6f28f216feafe6b"
)

var (
	goldenV4ID   = uuid.MustParse("c0ffee00-0001-4000-8000-0000000cafe4")
	goldenV4Full = uuid.MustParse("c0ffee00-0004-4000-8000-000000000001")
	goldenV4Incr = uuid.MustParse("c0ffee00-0004-4000-8000-000000000002")
)

// goldenV4Size is the image's size; goldenV4Bits the size class it was
// cut with, fixed with the volume.
const (
	goldenV4Size = 8 << 20
	goldenV4Bits = chunk.Gear + 17
)

// goldenV4Contents are the image's two versions: its data runs and their
// bytes, in offset order.
func goldenV4Contents() (v1, v2 []fileindex.Run, d1, d2 [][]byte) {
	rnd := rand.New(rand.NewPCG(4, 4))
	a, b := textLike(rnd, 1<<20), textLike(rnd, 3<<19)
	v1 = []fileindex.Run{{Off: 0, Len: 1 << 20}, {Off: 4 << 20, Len: 3 << 19}}
	d1 = [][]byte{a, b}
	b2 := bytes.Clone(b)
	copy(b2[700<<10:], bytes.Repeat([]byte("changed!"), 512))
	c := textLike(rnd, 64<<10)
	v2 = []fileindex.Run{v1[0], {Off: 2 << 20, Len: 64 << 10}, v1[1]}
	d2 = [][]byte{a, c, b2}
	return v1, v2, d1, d2
}

// goldenV4Stream is the stream an agent sends for the image, given the
// block list of its base version (whose blocks are in session base).
func goldenV4Stream(t testing.TB, runs []fileindex.Run, data [][]byte, mtime int64, base *fileindex.BlockList, baseSession uuid.UUID) []byte {
	t.Helper()
	stream := AppendRecord(nil, RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{
		Path: "/var/lib/vm/disk.img", Type: fileindex.TypeFile, Mode: 0o600, Size: goldenV4Size, MTime: mtime, HashKind: fileindex.HashSparseSHA256}))
	bl := &fileindex.BlockList{Bits: goldenV4Bits, Runs: runs}
	sum := fileindex.NewSparseHash()
	for k, run := range runs {
		stream = goldenCut(t, stream, bl, int64(run.Off), data[k], base, baseSession, sum.Add)
	}
	return AppendFileEndBlocks(stream, EndOK, sum.Sum(nil, goldenV4Size), bl)
}

func TestGoldenGenerateV4(t *testing.T) {
	if !*updateGolden {
		return
	}
	r1, r2, d1, d2 := goldenV4Contents()
	goldenGenerateBlocks(t, goldenV4Volume, goldenV4Key, 4, goldenV4ID, goldenV4Full, goldenV4Incr, func(i int, mtime int64, base *fileindex.BlockList) []byte {
		return goldenV4Stream(t, [][]fileindex.Run{r1, r2}[i], [][][]byte{d1, d2}[i], mtime, base, goldenV4Full)
	})
}

// TestGoldenV4 reads the committed golden volume of format 4: its label,
// its two sessions, the block lists with their data runs (the
// incremental's blocks in the full's session, and the ones it sent), and
// both versions of the image, the second assembled from the blocks of
// both sessions, each read by its place alone and put at the offset its
// list's runs give, the holes left untouched.
func TestGoldenV4(t *testing.T) {
	key, parts, entries, open := goldenBlockSessions(t, goldenV4Volume, goldenV4SHA256, 4, goldenV4ID)
	r1, r2, d1, d2 := goldenV4Contents()
	kept, sent := 0, 0
	for _, b := range entries[1].Blocks.Blocks {
		if b.Session == 1 {
			kept++
		} else {
			sent++
		}
	}
	if entries[1].Blocks.Sessions[0] != goldenV4Full || kept == 0 || sent == 0 || sent > 4 {
		t.Fatalf("incremental: %d blocks kept in %x, %d sent", kept, entries[1].Blocks.Sessions, sent)
	}
	for i, want := range []struct {
		runs []fileindex.Run
		data [][]byte
	}{{r1, d1}, {r2, d2}} {
		bl := entries[i].Blocks
		if len(bl.Runs) != len(want.runs) || entries[i].HashKind != fileindex.HashSparseSHA256 || entries[i].Size != goldenV4Size {
			t.Fatalf("version %d: runs %v, hash kind %v, size %d", i+1, bl.Runs, entries[i].HashKind, entries[i].Size)
		}
		// Assemble: the blocks of each session, read by place, each at
		// the offset the runs give; what no block wrote is a hole.
		got := make([]byte, goldenV4Size)
		written := make([]bool, goldenV4Size)
		bySession := map[uuid.UUID][]fileindex.Location{}
		at := map[uuid.UUID][]int64{}
		own := parts[i].Header.SessionID
		offs := bl.Offsets()
		for j, b := range bl.Blocks {
			s := uuid.UUID(bl.SessionOf(j, own))
			bySession[s] = append(bySession[s], b.Loc)
			at[s] = append(at[s], offs[j])
		}
		for _, p := range parts {
			sid := p.Header.SessionID
			sr := NewSessionReader(sid, key, []PartRef{p.Ref()}, open, ReaderOptions{})
			var pos int64
			err := sr.ReadEntries(context.Background(), bySession[sid], func(rt RecordType, body []byte) error {
				switch rt {
				case RecBlockStart:
					k, err := BlockIndex(body)
					if err != nil {
						return err
					}
					pos = at[sid][k]
				case RecData:
					_, d, _ := DecodeData(body)
					copy(got[pos:], d)
					for k := range d {
						written[pos+int64(k)] = true
					}
					pos += int64(len(d))
				}
				return nil
			}, nil)
			sr.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
		wantImage := make([]byte, goldenV4Size)
		wantWritten := make([]bool, goldenV4Size)
		sum := fileindex.NewSparseHash()
		for k, run := range want.runs {
			if bl.Runs[k] != run {
				t.Fatalf("version %d: run %d is %+v, want %+v", i+1, k, bl.Runs[k], run)
			}
			copy(wantImage[run.Off:], want.data[k])
			for j := range want.data[k] {
				wantWritten[int(run.Off)+j] = true
			}
			sum.Add(int64(run.Off), want.data[k])
		}
		if !bytes.Equal(got, wantImage) || !slices.Equal(written, wantWritten) {
			t.Errorf("version %d assembled from its blocks differs, or writes into its holes", i+1)
		}
		if !bytes.Equal(entries[i].Hash, sum.Sum(nil, goldenV4Size)) {
			t.Errorf("version %d: index digest %x", i+1, entries[i].Hash)
		}
	}
}
