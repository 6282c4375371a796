package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestBlockHeaderRoundTrip(t *testing.T) {
	h := BlockHeader{
		Version: BlockVersion, Kind: KindData, Flags: FlagZstd | FlagAESGCM,
		VolumeID: uuid.New(), SessionID: uuid.New(), Seq: 1<<40 + 3, RawLen: 1 << 20, StoredLen: 1000, CRC: 0xdeadbeef,
	}
	b := make([]byte, HeaderSize)
	h.put(b)
	if string(b[:4]) != "CRNB" || b[4] != 1 || b[5] != 3 || binary.BigEndian.Uint16(b[6:]) != 3 ||
		binary.BigEndian.Uint64(b[40:]) != h.Seq || binary.BigEndian.Uint32(b[56:]) != 0 || binary.BigEndian.Uint32(b[60:]) != 0xdeadbeef {
		t.Fatalf("layout: % x", b)
	}
	got, err := ParseBlockHeader(b)
	if err != nil || got != h {
		t.Fatalf("got %+v, %v", got, err)
	}
}

func TestParseBlockHeaderRejects(t *testing.T) {
	good := make([]byte, HeaderSize)
	(&BlockHeader{Version: 1, Kind: KindData, Flags: FlagAESGCM, RawLen: 10, StoredLen: 26}).put(good)
	mut := func(f func(b []byte)) []byte { b := bytes.Clone(good); f(b); return b }
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"short", good[:63], ErrBadHeader},
		{"magic", mut(func(b []byte) { b[0] = 'X' }), ErrNotBlock},
		{"newer version", mut(func(b []byte) { b[4] = 2 }), ErrNewerFormat},
		{"version 0", mut(func(b []byte) { b[4] = 0 }), ErrBadHeader},
		{"kind", mut(func(b []byte) { b[5] = 6 }), ErrBadHeader},
		{"flags", mut(func(b []byte) { b[7] = 8 }), ErrBadHeader},
		{"two codecs", mut(func(b []byte) { b[7] = 7 }), ErrBadHeader},
		{"huge", mut(func(b []byte) { binary.BigEndian.PutUint32(b[52:], 1<<30) }), ErrBadHeader},
		{"control with flags", mut(func(b []byte) { b[5] = byte(KindPartEnd) }), ErrBadHeader},
	}
	for _, c := range cases {
		if _, err := ParseBlockHeader(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	// The reserved word is ignored, so a later minor revision may use it.
	if _, err := ParseBlockHeader(mut(func(b []byte) { b[57] = 1 })); err != nil {
		t.Errorf("reserved bytes: %v", err)
	}
}

func TestLabel(t *testing.T) {
	l := Label{VolumeID: uuid.New(), Name: "Default-0001", Barcode: "CRN001L9", Pool: "Default", BlockSize: 128 << 10, Created: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), MediaType: "disk"}
	b, err := EncodeLabel(l)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != l.BlockSize {
		t.Fatalf("label is %d bytes, want %d", len(b), l.BlockSize)
	}
	got, err := ReadLabel(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	l.FormatVersion = 1
	if got != l {
		t.Fatalf("got %+v, want %+v", got, l)
	}
	for _, bs := range []int{0, 4096, MaxBlockSize + 4096, 100000} {
		l.BlockSize = bs
		if _, err := EncodeLabel(l); err == nil {
			t.Errorf("block size %d accepted", bs)
		}
	}

	if _, err := ReadLabel(bytes.NewReader([]byte("hello, this is a text file and not a volume at all, not at all..."))); !errors.Is(err, ErrNotVolume) {
		t.Errorf("text file: %v", err)
	}
	if _, err := ReadLabel(bytes.NewReader(nil)); !errors.Is(err, ErrNotVolume) {
		t.Errorf("empty file: %v", err)
	}
	// A label from a later format: the header version and the JSON say so.
	v2 := bytes.Clone(b)
	v2[4] = 2
	setCRC(v2[:HeaderSize+int(binary.BigEndian.Uint32(v2[52:]))])
	if _, err := ReadLabel(bytes.NewReader(v2)); !errors.Is(err, ErrNewerFormat) || !strings.Contains(err.Error(), "format version 2") {
		t.Errorf("v2 header: %v", err)
	}
	js := []byte(`{"format_version":6,"volume_id":"` + l.VolumeID.String() + `","block_size":65536}`)
	blk, _ := encodeControlBlock(KindLabel, l.VolumeID, uuid.Nil, 0, js)
	if _, err := ReadLabel(bytes.NewReader(blk)); !errors.Is(err, ErrNewerFormat) || !strings.Contains(err.Error(), "format version 6,") {
		t.Errorf("v6 JSON: %v", err)
	}
	flipped := bytes.Clone(b)
	flipped[HeaderSize+3] ^= 1
	if _, err := ReadLabel(bytes.NewReader(flipped)); !errors.Is(err, errCRC) {
		t.Errorf("flipped label byte: %v", err)
	}
}

// TestKeyCheckValue pins the key check: it is on every volume written, so
// it may never change. The value is from
// printf 'cairn key check v1' | openssl dgst -sha256 -mac HMAC -macopt hexkey:0101...01
func TestKeyCheckValue(t *testing.T) {
	k := &Key{ID: "x", Material: bytes.Repeat([]byte{1}, 32)}
	if got, want := KeyCheck(k), "afc927e533f215da"; got != want {
		t.Fatalf("KeyCheck = %s, want %s", got, want)
	}
}

func TestSealOpen(t *testing.T) {
	key := testKey("k")
	sess := uuid.New()
	rnd := rand.New(rand.NewPCG(1, 2))
	text := textLike(rnd, 700<<10)
	random := make([]byte, 700<<10)
	rand.NewChaCha8([32]byte{1}).Read(random)
	for _, c := range []struct {
		name  string
		plain []byte
		codec string
		want  Flags // the codec's flag, 0 for a block stored as it is
	}{
		{"text", text, CompressionZstd, FlagZstd},
		{"text s2", text, CompressionS2, FlagS2},
		{"text no compression", text, CompressionNone, 0},
		{"random", random, CompressionZstd, 0},
		{"random s2", random, CompressionS2, 0},
		{"empty", nil, CompressionZstd, 0},
		{"small", []byte("hello"), CompressionZstd, 0},
		{"small s2", []byte("hello"), CompressionS2, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := newSealer(key, sess, c.codec)
			if err != nil {
				t.Fatal(err)
			}
			vol := uuid.New()
			blk := s.seal(nil, BlockHeader{Kind: KindData, VolumeID: vol, SessionID: sess, Seq: 42}, c.plain)
			h, err := ParseBlockHeader(blk)
			if err != nil {
				t.Fatal(err)
			}
			if h.Flags&(FlagZstd|FlagS2) != c.want || h.Flags&FlagAESGCM == 0 {
				t.Fatalf("flags %b", h.Flags)
			}
			if int(h.Size()) != len(blk) || h.RawLen != uint32(len(c.plain)) || h.VolumeID != vol || h.Seq != 42 {
				t.Fatalf("header %+v for a %d-byte block", h, len(blk))
			}
			if c.want != 0 && float64(h.StoredLen) > 0.5*float64(len(c.plain)) {
				t.Fatalf("text compressed to only %d of %d bytes", h.StoredLen, len(c.plain))
			}
			if blockCRC(blk, blk[HeaderSize:]) != h.CRC {
				t.Fatal("CRC does not hold")
			}
			o, _ := newOpener(key, sess)
			got, err := o.open(nil, &h, bytes.Clone(blk))
			if err != nil || !bytes.Equal(got, c.plain) {
				t.Fatalf("open: %v", err)
			}

			// The AAD binds kind, flags, session, seq and length: a block
			// moved to another place does not open, even with a fixed CRC.
			for name, f := range map[string]func(b []byte){
				"seq":     func(b []byte) { b[47]++ },
				"kind":    func(b []byte) { b[5] = byte(KindIndex) },
				"session": func(b []byte) { b[30] ^= 1 },
				"raw len": func(b []byte) { b[51]++ },
				"payload": func(b []byte) { b[HeaderSize] ^= 1 },
			} {
				m := bytes.Clone(blk)
				f(m)
				setCRC(m)
				mh, err := ParseBlockHeader(m)
				if err != nil {
					t.Fatal(err)
				}
				o, _ := newOpener(key, mh.SessionID)
				if _, err := o.open(nil, &mh, m); !errors.Is(err, errAuth) {
					t.Errorf("changed %s: open = %v, want an authentication failure", name, err)
				}
			}
			// ... but not the volume id: a copied session keeps its ciphertext.
			m := bytes.Clone(blk)
			other := uuid.New()
			copy(m[8:24], other[:])
			setCRC(m)
			mh, _ := ParseBlockHeader(m)
			if got, err := o.open(nil, &mh, m); err != nil || !bytes.Equal(got, c.plain) {
				t.Errorf("block moved to another volume: %v", err)
			}
			// The wrong key fails the same way.
			wrong, _ := newOpener(testKey("other"), sess)
			if _, err := wrong.open(nil, &h, bytes.Clone(blk)); !errors.Is(err, errAuth) {
				t.Errorf("wrong key: %v", err)
			}
		})
	}
}

func TestSplitDataFillsBlocks(t *testing.T) {
	// One big file in records that do not divide the block: every data
	// block but the last is filled to within a record header of full.
	vol := newMemVolume(t, MinBlockSize, 0)
	content := make([]byte, 5<<20)
	rand.NewChaCha8([32]byte{3}).Read(content)
	files := []tfile{{e: fileEntry("/big", len(content)), content: content}}
	info := sessionInfo()
	res := writeSession(t, testKey("k"), info, vol, WriterOptions{TempDir: t.TempDir()}, files, 100000)
	p := res.Parts[0]
	pos := p.DataStart
	var raws []uint32
	for {
		h, err := ParseBlockHeader(vol.buf[pos:])
		if err != nil {
			t.Fatal(err)
		}
		if h.Kind != KindData {
			break
		}
		raws = append(raws, h.RawLen)
		pos += h.Size()
	}
	if len(raws) < 10 {
		t.Fatalf("%d data blocks", len(raws))
	}
	for i, r := range raws[:len(raws)-1] {
		if r < MinBlockRawSize-minSplit-16 {
			t.Errorf("block %d holds %d bytes, want about %d", i, r, MinBlockRawSize)
		}
	}
	r := NewSessionReader(info.SessionID, testKey("k"), res.Refs(), memOpener(vol), ReaderOptions{})
	rb := newReadBack(t)
	if err := r.ReadAll(context.Background(), rb.fn, nil); err != nil {
		t.Fatal(err)
	}
	checkAll(t, rb, files)
}

// TestSealAfterBlocksThatShrank: a sealer that just compressed a block well
// compresses the next one without the probe; whatever came before, a block
// that compresses is stored compressed, one that does not is stored raw,
// and every one opens to its plaintext.
func TestSealAfterBlocksThatShrank(t *testing.T) {
	key := testKey("k")
	sess := uuid.New()
	text := textLike(rand.New(rand.NewPCG(3, 4)), 700<<10)
	random := make([]byte, 700<<10)
	rand.NewChaCha8([32]byte{2}).Read(random)
	s, err := newSealer(key, sess, CompressionZstd)
	if err != nil {
		t.Fatal(err)
	}
	o, _ := newOpener(key, sess)
	for i, c := range []struct {
		plain      []byte
		wantZstd   bool
		thenShrank bool
	}{
		{text, true, true}, {text, true, true}, {random, false, false}, {random, false, false},
		{text, true, true}, {random, false, false}, {text, true, true}, {[]byte("hello"), false, false}, {random, false, false},
	} {
		blk := s.seal(nil, BlockHeader{Kind: KindData, SessionID: sess, Seq: uint64(i)}, c.plain)
		h, err := ParseBlockHeader(blk)
		if err != nil {
			t.Fatal(err)
		}
		if h.Flags&FlagZstd != 0 != c.wantZstd || s.shrank != c.thenShrank {
			t.Fatalf("block %d: compressed %v, want %v; sealer takes the next for compressible %v, want %v", i, h.Flags&FlagZstd != 0, c.wantZstd, s.shrank, c.thenShrank)
		}
		if got, err := o.open(nil, &h, bytes.Clone(blk)); err != nil || !bytes.Equal(got, c.plain) {
			t.Fatalf("block %d does not open: %v", i, err)
		}
	}
}
