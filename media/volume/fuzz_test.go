package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"reflect"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/google/uuid"
	"github.com/klauspost/compress/zstd"
)

func goldenBytes(f *testing.F) []byte {
	b, err := os.ReadFile(goldenVolume)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

func FuzzBlockHeader(f *testing.F) {
	g := goldenBytes(f)
	// Every real header of the golden volume: label, part headers, data,
	// index and part end blocks, of both sessions.
	v, _ := OpenVolume(bytes.NewReader(g), int64(len(g)))
	ps, _ := v.Parts()
	f.Add(g[:HeaderSize])
	for _, p := range ps {
		f.Add(g[p.VolumeStart : p.VolumeStart+HeaderSize])
		for pos := p.DataStart; ; {
			h, err := ParseBlockHeader(g[pos:])
			if err != nil {
				break
			}
			f.Add(g[pos : pos+HeaderSize])
			if h.Kind == KindPartEnd {
				break
			}
			pos += h.Size()
		}
	}
	f.Add([]byte("CRNB"))
	f.Add(make([]byte, HeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseBlockHeader(b)
		if err != nil {
			return
		}
		var out [HeaderSize]byte
		h.put(out[:])
		want := bytes.Clone(b[:HeaderSize])
		copy(want[56:60], []byte{0, 0, 0, 0})
		if !bytes.Equal(out[:], want) {
			t.Fatalf("round trip:\n% x\n% x", out, want)
		}
		if h.StoredLen > maxPayload || h.Version != BlockVersion {
			t.Fatalf("accepted %+v", h)
		}
	})
}

// readEverything drives every reader over a volume; on garbage it must
// return errors, never panic or hang, and what it lists must hold
// together.
func readEverything(t *testing.T, data []byte, key *Key) {
	r := bytes.NewReader(data)
	size := int64(len(data))
	v, err := OpenVolume(r, size)
	if err != nil {
		return
	}
	ps, err := v.Parts()
	if err != nil && !errors.Is(err, ErrNewerFormat) {
		t.Fatalf("Parts failed on bytes in memory: %v", err)
	}
	for _, d := range v.Damaged() {
		if d.Offset < 0 || d.Offset > size {
			t.Fatalf("damage reported at offset %d of a %d byte volume", d.Offset, size)
		}
	}
	for i, p := range ps {
		if p.VolumeStart < int64(v.Label().BlockSize) || p.DataStart < p.VolumeStart || p.End < p.DataStart || p.VolumeStart >= size {
			t.Fatalf("part %d: start %d, data %d, end %d in a %d byte volume", i, p.VolumeStart, p.DataStart, p.End, size)
		}
		if i > 0 && p.VolumeStart < ps[i-1].End && !ps[i-1].Torn {
			t.Fatalf("part %d at %d overlaps part %d, which ends at %d", i, p.VolumeStart, i-1, ps[i-1].End)
		}
	}
	for _, p := range ps {
		open := func(uuid.UUID) (io.ReaderAt, error) { return r, nil }
		sr := NewSessionReader(p.Header.SessionID, key, []PartRef{p.Ref()}, open, ReaderOptions{Workers: 1})
		ignore := func(*CorruptBlockError) error { return nil }
		sr.ReadAll(context.Background(), func(RecordType, []byte) error { return nil }, ignore)
		var locs []fileindex.Location
		if pi, err := ReadPartIndex(context.Background(), r, key, p); err == nil {
			for _, e := range pi.Entries {
				locs = append(locs, e.Loc)
			}
		}
		if it, err := ReadIndex(r, key, p); err == nil {
			for n := 0; n < 100000; n++ {
				e, ok := it.Next()
				if !ok {
					break
				}
				locs = append(locs, e.Loc)
			}
		}
		locs = append(locs, fileindex.Location{}, fileindex.Location{Seq: 1, Off: 1 << 40, InBlock: 7, EndSeq: 0})
		sr.ReadEntries(context.Background(), locs, func(RecordType, []byte) error { return nil }, ignore)
		stored := func(b *StoredBlock) error {
			if b.Codec != 0 {
				_, err := Decompress(nil, b.Codec, b.RawLen, b.Payload)
				return err
			}
			return nil
		}
		sr.ReadAdjacent(context.Background(), locs, nil, func(RecordType, []byte) error { return nil }, stored, ignore)
		// Runs, as a chain's read of an older session has them.
		follows := make([]bool, len(locs))
		for i := range follows {
			follows[i] = (locs[i].Seq+uint64(i))%3 != 0
		}
		sr.ReadAdjacent(context.Background(), locs, follows, func(RecordType, []byte) error { return nil }, stored, ignore)
		sr.Close()
	}
}

// The fuzzer mutates compact volumes: each 64 KiB chunk as a uvarint of
// its length up to where only zeros follow (times two, plus one if the
// chunk is cut short: the end of a truncated volume) and those bytes. A
// real volume is mostly padding, and the fuzzer, which minimizes every
// new input byte by byte, stalls on 200 KB inputs that are mostly zeros.
func compactVolume(v []byte) []byte {
	var out []byte
	for len(v) > 0 {
		c := v[:min(len(v), MinBlockSize)]
		v = v[len(c):]
		n, short := len(bytes.TrimRight(c, "\x00")), 0
		if len(c) < MinBlockSize {
			n, short = len(c), 1
		}
		out = binary.AppendUvarint(out, uint64(n<<1|short))
		out = append(out, c[:n]...)
	}
	return out
}

func expandVolume(c []byte) []byte {
	var out []byte
	for len(c) > 0 && len(out) < 32*MinBlockSize {
		l, k := binary.Uvarint(c)
		if k <= 0 {
			break
		}
		c = c[k:]
		n := min(l>>1, uint64(len(c)), MinBlockSize)
		out = append(out, c[:n]...)
		c = c[n:]
		if l&1 == 0 {
			out = append(out, make([]byte, MinBlockSize-int(n))...)
		}
	}
	return out
}

// FuzzOpenVolume runs every reader over mangled volumes. Run it with a
// short -fuzzminimizetime (2s): minimizing each new input for the default
// minute leaves the fuzzer idle most of the time.
func FuzzOpenVolume(f *testing.F) {
	g := goldenBytes(f)
	if !bytes.Equal(expandVolume(compactVolume(g)), g) {
		f.Fatal("compact encoding does not round-trip the golden volume")
	}
	f.Add(compactVolume(g))
	f.Add(compactVolume(g[:64<<10]))
	f.Add(compactVolume(g[:100000]))
	f.Add(compactVolume(g[:len(g)-1000]))
	// Format 2 (parts on pages, the same key): whole, cut inside its
	// second part, and cut on a page boundary inside its first.
	g2, err := os.ReadFile(goldenV2Volume)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(compactVolume(g2))
	f.Add(compactVolume(g2[:75000]))
	f.Add(compactVolume(g2[:69632]))
	// Format 5, S2 blocks and zstd ones: whole, and cut inside the full.
	g5, err := os.ReadFile(goldenV5Volume)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(compactVolume(g5))
	f.Add(compactVolume(g5[:70000]))
	key := loadGoldenKey(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		readEverything(t, expandVolume(data), key)
	})
}

// FuzzSession reads a crafted session: blocks sealed with the right key
// whose plaintext is arbitrary, what a buggy or hostile writer could
// produce, since the fuzzer cannot forge a CRC and a GCM tag. Two data
// blocks and a trailer of one index segment go through every reader,
// ReadPartIndex (the trailer, or the index rebuilt from the data) and
// ReadEntries included. Every entry the rebuild finds must then be passed
// on whole or named lost: never dropped.
func FuzzSession(f *testing.F) {
	key := testKey("fuzz")
	d0, d1, idx := sessionSeed(f, key)
	f.Add(d0, d1, idx)
	f.Add(d0, d1, []byte("CRNX"))
	f.Add(d0[:len(d0)/2], d1, idx)
	f.Add(d0, d1[:len(d1)/3], idx)
	var seed []byte
	for _, tf := range goldenSessions()[0][:8] {
		seed = appendEntryRecords(seed, &tf, 100)
	}
	f.Add(seed, []byte{}, []byte{})
	f.Add([]byte{1, 0}, []byte{3, 0}, []byte{})
	f.Add(AppendRecord(nil, RecData, []byte{0xff, 0xff}), []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, d0, d1, idx []byte) {
		if len(d0)+len(d1)+len(idx) > MaxBlockRawSize {
			return
		}
		vol := craftedVolume(t, key, [][]byte{d0, d1}, idx)
		readEverything(t, vol, key)

		r := bytes.NewReader(vol)
		v, err := OpenVolume(r, int64(len(vol)))
		if err != nil {
			t.Fatal(err)
		}
		ps, err := v.Parts()
		if err != nil || len(ps) != 1 || ps[0].Torn || len(ps[0].Damaged) > 0 || len(v.Damaged()) > 0 {
			t.Fatalf("a well-formed session: parts %+v, damage %v, %v", ps, v.Damaged(), err)
		}
		ctx := context.Background()
		sr := NewSessionReader(ps[0].Header.SessionID, key, []PartRef{ps[0].Ref()}, func(uuid.UUID) (io.ReaderAt, error) { return r, nil }, ReaderOptions{Workers: 1})
		defer sr.Close()
		var rebuilt []fileindex.Entry
		paths := map[string]bool{}
		err = sr.RecoverIndex(ctx, func(e fileindex.Entry) error {
			if paths[e.Path] {
				return errors.New("two entries with one path")
			}
			paths[e.Path] = true
			rebuilt = append(rebuilt, e)
			return nil
		}, func(d *CorruptBlockError) error {
			t.Fatalf("damage in a session with none: %v", d)
			return nil
		})
		var le *LostEntriesError
		if err != nil && !errors.As(err, &le) {
			return // malformed records: a writer's bug, reported as such
		}
		// The entries the rebuild found, read again by location: each is
		// passed on whole (FileHeader to FileEnd, nothing between them
		// missing) or named lost.
		// So are they read as one adjacent run, the blocks inside it
		// passed on as stored and their records taken from them.
		for _, adjacent := range []bool{false, true} {
			var cur string
			whole := map[string]int{}
			record := func(rt RecordType, body []byte) error {
				switch rt {
				case RecFileHeader:
					e, err := fileindex.DecodeEntry(body)
					if err != nil {
						return err
					}
					cur = e.Path
				case RecFileEnd:
					whole[cur]++
					cur = ""
				}
				return nil
			}
			stored := func(b *StoredBlock) error {
				recs := b.Payload
				if b.Codec != 0 {
					var err error
					if recs, err = Decompress(nil, b.Codec, b.RawLen, b.Payload); err != nil {
						t.Fatalf("stored block %d of a session with no damage: %v", b.Seq, err)
					}
				}
				for len(recs) > 0 {
					rt, body, n, err := ParseRecord(recs)
					if err != nil {
						return err
					}
					if err := record(rt, body); err != nil {
						return err
					}
					recs = recs[n:]
				}
				return nil
			}
			noDamage := func(d *CorruptBlockError) error {
				t.Fatalf("damage in a session with none: %v", d)
				return nil
			}
			if adjacent {
				err = sr.ReadAdjacent(ctx, locsOf(rebuilt), nil, record, stored, noDamage)
			} else {
				err = sr.ReadEntries(ctx, locsOf(rebuilt), record, noDamage)
			}
			lost := lostOf(t, err)
			for _, e := range rebuilt {
				_, named := lost[e.Loc]
				if named == (whole[e.Path] == 1) {
					t.Fatalf("adjacent %v: %s at %+v: passed on whole %d times, named lost %v", adjacent, e.Path, e.Loc, whole[e.Path], named)
				}
			}
		}
	})
}

// sessionSeed is the golden full backup, its disk image cut to 8 KiB, as
// two data blocks split in the middle of an entry, and the index segment
// of their entries: small enough for the fuzzer to mutate quickly.
func sessionSeed(f *testing.F, key *Key) (d0, d1, idx []byte) {
	var recs [][]byte
	for _, tf := range goldenSessions()[0] {
		if len(tf.content) > 8<<10 {
			tf.content = tf.content[:8<<10]
			tf.e.Size = int64(len(tf.content))
		}
		b := appendEntryRecords(nil, &tf, 1000)
		for len(b) > 0 {
			_, _, n, err := ParseRecord(b)
			if err != nil {
				f.Fatal(err)
			}
			recs = append(recs, b[:n])
			b = b[n:]
		}
	}
	k := len(recs) / 2
	for k < len(recs)-1 && RecordType(recs[k][0]) != RecData {
		k++ // split inside an entry, so that it spans the two blocks
	}
	d0, d1 = bytes.Join(recs[:k], nil), bytes.Join(recs[k:], nil)
	// The index is what a rebuild finds: every location right.
	vol := craftedVolume(f, key, [][]byte{d0, d1}, nil)
	v, err := OpenVolume(bytes.NewReader(vol), int64(len(vol)))
	if err != nil {
		f.Fatal(err)
	}
	ps, err := v.Parts()
	if err != nil {
		f.Fatal(err)
	}
	sr := NewSessionReader(ps[0].Header.SessionID, key, []PartRef{ps[0].Ref()}, func(uuid.UUID) (io.ReaderAt, error) { return bytes.NewReader(vol), nil }, ReaderOptions{})
	var es []fileindex.Entry
	err = sr.RecoverIndex(context.Background(), func(e fileindex.Entry) error { es = append(es, e); return nil }, nil)
	if err != nil || len(es) != len(goldenSessions()[0]) {
		f.Fatalf("seed index: %d entries, %v", len(es), err)
	}
	sb := fileindex.NewSegmentBuilder(fileindex.DefaultSegmentBytes)
	spans := false
	for i := range es {
		if err := sb.Add(&es[i]); err != nil {
			f.Fatal(err)
		}
		spans = spans || es[i].Loc.EndSeq > es[i].Loc.Seq
	}
	if !spans {
		f.Fatal("no entry of the seed spans its two blocks")
	}
	return d0, d1, sb.Flush().Data
}

// craftedVolume builds a volume holding one session: a data block per
// element of datas and, when idx is not empty, an index block; each
// plaintext arbitrary, each block sealed with key.
func craftedVolume(t testing.TB, key *Key, datas [][]byte, idx []byte) []byte {
	vid, sid := uuid.UUID{1}, uuid.UUID{2}
	out, err := EncodeLabel(Label{VolumeID: vid, BlockSize: MinBlockSize})
	if err != nil {
		t.Fatal(err)
	}
	ph, _ := json.Marshal(PartHeader{SessionID: sid, KeyID: key.ID, KeyCheck: KeyCheck(key)})
	blk, _ := encodeControlBlock(KindPartHeader, vid, sid, 0, ph)
	out = append(out, blk...)
	stream, seq := uint64(0), uint64(0)
	s, _ := newSealer(key, sid, CompressionZstd)
	for _, d := range datas {
		b := s.seal(nil, BlockHeader{Kind: KindData, VolumeID: vid, SessionID: sid, Seq: seq}, d)
		out = append(out, b...)
		stream += uint64(len(b))
		seq++
	}
	pe := PartEnd{SessionID: sid, Final: true, DataBlocks: seq, LastSeq: seq - 1, IndexFirstSeq: seq, IndexStreamStart: stream, Status: StatusComplete}
	if len(idx) > 0 {
		s, _ := newSealer(key, sid, CompressionNone)
		b := s.seal(nil, BlockHeader{Kind: KindIndex, VolumeID: vid, SessionID: sid, Seq: seq}, idx)
		out = append(out, b...)
		stream += uint64(len(b))
		seq++
		pe.IndexBlocks = 1
	}
	pe.StreamEnd = stream
	js, _ := json.Marshal(pe)
	blk, _ = encodeControlBlock(KindPartEnd, vid, sid, seq, js)
	out = append(out, blk...)
	return append(out, make([]byte, alignUp(int64(len(out)), MinBlockSize)-int64(len(out)))...)
}

// FuzzRecords decodes a record stream, as an agent sends it to a storage
// node and a restore receives it: every record parses or is refused, and
// a stream the SessionWriter accepts comes back from the volume, entry by
// entry, as it was sent (Data records may be split at block boundaries,
// never changed).
func FuzzRecords(f *testing.F) {
	for _, s := range goldenSessions() {
		var seed []byte
		for _, tf := range s {
			seed = appendEntryRecords(seed, &tf, 1000)
		}
		f.Add(seed)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0})
	f.Add(AppendRecord(nil, RecData, []byte{0xff, 0xff}))
	f.Add(AppendFileEnd(AppendRecord(nil, RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: "/x", Type: fileindex.TypeFile})), EndOK, make([]byte, 32)))
	f.Add([]byte{2, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	f.Add(blocksSeed())
	key := testKey("fuzz")
	f.Fuzz(func(t *testing.T, stream []byte) {
		if len(stream) > 4*MaxBlockRawSize {
			return
		}
		sent, ok := parseStream(t, stream)
		vol := newMemVolume(t, MinBlockSize, 0)
		info := sessionInfo()
		w, err := NewSessionWriter(info, key, vol, WriterOptions{TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		if err := w.Write(stream); err != nil {
			if !errors.Is(err, ErrBadStream) {
				t.Fatalf("Write refused a stream without ErrBadStream: %v", err)
			}
			return
		}
		if !ok {
			t.Fatal("Write accepted a stream that does not parse")
		}
		res, err := w.Close()
		if err != nil {
			if !errors.Is(err, ErrBadStream) {
				t.Fatalf("Close: %v", err)
			}
			return
		}
		if res.Entries != int64(len(sent)) {
			t.Fatalf("the writer counts %d entries, %d were sent", res.Entries, len(sent))
		}
		_, idx := readIndexOf(t, vol, key)
		sr := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(vol), ReaderOptions{Workers: 1})
		defer sr.Close()
		var back []sentEntry
		err = sr.ReadEntries(context.Background(), locsOf(idx), func(rt RecordType, body []byte) error {
			back = addRecord(back, rt, body)
			return nil
		}, nil)
		if err != nil {
			t.Fatalf("reading back what was written: %v", err)
		}
		if len(back) != len(sent) {
			t.Fatalf("%d entries read back, %d sent", len(back), len(sent))
		}
		for i := range sent {
			if !sent[i].equal(&back[i]) {
				t.Fatalf("entry %d read back as %+v, sent as %+v", i, back[i], sent[i])
			}
		}
	})
}

// sentEntry is one entry of a record stream: its FileHeader's and
// FileEnd's bodies and its content, as runs of (offset, bytes) with
// adjacent runs joined.
type sentEntry struct {
	header, end []byte
	runs        []dataRun
}

type dataRun struct {
	off  int64
	data []byte
}

func (e *sentEntry) equal(o *sentEntry) bool {
	if !bytes.Equal(e.header, o.header) || !bytes.Equal(e.end, o.end) || len(e.runs) != len(o.runs) {
		return false
	}
	for i := range e.runs {
		if e.runs[i].off != o.runs[i].off || !bytes.Equal(e.runs[i].data, o.runs[i].data) {
			return false
		}
	}
	return true
}

func addRecord(es []sentEntry, rt RecordType, body []byte) []sentEntry {
	switch rt {
	case RecFileHeader:
		return append(es, sentEntry{header: bytes.Clone(body)})
	case RecData:
		if len(es) == 0 {
			return es
		}
		e := &es[len(es)-1]
		off, data, err := DecodeData(body)
		if err != nil {
			return es
		}
		if n := len(e.runs); n > 0 && e.runs[n-1].off+int64(len(e.runs[n-1].data)) == off {
			e.runs[n-1].data = append(e.runs[n-1].data, data...)
		} else {
			e.runs = append(e.runs, dataRun{off: off, data: bytes.Clone(data)})
		}
	case RecFileEnd:
		if len(es) > 0 {
			es[len(es)-1].end = bytes.Clone(body)
		}
	}
	return es
}

// parseStream decodes every record of stream, checking that each encodes
// back to itself, and returns the entries; ok is false when a record does
// not parse.
func parseStream(t *testing.T, stream []byte) ([]sentEntry, bool) {
	var es []sentEntry
	for len(stream) > 0 {
		rt, body, n, err := ParseRecord(stream)
		if err != nil {
			if !errors.Is(err, ErrShortRecord) && !errors.Is(err, ErrBadRecord) {
				t.Fatalf("ParseRecord: %v, neither ErrShortRecord nor ErrBadRecord", err)
			}
			return es, false
		}
		if n <= 0 || n > len(stream) {
			t.Fatalf("ParseRecord consumed %d of %d bytes", n, len(stream))
		}
		rt2, body2, n2, err := ParseRecord(AppendRecord(nil, rt, body))
		if err != nil || rt2 != rt || !bytes.Equal(body2, body) || n2 > n {
			t.Fatalf("record %s of %d bytes does not encode back to itself: %v", rt, n, err)
		}
		switch rt {
		case RecData:
			if off, data, err := DecodeData(body); err == nil {
				_, b, _, _ := ParseRecord(AppendDataRecord(nil, off, data))
				if o2, d2, err := DecodeData(b); err != nil || o2 != off || !bytes.Equal(d2, data) {
					t.Fatalf("Data record at %d does not encode back to itself", off)
				}
			}
		case RecFileEnd:
			DecodeFileEnd(body)
		case RecFileHeader:
			fileindex.DecodeEntry(body)
		}
		es = addRecord(es, rt, body)
		stream = stream[n:]
	}
	return es, true
}

// blocksSeed is a large file sent by blocks: two blocks sent, one kept
// from an earlier session, and the FileEnd with its block list.
func blocksSeed() []byte {
	s := AppendRecord(nil, RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: "/db", Type: fileindex.TypeFile, Size: 3000}))
	s = AppendDataRecord(s, 0, bytes.Repeat([]byte{1}, 1000))
	s = AppendDataRecord(s, 2000, bytes.Repeat([]byte{3}, 1000))
	bl := &fileindex.BlockList{Bits: 20, Sessions: [][16]byte{{7}}, Blocks: []fileindex.Block{
		{Hash: [32]byte{1}, Loc: fileindex.Location{Len: 1000}},
		{Hash: [32]byte{2}, Session: 1, Loc: fileindex.Location{Seq: 4, Off: 9000, InBlock: 12, EndSeq: 4, Len: 1000}},
		{Hash: [32]byte{3}, Loc: fileindex.Location{Len: 1000}},
	}}
	return AppendFileEndBlocks(s, EndOK, make([]byte, 32), bl)
}

// FuzzDecodeBlockStart decodes arbitrary bytes as the body of a BlockStart
// record, which an agent gets from a storage node: a malformed one is
// ErrBadRecord, and one that decodes encodes back to a record that
// decodes to the same.
func FuzzDecodeBlockStart(f *testing.F) {
	body := func(b *BlockStart) []byte {
		_, body, _, _ := ParseRestoreRecord(AppendBlockStart(nil, b))
		return body
	}
	f.Add(body(&BlockStart{Path: "/var/db", Len: 1 << 20, At: []int64{0, 1 << 30}}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 1, 0, 'x'})
	f.Add([]byte{1, 0xff, 0xff, 0x03})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBlockStart(data)
		if err != nil {
			if !errors.Is(err, ErrBadRecord) {
				t.Fatalf("error %v does not wrap ErrBadRecord", err)
			}
			return
		}
		again, err := DecodeBlockStart(body(&b))
		if err != nil || !reflect.DeepEqual(again, b) {
			t.Fatalf("BlockStart %+v does not encode back to itself: %+v, %v", b, again, err)
		}
	})
}

// FuzzOpenCompressed opens a data block whose payload is arbitrary bytes
// that say they are S2 or zstd, sealed with the right key: what a buggy or
// hostile writer could put on a volume, which the fuzzer cannot forge past
// the GCM tag. Opening it fails with a decode error or gives exactly the
// plaintext length the header claims, whatever length the payload claims.
func FuzzOpenCompressed(f *testing.F) {
	key := testKey("fuzz")
	sid := uuid.UUID{2}
	text := textLike(rand.New(rand.NewPCG(5, 5)), 4000)
	for _, c := range []struct {
		codec string
		flag  Flags
	}{{CompressionS2, FlagS2}, {CompressionZstd, FlagZstd}} {
		p := compress(c.codec, text, make([]byte, 0, sealedCap(len(text))), zstdEncoders.Get().(*zstd.Encoder))
		f.Add(p, uint32(len(text)), c.flag == FlagS2)
		f.Add(p, uint32(len(text)+1), c.flag == FlagS2)
		f.Add(p[:len(p)/2], uint32(len(text)), c.flag == FlagS2)
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, uint32(10), true) // claims 4 GiB
	f.Fuzz(func(t *testing.T, payload []byte, rawLen uint32, s2 bool) {
		rawLen %= maxPayload + 1
		flags := FlagAESGCM | FlagZstd
		if s2 {
			flags = FlagAESGCM | FlagS2
		}
		o, err := newOpener(key, sid)
		if err != nil {
			t.Fatal(err)
		}
		blk := make([]byte, HeaderSize, HeaderSize+len(payload)+gcmTag)
		h := BlockHeader{Version: BlockVersion, Kind: KindData, Flags: flags, SessionID: sid, Seq: 3, RawLen: rawLen, StoredLen: uint32(len(payload) + gcmTag)}
		h.put(blk)
		aad := blockAAD(nil, blk, sid, h.Seq, rawLen)
		blk = o.aead.Seal(blk, blockNonce(h.Seq), payload, aad)
		setCRC(blk)
		ph, err := ParseBlockHeader(blk)
		if err != nil {
			t.Fatal(err)
		}
		out, err := o.open(nil, &ph, blk)
		switch {
		case err != nil && !errors.Is(err, errDecode):
			t.Fatalf("error %v is not a decode error", err)
		case err == nil && len(out) != int(rawLen):
			t.Fatalf("opened to %d bytes, the header says %d", len(out), rawLen)
		}
	})
}
