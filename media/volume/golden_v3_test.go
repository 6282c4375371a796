package volume

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/chunk"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/google/uuid"
)

// The golden volume of format 3: a full backup of one 3 MiB file sent by
// blocks, and an incremental after 4 KiB of it changed in place and 100
// KiB were appended, which sends the blocks around the changes and lists
// the others where the full put them. Written once, by
//
//	go test ./media/volume -run TestGoldenGenerateV3 -update-golden
//
// (which refuses to overwrite it), with the golden key of version 1.
const (
	goldenV3Volume = "testdata/golden-v3.cvol"
	goldenV3Key    = "testdata/golden-v3.key.json"
	// goldenV3SHA256 is the digest of the committed golden-v3 volume.
	goldenV3SHA256 = "c6bf6257cbfa3bfb53d17cd0c68261bc0b5c7f8fc46fa874ed45d7d136d46590"
)

var (
	goldenV3ID   = uuid.MustParse("c0ffee00-0001-4000-8000-0000000cafe3")
	goldenV3Full = uuid.MustParse("c0ffee00-0003-4000-8000-000000000001")
	goldenV3Incr = uuid.MustParse("c0ffee00-0003-4000-8000-000000000002")
)

// goldenV3Contents are the file's two versions.
func goldenV3Contents() ([]byte, []byte) {
	// Log-like text: zstd keeps the golden volume small.
	v1 := textLike(rand.New(rand.NewPCG(3, 3)), 3<<20)
	v2 := bytes.Clone(v1)
	copy(v2[1<<20+12345:], bytes.Repeat([]byte("changed!"), 512))
	v2 = append(v2, bytes.Repeat([]byte("appended line\n"), 100<<10/14)...)
	return v1, v2
}

// goldenV3Bits is the size class the golden volume was written with,
// chunk.MinBits then: the volume is a fixed artifact, and the class is the
// writer's choice, so a later MinBits must not change what it holds.
const goldenV3Bits = 20

// goldenV3Stream is the stream an agent sends for content, given the
// block list of its base version (whose blocks are in session base).
func goldenV3Stream(t testing.TB, content []byte, mtime int64, base *fileindex.BlockList, baseSession uuid.UUID) []byte {
	t.Helper()
	stream := AppendRecord(nil, RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{
		Path: "/srv/db", Type: fileindex.TypeFile, Mode: 0o640, Size: int64(len(content)), MTime: mtime}))
	bl := &fileindex.BlockList{Bits: goldenV3Bits}
	stream = goldenCut(t, stream, bl, 0, content, base, baseSession, nil)
	sum := sha256.Sum256(content)
	return AppendFileEndBlocks(stream, EndOK, sum[:], bl)
}

// goldenCut cuts content, which lies at offset y of the file, into blocks
// of bl's class as an agent does: those base holds are added to bl where
// base has them (in session baseSession), the others sent as Data records
// appended to stream. each, if set, gets every block at its offset.
func goldenCut(t testing.TB, stream []byte, bl *fileindex.BlockList, y int64, content []byte, base *fileindex.BlockList, baseSession uuid.UUID, each func(off int64, data []byte)) []byte {
	t.Helper()
	var s chunk.Splitter
	if err := s.Reset(bytes.NewReader(content), int(bl.Bits)); err != nil {
		t.Fatal(err)
	}
	known := map[[32]byte]fileindex.Block{}
	if base != nil {
		for _, b := range base.Blocks {
			known[b.Hash] = b
		}
	}
	for {
		data, err := s.Next()
		if errors.Is(err, io.EOF) {
			return stream
		}
		if err != nil {
			t.Fatal(err)
		}
		if each != nil {
			each(y, data)
		}
		b := fileindex.Block{Hash: sha256.Sum256(data), Loc: fileindex.Location{Len: uint64(len(data))}}
		if old, ok := known[b.Hash]; ok {
			if len(bl.Sessions) == 0 {
				bl.Sessions = [][16]byte{baseSession}
			}
			b.Session, b.Loc = 1, old.Loc
		} else {
			for off := 0; off < len(data); off += MaxDataBody {
				stream = AppendDataRecord(stream, y+int64(off), data[off:min(off+MaxDataBody, len(data))])
			}
		}
		bl.Blocks = append(bl.Blocks, b)
		y += int64(len(data))
	}
}

// goldenBlockInfos are the sessions of a golden volume of a large file by
// blocks: a full, and an incremental an hour later.
func goldenBlockInfos(full, incr uuid.UUID) [2]SessionInfo {
	return [2]SessionInfo{
		{SessionID: full, JobID: 1, BackupID: 1, Client: "golden-client", Level: "full", Pool: "Golden", Created: goldenCreated, Compression: CompressionZstd, BlockRawSize: 512 << 10},
		{SessionID: incr, JobID: 2, BackupID: 2, Client: "golden-client", Level: "incremental", Pool: "Golden", Created: goldenCreated.Add(time.Hour), Compression: CompressionZstd, BlockRawSize: 512 << 10},
	}
}

// goldenGenerateBlocks writes a golden volume of format version: the full
// and the incremental of one large file, whose streams stream gives for
// session i and mtime, given the block list of the version before.
func goldenGenerateBlocks(t *testing.T, volPath, keyPath string, version int, id, full, incr uuid.UUID, stream func(i int, mtime int64, base *fileindex.BlockList) []byte) {
	goldenFresh(t, volPath, keyPath)
	key := loadGoldenKey(t)
	vol := &memVolume{id: id, bs: 64 << 10, align: DiskPartAlign}
	lbl, err := EncodeLabel(Label{FormatVersion: version, VolumeID: id, Name: fmt.Sprintf("golden-v%d", version), Pool: "Golden", BlockSize: 64 << 10, PartAlign: DiskPartAlign, Created: goldenCreated, MediaType: "disk"})
	if err != nil {
		t.Fatal(err)
	}
	vol.buf = lbl
	infos := goldenBlockInfos(full, incr)
	m := int64(1763899200) * 1e9
	var base *fileindex.BlockList
	for i := range infos {
		w, err := NewSessionWriter(infos[i], key, vol, WriterOptions{Workers: 1, TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(stream(i, m+int64(i)*3600e9, base)); err != nil {
			t.Fatal(err)
		}
		res, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		base = indexEntries(t, res)[0].Blocks
	}
	saveGolden(t, volPath, keyPath, vol.buf)
}

func TestGoldenGenerateV3(t *testing.T) {
	if !*updateGolden {
		return
	}
	v1, v2 := goldenV3Contents()
	goldenGenerateBlocks(t, goldenV3Volume, goldenV3Key, 3, goldenV3ID, goldenV3Full, goldenV3Incr, func(i int, mtime int64, base *fileindex.BlockList) []byte {
		return goldenV3Stream(t, [][]byte{v1, v2}[i], mtime, base, goldenV3Full)
	})
}

// goldenFresh stops a golden volume from being written over: it is never
// regenerated.
func goldenFresh(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s exists: the golden volume is never regenerated (see FORMAT.md); add a golden file for a new format version instead", p)
		}
	}
}

// saveGolden writes a new golden volume, and beside it the golden key file
// it is encrypted with.
func saveGolden(t *testing.T, volPath, keyPath string, buf []byte) {
	t.Helper()
	kf, err := os.ReadFile(goldenKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, kf, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(volPath, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf)
	t.Logf("wrote %s: %d bytes, sha256 %x", volPath, len(buf), sum)
}

// openGolden reads a committed golden volume, holds it to its digest and
// opens it.
func openGolden(t *testing.T, path, digest string) (*bytes.Reader, *Volume) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (the golden volume is committed; it is never regenerated)", err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != digest {
		t.Fatalf("%s has changed (sha256 %x): it must never be rewritten", path, sum)
	}
	r := bytes.NewReader(data)
	v, err := OpenVolume(r, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	return r, v
}

// goldenBlockSessions opens a golden volume of format version holding a
// full and an incremental of one large file by blocks, and returns its
// two parts, the file's entry in each session's index (checked against
// the index rebuilt from its data blocks), and how to read them.
func goldenBlockSessions(t *testing.T, path, digest string, version int, id uuid.UUID) (*Key, []PartInfo, [2]fileindex.Entry, func(uuid.UUID) (io.ReaderAt, error)) {
	t.Helper()
	r, v := openGolden(t, path, digest)
	key := loadGoldenKey(t)
	if l := v.Label(); l.FormatVersion != version || l.PartAlign != DiskPartAlign || l.VolumeID != id {
		t.Fatalf("label %+v", l)
	}
	parts, err := v.Parts()
	if err != nil || len(parts) != 2 || len(v.Damaged()) != 0 {
		t.Fatalf("%d parts, %v, damage %v", len(parts), err, v.Damaged())
	}
	open := func(uuid.UUID) (io.ReaderAt, error) { return r, nil }
	var entries [2]fileindex.Entry
	for i, p := range parts {
		it, err := ReadIndex(r, key, p)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := fileindex.Collect(it)
		if err != nil || len(idx) != 1 || idx[0].Blocks == nil {
			t.Fatalf("session %d index: %+v, %v", i, idx, err)
		}
		entries[i] = idx[0]
		// The index rebuilt from the data blocks places the blocks alike.
		sr := NewSessionReader(p.Header.SessionID, key, []PartRef{p.Ref()}, open, ReaderOptions{})
		var rec []fileindex.Entry
		if err := sr.RecoverIndex(context.Background(), func(e fileindex.Entry) error { rec = append(rec, e); return nil }, nil); err != nil {
			t.Fatal(err)
		}
		sr.Close()
		if len(rec) != 1 || string(fileindex.AppendEntry(nil, &rec[0])) != string(fileindex.AppendEntry(nil, &idx[0])) {
			t.Errorf("session %d: the index rebuilt from data differs from the trailer", i)
		}
	}
	return key, parts, entries, open
}

// TestGoldenV3 reads the committed golden volume of format 3: its label,
// its two sessions, the incremental's block list (blocks in the full's
// session, and the ones it sent), and both versions of the file, the
// second assembled from the blocks of both sessions, each read by its
// place alone.
func TestGoldenV3(t *testing.T) {
	key, parts, entries, open := goldenBlockSessions(t, goldenV3Volume, goldenV3SHA256, 3, goldenV3ID)
	v1, v2 := goldenV3Contents()
	kept, sent := 0, 0
	for _, b := range entries[1].Blocks.Blocks {
		if b.Session == 1 {
			kept++
		} else {
			sent++
		}
	}
	if entries[1].Blocks.Sessions[0] != goldenV3Full || kept == 0 || sent == 0 || sent > 3 {
		t.Fatalf("incremental: %d blocks kept in %x, %d sent", kept, entries[1].Blocks.Sessions, sent)
	}
	// Assemble each version: the blocks of each session, read by place.
	for i, want := range [][]byte{v1, v2} {
		got := make([]byte, entries[i].Size)
		bySession := map[uuid.UUID][]fileindex.Location{}
		at := map[uuid.UUID][]int64{}
		var y int64
		bl := entries[i].Blocks
		own := parts[i].Header.SessionID
		for j, b := range bl.Blocks {
			s := uuid.UUID(bl.SessionOf(j, own))
			bySession[s] = append(bySession[s], b.Loc)
			at[s] = append(at[s], y)
			y += int64(b.Loc.Len)
		}
		for _, p := range parts {
			sid := p.Header.SessionID
			sr := NewSessionReader(sid, key, []PartRef{p.Ref()}, open, ReaderOptions{})
			var shift int64
			base := int64(-1)
			err := sr.ReadEntries(context.Background(), bySession[sid], func(rt RecordType, body []byte) error {
				switch rt {
				case RecBlockStart:
					k, err := BlockIndex(body)
					if err != nil {
						return err
					}
					shift, base = at[sid][k], -1
				case RecData:
					off, d, _ := DecodeData(body)
					if base < 0 {
						base = off
					}
					copy(got[shift+off-base:], d)
				}
				return nil
			}, nil)
			sr.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Errorf("version %d assembled from its blocks differs", i+1)
		}
		if sum := sha256.Sum256(want); !bytes.Equal(entries[i].Hash, sum[:]) {
			t.Errorf("version %d: index digest %x", i+1, entries[i].Hash)
		}
	}
}
