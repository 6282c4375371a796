package volume

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
)

// storedFeeder takes the blocks ReadAdjacent passes on as stored the way
// the agent does, decompressing them and handing their records to a
// readBack, and keeps count.
type storedFeeder struct {
	t      testing.TB
	rb     *readBack
	blocks int
	codecs map[Flags]int
	begun  []int
}

func (sf *storedFeeder) stored(b *StoredBlock) error {
	sf.blocks++
	if sf.codecs == nil {
		sf.codecs = map[Flags]int{}
	}
	sf.codecs[b.Codec]++
	sf.begun = append(sf.begun, b.Begun...)
	recs := b.Payload
	if b.Codec != 0 {
		var err error
		if recs, err = Decompress(nil, b.Codec, b.RawLen, b.Payload); err != nil {
			sf.t.Fatalf("block %d: %v", b.Seq, err)
		}
	}
	if len(recs) != b.RawLen {
		sf.t.Fatalf("block %d: %d bytes of records, raw length %d", b.Seq, len(recs), b.RawLen)
	}
	for len(recs) > 0 {
		rt, body, n, err := ParseRecord(recs)
		if err != nil {
			sf.t.Fatalf("block %d: %v", b.Seq, err)
		}
		if err := sf.rb.fn(rt, body); err != nil {
			return err
		}
		recs = recs[n:]
	}
	return nil
}

// A whole session read by ReadAdjacent, and a run of its entries read so
// (as one page of a plan), give the records ReadEntries gives, with the
// blocks inside the run passed on as stored, compressed or not, each
// entry begun once, and the edges walked.
func TestReadAdjacentPassesWholeBlocks(t *testing.T) {
	key := testKey("pool-Default-1")
	vol := newMemVolume(t, MinBlockSize, 0)
	files := makeTree(7, 400, []int{100, 3000, 40000, 300000, 2 << 20})
	info := sessionInfo()
	res := writeSession(t, key, info, vol, WriterOptions{TempDir: t.TempDir()}, files, 64<<10)
	_, idx := readIndexOf(t, vol, key)
	for _, run := range [][2]int{{0, len(idx)}, {37, 311}, {5, 6}} {
		want := newReadBack(t)
		r := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vol), ReaderOptions{})
		if err := r.ReadEntries(context.Background(), locsOf(idx[run[0]:run[1]]), want.fn, want.damaged); err != nil {
			t.Fatal(err)
		}
		got := newReadBack(t)
		sf := &storedFeeder{t: t, rb: got}
		locs := locsOf(idx[run[0]:run[1]])
		// Given in another order than the stream's: Begun indexes them as given.
		slices.Reverse(locs)
		r = NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vol), ReaderOptions{})
		if err := r.ReadAdjacent(context.Background(), locs, nil, got.fn, sf.stored, got.damaged); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.order, want.order) {
			t.Fatalf("entries %v: %d entries in order %v..., want %d", run, len(got.order), got.order[:min(3, len(got.order))], len(want.order))
		}
		for i := run[0]; i < run[1]; i++ {
			p := idx[i].Path
			if !got.ended[p] || !bytes.Equal(got.got[p], files[i].content) {
				t.Fatalf("entries %v: %s does not read back", run, p)
			}
		}
		first, last := idx[run[0]].Loc, idx[run[1]-1].Loc
		inside := 0
		for seq := first.Seq + 1; seq < last.EndSeq; seq++ {
			inside++
		}
		if first.InBlock == 0 && first.Seq < last.EndSeq {
			inside++
		}
		if sf.blocks != inside {
			t.Errorf("entries %v (blocks %d..%d): %d blocks passed on as stored, want the %d wholly inside", run, first.Seq, last.EndSeq, sf.blocks, inside)
		}
		if run[1]-run[0] > 100 && (sf.codecs[FlagZstd] == 0 || sf.codecs[0] == 0) {
			t.Errorf("entries %v: stored blocks by codec %v, want compressed and uncompressed ones", run, sf.codecs)
		}
		// Each entry begun in a stored block is one the walk did not begin.
		for _, k := range sf.begun {
			if k < 0 || k >= len(locs) {
				t.Fatalf("begun index %d of %d", k, len(locs))
			}
			l := locs[k]
			if l.Seq < first.Seq || l.Seq >= last.EndSeq {
				t.Errorf("entry at block %d begun in a stored block outside %d..%d", l.Seq, first.Seq, last.EndSeq)
			}
		}
		if len(sf.begun) != len(slices.Compact(slices.Sorted(slices.Values(sf.begun)))) {
			t.Errorf("an entry was begun twice: %v", sf.begun)
		}
	}
}

// Locations ReadAdjacent cannot vouch for (no EndSeq, the same entry
// twice) are read record by record.
func TestReadAdjacentFallsBackToRecords(t *testing.T) {
	key := testKey("pool-Default-1")
	vol := newMemVolume(t, MinBlockSize, 0)
	files := makeTree(8, 200, []int{3000, 300000})
	info := sessionInfo()
	res := writeSession(t, key, info, vol, WriterOptions{TempDir: t.TempDir()}, files, 64<<10)
	_, idx := readIndexOf(t, vol, key)
	for name, change := range map[string]func([]fileindex.Location) []fileindex.Location{
		"no EndSeq": func(l []fileindex.Location) []fileindex.Location {
			l[len(l)/2].EndSeq = 0
			l[len(l)/2].Seq = 1
			return l
		},
		"twice": func(l []fileindex.Location) []fileindex.Location { return append(l, l[len(l)/2]) },
	} {
		locs := change(locsOf(idx))
		rb := newReadBack(t)
		sf := &storedFeeder{t: t, rb: rb}
		r := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vol), ReaderOptions{})
		_ = r.ReadAdjacent(context.Background(), locs, nil, rb.fn, sf.stored, rb.damaged)
		if sf.blocks != 0 {
			t.Errorf("%s: %d blocks passed on as stored", name, sf.blocks)
		}
	}
}

// Where the index shows that the locations leave an entry out (one that
// runs from a block into the next, its neighbours asked for), the blocks
// it lies in are walked, and only what was asked for comes out.
func TestReadAdjacentWalksAroundAGapTheIndexShows(t *testing.T) {
	key := testKey("pool-Default-1")
	vol := newMemVolume(t, MinBlockSize, 0)
	files := makeTree(9, 300, []int{3000, 40000, 300000})
	info := sessionInfo()
	res := writeSession(t, key, info, vol, WriterOptions{TempDir: t.TempDir()}, files, 64<<10)
	_, idx := readIndexOf(t, vol, key)
	gaps := 0
	for k := 10; k < len(idx)-10 && gaps < 5; k++ {
		if l := idx[k].Loc; l.Seq == l.EndSeq || l.InBlock == 0 {
			continue
		}
		gaps++
		locs := slices.Concat(locsOf(idx[:k]), locsOf(idx[k+1:]))
		want := newReadBack(t)
		r := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vol), ReaderOptions{})
		if err := r.ReadEntries(context.Background(), locs, want.fn, want.damaged); err != nil {
			t.Fatal(err)
		}
		got := newReadBack(t)
		sf := &storedFeeder{t: t, rb: got}
		r = NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vol), ReaderOptions{})
		if err := r.ReadAdjacent(context.Background(), locs, nil, got.fn, sf.stored, got.damaged); err != nil {
			t.Fatal(err)
		}
		if _, ok := got.got[idx[k].Path]; ok {
			t.Fatalf("%s (blocks %d..%d), left out, came out", idx[k].Path, idx[k].Loc.Seq, idx[k].Loc.EndSeq)
		}
		if !slices.Equal(got.order, want.order) || sf.blocks == 0 {
			t.Fatalf("without %s: %d entries, want %d; %d blocks stored", idx[k].Path, len(got.order), len(want.order), sf.blocks)
		}
	}
	if gaps == 0 {
		t.Fatal("no entry runs from one block into the next")
	}
}

// A read of a session whose entries a newer backup partly shadows (a chain
// restored) leaves entries out here and there, and says of each location
// whether it follows the one before. Only blocks inside a run of entries
// that follow go as stored; the blocks that hold an entry left out, even
// one wholly inside a block between two asked for, are walked, and it
// does not come out. Said of none, nothing is stored.
func TestReadAdjacentStoresOnlyInsideRuns(t *testing.T) {
	key := testKey("pool-Default-1")
	vol := newMemVolume(t, MinBlockSize, 0)
	files := makeTree(10, 600, []int{100, 3000, 40000, 300000})
	info := sessionInfo()
	res := writeSession(t, key, info, vol, WriterOptions{TempDir: t.TempDir()}, files, 64<<10)
	_, idx := readIndexOf(t, vol, key)
	// Left out: every 23rd entry, and every small one wholly inside a
	// block after an entry that is asked for.
	out := map[int]bool{}
	small := 0
	for k := 1; k < len(idx)-1; k++ {
		l := idx[k].Loc
		if k%23 == 0 || (l.Seq == l.EndSeq && l.InBlock != 0 && !out[k-1] && small < 20) {
			out[k] = true
			if l.Seq == l.EndSeq && l.InBlock != 0 {
				small++
			}
		}
	}
	if small == 0 {
		t.Fatal("no entry lies wholly inside a block")
	}
	var locs []fileindex.Location
	var follows []bool
	for k := range idx {
		if out[k] {
			continue
		}
		follows = append(follows, len(locs) > 0 && !out[k-1])
		locs = append(locs, idx[k].Loc)
	}
	want := newReadBack(t)
	r := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vol), ReaderOptions{})
	if err := r.ReadEntries(context.Background(), locs, want.fn, want.damaged); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		follows []bool
	}{
		{"runs", follows},
		{"none follow", make([]bool, len(locs))},
	} {
		got := newReadBack(t)
		sf := &storedFeeder{t: t, rb: got}
		r := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vol), ReaderOptions{})
		if err := r.ReadAdjacent(context.Background(), locs, c.follows, got.fn, sf.stored, got.damaged); err != nil {
			t.Fatal(err)
		}
		for k := range out {
			if _, ok := got.got[idx[k].Path]; ok {
				t.Fatalf("%s: %s, left out, came out", c.name, idx[k].Path)
			}
		}
		if !slices.Equal(got.order, want.order) {
			t.Fatalf("%s: %d entries, want %d", c.name, len(got.order), len(want.order))
		}
		for _, p := range want.order {
			if !got.ended[p] || !bytes.Equal(got.got[p], want.got[p]) {
				t.Fatalf("%s: %s does not read back", c.name, p)
			}
		}
		if c.name == "runs" && sf.blocks == 0 || c.name != "runs" && sf.blocks != 0 {
			t.Fatalf("%s: %d blocks stored", c.name, sf.blocks)
		}
		t.Logf("%s: %d of %d entries left out, %d blocks stored", c.name, len(out), len(idx), sf.blocks)
	}
	r = NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vol), ReaderOptions{})
	if err := r.ReadAdjacent(context.Background(), locs, follows[1:], want.fn, nil, want.damaged); err == nil {
		t.Fatal("follows of another length taken")
	}
}
