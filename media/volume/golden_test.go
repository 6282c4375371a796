package volume

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/google/uuid"
)

// The golden volume is format version 1 as written by the first version
// of this package. It must stay readable by every later version: never
// regenerate it; a new format version gets a new golden file next to it.
var updateGolden = flag.Bool("update-golden", false, "write testdata/golden-v1.cvol and its key if they do not exist yet")

const (
	goldenVolume = "testdata/golden-v1.cvol"
	goldenKey    = "testdata/golden-v1.key.json"
)

var (
	goldenVolumeID = uuid.MustParse("c0ffee00-0001-4000-8000-00000000cafe")
	goldenFull     = uuid.MustParse("c0ffee00-0002-4000-8000-000000000001")
	goldenIncr     = uuid.MustParse("c0ffee00-0002-4000-8000-000000000002")
	goldenCreated  = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
)

// goldenDiskImage is a 600 KiB "disk image": a line per 4 KiB page and
// zeros, so it spans two 512 KiB blocks and still compresses to little.
func goldenDiskImage() []byte {
	b := make([]byte, 600<<10)
	for p := 0; p < len(b)/4096; p++ {
		copy(b[p*4096:], fmt.Sprintf("page %04d of the golden disk image\n", p))
	}
	return b
}

func goldenRandom() []byte {
	b := make([]byte, 3000)
	mrand.NewChaCha8([32]byte{'g', 'o', 'l', 'd', 'e', 'n'}).Read(b)
	return b
}

// goldenSessions is what the generator wrote: a full backup, compressed,
// and an incremental without compression holding a tombstone.
func goldenSessions() [2][]tfile {
	m := int64(1763899200) * 1e9
	dir := func(p string) tfile {
		return tfile{e: fileindex.Entry{Path: p, Type: fileindex.TypeDir, Mode: 0o755, User: "root", Group: "root", MTime: m}}
	}
	file := func(p string, c []byte, mode uint32) tfile {
		return tfile{e: fileindex.Entry{Path: p, Type: fileindex.TypeFile, Mode: mode, UID: 1000, GID: 1000, User: "alice", Group: "alice", Size: int64(len(c)), MTime: m + 123456789, Inode: 42}, content: c}
	}
	notes := file("/home/alice/notes.txt", []byte("Cairn golden volume, format version 1.\nThis file must read back byte for byte forever.\n"), 0o640)
	notes.e.NLink = 2
	notes.e.Xattrs = []fileindex.Xattr{{Name: "user.comment", Value: []byte("golden")}}
	full := []tfile{
		dir("/"),
		dir("/etc"),
		file("/etc/hosts", []byte("127.0.0.1 localhost\n::1 localhost\n"), 0o644),
		dir("/home"),
		dir("/home/alice"),
		file("/home/alice/empty", nil, 0o600),
		{e: fileindex.Entry{Path: "/home/alice/link", Type: fileindex.TypeSymlink, Mode: 0o777, Target: "notes.txt", MTime: m}},
		notes,
		{e: fileindex.Entry{Path: "/home/alice/notes2.txt", Type: fileindex.TypeHardlink, Target: "/home/alice/notes.txt", MTime: m}},
		{e: fileindex.Entry{Path: "/home/alice/pipe", Type: fileindex.TypeFifo, Mode: 0o600, MTime: m}},
		dir("/srv"),
		file("/srv/disk.img", goldenDiskImage(), 0o600),
		file("/srv/random.bin", goldenRandom(), 0o644),
	}
	incr := []tfile{
		file("/etc/hosts", []byte("127.0.0.1 localhost golden\n"), 0o644),
		file("/srv/new.txt", []byte("added in the incremental\n"), 0o644),
		{e: fileindex.Entry{Path: "/srv/random.bin", Type: fileindex.TypeDeleted}},
	}
	return [2][]tfile{full, incr}
}

func goldenInfos() [2]SessionInfo {
	return [2]SessionInfo{
		{SessionID: goldenFull, JobID: 1, BackupID: 1, Client: "golden-client", Level: "full", Pool: "Golden", Created: goldenCreated, Compression: CompressionZstd, BlockRawSize: 512 << 10},
		{SessionID: goldenIncr, JobID: 2, BackupID: 2, Client: "golden-client", Level: "incremental", Pool: "Golden", Created: goldenCreated.Add(time.Hour), Compression: CompressionNone, BlockRawSize: 512 << 10},
	}
}

type keyFile struct {
	V    int `json:"v"`
	Keys []struct {
		ID  string `json:"id"`
		Key []byte `json:"key"`
	} `json:"keys"`
}

func TestGoldenGenerate(t *testing.T) {
	if !*updateGolden {
		return
	}
	for _, p := range []string{goldenVolume, goldenKey} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s exists: the golden volume is never regenerated (see FORMAT.md); add a golden file for a new format version instead", p)
		}
	}
	material := make([]byte, KeySize)
	rand.Read(material)
	key := &Key{ID: "golden", Material: material}
	vol := &memVolume{id: goldenVolumeID, bs: 64 << 10}
	lbl, err := EncodeLabel(Label{VolumeID: goldenVolumeID, Name: "golden-v1", Barcode: "GOLD01", Pool: "Golden", BlockSize: 64 << 10, Created: goldenCreated, MediaType: "disk"})
	if err != nil {
		t.Fatal(err)
	}
	vol.buf = lbl
	sessions, infos := goldenSessions(), goldenInfos()
	for i := range sessions {
		writeSession(t, key, infos[i], vol, WriterOptions{Workers: 1, TempDir: t.TempDir()}, sessions[i], 100000)
	}
	kb, _ := json.Marshal(material) // base64, as key files hold keys
	kf := fmt.Sprintf(`{"v":1,"keys":[{"id":"golden","key":%s}]}`+"\n", kb)
	if err := os.MkdirAll(filepath.Dir(goldenVolume), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goldenKey, []byte(kf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goldenVolume, vol.buf, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(vol.buf)
	t.Logf("wrote %s: %d bytes, sha256 %x", goldenVolume, len(vol.buf), sum)
}

// goldenFile is what the golden test expects of one entry, written out as
// constants rather than derived from the generator, so a change to the
// generator cannot hide a change in what is read.
type goldenFile struct {
	path, typ string
	size      int64
	sha256    string // of the content; "" for entries without content
	content   string // for the small files
	target    string
}

var goldenWant = [2][]goldenFile{
	{
		{path: "/", typ: "dir"},
		{path: "/etc", typ: "dir"},
		{path: "/etc/hosts", typ: "file", size: 34, content: "127.0.0.1 localhost\n::1 localhost\n"},
		{path: "/home", typ: "dir"},
		{path: "/home/alice", typ: "dir"},
		{path: "/home/alice/empty", typ: "file", size: 0, sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", content: ""},
		{path: "/home/alice/link", typ: "symlink", target: "notes.txt"},
		{path: "/home/alice/notes.txt", typ: "file", size: 87, content: "Cairn golden volume, format version 1.\nThis file must read back byte for byte forever.\n"},
		{path: "/home/alice/notes2.txt", typ: "hardlink", target: "/home/alice/notes.txt"},
		{path: "/home/alice/pipe", typ: "fifo"},
		{path: "/srv", typ: "dir"},
		{path: "/srv/disk.img", typ: "file", size: 614400, sha256: "725cbe66cb0d26f83c7b238503ab78143ce34aaeff88bdc71f49b75f7e81c99c"},
		{path: "/srv/random.bin", typ: "file", size: 3000, sha256: "920ecebb9da3efb60fdd3acdef126c959e4e842eb2988fe609ba233fc1b5b508"},
	},
	{
		{path: "/etc/hosts", typ: "file", size: 27, content: "127.0.0.1 localhost golden\n"},
		{path: "/srv/new.txt", typ: "file", size: 25, content: "added in the incremental\n"},
		{path: "/srv/random.bin", typ: "deleted"},
	},
}

// goldenSHA256 is the digest of the committed golden volume.
const goldenSHA256 = "a1657dd457fdc68f71b4e6180dcc5cf67646878833b2239036d05754cf60f935"

func loadGoldenKey(t testing.TB) *Key {
	t.Helper()
	b, err := os.ReadFile(goldenKey)
	if err != nil {
		t.Fatal(err)
	}
	var kf keyFile
	if err := json.Unmarshal(b, &kf); err != nil || kf.V != 1 || len(kf.Keys) != 1 {
		t.Fatalf("key file: %v %+v", err, kf)
	}
	return &Key{ID: kf.Keys[0].ID, Material: kf.Keys[0].Key}
}

func TestGoldenV1(t *testing.T) {
	data, err := os.ReadFile(goldenVolume)
	if err != nil {
		t.Fatalf("%v (the golden volume is committed; it is never regenerated)", err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != goldenSHA256 {
		t.Fatalf("%s has changed (sha256 %x): it must never be rewritten", goldenVolume, sum)
	}
	key := loadGoldenKey(t)
	r := bytes.NewReader(data)
	v, err := OpenVolume(r, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	wantLabel := Label{FormatVersion: 1, VolumeID: goldenVolumeID, Name: "golden-v1", Barcode: "GOLD01", Pool: "Golden", BlockSize: 64 << 10, Created: goldenCreated, MediaType: "disk"}
	if l := v.Label(); !reflect.DeepEqual(l, wantLabel) {
		t.Fatalf("label %+v, want %+v", l, wantLabel)
	}
	parts, err := v.Parts()
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 2 {
		t.Fatalf("%d parts", len(parts))
	}
	for i, p := range parts {
		h, pe := p.Header, p.PartEnd
		sess := []uuid.UUID{goldenFull, goldenIncr}[i]
		comp := []string{CompressionZstd, CompressionNone}[i]
		if p.Torn || pe == nil || h.SessionID != sess || h.Part != 0 || h.KeyID != "golden" || h.KeyCheck != KeyCheck(key) ||
			h.Compression != comp || h.Encryption != EncryptionGCM || h.BlockRawSize != 512<<10 || h.Client != "golden-client" || h.Pool != "Golden" {
			t.Fatalf("part %d: %+v", i, p)
		}
		if !pe.Final || pe.Status != StatusComplete || pe.Entries != int64(len(goldenWant[i])) || p.VolumeStart != int64((i+1)*64<<10) || p.End != int64((i+2)*64<<10) {
			t.Fatalf("part %d end: %+v at %d..%d", i, pe, p.VolumeStart, p.End)
		}
	}
	if parts[0].PartEnd.DataBlocks != 2 || parts[1].PartEnd.DataBlocks != 1 {
		t.Fatalf("data blocks %d, %d; the disk image must span two", parts[0].PartEnd.DataBlocks, parts[1].PartEnd.DataBlocks)
	}
	// The full backup's blocks are compressed, the incremental's are not.
	for i, p := range parts {
		h, err := ParseBlockHeader(data[p.DataStart:])
		if err != nil || h.Kind != KindData || (h.Flags&FlagZstd != 0) != (i == 0) || h.Flags&FlagAESGCM == 0 {
			t.Fatalf("part %d first block %+v, %v", i, h, err)
		}
	}

	for i, p := range parts {
		it, err := ReadIndex(r, key, p)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := fileindex.Collect(it)
		if err != nil {
			t.Fatal(err)
		}
		want := goldenWant[i]
		if len(idx) != len(want) {
			t.Fatalf("session %d: %d entries, want %d", i, len(idx), len(want))
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
		if i == 0 {
			if e := idx[7]; e.Mode != 0o640 || e.User != "alice" || e.NLink != 2 || len(e.Xattrs) != 1 || string(e.Xattrs[0].Value) != "golden" {
				t.Errorf("notes.txt metadata: %+v", e)
			}
		}

		sr := NewSessionReader(p.Header.SessionID, key, []PartRef{p.Ref()}, func(uuid.UUID) (io.ReaderAt, error) { return r, nil }, ReaderOptions{})
		rb := newReadBack(t)
		if err := sr.ReadEntries(context.Background(), locs, rb.fn, nil); err != nil {
			t.Fatal(err)
		}
		if len(rb.order) != len(idx) {
			t.Fatalf("session %d: read %d entries, want %d", i, len(rb.order), len(idx))
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
			t.Errorf("session %d: the index rebuilt from data differs from the trailer", i)
		}
	}
}
