package fileindex

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

func seedEntries() []Entry {
	e := sampleEntry()
	return []Entry{
		{Path: "/srv", Type: TypeDir, Mode: 0o755, MTime: 1700000000},
		e,
		{Path: "/srv/link", Type: TypeSymlink, Target: "data"},
		{Path: "/srv/old", Type: TypeDeleted},
		{Path: "/srv/x", Type: TypeHardlink, Target: "/srv/data/ünïcode name.txt"},
		largeVersion(3),
	}
}

// FuzzDecodeSegment decodes arbitrary bytes as an index segment, as the
// catalog does with what a node sent and the agent with what a server
// sent: every malformed segment is an ErrCorrupt, and one that decodes
// encodes back to a segment that decodes to the same entries.
func FuzzDecodeSegment(f *testing.F) {
	b := NewSegmentBuilder(0)
	for _, e := range seedEntries() {
		if err := b.Add(&e); err != nil {
			f.Fatal(err)
		}
	}
	seg := b.Flush()
	f.Add(seg.Data)
	raw, count, err := segmentPayload(seg.Data)
	if err != nil {
		f.Fatal(err)
	}
	plain := append([]byte{}, segmentMagic[:]...)
	plain = append(plain, SegmentVersion, 0)
	plain = binary.AppendUvarint(plain, uint64(count))
	plain = binary.AppendUvarint(plain, uint64(len(raw)))
	f.Add(append(plain, raw...))
	f.Add(lyingSegment(0, 1<<40, 0, nil))
	f.Add(lyingSegment(segmentFlagZstd, 1, 60<<20, zenc.EncodeAll(nil, nil)))
	f.Add([]byte("CRNX\x01\x01\x05\x05junk"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := DecodeSegment(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if len(entries) == 0 {
			return // decodes, but a builder writes no empty segment
		}
		b := NewSegmentBuilder(0)
		for i := range entries {
			if b.Add(&entries[i]) != nil {
				return // out of index order: decodes, but no builder wrote it
			}
		}
		again, err := DecodeSegment(b.Flush().Data)
		if err != nil || len(again) != len(entries) {
			t.Fatalf("re-encoded segment: %d entries, %v", len(again), err)
		}
		for i := range entries {
			if !sameEntry(entries[i], again[i]) {
				t.Fatalf("entry %d: %+v became %+v", i, entries[i], again[i])
			}
		}
	})
}

// sameEntry compares entries with an empty and a missing list alike.
func sameEntry(a, b Entry) bool {
	norm := func(e *Entry) {
		if len(e.Xattrs) == 0 {
			e.Xattrs = nil
		}
		for i := range e.Xattrs {
			if len(e.Xattrs[i].Value) == 0 {
				e.Xattrs[i].Value = nil
			}
		}
		if len(e.Hash) == 0 {
			e.Hash = nil
		}
	}
	norm(&a)
	norm(&b)
	return reflect.DeepEqual(a, b)
}

// FuzzDecodeEntry decodes arbitrary bytes as one entry (a FileHeader
// record's content comes from the agent): a malformed entry is an
// ErrCorrupt, and one that decodes encodes back to the same entry.
func FuzzDecodeEntry(f *testing.F) {
	for _, e := range seedEntries() {
		f.Add(AppendEntry(nil, &e))
	}
	f.Add(append(AppendEntry(nil, &Entry{Path: "/a", Type: TypeFile}), 99, 2, 0xff, 0xff)) // a later version's tag
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeEntry(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := DecodeEntry(AppendEntry(nil, &e))
		if err != nil || !sameEntry(e, again) {
			t.Fatalf("%+v re-encoded decodes to %+v, %v", e, again, err)
		}
	})
}

// FuzzEntryRoundTrip encodes entries of arbitrary content, alone and in a
// segment: what the agent and the node write decodes to exactly that.
func FuzzEntryRoundTrip(f *testing.F) {
	e := sampleEntry()
	f.Add(e.Path, uint8(e.Type), e.Mode, e.UID, e.User, e.Size, e.MTime, e.Inode, e.Target, "user.a", []byte("x"), e.Hash, e.Loc.Seq, e.Loc.Off, e.Loc.InBlock)
	f.Add("/", uint8(TypeDir), uint32(0), uint32(0), "", int64(-1), int64(-1<<63), uint64(1<<64-1), "", "", []byte{}, []byte{}, uint64(0), uint64(0), uint32(0))
	f.Fuzz(func(t *testing.T, path string, typ uint8, mode, uid uint32, user string, size, mtime int64, inode uint64,
		target, xname string, xvalue, hash []byte, seq, off uint64, inBlock uint32) {
		if path == "" || typ == 0 {
			return // not an entry: the decoder refuses both, tested above
		}
		in := Entry{Path: path, Type: Type(typ), Mode: mode, UID: uid, GID: uid + 1, User: user, Group: user, Size: size,
			MTime: mtime, ATime: -mtime, CTime: size, Dev: inode / 2, Inode: inode, NLink: mode, Rdev: ^inode, Target: target,
			Hash: hash, HashKind: HashKind(inBlock), Flags: mode ^ uid, Loc: Location{Seq: seq, Off: off, InBlock: inBlock, EndSeq: seq + 1}}
		if xname != "" || len(xvalue) > 0 {
			in.Xattrs = []Xattr{{Name: xname, Value: xvalue}, {Name: "second", Value: hash}}
		}
		got, err := DecodeEntry(AppendEntry(nil, &in))
		if err != nil || !sameEntry(in, got) {
			t.Fatalf("%+v decodes to %+v, %v", in, got, err)
		}
		b := NewSegmentBuilder(0)
		if err := b.Add(&in); err != nil {
			t.Fatal(err)
		}
		seg := b.Flush()
		entries, err := DecodeSegment(seg.Data)
		if err != nil || len(entries) != 1 || !sameEntry(in, entries[0]) || seg.First != path || seg.Last != path {
			t.Fatalf("segment of %+v decodes to %+v, %v", in, entries, err)
		}
		if !bytes.Equal(AppendEntry(nil, &entries[0]), AppendEntry(nil, &in)) {
			t.Fatal("the encoding is not stable")
		}
	})
}
