package dataplane

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
)

func startSeed() ReadStart {
	return ReadStart{SessionID: uuid.MustParse("6f1c1a5e-0000-4000-8000-000000000001"), Entries: []ReadEntry{
		{Path: "/", Ancestor: true},
		{Path: "/srv", Ancestor: true},
		{Path: "/srv/a"},
		{Path: "/srv/ab"},
		{Path: "/srv/b/c", Block: true},
		{Path: "/srv/b/c", Block: true},
		{Path: "/other\xff\x00name"}, // not UTF-8, and a NUL: names are bytes
		{Path: fileindex.Path("/long/" + strings.Repeat("d", 5000))},
		{Path: "/"},
	}}
}

func TestPackedReadStartRoundTrip(t *testing.T) {
	for _, rs := range []ReadStart{startSeed(), {SessionID: uuid.New()}, {Entries: []ReadEntry{{Path: ""}}}} {
		got, err := UnpackReadStart(PackReadStart(&rs))
		if err != nil {
			t.Fatalf("%+v: %v", rs, err)
		}
		if !reflect.DeepEqual(got, rs) {
			t.Fatalf("packed and unpacked:\n%+v\nwant\n%+v", got, rs)
		}
	}
	// It is what it is for: far smaller than the JSON.
	var many ReadStart
	for i := range 1000 {
		many.Entries = append(many.Entries, ReadEntry{Path: fileindex.Path("/srv/data/dir" + string(rune('a'+i%7)) + "/file-" + strings.Repeat("x", i%13))})
	}
	js, _ := json.Marshal(many)
	if p := PackReadStart(&many); len(p) > len(js)/2 {
		t.Fatalf("packed %d bytes, JSON %d", len(p), len(js))
	}
}

// TestPackedReadStartCarriesEveryField fails when ReadStart or ReadEntry
// gain a field: the packed form must then carry it, as a new version.
func TestPackedReadStartCarriesEveryField(t *testing.T) {
	for typ, want := range map[reflect.Type][]string{
		reflect.TypeFor[ReadStart](): {"SessionID", "Entries"},
		reflect.TypeFor[ReadEntry](): {"Path", "Ancestor", "Block"},
	} {
		var got []string
		for f := range typ.Fields() {
			got = append(got, f.Name)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s has fields %v; the packed form carries %v: add the new ones to it, as a new version", typ, got, want)
		}
	}
}

func TestUnpackReadStartRefusesDamage(t *testing.T) {
	rs := startSeed()
	good := PackReadStart(&rs)
	for n := range len(good) {
		if _, err := UnpackReadStart(good[:n]); !errors.Is(err, ErrPackedReadStart) {
			t.Fatalf("cut to %d of %d bytes: %v", n, len(good), err)
		}
	}
	head := func(version, n uint64) []byte {
		b := binary.AppendUvarint(nil, version)
		b = append(b, make([]byte, 16)...)
		return binary.AppendUvarint(b, n)
	}
	entry := func(b []byte, flags, shared uint64, rest string) []byte {
		b = binary.AppendUvarint(b, flags)
		b = binary.AppendUvarint(b, shared)
		b = binary.AppendUvarint(b, uint64(len(rest)))
		return append(b, rest...)
	}
	// A path that shares all of a megabyte, again and again: each entry
	// is three bytes, its path a megabyte.
	amplified := entry(head(1, 40), 0, 0, strings.Repeat("p", 1<<20))
	for range 39 {
		amplified = entry(amplified, 0, 1<<20, "")
	}
	// Entries of three bytes each, more than a frame of JSON could name.
	tooMany := head(1, uint64(MaxFrame/minJSONEntry+1))
	for range MaxFrame/minJSONEntry + 1 {
		tooMany = entry(tooMany, 0, 0, "")
	}
	for name, b := range map[string][]byte{
		"more entries than JSON could carry": tooMany,
		"a later version":                    entry(head(2, 1), 0, 0, "/a"),
		"version 0":                          entry(head(0, 1), 0, 0, "/a"),
		"unknown flags":                      entry(head(1, 1), 4, 0, "/a"),
		"a byte after the last entry":        append(entry(head(1, 1), 0, 0, "/a"), 0),
		"more shared than was before":        entry(entry(head(1, 2), 0, 0, "/a"), 0, 3, "b"),
		"a count past the bytes":             entry(head(1, 3), 0, 0, "/a"),
		"a padded count":                     entry(append(append(binary.AppendUvarint(nil, 1), make([]byte, 16)...), 0x81, 0x00), 0, 0, "/a"),
		"paths past a frame in all":          amplified,
	} {
		if _, err := UnpackReadStart(b); !errors.Is(err, ErrPackedReadStart) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzUnpackReadStart decodes arbitrary bytes as a packed ReadStart, as an
// agent does what its storage node sends: what decodes packs back to a form
// that decodes to the same, and nothing panics or allocates past its bytes.
func FuzzUnpackReadStart(f *testing.F) {
	rs := startSeed()
	f.Add(PackReadStart(&rs))
	f.Add(PackReadStart(&ReadStart{}))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := UnpackReadStart(data)
		if err != nil {
			if !errors.Is(err, ErrPackedReadStart) {
				t.Fatalf("error %v is not ErrPackedReadStart", err)
			}
			return
		}
		again, err := UnpackReadStart(PackReadStart(&rs))
		if err != nil || !reflect.DeepEqual(again, rs) {
			t.Fatalf("repacked: %+v, %v; want %+v", again, err, rs)
		}
	})
}
