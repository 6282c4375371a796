package volume

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/google/uuid"
)

// The golden volume of format 2: the golden volume's two sessions and an
// hourly incremental of 13 bytes, on a disk volume whose parts start on
// 4 KiB pages. Like golden-v1 it is written once, by
//
//	go test ./media/volume -run TestGoldenGenerateV2 -update-golden
//
// (which refuses to overwrite it), and read forever after. It is
// encrypted with the golden key of version 1, which golden-v2.key.json
// repeats, so the fuzz targets can read both volumes with one key.
const (
	goldenV2Volume = "testdata/golden-v2.cvol"
	goldenV2Key    = "testdata/golden-v2.key.json"
	// goldenV2SHA256 is the digest of the committed golden-v2 volume.
	goldenV2SHA256 = "3985644326434e496c0b48739e8f146e0479896fe0dde03e358ee97b7f945a27"
)

var goldenHourly = uuid.MustParse("c0ffee00-0002-4000-8000-000000000003")

func goldenV2Infos() [3]SessionInfo {
	in := goldenInfos()
	return [3]SessionInfo{in[0], in[1], {SessionID: goldenHourly, JobID: 3, BackupID: 3, Client: "golden-client", Level: "incremental", Pool: "Golden", Created: goldenCreated.Add(2 * time.Hour), Compression: CompressionZstd, BlockRawSize: 512 << 10}}
}

func goldenV2Sessions() [3][]tfile {
	s := goldenSessions()
	m := int64(1763899200) * 1e9
	motd := []byte("hello, world\n")
	hourly := []tfile{{e: fileindex.Entry{Path: "/etc/motd", Type: fileindex.TypeFile, Mode: 0o644, Size: int64(len(motd)), MTime: m + 7200e9}, content: motd}}
	return [3][]tfile{s[0], s[1], hourly}
}

var goldenV2Want = [3][]goldenFile{goldenWant[0], goldenWant[1], {{path: "/etc/motd", typ: "file", size: 13, content: "hello, world\n"}}}

func TestGoldenGenerateV2(t *testing.T) {
	if !*updateGolden {
		return
	}
	goldenFresh(t, goldenV2Volume, goldenV2Key)
	saveGolden(t, goldenV2Volume, goldenV2Key, writeGoldenV2(t, 1))
}

// writeGoldenV2 writes the golden-v2 volume's sessions with the golden
// key, as TestGoldenGenerateV2 did, with workers sealing blocks.
func writeGoldenV2(t *testing.T, workers int) []byte {
	id := uuid.MustParse("c0ffee00-0001-4000-8000-0000000cafe2")
	l := Label{VolumeID: id, Name: "golden-v2", Pool: "Golden", BlockSize: 64 << 10, PartAlign: DiskPartAlign, Created: goldenCreated, MediaType: "disk"}
	s, infos := goldenV2Sessions(), goldenV2Infos()
	return writeGoldenSessions(t, l, workers, s[:], infos[:])
}

// writeGoldenSessions writes sessions, each with its info, with the golden
// key on a disk volume labelled l, with workers sealing blocks.
func writeGoldenSessions(t *testing.T, l Label, workers int, sessions [][]tfile, infos []SessionInfo) []byte {
	t.Helper()
	vol := &memVolume{id: l.VolumeID, bs: l.BlockSize, align: l.PartAlign}
	lbl, err := EncodeLabel(l)
	if err != nil {
		t.Fatal(err)
	}
	vol.buf = lbl
	a := labeledMem{vol, l.FormatVersion}
	if l.FormatVersion == 0 {
		a.format = 2 // what EncodeLabel writes for a part alignment
	}
	for i := range sessions {
		writeSession(t, loadGoldenKey(t), infos[i], a, WriterOptions{Workers: workers, TempDir: t.TempDir()}, sessions[i], 100000)
	}
	return vol.buf
}

// TestGoldenV2WrittenAgain: the writer as it is now, its blocks sealed in
// parallel, writes the golden volume's sessions byte for byte as the
// writer that made it did: what changes in the pipeline (buffers, workers,
// zstd's memory settings) changes nothing on the volume.
func TestGoldenV2WrittenAgain(t *testing.T) { goldenWrittenAgain(t, goldenV2Volume, writeGoldenV2) }

// goldenWrittenAgain holds what write gives, with one worker and with
// three, to the committed golden volume at path.
func goldenWrittenAgain(t *testing.T, path string, write func(*testing.T, int) []byte) {
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, workers := range []int{1, 3} {
		if got := write(t, workers); !bytes.Equal(got, want) {
			t.Errorf("with %d workers the golden sessions are written as %d bytes that differ from %s's %d", workers, len(got), path, len(want))
		}
	}
}

func TestGoldenV2(t *testing.T) {
	r, v := openGolden(t, goldenV2Volume, goldenV2SHA256)
	key := loadGoldenKey(t)
	id := uuid.MustParse("c0ffee00-0001-4000-8000-0000000cafe2")
	wantLabel := Label{FormatVersion: 2, VolumeID: id, Name: "golden-v2", Pool: "Golden", BlockSize: 64 << 10, PartAlign: 4096, Created: goldenCreated, MediaType: "disk"}
	if l := v.Label(); !reflect.DeepEqual(l, wantLabel) {
		t.Fatalf("label %+v, want %+v", l, wantLabel)
	}
	parts, err := v.Parts()
	if err != nil || len(v.Damaged()) != 0 {
		t.Fatal(err, v.Damaged())
	}
	// Where the parts lie, written out: the first after the label's
	// block, each next one on the first page after the last.
	wantAt := [][2]int64{{65536, 73728}, {73728, 77824}, {77824, 81920}}
	if len(parts) != len(wantAt) || r.Size() != wantAt[len(wantAt)-1][1] {
		t.Fatalf("%d parts, %d bytes", len(parts), r.Size())
	}
	infos := goldenV2Infos()
	for i, p := range parts {
		h, pe := p.Header, p.PartEnd
		if p.Torn || pe == nil || !pe.Final || pe.Status != StatusComplete || h.SessionID != infos[i].SessionID || h.KeyCheck != KeyCheck(key) ||
			pe.Entries != int64(len(goldenV2Want[i])) || p.VolumeStart != wantAt[i][0] || p.End != wantAt[i][1] {
			t.Fatalf("part %d: %+v, %+v at %d..%d", i, h, pe, p.VolumeStart, p.End)
		}
		checkGoldenSession(t, r, key, p, goldenV2Want[i])
	}
}

// checkGoldenSession reads session part p's index from its trailer, every
// entry's content by its location, and the index rebuilt from its data,
// and holds them to want.
func checkGoldenSession(t *testing.T, r io.ReaderAt, key *Key, p PartInfo, want []goldenFile) {
	t.Helper()
	it, err := ReadIndex(r, key, p)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := fileindex.Collect(it)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx) != len(want) {
		t.Fatalf("session %s: %d entries, want %d", p.Header.SessionID, len(idx), len(want))
	}
	wantHash := map[string]string{}
	var locs []fileindex.Location
	for j, e := range idx {
		w := want[j]
		if e.Path != w.path || e.Type.String() != w.typ || e.Target != w.target {
			t.Errorf("entry %d: %s %s -> %q, want %s %s -> %q", j, e.Type, e.Path, e.Target, w.typ, w.path, w.target)
		}
		if w.typ == "file" {
			h := w.sha256
			if h == "" {
				sum := sha256.Sum256([]byte(w.content))
				h = hex.EncodeToString(sum[:])
			}
			wantHash[w.path] = h
			if e.Size != w.size || hex.EncodeToString(e.Hash) != h {
				t.Errorf("%s: size %d hash %x, want %d %s", e.Path, e.Size, e.Hash, w.size, h)
			}
		}
		locs = append(locs, e.Loc)
	}
	sr := NewSessionReader(p.Header.SessionID, key, []PartRef{p.Ref()}, func(uuid.UUID) (io.ReaderAt, error) { return r, nil }, ReaderOptions{})
	defer sr.Close()
	rb := newReadBack(t)
	if err := sr.ReadEntries(context.Background(), locs, rb.fn, nil); err != nil {
		t.Fatal(err)
	}
	for path, h := range wantHash {
		sum := sha256.Sum256(rb.got[path])
		if hex.EncodeToString(sum[:]) != h || !rb.ended[path] {
			t.Errorf("%s: content read back has sha256 %x, want %s", path, sum, h)
		}
	}
	var rec []fileindex.Entry
	if err := sr.RecoverIndex(context.Background(), func(e fileindex.Entry) error { rec = append(rec, e); return nil }, nil); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rec, idx) {
		t.Errorf("session %s: the index rebuilt from data differs from the trailer", p.Header.SessionID)
	}
}

// TestDamagedLabelBothFormats damages the label of each golden volume: with
// the label's part alignment lost, a reader scans for parts on pages, and
// still finds every part of both formats (a format 1 part's padding is
// zeros up to the block boundary, which it steps over).
func TestDamagedLabelBothFormats(t *testing.T) {
	for _, name := range []string{goldenVolume, goldenV2Volume, goldenV3Volume} {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := OpenVolume(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		want, err := v.Parts()
		if err != nil {
			t.Fatal(err)
		}
		bad := bytes.Clone(data)
		bad[HeaderSize+5] ^= 0xff
		v, err = OpenVolume(bytes.NewReader(bad), int64(len(bad)))
		if err != nil {
			t.Fatalf("%s with a damaged label: %v", name, err)
		}
		got, err := v.Parts()
		if err != nil || len(got) != len(want) || len(v.Damaged()) != 1 {
			t.Fatalf("%s with a damaged label: %d parts, %v, damage %v; want %d parts and the label's damage", name, len(got), err, v.Damaged(), len(want))
		}
		for i := range got {
			if got[i].Torn || got[i].VolumeStart != want[i].VolumeStart || got[i].Header.SessionID != want[i].Header.SessionID {
				t.Errorf("%s part %d: %+v, want %+v", name, i, got[i], want[i])
			}
		}
	}
}

// TestLabelPartAlign: format 2 needs a part alignment that is a whole
// number of pages dividing the block size, on writing and on reading;
// format 1 has none, and a label that asks for none is format 1.
func TestLabelPartAlign(t *testing.T) {
	l := Label{VolumeID: uuid.New(), BlockSize: 64 << 10}
	for _, c := range []struct {
		version, align int
		want           int // the version written; 0: refused
	}{
		{0, 0, 1}, {0, 4096, 2}, {2, 8192, 2}, {1, 0, 1}, {2, 64 << 10, 2},
		{1, 4096, 0}, {2, 0, 0}, {2, 1000, 0}, {2, 12288, 0}, {2, 128 << 10, 0}, {3, 4096, 3}, {3, 0, 0}, {4, 4096, 4}, {4, 0, 0}, {5, 4096, 5}, {5, 0, 0}, {6, 4096, 0},
	} {
		l.FormatVersion, l.PartAlign = c.version, c.align
		b, err := EncodeLabel(l)
		if c.want == 0 {
			if err == nil {
				t.Errorf("format %d, part_align %d: accepted", c.version, c.align)
			}
			continue
		}
		if err != nil {
			t.Errorf("format %d, part_align %d: %v", c.version, c.align, err)
			continue
		}
		wantAlign := c.align
		if wantAlign == 0 {
			wantAlign = l.BlockSize
		}
		got, err := ReadLabel(bytes.NewReader(b))
		if err != nil || got.FormatVersion != c.want || got.PartAlignment() != wantAlign {
			t.Errorf("format %d, part_align %d: read back %+v (alignment %d), %v", c.version, c.align, got, got.PartAlignment(), err)
		}
	}
	// A format 2 label whose part_align is not one is damaged.
	js := []byte(`{"format_version":2,"volume_id":"` + l.VolumeID.String() + `","block_size":65536,"part_align":1000}`)
	blk, _ := encodeControlBlock(KindLabel, l.VolumeID, uuid.Nil, 0, js)
	if _, err := ReadLabel(bytes.NewReader(blk)); !errors.Is(err, ErrBadHeader) {
		t.Errorf("format 2 label with part_align 1000: %v", err)
	}
}
