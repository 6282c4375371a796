package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/google/uuid"
)

// The tests in this file damage a volume of three sessions the way a
// hostile review did (one byte in the label, in a part header, in a
// trailer; garbage after the end; a volume cut short) and read it as
// `cairn volume extract` does, with no catalog: OpenVolume, Parts,
// ReadPartIndex and ReadEntries. Each checks, entry by entry, that the
// damage lost no more than the blocks it is in, and that every entry not
// read whole is named lost.

type fixtureSession struct {
	info  SessionInfo
	files []tfile
	res   *SessionResult
	idx   []fileindex.Entry
}

var threeSessionsOnce struct {
	sync.Once
	vol *memVolume
	fix []fixtureSession
}

// threeSessions returns a copy of a volume holding three sessions of a
// few dozen entries, several blocks each. The volume is written once per
// test binary: writing it is most of what these tests would cost.
func threeSessions(t *testing.T) (*memVolume, *Key, []fixtureSession) {
	t.Helper()
	key := testKey("pool-Default-1")
	o := &threeSessionsOnce
	o.Do(func() {
		o.vol = newMemVolume(t, MinBlockSize, 0)
		for i := range 3 {
			s := fixtureSession{info: sessionInfo(), files: makeTree(uint64(20+i), 30, []int{100, 5000, 60000, 120000})}
			s.res = writeSession(t, key, s.info, o.vol, WriterOptions{TempDir: os.TempDir()}, s.files, 16<<10)
			s.idx = indexEntries(t, s.res)
			o.fix = append(o.fix, s)
		}
	})
	if o.vol == nil {
		t.Fatal("the three-session volume could not be written")
	}
	vol := *o.vol
	vol.buf = bytes.Clone(o.vol.buf)
	return &vol, key, o.fix
}

// outcome is what an offline read made of one entry: "ok" (read whole,
// content as written) or "lost" (named lost, not read whole).
type offlineRead struct {
	vol     *Volume
	parts   []PartInfo
	indexes map[uuid.UUID]*PartIndex
	got     map[uuid.UUID]map[string]string
}

// readOffline reads every entry of every part it can find on vol, and
// fails the test for an entry that is neither read whole nor named lost,
// or both.
func readOffline(t *testing.T, vol *memVolume, key *Key, fix []fixtureSession) *offlineRead {
	t.Helper()
	ctx := context.Background()
	v, err := OpenVolume(vol, vol.size())
	if err != nil {
		t.Fatalf("OpenVolume: %v", err)
	}
	ps, err := v.Parts()
	if err != nil {
		t.Fatalf("Parts: %v", err)
	}
	want := map[string][]byte{}
	for _, s := range fix {
		for _, f := range s.files {
			want[s.info.SessionID.String()+f.e.Path] = f.content
		}
	}
	out := &offlineRead{vol: v, parts: ps, indexes: map[uuid.UUID]*PartIndex{}, got: map[uuid.UUID]map[string]string{}}
	for _, p := range ps {
		sid := p.Header.SessionID
		pi, err := ReadPartIndex(ctx, vol, key, p)
		if err != nil {
			t.Fatalf("session %s: ReadPartIndex: %v", sid, err)
		}
		out.indexes[sid] = pi
		got := map[string]string{}
		for _, l := range pi.Lost {
			got[l.Path] = "lost"
		}
		sr := NewSessionReader(sid, key, []PartRef{p.Ref()}, memOpener(vol), ReaderOptions{})
		rb := newReadBack(t)
		lost := lostOf(t, sr.ReadEntries(ctx, locsOf(pi.Entries), rb.fn, rb.damaged))
		sr.Close()
		for _, e := range pi.Entries {
			_, named := lost[e.Loc]
			whole := rb.ended[e.Path] && bytes.Equal(rb.got[e.Path], want[sid.String()+e.Path])
			if whole == named {
				t.Errorf("session %s: %s read whole %v, named lost %v", sid, e.Path, whole, named)
			}
			if _, dup := got[e.Path]; dup {
				t.Errorf("session %s: %s is in the index and named lost by the rebuild", sid, e.Path)
			}
			got[e.Path] = map[bool]string{true: "ok", false: "lost"}[whole]
		}
		out.got[sid] = got
	}
	return out
}

// intact fails the test unless every entry of session s was read whole.
func (o *offlineRead) intact(t *testing.T, s fixtureSession) {
	t.Helper()
	got, ok := o.got[s.info.SessionID]
	if !ok {
		t.Errorf("session %s was not found", s.info.SessionID)
		return
	}
	for _, f := range s.files {
		if got[f.e.Path] != "ok" {
			t.Errorf("session %s: %s: %q, want it read whole", s.info.SessionID, f.e.Path, got[f.e.Path])
		}
	}
	if len(got) != len(s.files) {
		t.Errorf("session %s: %d entries read, %d written", s.info.SessionID, len(got), len(s.files))
	}
}

func flip(vol *memVolume, off int64) { vol.buf[off] ^= 0x5a }

func TestDamagedLabel(t *testing.T) {
	for _, c := range []struct {
		name string
		off  int64
	}{
		{"magic", 1},
		{"version", 4},
		{"stored length", 54},
		{"crc", 62},
		{"json", HeaderSize + 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			vol, key, fix := threeSessions(t)
			flip(vol, c.off)
			r := readOffline(t, vol, key, fix)
			for _, s := range fix {
				r.intact(t, s)
			}
			l := r.vol.Label()
			if l.VolumeID != vol.id || l.BlockSize != MinBlockSize {
				t.Errorf("label recovered from the first part: %+v", l)
			}
			d := r.vol.Damaged()
			if len(d) != 1 || d[0].Offset != 0 || d[0].VolumeID != vol.id || !strings.Contains(d[0].Error(), "label") {
				t.Errorf("Damaged = %v, want the label named", d)
			}
		})
	}
	// With the first part's header damaged too, there is nothing left to
	// say what the volume is.
	vol, _, fix := threeSessions(t)
	flip(vol, 10)
	flip(vol, fix[0].res.Parts[0].VolumeStart+HeaderSize+5)
	if _, err := OpenVolume(vol, vol.size()); err == nil {
		t.Fatal("a volume with no label and no first part header opened")
	}
	// A file that is not a volume stays "not a Cairn volume".
	text := bytes.Repeat([]byte("not a volume\n"), 20000)
	if _, err := OpenVolume(bytes.NewReader(text), int64(len(text))); !errors.Is(err, ErrNotVolume) {
		t.Fatalf("text file: %v", err)
	}
}

func TestDamagedPartHeader(t *testing.T) {
	for _, c := range []struct {
		name string
		off  int64
	}{
		{"magic", 0},
		{"kind", 5},
		{"stored length", 54},
		{"json", HeaderSize + 30},
	} {
		t.Run(c.name, func(t *testing.T) {
			vol, key, fix := threeSessions(t)
			mid := fix[1].res.Parts[0]
			flip(vol, mid.VolumeStart+c.off)
			r := readOffline(t, vol, key, fix)
			for _, s := range fix {
				r.intact(t, s)
			}
			if len(r.parts) != 3 {
				t.Fatalf("%d parts", len(r.parts))
			}
			p := r.parts[1]
			if !p.HeaderLost || p.Header.SessionID != fix[1].info.SessionID || p.Ref().StreamStart != mid.StreamStart || p.DataStart != mid.DataStart || len(p.Damaged) != 1 || p.Damaged[0].Offset != mid.VolumeStart {
				t.Errorf("part with the damaged header: %+v", p)
			}
			if r.indexes[fix[1].info.SessionID].Rebuilt {
				t.Errorf("the trailer of the part whose header is lost was not read")
			}
			// The header's key check is lost with it: a wrong key is
			// still a KeyError, found by decrypting, not damage.
			var ke *KeyError
			if _, err := ReadPartIndex(context.Background(), vol, testKey("pool-Other"), p); !errors.As(err, &ke) {
				t.Errorf("wrong key: %v, want a *KeyError", err)
			}
		})
	}
}

// trailerAt is the volume offset of the first Index block of the
// session's final part, read from the undamaged volume.
func trailerAt(t *testing.T, vol *memVolume, s fixtureSession) int64 {
	t.Helper()
	v, err := OpenVolume(vol, vol.size())
	if err != nil {
		t.Fatal(err)
	}
	ps, err := v.Parts()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Header.SessionID == s.info.SessionID && p.PartEnd != nil && p.PartEnd.Final && p.PartEnd.IndexBlocks > 0 {
			return p.DataStart + int64(p.PartEnd.IndexStreamStart-p.Header.StreamStart)
		}
	}
	t.Fatalf("session %s has no trailer", s.info.SessionID)
	return 0
}

func TestDamagedTrailer(t *testing.T) {
	for _, c := range []struct {
		name string
		off  int64
	}{
		{"payload", HeaderSize + 40},
		{"header", 45},
	} {
		t.Run(c.name, func(t *testing.T) {
			vol, key, fix := threeSessions(t)
			at := trailerAt(t, vol, fix[1])
			flip(vol, at+c.off)
			r := readOffline(t, vol, key, fix)
			for _, s := range fix {
				r.intact(t, s)
			}
			// The index is rebuilt from the data, and it is the index the
			// writer wrote.
			pi := r.indexes[fix[1].info.SessionID]
			if !pi.Rebuilt || !strings.Contains(pi.Why, "trailer") || len(pi.Lost) != 0 || pi.Unnamed != 0 || len(pi.Damaged) == 0 || pi.Damaged[0].Offset != at {
				t.Fatalf("index: rebuilt %v (%s), lost %v, unnamed %d, damage %v", pi.Rebuilt, pi.Why, pi.Lost, pi.Unnamed, pi.Damaged)
			}
			if len(pi.Entries) != len(fix[1].idx) {
				t.Fatalf("rebuilt %d entries, the trailer had %d", len(pi.Entries), len(fix[1].idx))
			}
			for i, e := range fix[1].idx {
				if g := pi.Entries[i]; g.Path != e.Path || g.Loc != e.Loc || !bytes.Equal(g.Hash, e.Hash) {
					t.Errorf("rebuilt entry %d: %s %+v, trailer %s %+v", i, g.Path, g.Loc, e.Path, e.Loc)
				}
			}
		})
	}
}

func TestGarbageAfterTheLastPart(t *testing.T) {
	newer := func(vid uuid.UUID) []byte {
		// A part header of format version 2 whose CRC holds: written by a
		// newer program, so the reader says to upgrade.
		b, _ := encodeControlBlock(KindPartHeader, vid, uuid.New(), 0, []byte(`{}`))
		b[4] = 2
		setCRC(b)
		return b
	}
	rnd := rand.New(rand.NewPCG(7, 7))
	junk := make([]byte, 10000)
	for i := range junk {
		junk[i] = byte(rnd.Uint32())
	}
	for _, c := range []struct {
		name    string
		garbage func(vid uuid.UUID) []byte
	}{
		{"random", func(uuid.UUID) []byte { return junk }},
		{"text", func(uuid.UUID) []byte { return []byte("this is not a part header, it is garbage") }},
		// The magic, then version 62: damage, not a newer format.
		{"magic", func(uuid.UUID) []byte { return append([]byte("CRNB\x3e\x02"), junk...) }},
		{"magic and a newer block's CRC", func(vid uuid.UUID) []byte {
			b := newer(vid)
			b[HeaderSize] ^= 1 // ... that no longer holds
			return b
		}},
		{"one byte", func(uuid.UUID) []byte { return []byte{1} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			vol, key, fix := threeSessions(t)
			end := vol.size()
			vol.buf = append(vol.buf, c.garbage(vol.id)...)
			r := readOffline(t, vol, key, fix)
			for _, s := range fix {
				r.intact(t, s)
			}
			d := r.vol.Damaged()
			if len(d) != 1 || d[0].Offset != end || strings.Contains(d[0].Error(), "upgrade") {
				t.Fatalf("Damaged = %v, want the garbage at offset %d", d, end)
			}
		})
	}
	// A block that really is of a newer format still says so.
	vol, _, _ := threeSessions(t)
	vol.buf = append(vol.buf, newer(vol.id)...)
	v, _ := OpenVolume(vol, vol.size())
	if ps, err := v.Parts(); !errors.Is(err, ErrNewerFormat) || !strings.Contains(err.Error(), "upgrade") || len(ps) != 3 {
		t.Fatalf("a newer part: %d parts, %v", len(ps), err)
	}
	// Zeros after the last part are unwritten space, not damage.
	vol, key, fix := threeSessions(t)
	vol.buf = append(vol.buf, make([]byte, MinBlockSize)...)
	r := readOffline(t, vol, key, fix)
	if len(r.parts) != 3 || len(r.vol.Damaged()) != 0 {
		t.Fatalf("zeros: %d parts, damage %v", len(r.parts), r.vol.Damaged())
	}
}

// Garbage where a part starts, with parts after it: the parts after it
// are read.
func TestGarbageBetweenParts(t *testing.T) {
	vol, key, fix := threeSessions(t)
	mid := fix[1].res.Parts[0]
	// The whole of the middle part, header and blocks, overwritten.
	rnd := rand.New(rand.NewPCG(8, 8))
	for i := mid.VolumeStart; i < mid.End; i++ {
		vol.buf[i] = byte(rnd.Uint32())
	}
	r := readOffline(t, vol, key, fix)
	r.intact(t, fix[0])
	r.intact(t, fix[2])
	if _, ok := r.got[fix[1].info.SessionID]; ok || len(r.parts) != 2 {
		t.Fatalf("%d parts, sessions %v", len(r.parts), r.got)
	}
	if d := r.vol.Damaged(); len(d) != 1 || d[0].Offset != mid.VolumeStart || !strings.Contains(d[0].Reason, fmt.Sprintf("next part starts at offset %d", mid.End)) {
		t.Fatalf("Damaged = %v", d)
	}
}

func TestTruncatedVolumeOffline(t *testing.T) {
	t.Run("in a session", func(t *testing.T) {
		vol, key, fix := threeSessions(t)
		last := fix[2]
		p := last.res.Parts[0]
		// Cut inside the block where an entry in the middle ends, so that
		// an entry is cut in two.
		var cutSeq uint64
		for _, e := range last.idx {
			if e.Loc.EndSeq > e.Loc.Seq {
				cutSeq = e.Loc.EndSeq
				break
			}
		}
		if cutSeq == 0 {
			t.Fatal("no entry spans two blocks")
		}
		cut, _ := blockAtSeq(t, vol, p, cutSeq)
		vol.buf = vol.buf[:cut+500]
		r := readOffline(t, vol, key, fix)
		r.intact(t, fix[0])
		r.intact(t, fix[1])
		got := r.got[last.info.SessionID]
		pi := r.indexes[last.info.SessionID]
		if !pi.Rebuilt || !strings.Contains(pi.Why, "torn") || pi.Unnamed != -1 {
			t.Fatalf("index of the cut session: rebuilt %v (%s), unnamed %d", pi.Rebuilt, pi.Why, pi.Unnamed)
		}
		for _, e := range last.idx {
			want := ""
			switch {
			case e.Loc.EndSeq < cutSeq:
				want = "ok"
			case e.Loc.Seq < cutSeq:
				want = "lost" // its FileHeader was read: it is named
			}
			if got[e.Path] != want {
				t.Errorf("%s (blocks %d..%d), cut at block %d: %q, want %q", e.Path, e.Loc.Seq, e.Loc.EndSeq, cutSeq, got[e.Path], want)
			}
		}
	})
	t.Run("in the padding", func(t *testing.T) {
		vol, key, fix := threeSessions(t)
		p := fix[1].res.Parts[0]
		vol.buf = vol.buf[:p.End-100]
		r := readOffline(t, vol, key, fix)
		r.intact(t, fix[0])
		r.intact(t, fix[1])
		if d := r.vol.Damaged(); len(d) != 1 || d[0].Offset != p.End-100 || !strings.Contains(d[0].Reason, "cut short") {
			t.Fatalf("Damaged = %v, want the volume named cut short", d)
		}
	})
}

// A part that is not the session's last holds no trailer: its index is
// rebuilt, and the entry that goes on on the next volume is not damage.
func TestPartIndexOfASpanningSession(t *testing.T) {
	key := testKey("k")
	var vols []*memVolume
	next := func(Appender) (Appender, error) {
		v := newMemVolume(t, MinBlockSize, 2<<20)
		vols = append(vols, v)
		return v, nil
	}
	first, _ := next(nil)
	files := randomTree(30, 40, 100000)
	res := writeSession(t, key, sessionInfo(), first, WriterOptions{Next: next, TempDir: t.TempDir()}, files, 32<<10)
	idx := indexEntries(t, res)
	if len(res.Parts) < 2 {
		t.Fatalf("%d parts", len(res.Parts))
	}
	for i, rp := range res.Parts[:len(res.Parts)-1] {
		v, err := OpenVolume(vols[i], vols[i].size())
		if err != nil {
			t.Fatal(err)
		}
		ps, err := v.Parts()
		if err != nil || len(ps) != 1 {
			t.Fatalf("volume %d: %d parts, %v", i, len(ps), err)
		}
		pi, err := ReadPartIndex(context.Background(), vols[i], key, ps[0])
		if err != nil {
			t.Fatal(err)
		}
		var spans []string
		for _, e := range idx {
			if e.Loc.Seq <= rp.LastSeq && e.Loc.EndSeq > rp.LastSeq {
				spans = append(spans, e.Path)
			}
		}
		var goesOn []string
		for _, c := range pi.Continues {
			goesOn = append(goesOn, c.Path)
		}
		if !pi.Rebuilt || !strings.Contains(pi.Why, "another volume") || len(pi.Lost) != 0 || len(pi.Damaged) != 0 || fmt.Sprint(goesOn) != fmt.Sprint(spans) {
			t.Errorf("part %d: rebuilt %v (%s), lost %v, damage %v, goes on %v; want %v to go on", i, pi.Rebuilt, pi.Why, pi.Lost, pi.Damaged, goesOn, spans)
		}
	}
}
