package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
)

// packedSample is reads with every kind of location a plan holds: plain
// entries, ancestors, blocks read where they lie (one and several offsets,
// their lengths), paths that are not UTF-8 and one of 4,000 bytes, and a
// read of a tape part beside one of a disk part.
func packedSample() []ReadRequest {
	long := "/" + strings.Repeat("d", 3999)
	return []ReadRequest{
		{
			SessionID: uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), KeyID: "k1",
			Parts: []ReadPart{{VolumeID: uuid.MustParse("6ba7b811-9dad-11d1-80b4-00c04fd430c8"), Volume: "Default-0001", Pool: "Default",
				VolumeStart: 4096, DataStart: 8192, StreamStart: 0, StreamEnd: 1 << 40, MediaType: "disk"}},
			Locs: []ReadLoc{
				{Path: "/", Loc: fileindex.Location{Seq: 0, Off: 0, InBlock: 0, EndSeq: 0}, Ancestor: true},
				{Path: "/etc", Loc: fileindex.Location{Seq: 1, Off: 1 << 20, InBlock: 77, EndSeq: 1}, Follows: true},
				{Path: "/etc/\xff\xfe not utf-8", Loc: fileindex.Location{Seq: 1<<63 + 5, Off: 1<<64 - 1, InBlock: 1<<32 - 1, EndSeq: 1<<64 - 1}, Ancestor: true, Follows: true},
				{Path: fileindex.Path(long), Loc: fileindex.Location{Seq: 3, Off: 3 << 20, InBlock: 9, EndSeq: 4}},
			},
		},
		{
			SessionID: uuid.MustParse("6ba7b812-9dad-11d1-80b4-00c04fd430c8"), KeyID: "",
			Parts: []ReadPart{{VolumeID: uuid.MustParse("6ba7b813-9dad-11d1-80b4-00c04fd430c8"), Volume: "LTO-1", Pool: "Tape",
				VolumeStart: 1 << 30, DataStart: 1<<30 + 512, StreamStart: 7, StreamEnd: 9, MediaType: "tape", Barcode: "CRN001L9",
				Library: "lib1", BlockSize: 262144, PartStarts: []int64{0, 1 << 30}, VolumeBytes: 5 << 30}},
			Locs: []ReadLoc{
				{Path: "/img", Loc: fileindex.Location{Seq: 2, Off: 2 << 20, InBlock: 100, EndSeq: 2, Len: 65536}, Block: &BlockRead{At: []int64{0}}},
				{Path: "/img", Loc: fileindex.Location{Seq: 3, Off: 3 << 20, InBlock: 0, EndSeq: 3, Len: 1}, Block: &BlockRead{At: []int64{1 << 40, 7, -1}}},
				{Path: "/empty-block-list", Loc: fileindex.Location{Seq: 4, Len: 9}, Block: &BlockRead{}},
			},
		},
		{SessionID: uuid.MustParse("6ba7b814-9dad-11d1-80b4-00c04fd430c8"), KeyID: "k3"},
		{SessionID: uuid.MustParse("6ba7b815-9dad-11d1-80b4-00c04fd430c8"), KeyID: "k4", Locs: []ReadLoc{},
			Parts: []ReadPart{{VolumeID: uuid.MustParse("6ba7b816-9dad-11d1-80b4-00c04fd430c8"), Volume: "s3-1", Pool: "S3", MediaType: "s3"}}},
		{SessionID: uuid.MustParse("6ba7b817-9dad-11d1-80b4-00c04fd430c8"), Locs: []ReadLoc{
			{Path: "/b", Loc: fileindex.Location{Seq: 1, Len: 1}, Block: &BlockRead{At: []int64{}}},
		}},
	}
}

// nilEmpty gives reads with their empty lists nil: how the packed form
// gives them back, where JSON keeps an empty list empty. No reader of a
// plan tells the two apart.
func nilEmpty(reads []ReadRequest) []ReadRequest {
	for i := range reads {
		if len(reads[i].Locs) == 0 {
			reads[i].Locs = nil
		}
		for j := range reads[i].Locs {
			if b := reads[i].Locs[j].Block; b != nil && len(b.At) == 0 {
				b.At = nil
			}
		}
	}
	return reads
}

// The packed form gives back exactly the reads JSON gives back, but for
// empty lists, which come back nil, and ReadLoc.Follows, which only the
// packed form carries, from version 2. A node that reads version 1 gets
// the reads without it.
func TestPackedReadsRoundTrip(t *testing.T) {
	reads := packedSample()
	js, err := json.Marshal(reads)
	if err != nil {
		t.Fatal(err)
	}
	for version := 1; version <= PackedVersion; version++ {
		packed, err := PackReads(reads, version)
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnpackReads(packed)
		if err != nil {
			t.Fatal(err)
		}
		var want []ReadRequest
		if err := json.Unmarshal(js, &want); err != nil {
			t.Fatal(err)
		}
		follows := 0
		for i := range want {
			for j := range want[i].Locs {
				if want[i].Locs[j].Follows {
					t.Fatalf("JSON carried Follows of %s", want[i].Locs[j].Path)
				}
				want[i].Locs[j].Follows = version >= 2 && reads[i].Locs[j].Follows
				if got[i].Locs[j].Follows {
					follows++
				}
			}
		}
		if !reflect.DeepEqual(got, nilEmpty(want)) {
			t.Fatalf("version %d unpacked\n%+v\nwant\n%+v", version, got, want)
		}
		if version >= 2 && follows != 2 {
			t.Fatalf("version %d gave back %d locations that follow, want 2", version, follows)
		}
	}
	if _, err := PackReads(reads, PackedVersion+1); err == nil {
		t.Fatal("packed in a version this program does not know")
	}

	// A page of small files, as a restore of a home directory has: the
	// packed form is what saves the servers and the node their JSON.
	page := []ReadRequest{{SessionID: uuid.New(), KeyID: "k"}}
	for i := range 5000 {
		page[0].Locs = append(page[0].Locs, ReadLoc{
			Path: fileindex.Path(fmt.Sprintf("/home/user/projects/p%d/src/file-%05d.go", i/100, i)),
			Loc:  fileindex.Location{Seq: uint64(i / 40), Off: uint64(i/40) << 20, InBlock: uint32(i%40) * 20000, EndSeq: uint64(i / 40)},
		})
	}
	packed, err := PackReads(page, PackedVersion)
	if err != nil {
		t.Fatal(err)
	}
	if js, _ := json.Marshal(page); len(packed)*2 > len(js) {
		t.Errorf("a page of small files packed in %d bytes, in JSON %d: the packed form should be well under half", len(packed), len(js))
	}
}

// A field added to a read location must be added to the packed form too,
// or a restore planned by the servers would lose it on its way to the node.
func TestPackedReadsCarryEveryField(t *testing.T) {
	fields := func(v any) []string {
		var out []string
		ty := reflect.TypeOf(v)
		for i := range ty.NumField() {
			out = append(out, ty.Field(i).Name)
		}
		return out
	}
	for _, c := range []struct {
		v    any
		want []string
	}{
		{ReadLoc{}, []string{"Path", "Loc", "Ancestor", "Block", "Follows"}},
		{fileindex.Location{}, []string{"Seq", "Off", "InBlock", "EndSeq", "Len"}},
		{BlockRead{}, []string{"At"}},
	} {
		if got := fields(c.v); !slices.Equal(got, c.want) {
			t.Errorf("%T has fields %v; the packed form (wire/packed.go) carries %v: add the new ones to it", c.v, got, c.want)
		}
	}
}

// Every cut of a packing, a byte changed in its numbers, a version this
// program does not know and counts the bytes cannot hold are refused with
// ErrPacked, not a panic or a huge allocation.
func TestUnpackReadsRefusesDamage(t *testing.T) {
	packed, err := PackReads(packedSample(), PackedVersion)
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(packed) {
		if _, err := UnpackReads(packed[:n]); !errors.Is(err, ErrPacked) {
			t.Fatalf("cut at %d of %d: err %v, want ErrPacked", n, len(packed), err)
		}
	}
	for _, bad := range [][]byte{
		{PackedVersion + 1, 0},          // a later version
		{0, 0},                          // no version
		{1, 0, 0},                       // a byte after the end
		{1, 0x80, 0x00},                 // no reads, padded: one encoding per number
		{1, 0xff, 0xff, 0xff, 0x7f},     // 268 million reads in no bytes
		{1, 1, 2, '{', '}', 0x80, 0x80}, // locs' count runs past the end
		{1, 1, 2, '{', '}', 1, 8, 0, 0, 0, 0, 0, 0},                         // follows, which version 1 does not have
		{2, 1, 2, '{', '}', 1, 16, 0, 0, 0, 0, 0, 0},                        // an unknown flag
		{1, 1, 2, '{', '}', 1, 4, 0, 0, 0, 0, 0, 0},                         // a zero length flagged
		{1, 1, 2, '{', '}', 1, 0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10, 0}, // an in-block offset above 32 bits
		{1, 1, 2, '{', '[', 0},                                              // a head that is not JSON
	} {
		if _, err := UnpackReads(bad); !errors.Is(err, ErrPacked) {
			t.Errorf("%x: err %v, want ErrPacked", bad, err)
		}
	}
	if reads, err := UnpackReads([]byte{1, 1, 2, '{', '}', 1, 0, 0, 0, 0, 0, 0}); err != nil || len(reads) != 1 || len(reads[0].Locs) != 1 {
		t.Fatalf("the smallest read of one location: %+v, %v", reads, err)
	}
}

// FuzzUnpackReads: whatever the servers' answer holds, the node neither
// panics nor allocates beyond it, and what it accepts packs and unpacks
// again to the same reads.
func FuzzUnpackReads(f *testing.F) {
	packed, err := PackReads(packedSample(), PackedVersion)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(packed)
	f.Add(packed[:len(packed)/2])
	if old, err := PackReads(packedSample(), 1); err == nil {
		f.Add(old)
	}
	empty, _ := PackReads(nil, PackedVersion)
	f.Add(empty)
	f.Add([]byte{1, 1, 2, '{', '}', 1, 6, 1, 'a', 0, 0, 0, 0, 5, 2, 1, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		reads, err := UnpackReads(data)
		if err != nil {
			if !errors.Is(err, ErrPacked) {
				t.Fatalf("error %v is not ErrPacked", err)
			}
			return
		}
		again, err := PackReads(reads, PackedVersion)
		if err != nil {
			t.Fatalf("accepted reads do not pack: %v", err)
		}
		back, err := UnpackReads(again)
		if err != nil {
			t.Fatalf("a packing of accepted reads does not unpack: %v", err)
		}
		if !reflect.DeepEqual(back, reads) {
			t.Fatalf("packed again and unpacked\n%+v\nwant\n%+v", back, reads)
		}
	})
}
