package storagenode

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/media/volume/volumetest"
	"github.com/cairnbackup/cairn/storagenode/library"
)

const spoolTestBS = volume.MinBlockSize

// tapeRig is a set of emulated drives, one cartridge each, on a virtual
// clock: a volume per drive.
type tapeRig struct {
	t      *testing.T
	clock  *tape.VirtualClock
	drives map[uuid.UUID]*tape.Emulator
	order  []uuid.UUID
}

func newTapeRig(t *testing.T) *tapeRig {
	return &tapeRig{t: t, clock: tape.NewVirtualClock(), drives: map[uuid.UUID]*tape.Emulator{}}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// volume labels a new cartridge and opens it for appending.
func (r *tapeRig) volume(capacity, zone int64) *tape.Appender {
	t := r.t
	n := len(r.order) + 1
	path := filepath.Join(t.TempDir(), "cart.tape")
	barcode := fmt.Sprintf("SPL%03dL9", n)
	if err := tape.CreateCartridge(path, tape.CartridgeSpec{Barcode: barcode, Capacity: capacity, EarlyWarningZone: zone}); err != nil {
		t.Fatal(err)
	}
	e := tape.NewEmulator(tape.EmulatorConfig{Name: fmt.Sprintf("lto%d", n), Clock: r.clock, BlockSize: spoolTestBS})
	t.Cleanup(func() { e.Close() })
	if err := e.Insert(path); err != nil {
		t.Fatal(err)
	}
	if err := e.Load(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	if err := tape.WriteLabel(testCtx(t), e, volume.Label{VolumeID: id, Name: barcode, Barcode: barcode, Pool: "Tape", BlockSize: spoolTestBS}, false); err != nil {
		t.Fatal(err)
	}
	a, err := tape.OpenAppender(testCtx(t), e, id, spoolTestBS, 0, tape.AppenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.drives[id] = e
	r.order = append(r.order, id)
	return a
}

func (r *tapeRig) opener() volume.Opener {
	return func(id uuid.UUID) (io.ReaderAt, error) {
		d := r.drives[id]
		if d == nil {
			return nil, fmt.Errorf("no drive holds volume %s", id)
		}
		lay, err := tape.MapVolume(testCtx(r.t), d)
		if err != nil {
			return nil, err
		}
		return tape.NewReader(testCtx(r.t), d, lay.BlockSize, lay.PartStarts(), tape.ReaderOptions{Size: lay.End}), nil
	}
}

type testFile struct {
	path    string
	content []byte
}

func randomFiles(seed uint64, n, size int) []testFile {
	rnd := rand.New(rand.NewPCG(seed, 2))
	var out []testFile
	for i := range n {
		c := make([]byte, size)
		for j := range c {
			c[j] = byte(rnd.Uint32())
		}
		out = append(out, testFile{fmt.Sprintf("/data/f%06d", i), c})
	}
	return out
}

func testDataKey() *volume.Key {
	m := sha256.Sum256([]byte("storagenode tape test"))
	return &volume.Key{ID: "tape", Material: m[:]}
}

// writeFiles writes fs as one session through first and opts.Next.
func writeFiles(t *testing.T, first volume.Appender, opts volume.WriterOptions, fs []testFile) (uuid.UUID, *volume.SessionResult) {
	t.Helper()
	sid := uuid.New()
	info := volume.SessionInfo{SessionID: sid, Client: "db-01", Level: "full", Pool: "Tape", BlockRawSize: volume.MinBlockRawSize}
	opts.TempDir = t.TempDir()
	w, err := volume.NewSessionWriter(info, testDataKey(), first, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, f := range fs {
		if err := w.Write(volumetest.AppendFile(nil, f.path, f.content)); err != nil {
			t.Fatal(err)
		}
	}
	res, err := w.Close()
	if res != nil {
		t.Cleanup(func() { res.Index.Close() })
	}
	if err != nil {
		t.Fatal(err)
	}
	return sid, res
}

// checkSession reads every file of the session back and compares.
func checkSession(t *testing.T, sid uuid.UUID, res *volume.SessionResult, open volume.Opener, fs []testFile) {
	t.Helper()
	sr := volume.NewSessionReader(sid, testDataKey(), res.Refs(), open, volume.ReaderOptions{SeekGap: 1 << 40})
	defer sr.Close()
	got := volumetest.Contents{}
	err := sr.ReadAll(context.Background(), got.OnRecord(), func(e *volume.CorruptBlockError) error { return e })
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if !bytes.Equal(got[f.path], f.content) {
			t.Fatalf("%s: %d bytes read back, want %d", f.path, len(got[f.path]), len(f.content))
		}
	}
}

func spoolFiles(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		if e.Name() != spoolLockName { // the node's hold on the directory, not spooled data
			names = append(names, e.Name())
		}
	}
	return names
}

// With spooling on, a session spans cartridges as without it: the chunks
// the writer is ahead of the tape land in the early warning zone, the next
// tape takes the rest, every file reads back, never more than two chunks
// are on disk, and none is left.
func TestSpoolSpansCartridges(t *testing.T) {
	rig := newTapeRig(t)
	dir := filepath.Join(t.TempDir(), "spool")
	const chunk = 1 << 20
	var spools []*spool
	open := func() volume.Appender {
		// Early warning 6 MiB in, a zone of 6 MiB: two chunks, a block,
		// the part's end and its padding fit.
		s, err := newSpool(rig.volume(12<<20, 6<<20), dir, chunk)
		if err != nil {
			t.Fatal(err)
		}
		spools = append(spools, s)
		return s
	}
	first := open()
	fs := randomFiles(1, 150, 100_000) // 15 MB
	sid, res := writeFiles(t, first, volume.WriterOptions{Next: func(full volume.Appender) (volume.Appender, error) {
		if full.Remaining() != 0 {
			t.Errorf("volume %s handed on with room left", full.VolumeID())
		}
		if err := full.(*spool).Close(); err != nil {
			return nil, err
		}
		return open(), nil
	}}, fs)
	for _, s := range spools {
		s.Close()
	}
	if len(res.Parts) < 3 {
		t.Fatalf("%d parts, want the session on three cartridges at least", len(res.Parts))
	}
	for i, p := range res.Parts[:len(res.Parts)-1] {
		if p.Torn || p.End <= 6<<20 || p.End > 12<<20 {
			t.Fatalf("part %d %+v: should end in the zone", i, p)
		}
	}
	chunks := 0
	for _, s := range spools {
		st := s.stats()
		if st.Peak > 2 {
			t.Fatalf("%d chunk files on disk at once", st.Peak)
		}
		chunks += st.Chunks
	}
	if chunks < 10 {
		t.Fatalf("%d chunks despooled for 15 MB in chunks of 1 MiB", chunks)
	}
	if left := spoolFiles(t, dir); len(left) > 0 {
		t.Fatalf("spool files left: %v", left)
	}
	checkSession(t, sid, res, rig.opener(), fs)
}

// Chunks larger than the zone overrun it: the end of medium comes back as
// a lost medium, the part ends at its last block on the tape, the rest goes
// to the next one, and the tape is reported full (errors.Is
// tape.ErrEndOfMedium), not bad.
func TestSpoolOverrunMovesOn(t *testing.T) {
	rig := newTapeRig(t)
	dir := filepath.Join(t.TempDir(), "spool")
	var causes []error
	open := func() volume.Appender {
		s, err := newSpool(rig.volume(8<<20, 1<<20), dir, 3<<20)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	fs := randomFiles(2, 100, 100_000)
	sid, res := writeFiles(t, open(), volume.WriterOptions{
		Lost: func(lost volume.Appender, cause error) { causes = append(causes, cause) },
		Next: func(full volume.Appender) (volume.Appender, error) {
			full.(*spool).Close()
			return open(), nil
		}}, fs)
	if len(causes) == 0 {
		t.Fatalf("no overrun; parts %+v", res.Parts)
	}
	for _, c := range causes {
		if !errors.Is(c, tape.ErrEndOfMedium) {
			t.Fatalf("lost for %v, want the end of medium", c)
		}
	}
	if !res.Parts[0].Torn {
		t.Fatalf("parts %+v", res.Parts)
	}
	if left := spoolFiles(t, dir); len(left) > 0 {
		t.Fatalf("spool files left: %v", left)
	}
	checkSession(t, sid, res, rig.opener(), fs)
}

// The spool is an Appender, a recoverable one, to the session writer as
// a tape is: it runs the contract suite, failure of the tape under it
// included. Small chunks make the despooler hand off many times; the
// cartridge of a volume with a limit has room in its early warning zone
// for the two chunks the despooler may still write after the warning.
func TestSpoolAppenderContract(t *testing.T) {
	rig := newTapeRig(t)
	const chunk = 128 << 10
	volumetest.TestAppender(t, volumetest.Medium{
		New: func(t *testing.T, limit int64) volume.Appender {
			capacity, zone := int64(1<<30), int64(64<<20)
			if limit > 0 {
				capacity, zone = limit, limit/2
			}
			sp, err := newSpool(rig.volume(capacity, zone), filepath.Join(t.TempDir(), "spool"), chunk)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sp.Close() })
			return sp
		},
		Read: func(t *testing.T, id uuid.UUID) (io.ReaderAt, int64) {
			lay, err := tape.MapVolume(testCtx(t), rig.drives[id])
			if err != nil {
				t.Fatal(err)
			}
			return tape.NewReader(testCtx(t), rig.drives[id], lay.BlockSize, lay.PartStarts(), tape.ReaderOptions{Size: lay.End}), lay.End
		},
		Fail: func(t *testing.T, id uuid.UUID) {
			p, err := rig.drives[id].Position(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			var bad []int64
			for b := p.Block; b < p.Block+4096; b++ {
				bad = append(bad, b)
			}
			rig.drives[id].SetFaults(tape.Faults{MediumErrorAt: bad})
		},
	})
}

// A medium error under the despooler: the part on that tape ends at its
// last whole block (read back from the chunk files and the tape
// Appender), the rest goes on the next tape, and everything reads back.
func TestSpoolMediumError(t *testing.T) {
	for _, bad := range []int64{20, 40} { // in the first chunk, in the second (1 MiB chunks of 64 KiB records)
		t.Run(fmt.Sprint(bad), func(t *testing.T) {
			rig := newTapeRig(t)
			dir := filepath.Join(t.TempDir(), "spool")
			a := rig.volume(1<<30, 64<<20)
			rig.drives[a.VolumeID()].SetFaults(tape.Faults{MediumErrorAt: []int64{bad}})
			first, err := newSpool(a, dir, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			var lost []uuid.UUID
			fs := randomFiles(3, 60, 100_000)
			var spools = []*spool{first}
			sid, res := writeFiles(t, first, volume.WriterOptions{
				Lost: func(l volume.Appender, cause error) {
					if !errors.Is(cause, tape.ErrMedium) {
						t.Errorf("lost for %v", cause)
					}
					lost = append(lost, l.VolumeID())
				},
				Next: func(volume.Appender) (volume.Appender, error) {
					s, err := newSpool(rig.volume(1<<30, 64<<20), dir, 1<<20)
					spools = append(spools, s)
					return s, err
				}}, fs)
			for _, s := range spools {
				s.Close()
			}
			if len(lost) != 1 || lost[0] != a.VolumeID() || len(res.Parts) != 2 || !res.Parts[0].Torn {
				t.Fatalf("lost %v, parts %+v", lost, res.Parts)
			}
			if left := spoolFiles(t, dir); len(left) > 0 {
				t.Fatalf("spool files left: %v", left)
			}
			checkSession(t, sid, res, rig.opener(), fs)
		})
	}
}

// A node killed mid-backup leaves its spool chunks; the next start removes
// them (and says so), touches nothing else in the directory, and refuses a
// spool directory another running node holds.
func TestStartRemovesOrphanedSpoolChunks(t *testing.T) {
	spoolDir := filepath.Join(t.TempDir(), "spool")
	orphan := filepath.Join(spoolDir, "job-17", "spool-123.chunk")
	if err := os.MkdirAll(filepath.Dir(orphan), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(orphan, bytes.Repeat([]byte{1}, 3<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	// Not the spool's own: kept.
	foreign := []string{filepath.Join(spoolDir, "notes.txt"), filepath.Join(spoolDir, "job-x", "spool-1.chunk"), filepath.Join(spoolDir, "job-18", "keep.me")}
	for _, f := range foreign {
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := DefaultConfig()
	cfg.ID = "sn1"
	cfg.DataDir = t.TempDir()
	cfg.Libraries = []library.Config{{Name: "lib1", Emulated: &library.EmulatedConfig{Dir: t.TempDir(), Drives: 1, Slots: 2}}}
	cfg.TapePools = []TapePoolConfig{{Name: "Tape", Library: "lib1", SpoolDir: spoolDir, SpoolChunkBytes: 1 << 20}}
	var logs bytes.Buffer
	n, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphaned chunk still there: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(orphan)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the cut-off session's spool directory is still there: %v", err)
	}
	for _, f := range foreign {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s, not a spool chunk, was removed: %v", f, err)
		}
	}
	if !strings.Contains(logs.String(), "removed the spool chunks") || !strings.Contains(logs.String(), "bytes=3145728") {
		t.Errorf("the node did not say what it removed:\n%s", logs.String())
	}

	// A second node on the same spool directory would remove the first
	// one's live chunks: refused.
	cfg2 := cfg
	cfg2.ID, cfg2.DataDir = "sn2", t.TempDir()
	if n2, err := New(cfg2, slog.New(slog.NewTextHandler(io.Discard, nil)), nil); err == nil || !strings.Contains(err.Error(), "in use by another storage node") {
		if n2 != nil {
			n2.Close()
		}
		t.Fatalf("second node on the same spool directory: %v", err)
	}
	n.Close()
	n3, err := New(cfg2, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatalf("the spool directory stays taken after its node closed: %v", err)
	}
	n3.Close()
}
