package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/google/uuid"
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
		if h.StoredLen > maxPayload || h.Version != FormatVersion {
			t.Fatalf("accepted %+v", h)
		}
	})
}

// readEverything drives every reader over a volume; on garbage it must
// return errors, never panic or hang.
func readEverything(t *testing.T, data []byte, key *Key) {
	r := bytes.NewReader(data)
	v, err := OpenVolume(r, int64(len(data)))
	if err != nil {
		return
	}
	ps, _ := v.Parts()
	for _, p := range ps {
		open := func(uuid.UUID) (io.ReaderAt, error) { return r, nil }
		sr := NewSessionReader(p.Header.SessionID, key, []PartRef{p.Ref()}, open, ReaderOptions{Workers: 1})
		ignore := func(*CorruptBlockError) error { return nil }
		sr.ReadAll(context.Background(), func(RecordType, []byte) error { return nil }, ignore)
		var locs []fileindex.Location
		sr.RecoverIndex(context.Background(), func(e fileindex.Entry) error { locs = append(locs, e.Loc); return nil }, ignore)
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
	key := loadGoldenKey(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		readEverything(t, expandVolume(data), key)
	})
}

// FuzzSessionPlaintext puts arbitrary bytes, properly sealed, in a data
// block: what a buggy or hostile writer could produce. Readers must reject
// it with errors.
func FuzzSessionPlaintext(f *testing.F) {
	var seed []byte
	for _, tf := range goldenSessions()[0][:8] {
		seed = appendEntryRecords(seed, &tf, 100)
	}
	f.Add(seed)
	f.Add([]byte{1, 0})
	f.Add(AppendRecord(nil, RecData, []byte{0xff, 0xff}))
	key := testKey("fuzz")
	f.Fuzz(func(t *testing.T, plain []byte) {
		if len(plain) > MaxBlockRawSize {
			return
		}
		readEverything(t, sealedVolume(t, key, plain), key)
	})
}

// sealedVolume builds a volume holding one session with one data block
// whose plaintext is plain, and no index.
func sealedVolume(t *testing.T, key *Key, plain []byte) []byte {
	vid, sid := uuid.UUID{1}, uuid.UUID{2}
	out, err := EncodeLabel(Label{VolumeID: vid, BlockSize: MinBlockSize})
	if err != nil {
		t.Fatal(err)
	}
	ph, _ := json.Marshal(PartHeader{SessionID: sid, KeyID: key.ID, KeyCheck: KeyCheck(key)})
	blk, _ := encodeControlBlock(KindPartHeader, vid, sid, 0, ph)
	out = append(out, blk...)
	s, _ := newSealer(key, sid, true)
	data := s.seal(nil, BlockHeader{Kind: KindData, VolumeID: vid, SessionID: sid}, plain)
	out = append(out, data...)
	pe, _ := json.Marshal(PartEnd{SessionID: sid, Final: true, DataBlocks: 1, StreamEnd: uint64(len(data)), IndexFirstSeq: 1, IndexStreamStart: uint64(len(data)), Status: StatusComplete})
	blk, _ = encodeControlBlock(KindPartEnd, vid, sid, 1, pe)
	out = append(out, blk...)
	return append(out, make([]byte, alignUp(int64(len(out)), MinBlockSize)-int64(len(out)))...)
}
