package volume

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// labeledMem is a memVolume that says its label's format (Labeled), as the
// media's Appenders do.
type labeledMem struct {
	*memVolume
	format int
}

func (v labeledMem) Label() Label {
	return Label{VolumeID: v.id, BlockSize: v.bs, PartAlign: v.align, FormatVersion: v.format}
}

func newLabeledMem(t *testing.T, format int, max int64) labeledMem {
	t.Helper()
	v := &memVolume{id: uuid.New(), bs: MinBlockSize, max: max, align: DiskPartAlign}
	lbl, err := EncodeLabel(Label{FormatVersion: format, PartAlign: DiskPartAlign, VolumeID: v.id, Name: "mem", Pool: "test", BlockSize: v.bs,
		Created: time.Unix(1700000000, 0).UTC(), MediaType: "memory"})
	if err != nil {
		t.Fatal(err)
	}
	v.buf = lbl
	return labeledMem{v, format}
}

// dataBlocks hops the data blocks of every part of a volume, to the end
// of a torn part's bytes, and calls fn with the part's number, where the
// block starts and its header.
func dataBlocks(t *testing.T, r io.ReaderAt, size int64, fn func(part int, off int64, h BlockHeader)) []PartInfo {
	t.Helper()
	vol, err := OpenVolume(r, size)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := vol.Parts()
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range parts {
		end := p.End
		if p.Torn {
			end = size
		}
		for off := p.DataStart; off+HeaderSize <= end; {
			hb := make([]byte, HeaderSize)
			if _, err := r.ReadAt(hb, off); err != nil {
				t.Fatal(err)
			}
			h, err := ParseBlockHeader(hb)
			if err != nil && !p.Torn {
				t.Fatalf("part %d: block at %d: %v", i, off, err)
			}
			if err != nil || h.Kind != KindData {
				break // the trailer, or a torn part's end
			}
			fn(i, off, h)
			off += h.Size()
		}
	}
	return parts
}

// codecFlags counts the data blocks of each codec on a volume, by part.
func codecFlags(t *testing.T, r io.ReaderAt, size int64) (parts []PartInfo, s2, zstd, raw []int) {
	t.Helper()
	counts := map[Flags]map[int]int{FlagS2: {}, FlagZstd: {}, 0: {}}
	parts = dataBlocks(t, r, size, func(part int, _ int64, h BlockHeader) {
		counts[h.Flags&(FlagS2|FlagZstd)][part]++
	})
	for i := range parts {
		s2, zstd, raw = append(s2, counts[FlagS2][i]), append(zstd, counts[FlagZstd][i]), append(raw, counts[0][i])
	}
	return parts, s2, zstd, raw
}

// A session that asks for S2 writes S2 blocks on a volume of format 5. When
// it goes on to a volume of format 4, which the programs that labeled it
// read with no S2, its blocks there are zstd: the workers seal for that
// volume from the move on, and the blocks they sealed as S2 for the first
// just before it are sealed again. The part header there says zstd, and
// the session reads back whole across both.
func TestS2SessionSpansOntoAnOlderVolume(t *testing.T) {
	key := testKey("pool-Fast-1")
	first, second := newLabeledMem(t, 5, 3<<20), newLabeledMem(t, 4, 0)
	files := makeTree(7, 120, []int{20000, 150000, 700000})
	info := sessionInfo()
	info.Compression = CompressionS2
	next := 0
	res := writeSession(t, key, info, first, WriterOptions{Workers: 3, TempDir: t.TempDir(), Next: func(Appender) (Appender, error) {
		next++
		return second, nil
	}}, files, 64<<10)
	if next != 1 || len(res.Parts) != 2 {
		t.Fatalf("parts %+v after %d moves: want the session on two volumes", res.Parts, next)
	}

	parts, s2, zstd, _ := codecFlags(t, first, first.size())
	if len(parts) != 1 || parts[0].Header.Compression != CompressionS2 || s2[0] == 0 || zstd[0] != 0 {
		t.Fatalf("format 5 volume: %d parts, header says %q, %v S2 and %v zstd blocks", len(parts), parts[0].Header.Compression, s2, zstd)
	}
	parts, s2, zstd, _ = codecFlags(t, second, second.size())
	if len(parts) != 1 || parts[0].Header.Compression != CompressionZstd || s2[0] != 0 || zstd[0] == 0 {
		t.Fatalf("format 4 volume: %d parts, header says %q, %v S2 and %v zstd blocks", len(parts), parts[0].Header.Compression, s2, zstd)
	}

	rb := newReadBack(t)
	sr := NewSessionReader(info.SessionID, key, res.Refs(), memOpener(first.memVolume, second.memVolume), ReaderOptions{})
	defer sr.Close()
	if err := sr.ReadAll(t.Context(), rb.fn, rb.damaged); err != nil {
		t.Fatal(err)
	}
	checkAll(t, rb, files)
}

// S2 stores text in fewer bytes than it came in, and less well than zstd:
// the trade the setting makes, on the same files.
func TestS2StoresMoreThanZstd(t *testing.T) {
	key := testKey("pool-Fast-1")
	files := makeTree(8, 60, []int{150000, 700000}) // two thirds text
	stored := map[string]int64{}
	for _, codec := range []string{CompressionS2, CompressionZstd, CompressionNone} {
		info := sessionInfo()
		info.Compression = codec
		res := writeSession(t, key, info, newLabeledMem(t, 5, 0), WriterOptions{TempDir: t.TempDir()}, files, 64<<10)
		stored[codec] = res.StoredBytes
	}
	if !(stored[CompressionZstd] < stored[CompressionS2] && stored[CompressionS2] < stored[CompressionNone]) {
		t.Fatalf("stored bytes %v: want zstd < s2 < none", stored)
	}
}

// A codec this program does not know is refused before anything is written.
func TestWriterRefusesAnUnknownCodec(t *testing.T) {
	info := sessionInfo()
	info.Compression = "lz4"
	if _, err := NewSessionWriter(info, testKey("k"), newMemVolume(t, MinBlockSize, 0), WriterOptions{}); err == nil {
		t.Fatal("a session writer took codec lz4")
	}
}

// lossyV4 is a tape-like volume labeled format 4 by an older program.
type lossyV4 struct{ *lossyVolume }

func (v lossyV4) Label() Label {
	return Label{VolumeID: v.id, BlockSize: v.bs, FormatVersion: 4}
}

// dataPayloads maps the seq of every data block on a volume to its stored
// payload, or to what a torn part holds of it when the volume ends in it.
func dataPayloads(t *testing.T, r io.ReaderAt, size int64) map[uint64][]byte {
	t.Helper()
	out := map[uint64][]byte{}
	dataBlocks(t, r, size, func(_ int, off int64, h BlockHeader) {
		payload := make([]byte, min(int64(h.StoredLen), size-off-HeaderSize))
		if _, err := r.ReadAt(payload, off+HeaderSize); err != nil {
			t.Fatal(err)
		}
		out[h.Seq] = payload
	})
	return out
}

// When a tape fails under an S2 session and the next volume is of format
// 4, the blocks the failed tape took are not sealed again as zstd: the new
// ciphertext would take the nonce (the session key and the seq) of the
// one on the failed tape, and two plaintexts under one GCM nonce give the
// key's secrets away. The session stops with an error that says what to
// do; no seq is ever on media with two ciphertexts.
func TestS2BlocksSentToAFailedTapeAreNotSealedAgain(t *testing.T) {
	key := testKey("pool-Tape-1")
	files := makeTree(11, 40, []int{30000, 200000})
	stopped := 0
	for failAt := 2; failAt < 12; failAt++ {
		info := sessionInfo()
		info.SessionID, info.BlockRawSize, info.Compression = uuid.New(), MinBlockRawSize, CompressionS2
		first := newLossyVolume(t, MinBlockSize, 0, failAt)
		var next *lossyVolume
		w, err := NewSessionWriter(info, key, first, WriterOptions{TempDir: t.TempDir(), Next: func(Appender) (Appender, error) {
			next = newLossyVolume(t, MinBlockSize, 0, -1)
			return lossyV4{next}, nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		var buf []byte
		for i := range files {
			buf = appendEntryRecords(buf[:0], &files[i], 16<<10)
			if err = w.Write(buf); err != nil {
				break
			}
		}
		if err == nil {
			_, err = w.Close()
		} else {
			w.Abort()
		}
		if err != nil {
			if !strings.Contains(err.Error(), "would reuse its nonce") {
				t.Fatalf("record %d failed: %v", failAt, err)
			}
			stopped++
		}
		if next == nil {
			continue
		}
		lost := dataPayloads(t, bytes.NewReader(first.all[:first.durable]), int64(first.durable))
		for seq, p := range dataPayloads(t, bytes.NewReader(next.all), int64(len(next.all))) {
			if q, ok := lost[seq]; ok && !bytes.HasPrefix(p, q) {
				t.Fatalf("record %d failed: seq %d is on both volumes with different ciphertexts", failAt, seq)
			}
		}
	}
	if stopped == 0 {
		t.Fatal("no session met an S2 block sent to the failed tape: the test does not reach the case")
	}
}
