package fileindex

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestCompareMatchesSortedDepthFirstWalk(t *testing.T) {
	// A walk that visits each directory's names in byte order emits this order.
	walk := []string{"/a", "/a/b", "/a/b/c", "/a/b.txt", "/a.b", "/a.b/x", "/a0", "/b"}
	shuffled := append([]string{}, walk...)
	sort.Strings(shuffled) // plain byte order differs: "/a.b" < "/a/b"
	if reflect.DeepEqual(shuffled, walk) {
		t.Fatal("test data does not distinguish index order from byte order")
	}
	sort.Slice(shuffled, func(i, j int) bool { return Compare(shuffled[i], shuffled[j]) < 0 })
	if !reflect.DeepEqual(shuffled, walk) {
		t.Fatalf("index order %q, want %q", shuffled, walk)
	}
	for _, p := range walk {
		if Compare(p, p) != 0 {
			t.Fatalf("Compare(%q,%q) != 0", p, p)
		}
	}
}

func TestWithin(t *testing.T) {
	cases := []struct {
		path, root string
		want       bool
	}{
		{"/a/b", "/a", true}, {"/a", "/a", true}, {"/ab", "/a", false},
		{"/a/b", "/a/", true}, {"/x", "/", true}, {"/a", "/a/b", false},
	}
	for _, c := range cases {
		if got := Within(c.path, c.root); got != c.want {
			t.Errorf("Within(%q,%q)=%v", c.path, c.root, got)
		}
	}
}

func sampleEntry() Entry {
	return Entry{
		Path: "/srv/data/ünïcode name.txt", Type: TypeFile, Mode: 0o4755, UID: 1000, GID: 100,
		User: "alice", Group: "users", Size: 1 << 40, MTime: 1700000000123456789, ATime: -5,
		CTime: 1700000000, Dev: 2049, Inode: 1234567, NLink: 2, Rdev: 0, Target: "",
		Xattrs:   []Xattr{{Name: "user.a", Value: []byte("x")}, {Name: "system.posix_acl_access", Value: []byte{2, 0, 0, 0}}},
		Hash:     bytes.Repeat([]byte{0xab}, 32),
		HashKind: HashSparseSHA256,
		Flags:    FlagImmutable | FlagNodump | FlagProjInherit,
		Loc:      Location{Seq: 7, Off: 123456789, InBlock: 4096, EndSeq: 9},
	}
}

func TestEntryRoundTrip(t *testing.T) {
	e := sampleEntry()
	got, err := DecodeEntry(AppendEntry(nil, &e))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
	}
}

func TestDecodeEntrySkipsUnknownTags(t *testing.T) {
	e := Entry{Path: "/x", Type: TypeSymlink, Target: "y"}
	b := AppendEntry(nil, &e)
	b = appendBytesField(b, 999, []byte("a field from the future"))
	b = appendVarField(b, 1000, 42)
	got, err := DecodeEntry(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("got %+v", got)
	}
}

// TestFieldsAddedLaterAreSkippedByOlderDecoders: the flags and the hash
// kind came after the first release, so an entry holding them must read as
// the same entry without them to a decoder that knows only the first tags
// (which skips what it does not know), and an entry without them (every
// entry written before) reads as inode flags none and hash kind SHA-256.
func TestFieldsAddedLaterAreSkippedByOlderDecoders(t *testing.T) {
	e := sampleEntry()
	b := AppendEntry(nil, &e)
	firstRelease := func(b []byte) (kept []byte) {
		for len(b) > 0 {
			tag, n := binary.Uvarint(b)
			l, m := binary.Uvarint(b[n:])
			field := b[:n+m+int(l)]
			if tag <= tagEndSeq {
				kept = append(kept, field...)
			}
			b = b[len(field):]
		}
		return kept
	}
	old, err := DecodeEntry(firstRelease(b))
	if err != nil {
		t.Fatal(err)
	}
	if old.Flags != 0 || old.HashKind != HashSHA256 {
		t.Fatalf("an entry without the new tags decodes with flags %#x, hash kind %v", old.Flags, old.HashKind)
	}
	old.Flags, old.HashKind = e.Flags, e.HashKind
	if !reflect.DeepEqual(old, e) {
		t.Fatalf("the first release's fields changed:\n got %+v\nwant %+v", old, e)
	}
	if got := FlagString(e.Flags); got != "idP" {
		t.Fatalf("FlagString = %q", got)
	}
}

func TestDecodeEntryRejectsGarbage(t *testing.T) {
	e := sampleEntry()
	b := AppendEntry(nil, &e)
	for _, bad := range [][]byte{nil, b[:len(b)-1], {0xff, 0xff, 0xff}, binary.AppendUvarint([]byte{tagPath}, 1<<40)} {
		if _, err := DecodeEntry(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("DecodeEntry(%x) err = %v, want ErrCorrupt", bad, err)
		}
	}
}

func TestSegmentRoundTripAndOrder(t *testing.T) {
	b := NewSegmentBuilder(4096)
	var want []Entry
	var segs []Segment
	for i := 0; i < 2000; i++ {
		e := Entry{Path: "/d/" + strings.Repeat("x", i%300) + "/" + string(rune('a'+i%26)), Type: TypeFile, Size: int64(i)}
		e.Path = "/d/" + pad(i)
		if err := b.Add(&e); err != nil {
			t.Fatal(err)
		}
		want = append(want, e)
		if b.Full() {
			segs = append(segs, b.Flush())
		}
	}
	segs = append(segs, b.Flush())
	if len(segs) < 3 {
		t.Fatalf("expected several segments, got %d", len(segs))
	}
	if err := b.Add(&Entry{Path: "/d/0000", Type: TypeFile}); err == nil {
		t.Fatal("out of order entry accepted after flush")
	}
	i := 0
	it := SegmentIterator(func() ([]byte, bool, error) {
		if i == len(segs) {
			return nil, false, nil
		}
		i++
		return segs[i-1].Data, true, nil
	})
	got, err := Collect(it)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("segments returned %d entries, want %d", len(got), len(want))
	}
	total := 0
	for _, s := range segs {
		total += s.Count
		if Compare(s.First, s.Last) > 0 {
			t.Fatalf("segment range %q..%q", s.First, s.Last)
		}
	}
	if total != len(want) {
		t.Fatalf("counts add to %d", total)
	}
}

func pad(i int) string {
	s := "0000" + itoa(i)
	return s[len(s)-4:]
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestLongEntryLengthPrefix(t *testing.T) {
	b := NewSegmentBuilder(0)
	e := Entry{Path: "/big", Type: TypeFile, Xattrs: []Xattr{{Name: "user.big", Value: bytes.Repeat([]byte{1}, 70000)}}}
	if err := b.Add(&e); err != nil {
		t.Fatal(err)
	}
	got, err := DecodeSegment(b.Flush().Data)
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], e) {
		t.Fatalf("got %v %v", len(got), err)
	}
}

func TestMergeChain(t *testing.T) {
	full := []Entry{
		{Path: "/r", Type: TypeDir}, {Path: "/r/a", Type: TypeFile, Size: 1},
		{Path: "/r/b", Type: TypeFile, Size: 2}, {Path: "/r/c", Type: TypeFile, Size: 3},
	}
	inc1 := []Entry{{Path: "/r/a", Type: TypeFile, Size: 10}, {Path: "/r/b", Type: TypeDeleted}, {Path: "/r/d", Type: TypeFile, Size: 4}}
	inc2 := []Entry{{Path: "/r/b", Type: TypeFile, Size: 20}, {Path: "/r/c", Type: TypeDeleted}}
	got, err := Collect(Merge(SliceIterator(full), SliceIterator(inc1), SliceIterator(inc2)))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/r:0", "/r/a:10", "/r/b:20", "/r/d:4"}
	var have []string
	for _, e := range got {
		have = append(have, e.Path+":"+itoa(int(e.Size)))
	}
	if !reflect.DeepEqual(have, want) {
		t.Fatalf("merge = %v, want %v", have, want)
	}
	kept, _ := Collect(MergeKeepDeleted(SliceIterator(full), SliceIterator(inc1)))
	if len(kept) != 5 || kept[2].Type != TypeDeleted {
		t.Fatalf("MergeKeepDeleted = %+v", kept)
	}
}

func TestMergeReportsLayerError(t *testing.T) {
	bad := SegmentIterator(func() ([]byte, bool, error) { return []byte("junk"), true, nil })
	it := Merge(SliceIterator([]Entry{{Path: "/a", Type: TypeFile}}), bad)
	if _, err := Collect(it); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
}

func TestMergeLayer(t *testing.T) {
	full := []Entry{{Path: "/a", Type: TypeFile}, {Path: "/b", Type: TypeFile}}
	inc := []Entry{{Path: "/b", Type: TypeFile, Size: 9}}
	m := Merge(SliceIterator(full), SliceIterator(inc))
	var layers []int
	for {
		_, ok := m.Next()
		if !ok {
			break
		}
		layers = append(layers, m.Layer())
	}
	if !reflect.DeepEqual(layers, []int{0, 1}) {
		t.Fatalf("layers %v", layers)
	}
}

// TestSegmentWindowHoldsAFullSegment: the smaller zstd window of segment
// compression (a memory saving) must hold the largest segment a builder
// makes, a full one whose last entry is as large as a FileHeader may be
// (256 KiB), and compress it to the same bytes as zstd's default window:
// segments already in catalogs and on volumes are compared and deduplicated
// by their bytes.
func TestSegmentWindowHoldsAFullSegment(t *testing.T) {
	b := NewSegmentBuilder(0)
	for i := 0; !b.Full(); i++ {
		e := Entry{Path: fmt.Sprintf("/srv/data/%06d/file-%06d.log", i/100, i), Type: TypeFile, Size: int64(i) * 4099, Mode: 0o644, UID: uint32(i % 7)}
		if len(b.raw) > DefaultSegmentBytes-1024 {
			e.Xattrs = []Xattr{{Name: "user.big", Value: bytes.Repeat([]byte("xattr value "), (256<<10)/12)}}
		}
		if err := b.Add(&e); err != nil {
			t.Fatal(err)
		}
	}
	raw, count := slices.Clone(b.raw), b.count
	if len(raw) > segmentWindow {
		t.Fatalf("a full segment holds %d bytes, more than the window of %d", len(raw), segmentWindow)
	}
	def, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	got, want := zenc.EncodeAll(raw, nil), def.EncodeAll(raw, nil)
	if data := b.Flush().Data; !bytes.HasSuffix(data, got) {
		t.Fatal("the segment does not end in its entries compressed")
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("a full segment of %d entries, %d bytes, compresses to %d bytes with the 2 MiB window and %d with the default", count, len(raw), len(got), len(want))
	}
}
