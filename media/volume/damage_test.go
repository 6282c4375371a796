package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/google/uuid"
)

// randomTree is n files of size bytes each, random content (so blocks do
// not compress and sizes are predictable), in index order.
func randomTree(seed uint64, n, size int) []tfile {
	var out []tfile
	for i := 0; i < n; i++ {
		c := make([]byte, size)
		rand.NewChaCha8([32]byte{byte(seed), byte(i), byte(i >> 8)}).Read(c)
		out = append(out, tfile{e: fileEntry(fmt.Sprintf("/data/f%05d", i), size), content: c})
	}
	return out
}

func readIndexOf(t *testing.T, vol *memVolume, key *Key) ([]PartInfo, []fileindex.Entry) {
	t.Helper()
	v, err := OpenVolume(vol, vol.size())
	if err != nil {
		t.Fatal(err)
	}
	parts, err := v.Parts()
	if err != nil {
		t.Fatal(err)
	}
	last := parts[len(parts)-1]
	it, err := ReadIndex(vol, key, last)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := fileindex.Collect(it)
	if err != nil {
		t.Fatal(err)
	}
	return parts, idx
}

func locsOf(idx []fileindex.Entry) []fileindex.Location {
	var l []fileindex.Location
	for _, e := range idx {
		l = append(l, e.Loc)
	}
	return l
}

func TestSessionSpansVolumes(t *testing.T) {
	key := testKey("pool-Default-1")
	const max = 2 << 20
	first := newMemVolume(t, MinBlockSize, max)
	vols := []*memVolume{first}
	var syncedBeforeNext []int
	next := func(full Appender) (Appender, error) {
		if full != Appender(vols[len(vols)-1]) {
			t.Errorf("Next got %v, not the volume being written", full.VolumeID())
		}
		syncedBeforeNext = append(syncedBeforeNext, vols[len(vols)-1].syncs)
		v := newMemVolume(t, MinBlockSize, max)
		vols = append(vols, v)
		return v, nil
	}
	files := randomTree(1, 50, 100000) // 5 MB, incompressible
	info := sessionInfo()
	res := writeSession(t, key, info, first, WriterOptions{Next: next, TempDir: t.TempDir()}, files, 32<<10)
	if len(vols) < 3 || len(res.Parts) != len(vols) {
		t.Fatalf("%d volumes, %d parts", len(vols), len(res.Parts))
	}
	for i, n := range syncedBeforeNext {
		if n == 0 {
			t.Errorf("volume %d was not synced before Next", i)
		}
	}
	for i, p := range res.Parts {
		v := vols[i]
		if p.VolumeID != v.id || p.Part != i || p.Final != (i == len(vols)-1) || p.End != v.size() || v.size() > max {
			t.Errorf("part %d: %+v, volume size %d", i, p, v.size())
		}
		if i > 0 && (p.StreamStart != res.Parts[i-1].StreamEnd || p.FirstSeq != res.Parts[i-1].LastSeq+1) {
			t.Errorf("part %d does not continue part %d: %+v after %+v", i, i-1, p, res.Parts[i-1])
		}
		vv, _ := OpenVolume(v, v.size())
		ps, err := vv.Parts()
		if err != nil || len(ps) != 1 || ps[0].Ref() != p.Ref() || ps[0].PartEnd.Final != p.Final || ps[0].Header.Part != i {
			t.Errorf("volume %d: Parts = %+v, %v", i, ps, err)
		}
	}

	_, idx := readIndexOf(t, vols[len(vols)-1], key)
	if len(idx) != len(files) {
		t.Fatalf("index: %d entries", len(idx))
	}
	r := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vols...), ReaderOptions{})
	rb := newReadBack(t)
	if err := r.ReadEntries(context.Background(), locsOf(idx), rb.fn, nil); err != nil {
		t.Fatal(err)
	}
	checkAll(t, rb, files)
	r.Close()

	// One file from the middle volume opens that volume and no other.
	var e fileindex.Entry
	for _, x := range idx {
		if x.Loc.Off >= res.Parts[1].StreamStart && x.Loc.EndSeq <= res.Parts[1].LastSeq {
			e = x
			break
		}
	}
	var opened []uuid.UUID
	open := func(id uuid.UUID) (io.ReaderAt, error) {
		opened = append(opened, id)
		return memOpener(vols...)(id)
	}
	r = NewSessionReader(info.SessionID, key, res.Refs(), open, ReaderOptions{})
	rb = newReadBack(t)
	if err := r.ReadEntries(context.Background(), []fileindex.Location{e.Loc}, rb.fn, nil); err != nil {
		t.Fatal(err)
	}
	if len(rb.order) != 1 || rb.order[0] != e.Path || !rb.ended[e.Path] {
		t.Fatalf("read %v", rb.order)
	}
	if len(opened) != 1 || opened[0] != vols[1].id {
		t.Fatalf("opened %v, want only %v", opened, vols[1].id)
	}
}

func TestIndexMovesToNextVolume(t *testing.T) {
	key := testKey("k")
	files := makeTree(2, 3000, []int{0, 10, 100})
	info := sessionInfo()
	// A dry run tells where the data ends; then the volume is made just
	// large enough for the data and not for the index.
	dry := newMemVolume(t, MinBlockSize, 0)
	res := writeSession(t, key, info, dry, WriterOptions{TempDir: t.TempDir()}, files, 4096)
	ps, _ := readIndexOf(t, dry, key)
	pe := ps[0].PartEnd
	if pe.IndexBlocks < 1 {
		t.Fatalf("dry run: %+v", pe)
	}
	dataEnd := ps[0].DataStart + int64(pe.IndexStreamStart-ps[0].Header.StreamStart)
	max := alignUp(dataEnd+partEndReserve, MinBlockSize)
	if dry.size() <= max {
		t.Fatalf("the index fits anyway: %d <= %d", dry.size(), max)
	}

	info.SessionID = uuid.New()
	first := newMemVolume(t, MinBlockSize, max)
	second := newMemVolume(t, MinBlockSize, 0)
	res = writeSession(t, key, info, first, WriterOptions{TempDir: t.TempDir(), Next: func(Appender) (Appender, error) { return second, nil }}, files, 4096)
	if len(res.Parts) != 2 || res.Parts[0].Final || !res.Parts[1].Final || res.Parts[1].Blocks != int64(pe.IndexBlocks) {
		t.Fatalf("parts %+v", res.Parts)
	}
	ps, idx := readIndexOf(t, second, key)
	if e := ps[0].PartEnd; e.DataBlocks != 0 || e.IndexBlocks != pe.IndexBlocks || ps[0].Header.StreamStart != e.IndexStreamStart {
		t.Fatalf("final part %+v", e)
	}
	r := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(first, second), ReaderOptions{})
	rb := newReadBack(t)
	if err := r.ReadEntries(context.Background(), locsOf(idx), rb.fn, nil); err != nil {
		t.Fatal(err)
	}
	checkAll(t, rb, files)
}

func TestVolumeTooSmall(t *testing.T) {
	key := testKey("k")
	first := newMemVolume(t, MinBlockSize, 2*MinBlockSize)
	w, err := NewSessionWriter(sessionInfo(), key, first, WriterOptions{TempDir: t.TempDir(), Next: func(Appender) (Appender, error) {
		return newMemVolume(t, MinBlockSize, 2*MinBlockSize), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	files := randomTree(3, 20, 100000)
	var werr error
	for i := range files {
		if werr = w.Write(appendEntryRecords(nil, &files[i], 50000)); werr != nil {
			break
		}
	}
	if werr == nil {
		_, werr = w.Close()
	}
	if !errors.Is(werr, ErrVolumeFull) {
		t.Fatalf("err = %v, want ErrVolumeFull", werr)
	}
}

// damageSetup writes a session of text files (which compress) and random
// files on one volume and returns it with its index.
func damageSetup(t *testing.T) (*memVolume, *Key, SessionInfo, *SessionResult, []fileindex.Entry, []tfile) {
	key := testKey("pool-Default-1")
	vol := newMemVolume(t, MinBlockSize, 0)
	files := makeTree(4, 120, []int{100, 5000, 60000, 200000})
	info := sessionInfo()
	res := writeSession(t, key, info, vol, WriterOptions{TempDir: t.TempDir()}, files, 16<<10)
	_, idx := readIndexOf(t, vol, key)
	return vol, key, info, res, idx, files
}

// blockAt returns the volume offset and header of block seq.
func blockAt(t *testing.T, vol *memVolume, p PartResult, idx []fileindex.Entry, seq uint64) (int64, BlockHeader) {
	for _, e := range idx {
		if e.Loc.Seq == seq {
			off := p.DataStart + int64(e.Loc.Off-p.StreamStart)
			h, err := ParseBlockHeader(vol.buf[off:])
			if err != nil || h.Seq != seq {
				t.Fatalf("block seq %d at %d: %+v %v", seq, off, h, err)
			}
			return off, h
		}
	}
	t.Fatalf("no entry starts in block %d", seq)
	return 0, BlockHeader{}
}

// checkDamage reads every entry and checks that exactly the entries that
// touch block seq are hurt and that the damage report names it.
func checkDamage(t *testing.T, vol *memVolume, key *Key, info SessionInfo, res *SessionResult, idx []fileindex.Entry, files []tfile, seq uint64, off int64, reason string) {
	t.Helper()
	for _, mode := range []string{"entries", "adjacent", "runs", "all"} {
		r := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vol), ReaderOptions{})
		rb := newReadBack(t)
		var err error
		lost := map[fileindex.Location]LostEntry{}
		switch mode {
		case "entries":
			err = r.ReadEntries(context.Background(), locsOf(idx), rb.fn, rb.damaged)
			lost = lostOf(t, err)
		case "adjacent":
			sf := &storedFeeder{t: t, rb: rb}
			err = r.ReadAdjacent(context.Background(), locsOf(idx), nil, rb.fn, sf.stored, rb.damaged)
			lost = lostOf(t, err)
			if sf.blocks == 0 {
				t.Fatalf("%s: no block passed on as stored", mode)
			}
		case "runs":
			// Runs of entries, as a chain's read of an older session
			// has them: blocks at the seams are walked.
			follows := make([]bool, len(idx))
			for i := range follows {
				follows[i] = i%11 != 0
			}
			sf := &storedFeeder{t: t, rb: rb}
			err = r.ReadAdjacent(context.Background(), locsOf(idx), follows, rb.fn, sf.stored, rb.damaged)
			lost = lostOf(t, err)
			if sf.blocks == 0 {
				t.Fatalf("%s: no block passed on as stored", mode)
			}
		default:
			if err = r.ReadAll(context.Background(), rb.fn, rb.damaged); err != nil {
				t.Fatalf("%s: %v", mode, err)
			}
		}
		if len(rb.damages) != 1 {
			t.Fatalf("%s: damage reports %v, want one", mode, rb.damages)
		}
		d := rb.damages[0]
		if d.Seq != seq || d.Offset != off || d.VolumeID != vol.id || d.SessionID != info.SessionID || !strings.Contains(d.Reason, reason) {
			t.Fatalf("%s: damage %+v, want seq %d at %d (%s)", mode, d, seq, off, reason)
		}
		hurt := 0
		for i, e := range idx {
			touches := e.Loc.Seq <= seq && seq <= e.Loc.EndSeq
			ok := rb.ended[e.Path] && bytes.Equal(rb.got[e.Path], files[i].content)
			if touches && ok {
				t.Errorf("%s: %s spans damaged block %d and reads fine", mode, e.Path, seq)
			}
			if !touches && !ok {
				t.Errorf("%s: %s (blocks %d..%d) is hurt by damage in block %d", mode, e.Path, e.Loc.Seq, e.Loc.EndSeq, seq)
			}
			if touches {
				hurt++
			}
			// ReadEntries names exactly the entries it did not pass on
			// whole, each with the damage that hurt it.
			if l, named := lost[e.Loc]; mode != "all" && (named != touches || (named && (l.Damage == nil || l.Damage.Seq != seq))) {
				t.Errorf("%s: %s (blocks %d..%d), damage in block %d: named lost %v (%+v)", mode, e.Path, e.Loc.Seq, e.Loc.EndSeq, seq, named, l)
			}
		}
		if mode != "all" && len(lost) != hurt {
			t.Errorf("%d entries named lost, %d hurt", len(lost), hurt)
		}
		if hurt == 0 || hurt == len(idx) {
			t.Fatalf("%d of %d entries hurt", hurt, len(idx))
		}
	}
}

func TestFlippedByteInDataBlock(t *testing.T) {
	vol, key, info, res, idx, files := damageSetup(t)
	seq := idx[len(idx)/2].Loc.Seq
	off, h := blockAt(t, vol, res.Parts[0], idx, seq)
	vol.buf[off+HeaderSize+int64(h.StoredLen)/2] ^= 0x10
	checkDamage(t, vol, key, info, res, idx, files, seq, off, "CRC32C mismatch")
}

func TestFlippedByteInBlockHeader(t *testing.T) {
	// A flip in the stored length makes the header lie about where the
	// next block is; the reader finds it by searching.
	vol, key, info, res, idx, files := damageSetup(t)
	seq := idx[len(idx)/3].Loc.Seq
	off, _ := blockAt(t, vol, res.Parts[0], idx, seq)
	vol.buf[off+53] ^= 0x01
	checkDamage(t, vol, key, info, res, idx, files, seq, off, "")
	v, _ := OpenVolume(vol, vol.size())
	ps, err := v.Parts()
	// Parts hops without reading payloads, so it notices the lie where the
	// hop lands, not at the block that told it.
	if err != nil || len(ps) != 1 || ps[0].Torn || len(ps[0].Damaged) != 1 || ps[0].Damaged[0].Offset <= off {
		t.Fatalf("Parts: %+v, %v", ps, err)
	}
}

func TestTamperedBlock(t *testing.T) {
	// Ciphertext changed and the CRC recomputed: not the medium, an attacker.
	vol, key, info, res, idx, files := damageSetup(t)
	seq := idx[len(idx)/2].Loc.Seq
	off, h := blockAt(t, vol, res.Parts[0], idx, seq)
	vol.buf[off+HeaderSize+10] ^= 0x01
	setCRC(vol.buf[off : off+h.Size()])
	checkDamage(t, vol, key, info, res, idx, files, seq, off, "authentication failed")
}

func TestOutOfPlaceBlock(t *testing.T) {
	for _, c := range []struct {
		name   string
		mutate func(b []byte)
	}{
		{"seq", func(b []byte) { b[47] += 100 }},
		{"session", func(b []byte) { b[24] ^= 0xff }},
		{"volume", func(b []byte) { b[8] ^= 0xff }},
	} {
		t.Run(c.name, func(t *testing.T) {
			vol, key, info, res, idx, files := damageSetup(t)
			seq := idx[len(idx)/2].Loc.Seq
			off, h := blockAt(t, vol, res.Parts[0], idx, seq)
			c.mutate(vol.buf[off:])
			setCRC(vol.buf[off : off+h.Size()])
			checkDamage(t, vol, key, info, res, idx, files, seq, off, "out of place")
		})
	}
}

func TestDamagedCallbackStops(t *testing.T) {
	vol, key, info, res, idx, _ := damageSetup(t)
	off, _ := blockAt(t, vol, res.Parts[0], idx, idx[len(idx)/2].Loc.Seq)
	vol.buf[off+100] ^= 1
	r := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vol), ReaderOptions{})
	stop := errors.New("stop")
	err := r.ReadEntries(context.Background(), locsOf(idx), func(RecordType, []byte) error { return nil }, func(*CorruptBlockError) error { return stop })
	if err != stop {
		t.Fatalf("err = %v", err)
	}
	var ce *CorruptBlockError
	if err := r.ReadAll(context.Background(), func(RecordType, []byte) error { return nil }, nil); !errors.As(err, &ce) || ce.Offset != off {
		t.Fatalf("nil damaged: err = %v", err)
	}
}

func TestTruncatedVolume(t *testing.T) {
	vol, key, info, res, idx, files := damageSetup(t)
	cutSeq := idx[len(idx)/2].Loc.Seq
	cut, _ := blockAt(t, vol, res.Parts[0], idx, cutSeq)
	vol.buf = vol.buf[:cut+1000]

	v, err := OpenVolume(vol, vol.size())
	if err != nil {
		t.Fatal(err)
	}
	ps, err := v.Parts()
	if err != nil || len(ps) != 1 || !ps[0].Torn || ps[0].End != cut || ps[0].LastSeq != cutSeq-1 {
		t.Fatalf("Parts: %+v, %v", ps, err)
	}
	if !strings.Contains(ps[0].TornReason, fmt.Sprintf("block seq %d at offset %d is cut short", cutSeq, cut)) {
		t.Fatalf("torn reason %q", ps[0].TornReason)
	}
	if _, err := ReadIndex(vol, key, ps[0]); !errors.Is(err, ErrTornPart) {
		t.Fatalf("ReadIndex: %v", err)
	}

	// With the catalog's part table, the entries before the cut read and
	// the first block past it is reported.
	r := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vol), ReaderOptions{})
	rb := newReadBack(t)
	lost := lostOf(t, r.ReadEntries(context.Background(), locsOf(idx), rb.fn, rb.damaged))
	if len(rb.damages) != 1 || rb.damages[0].Seq != cutSeq || rb.damages[0].Offset != cut || !strings.Contains(rb.damages[0].Reason, "truncated") {
		t.Fatalf("damage %+v", rb.damages)
	}
	// Every entry is either read whole or named lost to the cut.
	for i, e := range idx {
		ok := rb.ended[e.Path] && bytes.Equal(rb.got[e.Path], files[i].content)
		if ok != (e.Loc.EndSeq < cutSeq) {
			t.Errorf("%s (blocks %d..%d): read ok = %v with the cut at block %d", e.Path, e.Loc.Seq, e.Loc.EndSeq, ok, cutSeq)
		}
		if l, named := lost[e.Loc]; named == ok || (named && !strings.Contains(l.Reason, "truncated")) {
			t.Errorf("%s (blocks %d..%d): read ok = %v, named lost %v (%+v)", e.Path, e.Loc.Seq, e.Loc.EndSeq, ok, named, l)
		}
	}

	// From the volume alone, the index is rebuilt up to the cut.
	// The entry the cut goes through is named lost; those that begin
	// past it cannot be.
	r = NewSessionReader(info.SessionID, key, []PartRef{ps[0].Ref()}, memOpener(vol), ReaderOptions{})
	var rec []fileindex.Entry
	err = r.RecoverIndex(context.Background(), func(e fileindex.Entry) error { rec = append(rec, e); return nil }, rb.damaged)
	var le *LostEntriesError
	if !errors.As(err, &le) || len(le.Lost) != 1 {
		t.Fatalf("RecoverIndex: %v, want one entry lost", err)
	}
	for _, e := range idx {
		if e.Loc.Seq < cutSeq && e.Loc.EndSeq >= cutSeq {
			if l := le.Lost[0]; l.Path != e.Path || l.Loc.Seq != e.Loc.Seq || l.Loc.InBlock != e.Loc.InBlock || l.Damage != nil {
				t.Fatalf("RecoverIndex names %+v lost, want %s at seq %d", l, e.Path, e.Loc.Seq)
			}
		}
	}
	n := 0
	for _, e := range idx {
		if e.Loc.EndSeq < cutSeq {
			if n >= len(rec) || rec[n].Path != e.Path || rec[n].Loc != e.Loc || !bytes.Equal(rec[n].Hash, e.Hash) {
				t.Fatalf("recovered entry %d: %+v, want %+v", n, rec[n:min(n+1, len(rec))], e)
			}
			n++
		}
	}
	if n != len(rec) {
		t.Fatalf("recovered %d entries, want %d", len(rec), n)
	}
}

func TestKeys(t *testing.T) {
	vol, key, info, res, idx, _ := damageSetup(t)
	v, _ := OpenVolume(vol, vol.size())
	ps, _ := v.Parts()
	read := func(k *Key, parts []PartRef) error {
		r := NewSessionReader(info.SessionID, k, parts, memOpener(vol), ReaderOptions{})
		return r.ReadEntries(context.Background(), locsOf(idx[:3]), func(RecordType, []byte) error { return nil }, nil)
	}
	noStart := res.Refs()
	noStart[0].VolumeStart = 0
	other := testKey("pool-Other")
	sameID := testKey("x")
	sameID.ID = key.ID
	for _, c := range []struct {
		name  string
		key   *Key
		parts []PartRef
		want  string
	}{
		{"wrong key", other, res.Refs(), `needs key "pool-Default-1" (key check mismatch: key "pool-Other" is a different key)`},
		{"wrong key, same id", sameID, res.Refs(), `needs key "pool-Default-1" (key check mismatch: the key file holds a different key under that id); pass the key exported with "cairn key export"`},
		{"missing key", nil, res.Refs(), `needs key "pool-Default-1" (no key given)`},
		{"wrong key, no part header", other, noStart, `does not decrypt block seq`},
		{"short key", &Key{ID: "short", Material: []byte("abc")}, noStart, `has 3 bytes`},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := read(c.key, c.parts)
			var ke *KeyError
			if !errors.As(err, &ke) || ke.SessionID != info.SessionID || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want a KeyError with %q", err, c.want)
			}
			if c.name != "wrong key, no part header" && c.name != "short key" && ke.KeyID != key.ID {
				t.Fatalf("KeyID = %q", ke.KeyID)
			}
			if c.key != nil && len(c.key.Material) == KeySize {
				if _, err := ReadIndex(vol, c.key, ps[0]); !errors.As(err, &ke) {
					t.Fatalf("ReadIndex: %v", err)
				}
			}
		})
	}
	if err := ps[0].Header.CheckKey(key); err != nil {
		t.Fatal(err)
	}
}

func TestTornSession(t *testing.T) {
	key := testKey("k")
	vol := newMemVolume(t, MinBlockSize, 0)
	// A complete session first, then one that crashes half way.
	done := writeSession(t, key, sessionInfo(), vol, WriterOptions{TempDir: t.TempDir()}, randomTree(5, 5, 1000), 1000)
	committed := vol.size()
	info := sessionInfo()
	w, err := NewSessionWriter(info, key, vol, WriterOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	files := randomTree(6, 40, 100000)
	for i := range files {
		if err := w.Write(appendEntryRecords(nil, &files[i], 30000)); err != nil {
			t.Fatal(err)
		}
	}
	w.Abort()
	if vol.size() <= committed+int64(MinBlockRawSize) {
		t.Fatalf("the crashed session wrote only %d bytes", vol.size()-committed)
	}
	v, _ := OpenVolume(vol, vol.size())
	ps, err := v.Parts()
	if err != nil || len(ps) != 2 || ps[0].Torn || ps[0].Ref() != done.Parts[0].Ref() {
		t.Fatalf("Parts: %+v, %v", ps, err)
	}
	torn := ps[1]
	if !torn.Torn || torn.PartEnd != nil || torn.VolumeStart != committed || torn.Header.SessionID != info.SessionID || !strings.Contains(torn.TornReason, "no PartEnd") {
		t.Fatalf("torn part: %+v", torn)
	}
	if _, err := ReadIndex(vol, key, torn); !errors.Is(err, ErrTornPart) || !strings.Contains(err.Error(), "RecoverIndex") {
		t.Fatalf("ReadIndex: %v", err)
	}
	r := NewSessionReader(info.SessionID, key, []PartRef{torn.Ref()}, memOpener(vol), ReaderOptions{})
	var rec []fileindex.Entry
	err = r.RecoverIndex(context.Background(), func(e fileindex.Entry) error { rec = append(rec, e); return nil }, nil)
	if len(rec) == 0 || len(rec) >= len(files) {
		t.Fatalf("recovered %d of %d entries", len(rec), len(files))
	}
	// The entry the tear cut is named, with no damage to blame.
	var le *LostEntriesError
	if !errors.As(err, &le) || len(le.Lost) != 1 || le.Lost[0].Path != files[len(rec)].e.Path || le.Lost[0].Damage != nil || !strings.Contains(le.Lost[0].Reason, "torn") {
		t.Fatalf("RecoverIndex: %v, want %s named lost at the tear", err, files[len(rec)].e.Path)
	}
	locs := locsOf(rec)
	rb := newReadBack(t)
	if err := r.ReadEntries(context.Background(), locs, rb.fn, nil); err != nil {
		t.Fatal(err)
	}
	checkAll(t, rb, files[:len(rec)])
}

func TestEmptySession(t *testing.T) {
	key := testKey("k")
	vol := newMemVolume(t, MinBlockSize, 0)
	info := sessionInfo()
	res := writeSession(t, key, info, vol, WriterOptions{TempDir: t.TempDir()}, nil, 1)
	if len(res.Parts) != 1 || res.Parts[0].Blocks != 0 || res.Entries != 0 || vol.size() != 2*MinBlockSize {
		t.Fatalf("%+v, volume %d bytes", res.Parts, vol.size())
	}
	ps, idx := readIndexOf(t, vol, key)
	if len(idx) != 0 || !ps[0].PartEnd.Final {
		t.Fatalf("%+v %v", ps, idx)
	}
	r := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vol), ReaderOptions{})
	if err := r.ReadAll(context.Background(), func(RecordType, []byte) error { t.Fatal("a record"); return nil }, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadEntries(context.Background(), nil, nil, nil); err != nil {
		t.Fatal(err)
	}
}

// readLog is an io.ReaderAt that records the reads made through it.
type readLog struct {
	r     io.ReaderAt
	mu    sync.Mutex
	reads [][2]int64
}

func (l *readLog) ReadAt(p []byte, off int64) (int, error) {
	l.mu.Lock()
	l.reads = append(l.reads, [2]int64{off, int64(len(p))})
	l.mu.Unlock()
	return l.r.ReadAt(p, off)
}

func TestReadEntriesSeeks(t *testing.T) {
	key := testKey("k")
	vol := newMemVolume(t, MinBlockSize, 0)
	files := randomTree(7, 120, 100000) // 12 MB, about 24 blocks
	info := sessionInfo()
	res := writeSession(t, key, info, vol, WriterOptions{TempDir: t.TempDir()}, files, 64<<10)
	_, idx := readIndexOf(t, vol, key)
	p := res.Parts[0]
	volOff := func(e fileindex.Entry) int64 { return p.DataStart + int64(e.Loc.Off-p.StreamStart) }

	read := func(gap int64, es ...fileindex.Entry) *readLog {
		log := &readLog{r: vol}
		r := NewSessionReader(info.SessionID, key, res.Refs(), func(uuid.UUID) (io.ReaderAt, error) { return log, nil }, ReaderOptions{SeekGap: gap})
		rb := newReadBack(t)
		var locs []fileindex.Location
		for _, e := range es {
			locs = append(locs, e.Loc)
		}
		if err := r.ReadEntries(context.Background(), locs, rb.fn, nil); err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if !rb.ended[e.Path] {
				t.Fatalf("%s not read", e.Path)
			}
		}
		return log
	}
	// seeks counts reads that do not continue the previous one, apart
	// from the part header read for the key check.
	seeks := func(log *readLog) (n int, lowest int64) {
		lowest = vol.size()
		var end int64 = -1
		for _, r := range log.reads {
			if r[0] >= p.VolumeStart && r[0] < p.DataStart {
				continue
			}
			if r[0] != end {
				n++
			}
			end = r[0] + r[1]
			lowest = min(lowest, r[0])
		}
		return n, lowest
	}

	// One file near the end: the reader goes straight to its block.
	last := idx[len(idx)-3]
	n, lowest := seeks(read(0, last))
	if n != 1 || lowest != volOff(last) {
		t.Fatalf("one file: %d seeks, lowest read at %d, block at %d", n, lowest, volOff(last))
	}
	// Two files a few blocks apart are read in one pass ...
	a, b := idx[10], idx[30]
	if n, lowest := seeks(read(0, a, b)); n != 1 || lowest != volOff(a) {
		t.Fatalf("nearby files: %d seeks, lowest %d", n, lowest)
	}
	// ... and with a small seek gap, with a seek between them.
	if n, _ := seeks(read(1<<20, a, b)); n != 2 {
		t.Fatalf("far files: %d seeks, want 2", n)
	}
	// Files far apart: a seek each.
	if n, _ := seeks(read(3<<20, idx[2], idx[60], idx[110])); n != 3 {
		t.Fatalf("far files: %d seeks, want 3", n)
	}
}

// failingVolume fails every write after limit bytes with err.
type failingVolume struct {
	*memVolume
	limit int64
	fail  error
}

func (f *failingVolume) Write(p []byte) (int, error) {
	if f.size()+int64(len(p)) > f.limit {
		n := int(f.limit - f.size())
		f.buf = append(f.buf, p[:n]...)
		return n, &os.PathError{Op: "write", Path: "/pool/vol", Err: f.fail}
	}
	return f.memVolume.Write(p)
}

func TestPipelineErrorComesBackPromptly(t *testing.T) {
	key := testKey("k")
	vol := &failingVolume{memVolume: newMemVolume(t, MinBlockSize, 0), limit: 3 << 20, fail: syscall.ENOSPC}
	w, err := NewSessionWriter(sessionInfo(), key, vol, WriterOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	files := randomTree(8, 200, 100000)
	var werr error
	var written int64
	for i := range files {
		if werr = w.Write(appendEntryRecords(nil, &files[i], 1<<20)); werr != nil {
			break
		}
		written += int64(len(files[i].content))
	}
	if !errors.Is(werr, syscall.ENOSPC) || !strings.Contains(werr.Error(), vol.id.String()) {
		t.Fatalf("err = %v, want ENOSPC naming the volume", werr)
	}
	// The pipeline holds a few blocks; the error must not wait for much more.
	if lag := written - vol.limit; lag > 12*MinBlockRawSize {
		t.Fatalf("Write took %d bytes past the failure before reporting it", lag)
	}
	if _, err := w.Close(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Close = %v", err)
	}
}

func TestAbortWritesNothingMore(t *testing.T) {
	vol := newMemVolume(t, MinBlockSize, 0)
	w, err := NewSessionWriter(sessionInfo(), testKey("k"), vol, WriterOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	files := randomTree(9, 30, 100000)
	for i := range files {
		if err := w.Write(appendEntryRecords(nil, &files[i], 1<<20)); err != nil {
			t.Fatal(err)
		}
	}
	w.Abort()
	size := vol.size()
	w.Abort()
	if err := w.Write(appendEntryRecords(nil, &files[0], 1<<20)); !errors.Is(err, ErrWriterClosed) {
		t.Fatalf("Write after Abort = %v", err)
	}
	if _, err := w.Close(); err == nil {
		t.Fatal("Close after Abort succeeded")
	}
	if vol.size() != size {
		t.Fatal("the volume grew after Abort returned")
	}
}

func TestProgressWhileWriting(t *testing.T) {
	vol := newMemVolume(t, MinBlockSize, 0)
	w, err := NewSessionWriter(sessionInfo(), testKey("k"), vol, WriterOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var polls atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		var last Progress
		for !stop.Load() {
			p := w.Progress()
			if p.Entries < last.Entries || p.StoredBytes < last.StoredBytes {
				t.Errorf("progress went back: %+v after %+v", p, last)
			}
			last = p
			polls.Add(1)
			runtime.Gosched()
		}
	}()
	files := randomTree(10, 30, 100000)
	for i := range files {
		if err := w.Write(appendEntryRecords(nil, &files[i], 1<<20)); err != nil {
			t.Fatal(err)
		}
	}
	res, err := w.Close()
	stop.Store(true)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	p := w.Progress()
	if p.Entries != 30 || p.Files != 30 || p.ContentBytes != 3000000 || p.StoredBytes != res.StoredBytes || p.Blocks != res.Blocks || p.StreamBytes <= p.ContentBytes {
		t.Fatalf("final progress %+v, result %+v", p, res)
	}
	if polls.Load() == 0 {
		t.Fatal("no progress polled")
	}
}

func TestIndexOfManyFilesStaysOutOfMemory(t *testing.T) {
	// 200k entries held in memory would take far more than the bound:
	// they wait only for their blocks, and their segments go to the spill
	// file.
	vol := newMemVolume(t, MinBlockSize, 0)
	w, err := NewSessionWriter(sessionInfo(), testKey("k"), vol, WriterOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	var before, after runtime.MemStats
	var buf []byte
	for i := 0; i < 200000; i++ {
		if i == 5000 {
			// Measure from here: the pipeline's buffers and the shared
			// zstd encoder exist by now.
			runtime.GC()
			runtime.ReadMemStats(&before)
		}
		f := tfile{e: fileindex.Entry{Path: fmt.Sprintf("/srv/files/%08d-a-fairly-long-file-name.txt", i), Type: fileindex.TypeFile, Mode: 0o644, UID: 1000, GID: 1000, User: "alice", Group: "staff", MTime: int64(i)}}
		buf = appendEntryRecords(buf[:0], &f, 1)
		if err := w.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 16<<20 {
		t.Fatalf("heap grew by %d MB writing 195k entries", grew>>20)
	}
	res, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer res.Index.Close()
	n, size, _ := res.Index.spill.sizes()
	if res.Entries != 200000 || n < 2 || n != res.Index.Len() {
		t.Fatalf("%d entries in %d segments (Len %d)", res.Entries, n, res.Index.Len())
	}
	// The index is read back a segment at a time, not held whole: what is
	// live halfway through is the segment at hand.
	const bound = 512 << 10
	if size < 2*bound {
		t.Fatalf("the index is %d bytes: too small for this test to tell", size)
	}
	if testing.Verbose() {
		t.Logf("index: %d bytes in %d segments", size, n)
	}
	// Twice: what sync.Pools (the encoders) held goes at the second.
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	entries := 0
	err = res.Index.Each(0, func(i int, seg fileindex.Segment) error {
		entries += seg.Count
		if i == n/2 {
			runtime.GC()
			runtime.ReadMemStats(&after)
		}
		return nil
	})
	if err != nil || entries != 200000 {
		t.Fatalf("Each: %d entries, %v", entries, err)
	}
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > bound {
		t.Fatalf("heap grew by %d KB reading an index of %d KB a segment at a time", grew>>10, size>>10)
	}
	// From a segment on, as a sender that took the ones before does.
	var from []int
	if err := res.Index.Each(n-2, func(i int, _ fileindex.Segment) error { from = append(from, i); return nil }); err != nil || len(from) != 2 || from[0] != n-2 {
		t.Fatalf("Each from %d: segments %v, %v", n-2, from, err)
	}
	res.Index.Close()
	if err := res.Index.Each(0, func(int, fileindex.Segment) error { return nil }); !errors.Is(err, errSpillClosed) {
		t.Fatalf("Each after Close: %v", err)
	}
}

func TestLazyKeyCheck(t *testing.T) {
	vol, key, info, res, idx, files := damageSetup(t)
	p := res.Parts[0]
	read := func(k *Key, want []fileindex.Entry) (*readLog, *readBack, error) {
		log := &readLog{r: vol}
		r := NewSessionReader(info.SessionID, k, res.Refs(), func(uuid.UUID) (io.ReaderAt, error) { return log, nil }, ReaderOptions{CheckKeyLazily: true})
		rb := newReadBack(t)
		err := r.ReadEntries(context.Background(), locsOf(want), rb.fn, rb.damaged)
		return log, rb, err
	}
	headerReads := func(log *readLog) int {
		n := 0
		for _, r := range log.reads {
			if r[0] >= p.VolumeStart && r[0] < p.DataStart {
				n++
			}
		}
		return n
	}
	mid := idx[len(idx)/2:][:3]

	// The right key: the part header is never read.
	log, rb, err := read(key, mid)
	if err != nil || headerReads(log) != 0 || len(rb.damages) != 0 {
		t.Fatalf("right key: err %v, %d part header reads, damage %v", err, headerReads(log), rb.damages)
	}

	// A wrong key: the first block fails, the header names the key the
	// session needs, and nothing was passed on.
	log, rb, err = read(testKey("pool-Other"), mid)
	var ke *KeyError
	if !errors.As(err, &ke) || ke.KeyID != key.ID || !strings.Contains(err.Error(), "key check mismatch") {
		t.Fatalf("wrong key: err = %v, want the header's key check naming %q", err, key.ID)
	}
	if len(rb.order) != 0 || headerReads(log) == 0 {
		t.Fatalf("wrong key: passed on %v, %d part header reads", rb.order, headerReads(log))
	}

	// An altered first block with the right key is damage, not a wrong
	// key: the header's key check says the key is right, and an entry in
	// a later block comes back whole.
	seq := mid[0].Loc.Seq
	var after fileindex.Entry
	for _, e := range idx {
		if e.Loc.Seq > seq && e.Type == fileindex.TypeFile {
			after = e
			break
		}
	}
	off, h := blockAt(t, vol, p, idx, seq)
	vol.buf[off+HeaderSize+10] ^= 0x01
	setCRC(vol.buf[off : off+h.Size()])
	_, rb, err = read(key, []fileindex.Entry{mid[0], after})
	if lost := lostOf(t, err); len(lost) != 1 || lost[mid[0].Loc].Damage == nil || len(rb.damages) == 0 || rb.damages[0].Seq != seq || !strings.Contains(rb.damages[0].Reason, "authentication failed") {
		t.Fatalf("altered block: err %v, damage %v; want %s named lost", err, rb.damages, mid[0].Path)
	}
	for _, f := range files {
		if f.e.Path == after.Path && !bytes.Equal(rb.got[f.e.Path], f.content) {
			t.Fatalf("%s, after the damage, did not come back whole", f.e.Path)
		}
	}
	if !rb.ended[after.Path] {
		t.Fatalf("%s, after the damage, was not read", after.Path)
	}
}

func TestReadEntriesStopsAtLastBlock(t *testing.T) {
	key := testKey("k")
	vol := newMemVolume(t, DefaultBlockSize, 0)
	files := randomTree(9, 60, 300000) // 18 MB in blocks of 512 KiB
	info := sessionInfo()
	res := writeSession(t, key, info, vol, WriterOptions{TempDir: t.TempDir()}, files, 64<<10)
	_, idx := readIndexOf(t, vol, key)
	want := idx[20]
	endOff, h := blockAtSeq(t, vol, res.Parts[0], want.Loc.EndSeq)
	log := &readLog{r: vol}
	r := NewSessionReader(info.SessionID, key, res.Refs(), func(uuid.UUID) (io.ReaderAt, error) { return log, nil }, ReaderOptions{})
	rb := newReadBack(t)
	if err := r.ReadEntries(context.Background(), locsOf([]fileindex.Entry{want}), rb.fn, nil); err != nil {
		t.Fatal(err)
	}
	if !rb.ended[want.Path] {
		t.Fatalf("%s not read", want.Path)
	}
	var furthest int64
	for _, rd := range log.reads {
		furthest = max(furthest, rd[0]+rd[1])
	}
	// One buffered read may reach past the block; the read-ahead of
	// blocks must not.
	if limit := endOff + h.Size() + 1<<20; furthest > limit {
		t.Fatalf("read up to offset %d, %d bytes past the entry's last block", furthest, furthest-endOff-h.Size())
	}
}

// blockAtSeq finds block seq of part p by walking the block headers.
func blockAtSeq(t *testing.T, vol *memVolume, p PartResult, seq uint64) (int64, BlockHeader) {
	t.Helper()
	for off := p.DataStart; off < p.End; {
		h, err := ParseBlockHeader(vol.buf[off:])
		if err != nil {
			t.Fatalf("block at %d: %v", off, err)
		}
		if h.Seq == seq {
			return off, h
		}
		off += h.Size()
	}
	t.Fatalf("no block seq %d", seq)
	return 0, BlockHeader{}
}
