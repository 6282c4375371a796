package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// The tests in this file damage a copy of the golden volume as a hostile
// review did and read it with 'cairn volume extract' and 'volume ls', no
// server: each entry must come back whole or be named lost, and the exit
// code must say whether anything asked for was lost.

const (
	goldenVolume = "../../media/volume/testdata/golden-v1.cvol"
	goldenKeys   = "../../media/volume/testdata/golden-v1.key.json"
)

// goldenSession is one session of the golden volume and its index.
type goldenSession struct {
	part    volume.PartInfo
	entries []fileindex.Entry
}

// goldenLayout reads the golden volume's parts and indexes.
func goldenLayout(t *testing.T) []goldenSession {
	t.Helper()
	f, err := os.Open(goldenVolume)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	v, err := volume.OpenVolume(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	ps, err := v.Parts()
	if err != nil || len(ps) != 2 {
		t.Fatalf("golden parts: %d, %v", len(ps), err)
	}
	kf, err := keyring.ReadFile(goldenKeys)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := kf.Lookup("golden")
	var out []goldenSession
	for _, p := range ps {
		pi, err := volume.ReadPartIndex(context.Background(), f, &volume.Key{ID: "golden", Material: m}, p)
		if err != nil || pi.Rebuilt {
			t.Fatalf("golden index: %+v, %v", pi, err)
		}
		out = append(out, goldenSession{part: p, entries: pi.Entries})
	}
	return out
}

// damagedCopy copies the golden volume into a temporary file and lets
// damage change its bytes.
func damagedCopy(t *testing.T, damage func([]byte) []byte) string {
	t.Helper()
	b, err := os.ReadFile(goldenVolume)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "damaged.cvol")
	if err := os.WriteFile(p, damage(b), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type extraction struct {
	code    int
	stdout  string
	stderr  string
	tree    *sample.Manifest
	summary extractSummary
}

func extract(t *testing.T, vol string, args ...string) extraction {
	t.Helper()
	to := filepath.Join(t.TempDir(), "x")
	code, out, errOut := cli(context.Background(), append([]string{"--json", "volume", "extract", vol, "--key-file", goldenKeys, "--to", to}, args...)...)
	x := extraction{code: code, stdout: out, stderr: errOut}
	if err := json.Unmarshal([]byte(out), &x.summary); err != nil {
		t.Fatalf("extract: exit %d, stdout %q, stderr %q: %v", code, out, errOut, err)
	}
	if _, err := os.Stat(to); err == nil {
		if x.tree, err = sample.Snapshot(to); err != nil {
			t.Fatal(err)
		}
	} else {
		x.tree = &sample.Manifest{Items: map[string]sample.Item{}}
	}
	return x
}

// check compares, entry by entry, an extraction of a damaged volume with
// one of the golden volume (ref): want says of each path whether it must
// come back whole ("ok"), be named lost ("lost"), or be neither on disk
// nor named (it was beyond the damage, where nothing names it: "absent").
// asked is how many entries the extract should say it was asked for:
// every entry, of every session, that it found.
func (x extraction) check(t *testing.T, ref extraction, want map[string]string, asked int) {
	t.Helper()
	named := map[string]string{}
	for _, l := range x.summary.Lost {
		named[l.Path] = l.Reason
	}
	for p, w := range want {
		rel := strings.TrimPrefix(p, "/")
		r, inRef := ref.tree.Items[rel]
		g, onDisk := x.tree.Items[rel]
		same := inRef && onDisk && len(sample.Compare(&sample.Manifest{Items: map[string]sample.Item{rel: r}}, &sample.Manifest{Items: map[string]sample.Item{rel: g}})) == 0
		_, isNamed := named[p]
		switch {
		case w == "ok" && (!same || isNamed):
			t.Errorf("%s: extracted as written %v, named lost %v (%s); want it extracted", p, same, isNamed, named[p])
		case w == "lost" && (onDisk || !isNamed):
			t.Errorf("%s: on disk %v, named lost %v; want it named lost and not extracted", p, onDisk, isNamed)
		case w == "absent" && (onDisk || isNamed):
			t.Errorf("%s: on disk %v, named lost %v; want neither", p, onDisk, isNamed)
		}
	}
	for p := range named {
		if want[p] != "lost" {
			t.Errorf("%s is named lost (%s); want %q", p, named[p], want[p])
		}
	}
	for rel := range x.tree.Items {
		if _, ok := want["/"+rel]; !ok {
			t.Errorf("%s was extracted, and nothing asked for it", rel)
		}
	}
	lost := 0
	for _, w := range want {
		if w == "lost" {
			lost++
		}
	}
	if x.summary.NotExtracted != int64(lost) || x.summary.Asked != int64(asked) || x.summary.Files+x.summary.Dirs+x.summary.Links+x.summary.Specials != int64(asked-lost) {
		t.Errorf("summary: %d asked for, %d not extracted, %+v; want %d and %d", x.summary.Asked, x.summary.NotExtracted, x.summary.RestoreStats, asked, lost)
	}
	if wantCode := map[bool]int{true: 1, false: 0}[lost > 0]; x.code != wantCode {
		t.Errorf("exit %d, want %d; stderr %s", x.code, wantCode, x.stderr)
	}
}

// entries counts the sessions' entries an extract asks for: all but
// tombstones.
func entries(sessions ...goldenSession) int {
	n := 0
	for _, s := range sessions {
		for _, e := range s.entries {
			if e.Type != fileindex.TypeDeleted {
				n++
			}
		}
	}
	return n
}

// wantAll says every non-deleted entry of the sessions comes back.
func wantAll(sessions ...goldenSession) map[string]string {
	want := map[string]string{}
	for _, s := range sessions {
		for _, e := range s.entries {
			if e.Type != fileindex.TypeDeleted && e.Path != "/" {
				want[e.Path] = "ok"
			}
		}
	}
	return want
}

func flipAt(off int64) func([]byte) []byte {
	return func(b []byte) []byte { b[off] ^= 0x5a; return b }
}

func TestVolumeExtractDamaged(t *testing.T) {
	g := goldenLayout(t)
	s1, s2 := g[0], g[1]
	trailer := s1.part.DataStart + int64(s1.part.PartEnd.IndexStreamStart-s1.part.Header.StreamStart)
	ref := extract(t, goldenVolume)
	if ref.code != 0 || ref.summary.NotExtracted != 0 || len(ref.tree.Items) < 10 {
		t.Fatalf("golden extract: %+v", ref)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	junk := make([]byte, 3000)
	for i := range junk {
		junk[i] = byte(rnd.Uint32())
	}
	for _, c := range []struct {
		name   string
		damage func([]byte) []byte
		warn   string
	}{
		{"label", flipAt(100), "offset 0 is damaged: the label cannot be read"},
		{"label magic", flipAt(0), "offset 0 is damaged: the label cannot be read"},
		{"part header", flipAt(s2.part.VolumeStart + 100), "the part header is damaged"},
		{"part header version", flipAt(s1.part.VolumeStart + 4), "the part header is damaged"},
		{"trailer", flipAt(trailer + volume.HeaderSize + 10), "the index is rebuilt from the data blocks: its trailer cannot be read"},
		{"garbage appended", func(b []byte) []byte { return append(b, junk...) }, fmt.Sprintf("offset %d is damaged", s2.part.End)},
		{"garbage with the magic", func(b []byte) []byte { return append(b, append([]byte("CRNB\x3e\x03"), junk...)...) }, fmt.Sprintf("offset %d is damaged", s2.part.End)},
	} {
		t.Run(c.name, func(t *testing.T) {
			x := extract(t, damagedCopy(t, c.damage))
			x.check(t, ref, wantAll(s1, s2), entries(s1, s2))
			if !strings.Contains(x.stderr, "warning: ") || !strings.Contains(x.stderr, c.warn) || strings.Contains(x.stderr, "upgrade") {
				t.Errorf("stderr %q; want a warning saying %q", x.stderr, c.warn)
			}
		})
	}

	// One byte in data block 1 of the first session: the entries whose
	// records are in it are named, every other entry comes back.
	t.Run("data block", func(t *testing.T) {
		blk1 := s1.part.DataStart
		for _, e := range s1.entries {
			if e.Loc.Seq == 1 {
				blk1 = s1.part.DataStart + int64(e.Loc.Off-s1.part.Header.StreamStart)
				break
			}
		}
		x := extract(t, damagedCopy(t, flipAt(blk1+volume.HeaderSize+50)))
		want := wantAll(s1, s2)
		for _, e := range s1.entries {
			if e.Loc.Seq <= 1 && 1 <= e.Loc.EndSeq {
				want[e.Path] = "lost"
			}
		}
		x.check(t, ref, want, entries(s1, s2))
		if !strings.Contains(x.stderr, "were not extracted because their data is damaged") {
			t.Errorf("stderr %q", x.stderr)
		}
	})

	// Cut inside data block 1 of the first session: what lies before the
	// cut comes back, the entry the cut goes through is named, and the
	// tear is reported, with a non-zero exit.
	t.Run("truncated", func(t *testing.T) {
		var blk1 int64
		for _, e := range s1.entries {
			if e.Loc.Seq == 1 {
				blk1 = s1.part.DataStart + int64(e.Loc.Off-s1.part.Header.StreamStart)
				break
			}
		}
		x := extract(t, damagedCopy(t, func(b []byte) []byte { return b[:blk1+1000] }))
		only1 := extract(t, goldenVolume, "--session", s1.part.Header.SessionID.String())
		want := map[string]string{}
		asked := 0
		for _, e := range s1.entries {
			if e.Loc.Seq < 1 {
				asked++ // its FileHeader is before the cut
			}
			switch {
			case e.Path == "/":
			case e.Loc.EndSeq < 1:
				want[e.Path] = "ok"
			case e.Loc.Seq < 1:
				want[e.Path] = "lost"
			default:
				want[e.Path] = "absent"
			}
		}
		x.check(t, only1, want, asked)
		if x.code != 1 || !strings.Contains(x.stderr, fmt.Sprintf("session %s is torn", s1.part.Header.SessionID)) {
			t.Errorf("exit %d, stderr %q; want 1 and the torn session named", x.code, x.stderr)
		}
	})
}

func TestVolumeLsDamaged(t *testing.T) {
	g := goldenLayout(t)
	s1 := g[0]
	ls := func(vol string) (int, volumeLs, string) {
		t.Helper()
		code, out, errOut := cli(context.Background(), "--json", "volume", "ls", vol, "--key-file", goldenKeys)
		var l volumeLs
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatalf("ls: exit %d, %q, %q: %v", code, out, errOut, err)
		}
		return code, l, errOut
	}
	// A damaged label: a warning, and both sessions listed in full.
	code, l, errOut := ls(damagedCopy(t, flipAt(100)))
	if code != 0 || len(l.Sessions) != 2 || len(l.Warnings) != 1 || !strings.Contains(errOut, "warning: ") || !strings.Contains(errOut, "label") {
		t.Fatalf("damaged label: exit %d, %d sessions, warnings %v, stderr %q", code, len(l.Sessions), l.Warnings, errOut)
	}
	for i, s := range l.Sessions {
		if len(s.Entries) != len(g[i].entries) {
			t.Errorf("session %s: %d entries listed, %d in the index", s.Session, len(s.Entries), len(g[i].entries))
		}
	}
	// Cut inside the first session: the entry cut is listed as lost, and
	// the exit code says so.
	var blk1 int64
	for _, e := range s1.entries {
		if e.Loc.Seq == 1 {
			blk1 = s1.part.DataStart + int64(e.Loc.Off-s1.part.Header.StreamStart)
			break
		}
	}
	code, l, errOut = ls(damagedCopy(t, func(b []byte) []byte { return b[:blk1+1000] }))
	if code != 1 || len(l.Sessions) != 1 || !strings.Contains(errOut, "cannot be read whole") {
		t.Fatalf("truncated: exit %d, %d sessions, stderr %q", code, len(l.Sessions), errOut)
	}
	listed := map[string]bool{}
	for _, e := range l.Sessions[0].Entries {
		listed[e.Path] = true
	}
	lost := map[string]bool{}
	for _, e := range l.Sessions[0].Lost {
		lost[e.Path] = true
	}
	for _, e := range s1.entries {
		switch {
		case e.Loc.EndSeq < 1 && (!listed[e.Path] || lost[e.Path]):
			t.Errorf("%s (blocks %d..%d) before the cut: listed %v, lost %v", e.Path, e.Loc.Seq, e.Loc.EndSeq, listed[e.Path], lost[e.Path])
		case e.Loc.Seq < 1 && e.Loc.EndSeq >= 1 && (listed[e.Path] || !lost[e.Path]):
			t.Errorf("%s (blocks %d..%d) across the cut: listed %v, lost %v", e.Path, e.Loc.Seq, e.Loc.EndSeq, listed[e.Path], lost[e.Path])
		}
	}
}

// volumeLs is the output of 'cairn volume ls --json'.
type volumeLs struct {
	Label    volume.Label     `json:"label"`
	Sessions []sessionListing `json:"sessions"`
	Warnings []string         `json:"warnings"`
}

// TestVolumeOpenErrorsKeepTheirCause: a volume file that cannot be opened
// gets the code that says why (not there, not a volume, damaged), and the
// error runVolumeLs returns still wraps the domain error, so errors.Is sees
// volume.ErrNotVolume or fs.ErrNotExist through the code the edge chose.
func TestVolumeOpenErrorsKeepTheirCause(t *testing.T) {
	dir := t.TempDir()
	notVolume := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notVolume, []byte(strings.Repeat("not a volume\n", 10000)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path  string
		code  string
		cause error
	}{
		{filepath.Join(dir, "missing.cvol"), wire.CodeNotFound, fs.ErrNotExist},
		{notVolume, wire.CodeInvalidArgument, volume.ErrNotVolume},
	} {
		err := runVolumeLs(context.Background(), &globals{}, c.path, "", true, s3Source{})
		if wire.CodeOf(err) != c.code || !errors.Is(err, c.cause) {
			t.Errorf("volume ls %s: %v (code %q), want code %q wrapping %v", c.path, err, wire.CodeOf(err), c.code, c.cause)
		}
		code, _, errOut := cli(context.Background(), "--json", "volume", "ls", "--sessions", c.path)
		var got struct{ Error wire.Error }
		if err := json.Unmarshal([]byte(errOut), &got); err != nil || code == 0 || got.Error.Code != c.code {
			t.Errorf("cairn volume ls --json %s: exit %d, %q, want the code %q", c.path, code, errOut, c.code)
		}
	}
}

// 'cairn volume ls' says what each session part was compressed with, with
// no catalog: an administrator handing volumes to an older reader finds the
// S2 ones (format 5). The golden volume of format 5 holds an S2 full and a
// zstd incremental; both are read and extracted.
func TestVolumeLsSaysTheCompression(t *testing.T) {
	vol := "../../media/volume/testdata/golden-v5.cvol"
	code, out, errOut := cli(context.Background(), "--json", "volume", "ls", vol, "--key-file", goldenKeys)
	var listing struct {
		Label    volume.Label `json:"label"`
		Sessions []struct {
			Compression string            `json:"compression"`
			Entries     []fileindex.Entry `json:"entries"`
		} `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(out), &listing); code != 0 || err != nil {
		t.Fatalf("volume ls: exit %d, %v, %s", code, err, errOut)
	}
	if listing.Label.FormatVersion != 5 || len(listing.Sessions) != 2 || listing.Sessions[0].Compression != "s2" || listing.Sessions[1].Compression != "zstd" ||
		len(listing.Sessions[0].Entries) == 0 {
		t.Fatalf("volume ls of golden-v5: %+v", listing)
	}
	code, out, errOut = cli(context.Background(), "volume", "ls", "--sessions", vol, "--key-file", goldenKeys)
	if code != 0 || strings.Count(out, "compression s2\n") != 1 || strings.Count(out, "compression zstd\n") != 1 {
		t.Fatalf("volume ls --sessions: exit %d, %q, %s", code, out, errOut)
	}
	to := t.TempDir()
	if code, _, errOut := cli(context.Background(), "volume", "extract", vol, "--key-file", goldenKeys, "--to", to); code != 0 {
		t.Fatalf("volume extract of golden-v5: exit %d, %s", code, errOut)
	}
	img, err := os.ReadFile(filepath.Join(to, "srv", "disk.img"))
	if err != nil || len(img) != 600<<10 || !strings.HasPrefix(string(img), "page 0000 of the golden disk image\n") {
		t.Fatalf("the full's disk image, from S2 blocks: %d bytes, %v", len(img), err)
	}
}
