package fileindex

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/cairnbackup/cairn/chunk"
)

// largeVersion is the entry of a 64 MiB file cut into 1 MiB blocks, as an
// incremental stores it after a change in place: two blocks in its own
// session, the others where its earlier version put them.
func largeVersion(n int) Entry {
	e := Entry{Path: "/var/lib/db/main.db", Type: TypeFile, Mode: 0o640, UID: 999, GID: 999,
		User: "postgres", Group: "postgres", Size: int64(n) << 20, MTime: 1700000000123456789,
		ATime: 1700000000123456789, CTime: 1700000000123456789, Dev: 2049, Inode: 7340033, NLink: 1,
		Hash: make([]byte, 32), Loc: Location{Seq: 1200, Off: 1258291200, InBlock: 52311, EndSeq: 1203}}
	bl := &BlockList{Bits: 20, Sessions: [][16]byte{{1, 2, 3}}}
	for i := range n {
		b := Block{Hash: sha256.Sum256(fmt.Appendf(nil, "%d", i)), Session: 1,
			Loc: Location{Seq: uint64(10 + i), Off: uint64(10+i) << 20, InBlock: uint32(i * 977 % 1000000), EndSeq: uint64(11 + i), Len: 1 << 20}}
		if i == 3 || i == 40 {
			b.Session = 0
			b.Loc = Location{Seq: 1200 + uint64(i)/40, Off: 1258291200, InBlock: 60000, EndSeq: 1201 + uint64(i)/40, Len: 1 << 20}
		}
		bl.Blocks = append(bl.Blocks, b)
	}
	e.Blocks = bl
	return e
}

func TestBlockListRoundTrip(t *testing.T) {
	e := largeVersion(64)
	got, err := DecodeEntry(AppendEntry(nil, &e))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got.Blocks, e.Blocks)
	}
	if s := got.Blocks.Size(); s != 64<<20 {
		t.Fatalf("size %d", s)
	}
	if got.Blocks.SessionOf(0, [16]byte{9}) != ([16]byte{1, 2, 3}) || got.Blocks.SessionOf(3, [16]byte{9}) != ([16]byte{9}) {
		t.Fatal("SessionOf")
	}
}

// TestBlockListBytes holds the index's cost: an entry without a block list
// (every file under chunk.Threshold) encodes to exactly the bytes it did
// before block lists existed, and a large file's list costs about 45 bytes
// per block, a 64 MiB file about 3 KB, logged for the design notes.
func TestBlockListBytes(t *testing.T) {
	small := sampleEntry()
	before := len(AppendEntry(nil, &small))
	// The encoding of sampleEntry as it was before tag 25 existed.
	const want = 199
	if before != want {
		t.Fatalf("an entry without blocks encodes to %d bytes, was %d: small files must not grow", before, want)
	}
	for _, n := range []int{2, 64, 1024} {
		e := largeVersion(n)
		with := len(AppendEntry(nil, &e))
		e.Blocks = nil
		without := len(AppendEntry(nil, &e))
		per := float64(with-without) / float64(n)
		t.Logf("%d MiB file in %d blocks: entry %d bytes, %d without its list: %.1f bytes per block", n, n, with, without, per)
		if with-without > 50*n+24 { // and the list's head: class, session table
			t.Errorf("%.1f bytes per block, want at most 50", per)
		}
	}
}

func TestDecodeBlockListRefuses(t *testing.T) {
	good := AppendBlockList(nil, largeVersion(3).Blocks)
	for name, b := range map[string][]byte{
		"empty":            nil,
		"cut":              good[:len(good)-1],
		"trailing":         append(append([]byte{}, good...), 0),
		"huge count":       {20, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"huge sessions":    {20, 0xff, 0xff, 0x03},
		"session past end": append(append([]byte{20, 0, 1}, make([]byte, 32)...), 1, 1, 0, 0, 0, 0),
		"zero length":      append(append([]byte{20, 0, 1}, make([]byte, 32)...), 0, 0, 0, 0, 0, 0),
	} {
		if _, err := DecodeBlockList(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

// FuzzDecodeBlockList decodes arbitrary bytes as a block list, as a storage
// node does with a FileEnd an agent sent and a reader with an index entry
// from a volume: a malformed one is ErrCorrupt, and one that decodes
// encodes back to the same bytes.
func FuzzDecodeBlockList(f *testing.F) {
	f.Add(AppendBlockList(nil, largeVersion(3).Blocks))
	f.Add(AppendBlockList(nil, &BlockList{Bits: 21}))
	f.Add(AppendBlockList(nil, sparseVersion()))
	f.Add([]byte{20, 0xff, 0xff, 0x03})
	f.Fuzz(func(t *testing.T, data []byte) {
		bl, err := DecodeBlockList(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := DecodeBlockList(AppendBlockList(nil, bl))
		if err != nil || !reflect.DeepEqual(again, bl) {
			t.Fatalf("re-encoded list does not decode to itself: %v", err)
		}
	})
}

// TestBlockListBytesByClass holds what the writer's size classes
// (chunk.Bits) cost the index per large file version, logged for the
// design notes: blocks of 1.5 × 2^bits on average, never more than
// chunk.MaxBlocks, whatever the file's size.
func TestBlockListBytesByClass(t *testing.T) {
	bare := largeVersion(0)
	bare.Blocks = nil
	head := len(AppendEntry(nil, &bare))
	worst := largeVersion(chunk.MaxBlocks)
	limit := len(AppendEntry(nil, &worst))
	if limit > 200<<10 {
		t.Fatalf("an entry of %d blocks is %d bytes, want it under 200 KiB (a segment, a FileEnd)", chunk.MaxBlocks, limit)
	}
	for _, size := range []int64{1 << 20, 64 << 20, 255 << 20, 1 << 30, 16 << 30} {
		bits := chunk.Bits(size)
		n := int(size * 2 / (3 << bits))
		e := largeVersion(max(n, 1))
		got := len(AppendEntry(nil, &e)) - head
		t.Logf("%d MiB, class %d: about %d blocks, %d bytes of list (%.3f%% of the file)", size>>20, bits, n, got, 100*float64(got)/float64(size))
		if float64(got) > 0.0005*float64(size)+64 {
			t.Errorf("%d MiB: %d bytes of list, more than 0.05%% of the file", size>>20, got)
		}
	}
	t.Logf("at most %d blocks: %d bytes", chunk.MaxBlocks, limit)
}

// sparseVersion is the block list of a 1 GiB disk image holding 3 MiB of
// data in two runs: the blocks tile the runs, none crossing a hole.
func sparseVersion() *BlockList {
	bl := &BlockList{Bits: 49, Runs: []Run{{Off: 1 << 20, Len: 2 << 20}, {Off: 512 << 20, Len: 1 << 20}}}
	for i, n := range []uint64{700 << 10, 1348 << 10, 1 << 20} {
		bl.Blocks = append(bl.Blocks, Block{Hash: sha256.Sum256(fmt.Appendf(nil, "%d", i)), Loc: Location{Seq: uint64(i), Off: uint64(i) << 18, Len: n, EndSeq: uint64(i) + 1}})
	}
	return bl
}

func TestBlockListRuns(t *testing.T) {
	bl := sparseVersion()
	got, err := DecodeBlockList(AppendBlockList(nil, bl))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, bl) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, bl)
	}
	if offs := got.Offsets(); !reflect.DeepEqual(offs, []int64{1 << 20, 1<<20 + 700<<10, 512 << 20}) {
		t.Fatalf("offsets %v", offs)
	}
	if got.Size() != 3<<20 || got.End() != 513<<20 {
		t.Fatalf("size %d, end %d", got.Size(), got.End())
	}
	// A list without runs encodes as it did before runs existed, and its
	// blocks tile the file from 0.
	plain := largeVersion(3).Blocks
	if b := AppendBlockList(nil, plain); len(b) != len(AppendBlockList(nil, &BlockList{Bits: plain.Bits, Sessions: plain.Sessions, Blocks: plain.Blocks})) {
		t.Fatal("a list without runs changed its encoding")
	}
	if offs := plain.Offsets(); !reflect.DeepEqual(offs, []int64{0, 1 << 20, 2 << 20}) || plain.End() != 3<<20 {
		t.Fatalf("offsets %v, end %d", offs, plain.End())
	}
	// What rebasing keeps: the runs.
	if r := bl.Rebased([16]byte{7}); !reflect.DeepEqual(r.Runs, bl.Runs) {
		t.Fatal("Rebased dropped the runs")
	}
}

func TestDecodeBlockListRefusesRuns(t *testing.T) {
	enc := func(f func(bl *BlockList)) []byte {
		bl := sparseVersion()
		f(bl)
		return AppendBlockList(nil, bl)
	}
	for name, b := range map[string][]byte{
		// A block that would go on past a hole: its Data records would
		// not lie in one piece.
		"block crosses a hole": enc(func(bl *BlockList) { bl.Blocks[1].Loc.Len += 512 << 10; bl.Blocks[2].Loc.Len -= 512 << 10 }),
		"runs not filled":      enc(func(bl *BlockList) { bl.Runs[1].Len++ }),
		"blocks past the runs": enc(func(bl *BlockList) { bl.Runs[1].Len-- }),
		"runs touch":           enc(func(bl *BlockList) { bl.Runs[1].Off = 3 << 20 }),
		"empty run":            enc(func(bl *BlockList) { bl.Runs = append(bl.Runs, Run{Off: 1 << 30}) }),
		"no runs":              append(AppendBlockList(nil, largeVersion(1).Blocks), 0),
		"runs past int64":      enc(func(bl *BlockList) { bl.Runs[1].Off = 1<<63 - 1<<19 }),
		"cut run":              enc(func(bl *BlockList) {})[:len(enc(func(bl *BlockList) {}))-1],
	} {
		if _, err := DecodeBlockList(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}
