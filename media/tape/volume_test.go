package tape_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/media/volume/volumetest"
	"github.com/google/uuid"
)

// tapeMedium is volumetest's view of tapes made by newDrive: one drive
// per volume, labelled on creation.
type tapeMedium struct {
	newDrive func(t *testing.T, spec tape.CartridgeSpec) tape.Drive
	mu       sync.Mutex
	drives   map[uuid.UUID]tape.Drive
}

func (m *tapeMedium) drive(id uuid.UUID) tape.Drive {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.drives[id]
}

// label makes a volume on a new cartridge of capacity bytes, its early
// warning zone bytes before the end.
func (m *tapeMedium) label(t *testing.T, capacity, zone int64) (uuid.UUID, tape.Drive) {
	t.Helper()
	d := m.newDrive(t, tape.CartridgeSpec{Barcode: "VOL001L9", Capacity: capacity, EarlyWarningZone: zone})
	t.Cleanup(func() { d.Close() })
	id := uuid.New()
	if err := tape.WriteLabel(ctxT(t), d, volume.Label{VolumeID: id, Name: "VOL001L9", Barcode: "VOL001L9", Pool: "Tape", BlockSize: testBS}, false); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.drives[id] = d
	m.mu.Unlock()
	return id, d
}

// newEmulatedMedium is a medium of emulated drives, a cartridge each.
func newEmulatedMedium() *tapeMedium {
	return &tapeMedium{newDrive: emulatorDrives, drives: map[uuid.UUID]tape.Drive{}}
}

// labeledAppender labels a cartridge of 1 GiB (64 MiB of early warning)
// and opens it for appending at the start.
func (m *tapeMedium) labeledAppender(t *testing.T) (uuid.UUID, tape.Drive, *tape.Appender) {
	t.Helper()
	id, d := m.label(t, 1<<30, 64<<20)
	a, err := tape.OpenAppender(ctxT(t), d, id, testBS, 0, tape.AppenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return id, d, a
}

func (m *tapeMedium) medium() volumetest.Medium {
	return volumetest.Medium{
		New: func(t *testing.T, limit int64) volume.Appender {
			capacity, zone := int64(1<<30), int64(64<<20)
			if limit > 0 {
				// The writer may use the zone for the rest of a block, the
				// part's end and its padding: leave it room for that.
				capacity, zone = limit, limit/2
			}
			id, d := m.label(t, capacity, zone)
			a, err := tape.OpenAppender(ctxT(t), d, id, testBS, 0, tape.AppenderOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return a
		},
		Read: func(t *testing.T, id uuid.UUID) (io.ReaderAt, int64) {
			return readVolume(t, m.drive(id), tape.ReaderOptions{})
		},
		Fail: func(t *testing.T, id uuid.UUID) {
			e, ok := m.drive(id).(*tape.Emulator)
			if !ok {
				t.Fatalf("volume %s is in a %T, which takes no faults", id, m.drive(id))
			}
			failFrom(t, e)
		},
	}
}

// failFrom makes every block of the emulated drive's tape from where it
// is now a medium error.
func failFrom(t *testing.T, e *tape.Emulator) {
	t.Helper()
	p, err := e.Position(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	var bad []int64
	for b := p.Block; b < p.Block+4096; b++ {
		bad = append(bad, b)
	}
	e.SetFaults(tape.Faults{MediumErrorAt: bad})
}

// readVolume maps the volume with no catalog and returns a reader of it.
func readVolume(t *testing.T, d tape.Drive, opts tape.ReaderOptions) (*tape.Reader, int64) {
	t.Helper()
	lay, err := tape.MapVolume(ctxT(t), d)
	if err != nil {
		t.Fatal(err)
	}
	opts.Size = lay.End
	return tape.NewReader(ctxT(t), d, lay.BlockSize, lay.PartStarts(), opts), lay.End
}

func emulatorDrives(t *testing.T, spec tape.CartridgeSpec) tape.Drive {
	return loadedEmulator(t, newCartridge(t, spec))
}

func linuxDrives(t *testing.T, spec tape.CartridgeSpec) tape.Drive {
	r := &linuxRig{fakes: map[tape.Drive]*tape.FakeST{}}
	return r.harness().New(t, spec)
}

// The volume format goes to tape and comes back through the same
// contract suite as disk volumes, on both drives.
func TestTapeAppenderContract(t *testing.T) {
	t.Run("Emulator", func(t *testing.T) {
		volumetest.TestAppender(t, (&tapeMedium{newDrive: emulatorDrives, drives: map[uuid.UUID]tape.Drive{}}).medium())
	})
	t.Run("Linux", func(t *testing.T) {
		m := (&tapeMedium{newDrive: linuxDrives, drives: map[uuid.UUID]tape.Drive{}}).medium()
		m.Fail = nil // the faked st takes no faults; the emulator's run covers the failure
		volumetest.TestAppender(t, m)
	})
}

func testKey() *volume.Key {
	m := sha256.Sum256([]byte("tape test"))
	return &volume.Key{ID: "tape", Material: m[:]}
}

type file struct {
	path    string
	content []byte
}

func files(seed byte, n, size int) []file {
	var out []file
	for i := range n {
		c := make([]byte, size)
		rand.NewChaCha8([32]byte{seed, byte(i), byte(i >> 8)}).Read(c)
		out = append(out, file{fmt.Sprintf("/data/%c/f%06d-%x", 'a'+seed%26, i, c[:6]), c})
	}
	return out
}

// session writes fs as one session; the same id and files give the same
// bytes.
func session(t *testing.T, id uuid.UUID, first volume.Appender, next func(volume.Appender) (volume.Appender, error), fs []file) (*volume.SessionResult, error) {
	t.Helper()
	info := volume.SessionInfo{SessionID: id, Client: "db-01", Level: "full", Pool: "Tape", Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Compression: volume.CompressionZstd, BlockRawSize: volume.MinBlockRawSize}
	w, err := volume.NewSessionWriter(info, testKey(), first, volume.WriterOptions{Next: next, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, f := range fs {
		if err := w.Write(volumetest.AppendFile(nil, f.path, f.content)); err != nil {
			return nil, err
		}
	}
	res, err := w.Close()
	if res != nil {
		t.Cleanup(func() { res.Index.Close() })
	}
	return res, err
}

// locations are where the session's entries lie, from its index.
func locations(t *testing.T, res *volume.SessionResult) []fileindex.Location {
	t.Helper()
	var locs []fileindex.Location
	segs, err := res.Index.All()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range segs {
		es, err := fileindex.DecodeSegment(s.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			locs = append(locs, e.Loc)
		}
	}
	return locs
}

// readAll reads every entry of a session, its volumes opened by open.
func readAll(t *testing.T, sessionID uuid.UUID, res *volume.SessionResult, open volume.Opener, damaged func(*volume.CorruptBlockError) error) (map[string][]byte, error) {
	t.Helper()
	sr := volume.NewSessionReader(sessionID, testKey(), res.Refs(), open, volume.ReaderOptions{SeekGap: 1 << 40})
	defer sr.Close()
	got := volumetest.Contents{}
	err := sr.ReadEntries(context.Background(), locations(t, res), got.OnRecord(), damaged)
	return got, err
}

func checkFiles(t *testing.T, got map[string][]byte, fs []file) {
	t.Helper()
	for _, f := range fs {
		if !bytes.Equal(got[f.path], f.content) {
			t.Fatalf("%s: %d bytes read back, want %d", f.path, len(got[f.path]), len(f.content))
		}
	}
}

// A session is read back from tape with one locate, then streaming: the
// catalog's part starts map offsets to blocks.
func TestSessionReadsWithOneLocate(t *testing.T) {
	_, d, a := newEmulatedMedium().labeledAppender(t)
	var starts []int64
	var sids []uuid.UUID
	var results []*volume.SessionResult
	var contents [][]file
	for i := range 3 {
		fs := files(byte(i), 20, 150000)
		sid := uuid.New()
		res, err := session(t, sid, a, nil, fs)
		if err != nil {
			t.Fatal(err)
		}
		starts = append(starts, res.Parts[0].VolumeStart)
		sids, results, contents = append(sids, sid), append(results, res), append(contents, fs)
	}
	if a.Parts() != 3 {
		t.Fatalf("appender counts %d parts, 3 were written", a.Parts())
	}
	e := d.(*tape.Emulator)
	if err := d.Rewind(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	before := e.Stats()
	open := func(uuid.UUID) (io.ReaderAt, error) {
		return tape.NewReader(ctxT(t), d, testBS, starts, tape.ReaderOptions{}), nil
	}
	got, err := readAll(t, sids[1], results[1], open, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, got, contents[1])
	after := e.Stats()
	if n := after.Locates - before.Locates; n != 1 {
		t.Fatalf("reading the middle session took %d locates, want 1", n)
	}
	// It read the session's records and nothing much else.
	part := results[1].Parts[0]
	records := (part.End - part.VolumeStart) / testBS
	if n := after.RecordsRead - before.RecordsRead; n < records || n > records+1 {
		t.Fatalf("read %d records for a part of %d", n, records)
	}
}

// Without a catalog: map the volume, list its parts, read a session's
// index from its trailer, restore from it.
func TestVolumeReadsWithoutCatalog(t *testing.T) {
	m := &tapeMedium{newDrive: linuxDrives, drives: map[uuid.UUID]tape.Drive{}}
	id, d := m.label(t, 1<<30, 64<<20)
	a, err := tape.OpenAppender(ctxT(t), d, id, testBS, 0, tape.AppenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var sids []uuid.UUID
	for i := range 2 {
		sid := uuid.New()
		if _, err := session(t, sid, a, nil, files(byte(i), 8, 100000)); err != nil {
			t.Fatal(err)
		}
		sids = append(sids, sid)
	}
	r, size := readVolume(t, d, tape.ReaderOptions{})
	v, err := volume.OpenVolume(r, size)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := v.Parts()
	if err != nil || len(parts) != 2 {
		t.Fatalf("parts %+v, %v", parts, err)
	}
	it, err := volume.ReadIndex(r, testKey(), parts[1])
	if err != nil {
		t.Fatal(err)
	}
	idx, err := fileindex.Collect(it)
	if err != nil || len(idx) != 8 || parts[1].Header.SessionID != sids[1] {
		t.Fatalf("index of session 2: %d entries, %v", len(idx), err)
	}
	if size != parts[1].End {
		t.Fatalf("volume size %d, its last part ends at %d", size, parts[1].End)
	}
}

// Early warning during data: the writer closes the part in the zone and
// goes on on the next cartridge; the first one holds one whole part.
func TestEarlyWarningMovesTheSessionOn(t *testing.T) {
	for name, nd := range map[string]func(*testing.T, tape.CartridgeSpec) tape.Drive{"Emulator": emulatorDrives, "Linux": linuxDrives} {
		t.Run(name, func(t *testing.T) {
			m := &tapeMedium{newDrive: nd, drives: map[uuid.UUID]tape.Drive{}}
			// Early warning 4 MiB in, 4 MiB of zone.
			id, d := m.label(t, 8<<20, 4<<20)
			first, err := tape.OpenAppender(ctxT(t), d, id, testBS, 0, tape.AppenderOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var fulls []*tape.Appender
			next := func(full volume.Appender) (volume.Appender, error) {
				fulls = append(fulls, full.(*tape.Appender))
				if full.Remaining() != 0 {
					t.Errorf("volume %s handed on with %d bytes remaining", full.VolumeID(), full.Remaining())
				}
				id, d := m.label(t, 64<<20, 4<<20)
				return tape.OpenAppender(ctxT(t), d, id, testBS, 0, tape.AppenderOptions{})
			}
			fs := files(7, 60, 100000) // 6 MB of incompressible data
			sid := uuid.New()
			res, err := session(t, sid, first, next, fs)
			if err != nil {
				t.Fatal(err)
			}
			if len(fulls) != 1 || len(res.Parts) != 2 || res.Parts[0].Final || !res.Parts[1].Final {
				t.Fatalf("%d volumes handed on, parts %+v", len(fulls), res.Parts)
			}
			// The first part ends in the zone: past 4 MiB, by no more than
			// a block, the part's end and its padding.
			if end := res.Parts[0].End; end <= 4<<20 || end > 4<<20+2*volume.MinBlockRawSize {
				t.Fatalf("first part ends at %d; early warning was at %d", end, 4<<20)
			}
			if st, err := d.Status(ctxT(t)); err != nil || !st.EarlyWarning {
				t.Fatalf("status of the full cartridge: %+v, %v", st, err)
			}
			lay, err := tape.MapVolume(ctxT(t), d)
			if err != nil || len(lay.Files) != 2 || !lay.Files[1].Marked || lay.End != res.Parts[0].End {
				t.Fatalf("layout of the full cartridge %+v, %v", lay, err)
			}
			got, err := readAll(t, sid, res, func(id uuid.UUID) (io.ReaderAt, error) {
				r, _ := readVolume(t, m.drive(id), tape.ReaderOptions{})
				return r, nil
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkFiles(t, got, fs)
		})
	}
}

// Early warning inside the trailer: the writer checked that the trailer
// fits before starting it, so the Appender keeps taking it, in the zone,
// and the trailer stays whole on one volume (FORMAT.md: the index lives in
// the final part).
func TestEarlyWarningInTheTrailer(t *testing.T) {
	m := newEmulatedMedium()
	// Many small files make a trailer of several records.
	var fs []file
	for i := range 12000 {
		c := []byte(fmt.Sprintf("%d", i))
		fs = append(fs, file{fmt.Sprintf("/srv/mail/%08x/%x", rand.Uint32(), sha256.Sum256(c)), c})
	}
	sortFiles(fs)
	sid := uuid.New()
	// A dry run on a big tape says where the trailer lies.
	id, d := m.label(t, 1<<30, 64<<20)
	a, err := tape.OpenAppender(ctxT(t), d, id, testBS, 0, tape.AppenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := session(t, sid, a, nil, fs); err != nil {
		t.Fatal(err)
	}
	r, size := readVolume(t, d, tape.ReaderOptions{})
	v, err := volume.OpenVolume(r, size)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := v.Parts()
	if err != nil {
		t.Fatal(err)
	}
	pe := parts[0].PartEnd
	indexAt := parts[0].DataStart + int64(pe.IndexStreamStart-parts[0].Header.StreamStart)
	indexEnd := parts[0].DataStart + int64(pe.StreamEnd-parts[0].Header.StreamStart)
	if indexEnd-indexAt < 3*testBS {
		t.Fatalf("the trailer is %d bytes, too short to meet early warning inside it", indexEnd-indexAt)
	}
	// Again, with early warning one record into the trailer.
	warn := (indexAt/testBS + 1) * testBS
	id, d = m.label(t, warn+16<<20, 16<<20)
	a, err = tape.OpenAppender(ctxT(t), d, id, testBS, 0, tape.AppenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := session(t, sid, a, func(volume.Appender) (volume.Appender, error) {
		return nil, errors.New("the trailer was split across volumes")
	}, fs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Parts) != 1 || res.Parts[0].End <= warn {
		t.Fatalf("parts %+v; want one, ending past the early warning at %d", res.Parts, warn)
	}
	if st, err := d.Status(ctxT(t)); err != nil || !st.EarlyWarning {
		t.Fatalf("the trailer did not reach early warning: %+v, %v", st, err)
	}
	if a.Remaining() != 0 {
		t.Fatalf("after the trailer the full volume reports %d bytes remaining", a.Remaining())
	}
	r, size = readVolume(t, d, tape.ReaderOptions{})
	v, err = volume.OpenVolume(r, size)
	if err != nil {
		t.Fatal(err)
	}
	if parts, err = v.Parts(); err != nil || len(parts) != 1 {
		t.Fatalf("parts %+v, %v", parts, err)
	}
	it, err := volume.ReadIndex(r, testKey(), parts[0])
	if err != nil {
		t.Fatal(err)
	}
	if idx, err := fileindex.Collect(it); err != nil || len(idx) != len(fs) {
		t.Fatalf("index: %d entries, %v", len(idx), err)
	}
}

func sortFiles(fs []file) {
	slices.SortFunc(fs, func(a, b file) int { return fileindex.Compare(a.path, b.path) })
}

// A record the drive cannot read: by default the read fails naming the
// block; with OnMediumError it reads as zeros, and the volume format names
// the damaged blocks while every other file comes back.
func TestMediumErrorInAVolume(t *testing.T) {
	_, d, a := newEmulatedMedium().labeledAppender(t)
	fs := files(3, 30, 120000)
	sid := uuid.New()
	res, err := session(t, sid, a, nil, fs)
	if err != nil {
		t.Fatal(err)
	}
	// A record in the middle of the part: label, mark, then the part.
	part := res.Parts[0]
	bad := (part.VolumeStart+part.End)/2/testBS + 1
	d.(*tape.Emulator).SetFaults(tape.Faults{MediumErrorAt: []int64{bad}})
	starts := []int64{part.VolumeStart}

	_, err = readAll(t, sid, res, func(uuid.UUID) (io.ReaderAt, error) {
		return tape.NewReader(ctxT(t), d, testBS, starts, tape.ReaderOptions{}), nil
	}, nil)
	var me *tape.MediumError
	if !errors.As(err, &me) || me.Block != bad {
		t.Fatalf("reading over a bad block: %v; want a *MediumError naming block %d", err, bad)
	}

	var reported []*tape.MediumError
	var damaged []*volume.CorruptBlockError
	got, err := readAll(t, sid, res, func(uuid.UUID) (io.ReaderAt, error) {
		return tape.NewReader(ctxT(t), d, testBS, starts, tape.ReaderOptions{OnMediumError: func(e *tape.MediumError) { reported = append(reported, e) }}), nil
	}, func(e *volume.CorruptBlockError) error { damaged = append(damaged, e); return nil })
	var le *volume.LostEntriesError
	if !errors.As(err, &le) {
		t.Fatalf("reading on past a bad record: %v, want the entries it spoilt named", err)
	}
	if len(reported) != 1 || reported[0].Block != bad || len(damaged) == 0 {
		t.Fatalf("medium errors %v, damaged blocks %v", reported, damaged)
	}
	// The reader names exactly the files that did not come back.
	named := map[fileindex.Location]bool{}
	for _, l := range le.Lost {
		named[l.Loc] = true
	}
	lost := 0
	for i, f := range fs {
		spoilt := !bytes.Equal(got[f.path], f.content)
		if spoilt {
			lost++
		}
		if loc := locations(t, res)[i]; named[loc] != spoilt {
			t.Errorf("%s: spoilt %v, named lost %v", f.path, spoilt, named[loc])
		}
	}
	// One 64 KiB record spoils a 512 KiB block or two: a handful of the
	// 120 KB files, never all.
	if lost == 0 || lost > 8 {
		t.Fatalf("%d of %d files damaged by one bad record", lost, len(fs))
	}
}

// A part a crash left torn is cut off by the next OpenAppender, as the
// disk pool cuts a torn tail.
func TestOpenAppenderCutsATornPart(t *testing.T) {
	id, d, a := newEmulatedMedium().labeledAppender(t)
	fs1 := files(1, 10, 100000)
	sid1 := uuid.New()
	res1, err := session(t, sid1, a, nil, fs1)
	if err != nil {
		t.Fatal(err)
	}
	end, parts := a.Offset(), a.Parts()
	// A second session dies half way: some records reach the tape, no
	// PartEnd and no file mark of ours.
	a2, err := tape.OpenAppender(ctxT(t), d, id, end, parts, tape.AppenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a2.Write(bytes.Repeat([]byte{0xee}, 3*testBS+100)); err != nil {
		t.Fatal(err)
	}
	// The drive is closed (st writes a file mark after the torn part) and
	// the cartridge loaded again by a restarted storage node.
	path := d.(*tape.Emulator).Cartridge()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = loadedEmulator(t, path)
	t.Cleanup(func() { d.Close() })
	if lay, err := tape.MapVolume(ctxT(t), d); err != nil || len(lay.Files) != 3 {
		t.Fatalf("before: layout %+v, %v; want the label, a part and the torn part", lay, err)
	}
	// The catalog's committed end, and bad ones.
	if _, err := tape.OpenAppender(ctxT(t), d, uuid.New(), end, parts, tape.AppenderOptions{}); !errors.Is(err, tape.ErrWrongVolume) {
		t.Fatalf("open for another volume id: %v, want ErrWrongVolume", err)
	}
	if _, err := tape.OpenAppender(ctxT(t), d, id, end, parts+1, tape.AppenderOptions{}); !errors.Is(err, tape.ErrLayout) {
		t.Fatalf("open with a part count the tape does not have: %v, want ErrLayout", err)
	}
	if _, err := tape.OpenAppender(ctxT(t), d, id, end+1000*testBS, parts, tape.AppenderOptions{}); !errors.Is(err, tape.ErrLayout) {
		t.Fatalf("open past the end of the tape: %v, want ErrLayout", err)
	}
	a3, err := tape.OpenAppender(ctxT(t), d, id, end, parts, tape.AppenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a3.TornBlocks == 0 {
		t.Fatal("OpenAppender found no torn blocks past the committed end")
	}
	fs3 := files(3, 5, 50000)
	sid3 := uuid.New()
	res3, err := session(t, sid3, a3, nil, fs3)
	if err != nil {
		t.Fatal(err)
	}
	if res3.Parts[0].VolumeStart != end {
		t.Fatalf("the new session starts at %d, the committed end is %d", res3.Parts[0].VolumeStart, end)
	}
	r, size := readVolume(t, d, tape.ReaderOptions{})
	v, err := volume.OpenVolume(r, size)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := v.Parts()
	if err != nil || len(ps) != 2 || ps[0].Header.SessionID != sid1 || ps[1].Header.SessionID != sid3 || ps[1].Torn {
		t.Fatalf("parts after the cut: %+v, %v", ps, err)
	}
	for i, c := range []struct {
		sid uuid.UUID
		res *volume.SessionResult
		fs  []file
	}{{sid1, res1, fs1}, {sid3, res3, fs3}} {
		got, err := readAll(t, c.sid, c.res, func(uuid.UUID) (io.ReaderAt, error) {
			return tape.NewReader(ctxT(t), d, testBS, []int64{ps[0].VolumeStart, ps[1].VolumeStart}, tape.ReaderOptions{}), nil
		}, nil)
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		checkFiles(t, got, c.fs)
	}
}

func TestLabels(t *testing.T) {
	for name, nd := range map[string]func(*testing.T, tape.CartridgeSpec) tape.Drive{"Emulator": emulatorDrives, "Linux": linuxDrives} {
		t.Run(name, func(t *testing.T) {
			ctx := ctxT(t)
			d := nd(t, tape.CartridgeSpec{Barcode: "LBL001L9", Capacity: 1 << 30})
			defer d.Close()
			if _, err := tape.ReadLabel(ctx, d); !errors.Is(err, volume.ErrNotVolume) {
				t.Fatalf("label of a blank cartridge: %v, want ErrNotVolume", err)
			}
			l := volume.Label{VolumeID: uuid.New(), Name: "LBL001L9", Pool: "Tape", BlockSize: 2 * testBS}
			if err := tape.WriteLabel(ctx, d, l, false); err != nil {
				t.Fatal(err)
			}
			// Relabelling erases a volume: only when asked.
			l2 := l
			l2.VolumeID = uuid.New()
			if err := tape.WriteLabel(ctx, d, l2, false); !errors.Is(err, tape.ErrLabelled) {
				t.Fatalf("labelling a labelled cartridge: %v, want ErrLabelled", err)
			}
			// The label is found whatever the drive's block size.
			if err := d.SetBlockSize(ctx, testBS); err != nil {
				t.Fatal(err)
			}
			got, err := tape.ReadLabel(ctx, d)
			if err != nil || got.VolumeID != l.VolumeID || got.BlockSize != 2*testBS || got.MediaType != "tape" {
				t.Fatalf("label %+v, %v", got, err)
			}
			if st, err := d.Status(ctx); err != nil || st.BlockSize != 2*testBS {
				t.Fatalf("drive block size after reading the label: %+v, %v", st, err)
			}
			if st, _ := d.Status(ctx); st.Cartridge != nil && st.Cartridge.VolumeID != l.VolumeID {
				t.Fatalf("cartridge memory holds volume %s, the label %s", st.Cartridge.VolumeID, l.VolumeID)
			}
			if err := tape.WriteLabel(ctx, d, l2, true); err != nil {
				t.Fatal(err)
			}
			if got, err := tape.ReadLabel(ctx, d); err != nil || got.VolumeID != l2.VolumeID {
				t.Fatalf("relabelled: %+v, %v", got, err)
			}
			// Data that is not a Cairn volume is not overwritten either.
			d2 := nd(t, tape.CartridgeSpec{Capacity: 1 << 30})
			defer d2.Close()
			if err := d2.WriteRecord(ctx, make([]byte, testBS)); err != nil {
				t.Fatal(err)
			}
			if err := tape.WriteLabel(ctx, d2, l2, false); !errors.Is(err, tape.ErrLabelled) {
				t.Fatalf("labelling a cartridge holding other data: %v, want ErrLabelled", err)
			}
			// A write-protected cartridge is not labelled.
			d3 := nd(t, tape.CartridgeSpec{Capacity: 1 << 30, WriteProtected: true})
			defer d3.Close()
			if err := tape.WriteLabel(ctx, d3, l2, true); !errors.Is(err, tape.ErrWriteProtected) {
				t.Fatalf("labelling a protected cartridge: %v, want ErrWriteProtected", err)
			}
		})
	}
}

// One byte damaged in the cartridge file, in the header of a record in
// the middle of a session: the next load keeps the whole tape, the record
// reads as a medium error, and the volume format names the files in the
// blocks it held; every other file comes back.
func TestDamagedCartridgeHeaderInAVolume(t *testing.T) {
	path := newCartridge(t, tape.CartridgeSpec{Barcode: "DMG002L9", Capacity: 1 << 30})
	e := loadedEmulator(t, path)
	id := uuid.New()
	if err := tape.WriteLabel(ctxT(t), e, volume.Label{VolumeID: id, Name: "DMG002L9", Barcode: "DMG002L9", Pool: "Tape", BlockSize: testBS}, false); err != nil {
		t.Fatal(err)
	}
	a, err := tape.OpenAppender(ctxT(t), e, id, testBS, 0, tape.AppenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fs := files(4, 30, 120000)
	sid := uuid.New()
	res, err := session(t, sid, a, nil, fs)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	part := res.Parts[0]
	bad := (part.VolumeStart+part.End)/2/testBS + 1 // label, its file mark, then the part
	off := 8192 + (bad-1)*(16+testBS) + 16          // bad-1 records and one file mark before it
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	f.ReadAt(b, off+5)
	b[0] ^= 0x5a // the record's length
	f.WriteAt(b, off+5)
	f.Close()
	before, _ := os.Stat(path)

	e = loadedEmulator(t, path)
	defer e.Close()
	var reported []*tape.MediumError
	got, err := readAll(t, sid, res, func(uuid.UUID) (io.ReaderAt, error) {
		return tape.NewReader(ctxT(t), e, testBS, []int64{part.VolumeStart}, tape.ReaderOptions{OnMediumError: func(me *tape.MediumError) { reported = append(reported, me) }}), nil
	}, func(*volume.CorruptBlockError) error { return nil })
	var le *volume.LostEntriesError
	if !errors.As(err, &le) || len(reported) != 1 || reported[0].Block != bad {
		t.Fatalf("read: %v, medium errors %v; want block %d reported and the files in it named", err, reported, bad)
	}
	named := map[fileindex.Location]bool{}
	for _, l := range le.Lost {
		named[l.Loc] = true
	}
	lost := 0
	for i, f := range fs {
		spoilt := !bytes.Equal(got[f.path], f.content)
		if spoilt {
			lost++
		}
		if named[locations(t, res)[i]] != spoilt {
			t.Errorf("%s: spoilt %v, named lost %v", f.path, spoilt, named[locations(t, res)[i]])
		}
	}
	if lost == 0 || lost > 8 {
		t.Fatalf("%d of %d files lost to one damaged record header", lost, len(fs))
	}
	if after, _ := os.Stat(path); after.Size() != before.Size() {
		t.Fatalf("loading the cartridge changed its size from %d to %d", before.Size(), after.Size())
	}
}
