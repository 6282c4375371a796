package volume

import (
	"reflect"
	"testing"

	"github.com/google/uuid"
)

// The golden volume of format 5: the golden volume's two sessions on a
// disk volume of format 5, the full's data blocks compressed with S2 and
// the incremental's with zstd, so one volume holds both codecs. Written
// once, by
//
//	go test ./media/volume -run TestGoldenGenerateV5 -update-golden
//
// (which refuses to overwrite it), with the golden key of version 1.
const (
	goldenV5Volume = "testdata/golden-v5.cvol"
	goldenV5Key    = "testdata/golden-v5.key.json"
	// goldenV5SHA256 is the digest of the committed golden-v5 volume.
	goldenV5SHA256 = "42ea2b252e827b5a58d6c5d4b0a1983f3c87a9276c676dc673bd51053e187b41"
)

var goldenV5ID = uuid.MustParse("c0ffee00-0001-4000-8000-0000000cafe5")

func goldenV5Infos() [2]SessionInfo {
	in := goldenInfos()
	in[0].Compression, in[1].Compression = CompressionS2, CompressionZstd
	return in
}

func goldenV5Label() Label {
	return Label{FormatVersion: 5, VolumeID: goldenV5ID, Name: "golden-v5", Pool: "Golden", BlockSize: 64 << 10, PartAlign: DiskPartAlign, Created: goldenCreated, MediaType: "disk"}
}

func TestGoldenGenerateV5(t *testing.T) {
	if !*updateGolden {
		return
	}
	goldenFresh(t, goldenV5Volume, goldenV5Key)
	saveGolden(t, goldenV5Volume, goldenV5Key, writeGoldenV5(t, 1))
}

// writeGoldenV5 writes the golden-v5 volume's sessions with the golden key,
// as TestGoldenGenerateV5 did, with workers sealing blocks.
func writeGoldenV5(t *testing.T, workers int) []byte {
	s, infos := goldenSessions(), goldenV5Infos()
	return writeGoldenSessions(t, goldenV5Label(), workers, s[:], infos[:])
}

// TestGoldenV5WrittenAgain: the writer as it is now writes the golden-v5
// sessions byte for byte as the writer that made them did.
func TestGoldenV5WrittenAgain(t *testing.T) { goldenWrittenAgain(t, goldenV5Volume, writeGoldenV5) }

// TestGoldenV5 reads the committed golden volume of format 5: its label,
// both sessions by their index and by every entry's place, the full's data
// blocks S2 and the incremental's zstd.
func TestGoldenV5(t *testing.T) {
	r, v := openGolden(t, goldenV5Volume, goldenV5SHA256)
	key := loadGoldenKey(t)
	if l := v.Label(); !reflect.DeepEqual(l, goldenV5Label()) {
		t.Fatalf("label %+v, want %+v", l, goldenV5Label())
	}
	parts, s2, zstd, _ := codecFlags(t, r, r.Size())
	if len(parts) != 2 || len(v.Damaged()) != 0 {
		t.Fatalf("%d parts, damage %v", len(parts), v.Damaged())
	}
	if s2[0] == 0 || zstd[0] != 0 || s2[1] != 0 || zstd[1] == 0 {
		t.Fatalf("data blocks S2 %v, zstd %v: want the full's S2 and the incremental's zstd", s2, zstd)
	}
	infos := goldenV5Infos()
	for i, p := range parts {
		h, pe := p.Header, p.PartEnd
		if p.Torn || pe == nil || !pe.Final || pe.Status != StatusComplete || h.SessionID != infos[i].SessionID || h.KeyCheck != KeyCheck(key) ||
			h.Compression != infos[i].Compression || pe.Entries != int64(len(goldenWant[i])) {
			t.Fatalf("part %d: %+v, %+v", i, h, pe)
		}
		checkGoldenSession(t, r, key, p, goldenWant[i])
	}
}
