package disk

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/media/volume"
	"github.com/google/uuid"
)

// TestSmallSessionsCostWhatTheyHold appends many sessions of 13 bytes of
// content, as hourly incrementals of a quiet client are, and measures what
// each one adds to the volume file: its blocks padded to a page, not a
// whole block (format 1 padded each to 64 KiB here, 256 KiB by default).
// A reader with no catalog then finds every one of them by scanning.
func TestSmallSessionsCostWhatTheyHold(t *testing.T) {
	p := testPool(t.TempDir(), 0)
	a := newVolume(t, p, "Default-0001")
	key := testKey("k")
	path, _ := p.Path("Default-0001")
	const sessions = 50
	var ids []uuid.UUID
	var results []*volume.SessionResult
	for i := range sessions {
		before, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		in := info()
		in.Level = "incremental"
		w, err := volume.NewSessionWriter(in, key, a, volume.WriterOptions{TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if err := writeFiles(w, []file{{path: "/etc/motd", content: []byte("hello, world\n")}}); err != nil {
			t.Fatal(err)
		}
		res, err := w.Close()
		if res != nil {
			t.Cleanup(func() { res.Index.Close() })
		}
		if err != nil {
			t.Fatal(err)
		}
		after, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		grew := after.Size() - before.Size()
		if i == 0 {
			t.Logf("a session of 13 bytes of content takes %d bytes on disk (its blocks: %d bytes)", grew, res.StoredBytes)
		}
		if grew > 4<<10 || grew != res.Parts[0].End-res.Parts[0].VolumeStart || res.Parts[0].End%volume.DiskPartAlign != 0 {
			t.Fatalf("session %d of 13 bytes grew the volume by %d bytes (part %+v); want at most 4 KiB, ending on a page", i, grew, res.Parts[0])
		}
		ids = append(ids, in.SessionID)
		results = append(results, res)
	}
	a.Close()

	f, size, err := p.OpenRead("Default-0001")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, err := volume.OpenVolume(f, size)
	if err != nil {
		t.Fatal(err)
	}
	if l := v.Label(); l.FormatVersion != volume.FormatVersion || l.PartAlign != volume.DiskPartAlign {
		t.Fatalf("label %+v: a new disk volume is of format 2, parts on pages", l)
	}
	ps, err := v.Parts()
	if err != nil || len(ps) != sessions || len(v.Damaged()) != 0 {
		t.Fatalf("%d parts found by scanning, %v, damage %v; want %d", len(ps), err, v.Damaged(), sessions)
	}
	for i, pi := range ps {
		if pi.Torn || pi.Header.SessionID != ids[i] || pi.VolumeStart != results[i].Parts[0].VolumeStart || pi.End != results[i].Parts[0].End {
			t.Fatalf("part %d: %+v; the writer put session %s at %+v", i, pi, ids[i], results[i].Parts[0])
		}
	}
	// The last session reads back from its part, found with no catalog.
	r := volume.NewSessionReader(ids[sessions-1], key, []volume.PartRef{ps[sessions-1].Ref()}, opener(t, p), volume.ReaderOptions{})
	defer r.Close()
	rb := newReadBack()
	if err := r.ReadAll(context.Background(), rb.fn, rb.damaged); err != nil || !bytes.Equal(rb.got["/etc/motd"], []byte("hello, world\n")) || !rb.ok["/etc/motd"] {
		t.Fatalf("read back %q, ok %v, damage %v: %v", rb.got["/etc/motd"], rb.ok, rb.damages, err)
	}
}

// TestFormat1VolumeKeepsItsLayout appends to a disk volume labeled in
// format 1, as every volume written before format 2 is: its parts still
// start on block boundaries, so readers that scan it by its label's rules
// (and older programs) find them.
func TestFormat1VolumeKeepsItsLayout(t *testing.T) {
	p := testPool(t.TempDir(), 0)
	id := uuid.New()
	if err := p.Create("Default-0001", volume.Label{FormatVersion: 1, VolumeID: id, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	a, err := p.OpenAppend("Default-0001", id, volume.MinBlockSize)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.PartAlign() != volume.MinBlockSize {
		t.Fatalf("a format 1 volume aligns parts to %d, want its block size %d", a.PartAlign(), volume.MinBlockSize)
	}
	for range 3 {
		w, err := volume.NewSessionWriter(info(), testKey("k"), a, volume.WriterOptions{TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if err := writeFiles(w, randomFiles(1, 1, 13)); err != nil {
			t.Fatal(err)
		}
		res, err := w.Close()
		if res != nil {
			t.Cleanup(func() { res.Index.Close() })
		}
		if err != nil {
			t.Fatal(err)
		}
		if pr := res.Parts[0]; pr.VolumeStart%volume.MinBlockSize != 0 || pr.End%volume.MinBlockSize != 0 {
			t.Fatalf("part %+v on a format 1 volume is not on block boundaries", pr)
		}
	}
	f, size, _ := p.OpenRead("Default-0001")
	defer f.Close()
	v, err := volume.OpenVolume(f, size)
	if err != nil {
		t.Fatal(err)
	}
	if ps, err := v.Parts(); err != nil || len(ps) != 3 || v.Label().FormatVersion != 1 {
		t.Fatalf("parts %+v, %v, label %+v", ps, err, v.Label())
	}
}
