package wire

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
)

// BenchmarkPlanPageJSON encodes a restore plan page of 5,000 entries as the
// server sends it (wire.Marshal), next to its baseline: the same page with
// the paths as plain strings and the envelope as encoding/json writes it,
// which is how a page was encoded before paths became fileindex.Paths.
//
//	go test -run '^$' -bench BenchmarkPlanPageJSON -count 6 ./wire
func BenchmarkPlanPageJSON(b *testing.B) {
	type stringLoc struct {
		Path     string             `json:"path"`
		Loc      fileindex.Location `json:"loc"`
		Ancestor bool               `json:"ancestor,omitempty"`
	}
	type stringRead struct {
		Locs []stringLoc `json:"locs"`
	}
	type stringPage struct {
		Reads  []stringRead `json:"reads"`
		Cursor int          `json:"cursor"`
		Done   bool         `json:"done"`
	}
	var page RestorePlanResp
	var old stringPage
	page.Reads = []ReadRequest{{}}
	old.Reads = []stringRead{{}}
	for i := range 5000 {
		p := fmt.Sprintf("/data/d%04d/file-%06d.some-longer-name-%d.txt", i%200, i, i)
		loc := fileindex.Location{Seq: uint64(i), Off: uint64(i) * 4000, InBlock: uint32(i % 4096), EndSeq: uint64(i + 1)}
		page.Reads[0].Locs = append(page.Reads[0].Locs, ReadLoc{Path: fileindex.Path(p), Loc: loc})
		old.Reads[0].Locs = append(old.Reads[0].Locs, stringLoc{Path: p, Loc: loc})
	}
	// jsonEnvelope marshals v, and the envelope around it, with
	// encoding/json.
	jsonEnvelope := func(v any) func(b *testing.B) {
		return func(b *testing.B) {
			n := 0
			for b.Loop() {
				body, err := json.Marshal(v)
				if err != nil {
					b.Fatal(err)
				}
				msg, err := json.Marshal(Envelope{V: Version, Body: body})
				if err != nil {
					b.Fatal(err)
				}
				n = len(msg)
			}
			b.SetBytes(int64(n))
		}
	}
	b.Run("baseline-string-paths", jsonEnvelope(old))
	// The page with Paths in the envelope as encoding/json writes it,
	// which scans the body again: what Marshal did before it wrote the
	// envelope itself.
	b.Run("paths-json-envelope", jsonEnvelope(page))
	b.Run("paths", func(b *testing.B) {
		n := 0
		for b.Loop() {
			msg, err := Marshal(page)
			if err != nil {
				b.Fatal(err)
			}
			n = len(msg)
		}
		b.SetBytes(int64(n))
	})
}
