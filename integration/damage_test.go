package integration

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/corrupt"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// backupOnOneVolume backs src up, in full, onto the one volume of the
// stack's pool, and returns its file, the escrowed keys exported to a file,
// and the entries of its one session as the volume's own index (read with
// that key, no catalog) says which lie in which blocks.
func (s *stack) backupOnOneVolume(src string) (volPath, keys string, entries []fileindex.Entry) {
	s.t.Helper()
	s.backup("full", src)
	vols := s.volumes()
	if len(vols) != 1 {
		s.t.Fatalf("volumes: %+v", vols)
	}
	keys = filepath.Join(s.t.TempDir(), "keys.json")
	s.ok("key", "export", "--to", keys)
	var listing volumeListing
	s.json(&listing, "volume", "ls", vols[0].Path, "--key-file", keys)
	if len(listing.Sessions) != 1 {
		s.t.Fatalf("volume ls: %d sessions, want 1", len(listing.Sessions))
	}
	return vols[0].Path, keys, listing.Sessions[0].Entries
}

// volumeListing is the output of 'cairn volume ls --json'.
type volumeListing struct {
	Label    volume.Label `json:"label"`
	Sessions []struct {
		Session string            `json:"session"`
		KeyID   string            `json:"key_id"`
		State   string            `json:"state"`
		Entries []fileindex.Entry `json:"entries"`
	} `json:"sessions"`
}

// dataBlock is a data block found on a volume.
type dataBlock struct {
	seq       uint64
	off       int64
	storedLen int64
}

// dataBlocks hops the headers of the data blocks of the volume's first part.
func dataBlocks(t *testing.T, path string) []dataBlock {
	t.Helper()
	f, parts := openVolumeFile(t, path)
	if len(parts) == 0 || parts[0].PartEnd == nil {
		t.Fatalf("parts of %s: %+v", path, parts)
	}
	p := parts[0]
	var out []dataBlock
	hb := make([]byte, volume.HeaderSize)
	for off := p.DataStart; off < p.End; {
		if _, err := f.ReadAt(hb, off); err != nil {
			t.Fatal(err)
		}
		h, err := volume.ParseBlockHeader(hb)
		if err != nil {
			t.Fatalf("block header at %d: %v", off, err)
		}
		if h.Kind != volume.KindData {
			break
		}
		out = append(out, dataBlock{seq: h.Seq, off: off, storedLen: int64(h.StoredLen)})
		off += h.Size()
	}
	if len(out) == 0 || out[len(out)-1].seq != p.PartEnd.LastSeq {
		t.Fatalf("found data blocks %+v, the part ends at seq %d", out, p.PartEnd.LastSeq)
	}
	return out
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestCorruptBlockNamesExactlyTheDamagedFiles flips one byte inside a data
// block of a volume file and restores: the restore fails, names exactly the
// entries whose records lie in that block, restores every other entry byte
// for byte, and reads the volume without changing it.
func TestCorruptBlockNamesExactlyTheDamagedFiles(t *testing.T) {
	s := newStack(t, stackOpts{})
	src := makeTree(t, smallSpec(3))
	snap := snapshot(t, src)
	volPath, keys, entries := s.backupOnOneVolume(src)

	// Damage the data block that holds the most entries, to show that all
	// of them, and only they, are named.
	blocks := dataBlocks(t, volPath)
	touching := func(seq uint64) []fileindex.Entry {
		var es []fileindex.Entry
		for _, e := range entries {
			if e.Type != fileindex.TypeDeleted && e.Loc.Seq <= seq && seq <= e.Loc.EndSeq {
				es = append(es, e)
			}
		}
		return es
	}
	var victim dataBlock
	for _, b := range blocks {
		if len(touching(b.seq)) > len(touching(victim.seq)) {
			victim = b
		}
	}
	damaged := map[string]bool{}
	for _, e := range touching(victim.seq) {
		damaged[e.Path] = true
	}
	// A hard link to a damaged file cannot be made either.
	for _, e := range entries {
		if e.Type == fileindex.TypeHardlink && damaged[e.Target] {
			damaged[e.Path] = true
		}
	}
	if len(damaged) < 2 {
		t.Fatalf("no data block holds two entries: %+v", blocks)
	}
	t.Logf("damaging data block seq %d at offset %d of %s: %d entries lie in it", victim.seq, victim.off, filepath.Base(volPath), len(damaged))
	corrupt.FlipByte(t, volPath, victim.off+volume.HeaderSize+victim.storedLen/2)
	before := fileSHA(t, volPath)

	to := filepath.Join(t.TempDir(), "restore")
	r := s.cairn("restore", "--client", s.client, "--to", to)
	planned := 0
	for _, e := range entries {
		if e.Type != fileindex.TypeDeleted {
			planned++
		}
	}
	checkFailure(t, r, 1, "damaged", fmt.Sprintf("%d of %d entries could not be restored", len(damaged), planned))
	// The job's log names every lost entry, the output the first ones.
	var failed []wire.JobInfo
	s.json(&failed, "job", "list", "--state", "failed")
	if len(failed) != 1 {
		t.Fatalf("failed jobs: %+v", failed)
	}
	log := ""
	for _, l := range s.job(failed[0].ID).Log {
		log += l.Msg + "\n"
	}
	var named []string
	for _, e := range entries {
		if strings.Contains(log, "lost: "+e.Path+": ") {
			named = append(named, e.Path)
		}
	}
	var want []string
	for p := range damaged {
		want = append(want, p)
	}
	sort.Strings(want)
	sort.Strings(named)
	if strings.Join(named, "\n") != strings.Join(want, "\n") {
		t.Errorf("the restore names as damaged:\n  %s\nwant exactly the entries in block seq %d:\n  %s\n%s",
			strings.Join(named, "\n  "), victim.seq, strings.Join(want, "\n  "), r)
	}
	for p := range damaged {
		if !strings.Contains(log, "lost: "+p+": ") || !strings.Contains(r.stdout, "block seq "+fmt.Sprint(victim.seq)) {
			t.Errorf("the reason given for %s does not name block seq %d:\n%s", p, victim.seq, r.stdout)
			break
		}
	}
	// The job says the same to a script.
	var jobs []wire.JobInfo
	s.json(&jobs, "job", "list", "--state", "failed")
	if len(jobs) != 1 || jobs[0].Type != "restore" || jobs[0].ErrorCode != wire.CodeCorrupt {
		t.Fatalf("failed jobs: %+v", jobs)
	}

	// Everything else came back byte for byte; damaged files were not left
	// half-written.
	got := snapshot(t, filepath.Join(to, src))
	for p := range damaged {
		rel, _ := filepath.Rel(src, p)
		if it, ok := got.Items[rel]; ok && it.Type == "file" && it.SHA256 != snap.Items[rel].SHA256 {
			t.Errorf("damaged file %s was restored with wrong content", p)
		}
	}
	rest := withoutPaths(snap, src, damaged)
	if diffs := sample.Compare(rest, withoutPaths(got, src, damaged)); len(diffs) > 0 {
		t.Errorf("entries outside the damaged block differ after the restore:\n  %s", strings.Join(diffs, "\n  "))
	}
	if n := len(rest.Items); n < len(snap.Items)-len(damaged) {
		t.Errorf("only %d of %d entries checked", n, len(snap.Items))
	}

	// Read with no server, the volume tells the same story.
	xto := filepath.Join(t.TempDir(), "extract")
	x := s.cairn("volume", "extract", volPath, "--key-file", keys, "--to", xto)
	checkFailure(t, x, 1, fmt.Sprintf("%d entries were not extracted because their data is damaged", len(damaged)))
	for p := range damaged {
		if !strings.Contains(x.stderr, "  "+p+": ") {
			t.Errorf("volume extract does not name damaged entry %s:\n%s", p, x)
		}
	}
	xgot := snapshot(t, filepath.Join(xto, src))
	if diffs := sample.Compare(rest, withoutPaths(xgot, src, damaged)); len(diffs) > 0 {
		t.Errorf("entries outside the damaged block differ after volume extract:\n  %s", strings.Join(diffs, "\n  "))
	}

	// Reading never rewrites the volume.
	if after := fileSHA(t, volPath); after != before {
		t.Errorf("reading changed volume file %s", volPath)
	}
	// Nor does it leave the system unable to work: a backup still runs.
	s.backup("incremental", src)
}

// withoutPaths copies a manifest of the tree at src without the given
// absolute paths.
func withoutPaths(m *sample.Manifest, src string, drop map[string]bool) *sample.Manifest {
	out := &sample.Manifest{Root: m.Root, Items: map[string]sample.Item{}}
	for rel, it := range m.Items {
		if !drop[filepath.Join(src, rel)] {
			out.Items[rel] = it
		}
	}
	return out
}
