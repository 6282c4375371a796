package tape_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/tape/tapetest"
	"github.com/cairnbackup/cairn/media/volume"
)

const testBS = volume.MinBlockSize

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newCartridge(t *testing.T, spec tape.CartridgeSpec) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cart.tape")
	if err := tape.CreateCartridge(path, spec); err != nil {
		t.Fatal(err)
	}
	return path
}

// newEmulator is an emulated LTO-9 on a virtual clock: realistic timings
// that cost no wall time.
func newEmulator(t *testing.T, clock tape.Clock) *tape.Emulator {
	if clock == nil {
		clock = tape.NewVirtualClock()
	}
	return tape.NewEmulator(tape.EmulatorConfig{Name: "lto0", Clock: clock, BlockSize: testBS})
}

func loadedEmulator(t *testing.T, path string) *tape.Emulator {
	t.Helper()
	e := newEmulator(t, nil)
	if err := e.Insert(path); err != nil {
		t.Fatal(err)
	}
	if err := e.Load(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestEmulatorContract(t *testing.T) {
	tapetest.TestDrive(t, tapetest.Harness{
		BlockSize: testBS,
		New: func(t *testing.T, spec tape.CartridgeSpec) tape.Drive {
			return loadedEmulator(t, newCartridge(t, spec))
		},
		Empty:  func(t *testing.T) tape.Drive { return newEmulator(t, nil) },
		Inject: func(t *testing.T, d tape.Drive, f tape.Faults) { d.(*tape.Emulator).SetFaults(f) },
		SetWriteProtect: func(t *testing.T, d tape.Drive, on bool) {
			e := d.(*tape.Emulator)
			if err := e.Unload(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			path, err := e.Remove()
			if err != nil {
				t.Fatal(err)
			}
			if err := tape.SetWriteProtect(path, on); err != nil {
				t.Fatal(err)
			}
			if err := e.Insert(path); err != nil {
				t.Fatal(err)
			}
			if err := e.Load(ctxT(t)); err != nil {
				t.Fatal(err)
			}
		},
		Reopen: func(t *testing.T, d tape.Drive) tape.Drive {
			return loadedEmulator(t, d.(*tape.Emulator).Cartridge())
		},
	})
}

func within(t *testing.T, what string, got, want time.Duration, tol float64) {
	t.Helper()
	if d := math.Abs(float64(got-want)) / float64(want); d > tol {
		t.Fatalf("%s took %s, want %s (±%.0f%%)", what, got, want, tol*100)
	}
}

// The LTO-9 profile gives realistic timings on a virtual clock, for free.
func TestEmulatorTimings(t *testing.T) {
	clock := tape.NewVirtualClock()
	path := newCartridge(t, tape.CartridgeSpec{Capacity: 64 << 20, EarlyWarningZone: 64 << 10})
	e := newEmulator(t, clock)
	defer e.Close()
	if err := e.Insert(path); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	lap := func() time.Duration { return clock.Elapsed() }
	start := lap()
	if err := e.Load(ctx); err != nil {
		t.Fatal(err)
	}
	within(t, "load", lap()-start, tape.LTO9.Load, 0)

	// Streaming: 1023 records of 64 KiB at 400 MB/s. They fit the drive's
	// buffer, so the time shows when the file mark flushes it.
	start = lap()
	rec := make([]byte, testBS)
	n := 0
	for ; n < 1023; n++ {
		if err := e.WriteRecord(ctx, rec); err != nil {
			if errors.Is(err, tape.ErrEarlyWarning) {
				n--
				continue
			}
			t.Fatal(err)
		}
	}
	if err := e.WriteFileMark(ctx); err != nil {
		t.Fatal(err)
	}
	want := time.Duration(float64(n*testBS) / 400e6 * float64(time.Second))
	within(t, "writing 64 MiB", lap()-start-tape.LTO9.FileMark, want, 0.01)
	if st := e.Stats(); st.Stops != 0 || st.Writing != lap()-start {
		t.Fatalf("a host faster than the drive: stats %+v, want no stop and %s of writing", st, lap()-start)
	}

	// A locate over the whole cartridge: LocateMin + 3*(average-min).
	start = lap()
	if err := e.Rewind(ctx); err != nil {
		t.Fatal(err)
	}
	full := tape.LTO9.LocateMin + time.Duration(float64(3*(tape.LTO9.LocateAverage-tape.LTO9.LocateMin))*float64(n*testBS)/float64(64<<20))
	within(t, "rewinding a full cartridge", lap()-start, full, 0.001)

	// Random locates average 10 s.
	rng := rand.New(rand.NewPCG(1, 2))
	const locates = 400
	start = lap()
	for range locates {
		if err := e.Locate(ctx, rng.Int64N(int64(n))); err != nil {
			t.Fatal(err)
		}
	}
	within(t, "the average locate", (lap()-start)/locates, tape.LTO9.LocateAverage, 0.06)
	if st := e.Stats(); st.Locates != locates+1 || st.RecordsWritten != int64(n) {
		t.Fatalf("stats %+v", st)
	}
}

// With the real clock the emulator streams at its profile's speed once
// its buffer is full. The real clock's time runs in a synctest bubble, so
// the bound is exact, however loaded the machine is.
func TestEmulatorPacesInRealTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		prof := tape.LTO9
		prof.Speed = 50e6
		prof.Load = 0
		prof.FileMark = 0 // Close writes one
		prof.BufferBytes = 4 << 20
		e := tape.NewEmulator(tape.EmulatorConfig{Profile: prof, BlockSize: testBS})
		defer e.Close()
		if err := e.Insert(newCartridge(t, tape.CartridgeSpec{Capacity: 1 << 30})); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := e.Load(ctx); err != nil {
			t.Fatal(err)
		}
		rec := make([]byte, testBS)
		start := time.Now()
		for range 64 + 160 { // the buffer's 4 MiB, then 10 MiB: 0.21 s at 50 MB/s
			if err := e.WriteRecord(ctx, rec); err != nil {
				t.Fatal(err)
			}
		}
		if took := time.Since(start); took < 200*time.Millisecond || took > 210*time.Millisecond {
			t.Fatalf("10 MiB at 50 MB/s took %s", took)
		}
	})
}

// Many objects: locating goes through the checkpoints and the headers
// between them, and the index is rebuilt the same on reopening.
func TestEmulatorLocatesInALargeCartridge(t *testing.T) {
	const bs = 4096
	path := newCartridge(t, tape.CartridgeSpec{Capacity: 1 << 30})
	open := func() *tape.Emulator {
		e := tape.NewEmulator(tape.EmulatorConfig{Clock: tape.NewVirtualClock(), BlockSize: bs})
		if err := e.Insert(path); err != nil {
			t.Fatal(err)
		}
		if err := e.Load(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := open()
	ctx := ctxT(t)
	rec := func(i int) []byte {
		b := make([]byte, bs)
		binary.BigEndian.PutUint64(b, uint64(i))
		return b
	}
	// 3000 records, a file mark after every 500th: blocks map to (file,
	// record) as block = i + i/500.
	for i := range 3000 {
		if err := e.WriteRecord(ctx, rec(i)); err != nil {
			t.Fatal(err)
		}
		if i%500 == 499 {
			if err := e.WriteFileMark(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(e *tape.Emulator) {
		rng := rand.New(rand.NewPCG(3, 4))
		buf := make([]byte, bs)
		for range 300 {
			i := rng.IntN(3000)
			block := int64(i + i/500)
			if err := e.Locate(ctx, block); err != nil {
				t.Fatal(err)
			}
			p, err := e.Position(ctx)
			if err != nil || p.File != int64(i/500) || p.Record != int64(i%500) {
				t.Fatalf("position at block %d: %+v, %v", block, p, err)
			}
			if _, err := e.ReadRecord(ctx, buf); err != nil || binary.BigEndian.Uint64(buf) != uint64(i) {
				t.Fatalf("block %d holds record %d (%v), want %d", block, binary.BigEndian.Uint64(buf), err, i)
			}
		}
	}
	check(e)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = open()
	defer e.Close()
	check(e)
	if err := e.SeekEndOfData(ctx); err != nil {
		t.Fatal(err)
	}
	if p, _ := e.Position(ctx); p.Block != 3006 || p.File != 6 || p.Record != 0 {
		t.Fatalf("end of data at %+v", p)
	}
}

// A crash can leave half an object at the end of the file, or a torn
// meta update; neither loses what was there before.
func TestCartridgeSurvivesACrash(t *testing.T) {
	path := newCartridge(t, tape.CartridgeSpec{Barcode: "CRS001L9", Capacity: 1 << 30})
	e := loadedEmulator(t, path)
	ctx := ctxT(t)
	rec := bytes.Repeat([]byte{0x5a}, testBS)
	for range 3 {
		if err := e.WriteRecord(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.WriteFileMark(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.WriteRecord(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil { // writes the mark after the 4th record
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// Half of a fifth record, as a crash in the middle of its write leaves.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 16)
	hdr[0] = 1
	binary.BigEndian.PutUint32(hdr[4:8], testBS)
	binary.BigEndian.PutUint32(hdr[12:16], crc32.Checksum(hdr[:12], crc32.MakeTable(crc32.Castagnoli)))
	if _, err := f.WriteAt(append(hdr, rec[:1000]...), st.Size()); err != nil {
		t.Fatal(err)
	}
	f.Close()
	info, err := tape.ReadCartridgeInfo(path)
	if err != nil || info.Barcode != "CRS001L9" || info.LoadCount != 1 || info.BytesWritten != 4*testBS {
		t.Fatalf("cartridge info %+v, %v", info, err)
	}
	e = loadedEmulator(t, path)
	buf := make([]byte, testBS)
	want := []error{nil, nil, nil, tape.ErrFileMark, nil, tape.ErrFileMark, tape.ErrEndOfData}
	for i, w := range want {
		if _, err := e.ReadRecord(ctx, buf); !errors.Is(err, w) || (w == nil && err != nil) {
			t.Fatalf("object %d after the crash: %v, want %v", i, err, w)
		}
	}
	// Loading changes nothing of the tape part of the file; the next
	// write at end of data replaces the torn tail, as a write on tape ends
	// the data where it happens.
	crashed := st.Size() + 16 + 1000
	if st2, _ := os.Stat(path); st2.Size() != crashed {
		t.Fatalf("loading changed the file: %d bytes, %d after the crash", st2.Size(), crashed)
	}
	if err := e.WriteRecord(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil { // and a file mark after it
		t.Fatal(err)
	}
	if st2, _ := os.Stat(path); st2.Size() != st.Size()+16+testBS+16 {
		t.Fatalf("after a write at end of data: %d bytes, want %d", st2.Size(), st.Size()+16+testBS+16)
	}
	// A flipped bit in a record is a medium error at that block, as a
	// drive's ECC would report it.
	f, _ = os.OpenFile(path, os.O_RDWR, 0)
	f.WriteAt([]byte{0xa5}, 8192+16+testBS+16+100) // inside record 1
	f.Close()
	e = loadedEmulator(t, path)
	defer e.Close()
	e.ReadRecord(ctx, buf)
	var me *tape.MediumError
	if _, err := e.ReadRecord(ctx, buf); !errors.As(err, &me) || me.Block != 1 {
		t.Fatalf("reading a damaged record: %v, want a medium error at block 1", err)
	}
}

func TestCartridgeMetaSlots(t *testing.T) {
	path := newCartridge(t, tape.CartridgeSpec{Barcode: "SLT001L9", Capacity: 1 << 30})
	for range 3 {
		e := loadedEmulator(t, path)
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := tape.SetWriteProtect(path, true); err != nil {
		t.Fatal(err)
	}
	info, err := tape.ReadCartridgeInfo(path)
	if err != nil || info.LoadCount != 3 || !info.WriteProtected {
		t.Fatalf("info %+v, %v", info, err)
	}
	// Tear the newest slot: the one before it is read.
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	var newest int64
	for slot := int64(0); slot < 2; slot++ {
		b := make([]byte, 16)
		f.ReadAt(b, slot*4096)
		if s := int64(binary.BigEndian.Uint64(b[8:16])); s > newest {
			newest = s
		}
	}
	f.WriteAt([]byte("torn"), (newest%2)*4096+30)
	f.Close()
	info, err = tape.ReadCartridgeInfo(path)
	if err != nil || info.Barcode != "SLT001L9" || info.LoadCount != 3 || info.WriteProtected {
		t.Fatalf("after a torn meta update: %+v, %v; want the state before it (not protected)", info, err)
	}
	// Not a cartridge at all.
	other := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(other, bytes.Repeat([]byte{1}, 10000), 0o600)
	if err := newEmulator(t, nil).Insert(other); err == nil {
		t.Fatal("a file that is not a cartridge was inserted")
	}
	if err := tape.CreateCartridge(path, tape.CartridgeSpec{Capacity: 1 << 30}); err == nil {
		t.Fatal("CreateCartridge overwrote a cartridge")
	}
	if err := tape.CreateCartridge(filepath.Join(t.TempDir(), "c"), tape.CartridgeSpec{}); err == nil {
		t.Fatal("a cartridge of no capacity was made")
	}
}

// A cartridge is in one drive at a time, and a drive holds one cartridge.
func TestEmulatorCartridgeHandling(t *testing.T) {
	path := newCartridge(t, tape.LTO9Cartridge("HND001L9"))
	e1 := loadedEmulator(t, path)
	defer e1.Close()
	e2 := newEmulator(t, nil)
	defer e2.Close()
	if err := e2.Insert(path); err != nil {
		t.Fatal(err)
	}
	if err := e2.Load(ctxT(t)); !errors.Is(err, tape.ErrBusy) {
		t.Fatalf("loading a cartridge loaded in another drive: %v, want ErrBusy", err)
	}
	if err := e1.Insert(newCartridge(t, tape.LTO9Cartridge("HND002L9"))); !errors.Is(err, tape.ErrBusy) {
		t.Fatalf("inserting into a full drive: %v, want ErrBusy", err)
	}
	if _, err := e1.Remove(); !errors.Is(err, tape.ErrBusy) {
		t.Fatalf("removing a loaded cartridge: %v, want ErrBusy", err)
	}
	if err := e1.Unload(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if p, err := e1.Remove(); err != nil || p != path {
		t.Fatalf("remove: %q, %v", p, err)
	}
	if err := e2.Load(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	st, err := e2.Status(ctxT(t))
	if err != nil || st.Density != 0x60 || st.Cartridge.Barcode != "HND001L9" || st.Cartridge.LoadCount != 2 {
		t.Fatalf("status %+v, %v", st, err)
	}
}

// BenchmarkEmulatorStreaming writes 256 KiB records: on the real clock
// (LTO-9 pacing, about 400 MB/s when the disk keeps up) and on a virtual
// one (the emulator's own cost).
func BenchmarkEmulatorStreaming(b *testing.B) {
	for name, clock := range map[string]tape.Clock{"RealLTO9": tape.RealClock(), "Virtual": tape.NewVirtualClock()} {
		b.Run(name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "bench.tape")
			if err := tape.CreateCartridge(path, tape.LTO9Cartridge("BEN001L9")); err != nil {
				b.Fatal(err)
			}
			prof := tape.LTO9
			prof.Load = 0
			e := tape.NewEmulator(tape.EmulatorConfig{Profile: prof, Clock: clock})
			defer e.Close()
			ctx := context.Background()
			if err := e.Insert(path); err != nil {
				b.Fatal(err)
			}
			if err := e.Load(ctx); err != nil {
				b.Fatal(err)
			}
			rec := make([]byte, volume.DefaultBlockSize)
			b.SetBytes(int64(len(rec)))
			b.ResetTimer()
			for range b.N {
				if err := e.WriteRecord(ctx, rec); err != nil {
					b.Fatal(err)
				}
			}
			// Close writes a file mark: a second of drive time that is not
			// streaming.
			b.StopTimer()
		})
	}
}

// The stop model: a host slower than the drive's slowest matched speed
// runs the buffer dry and the drive stops and repositions, again and
// again; a host at full speed, or within the speed matching range, never
// stops it.
func TestEmulatorStopsWhenFedTooSlowly(t *testing.T) {
	prof := tape.LTO9
	prof.BufferBytes = 8 << 20
	const total = 64 << 20
	run := func(t *testing.T, rate float64) (tape.EmulatorStats, time.Duration) {
		clock := tape.NewVirtualClock()
		e := tape.NewEmulator(tape.EmulatorConfig{Profile: prof, Clock: clock, BlockSize: testBS})
		defer e.Close()
		if err := e.Insert(newCartridge(t, tape.CartridgeSpec{Capacity: 1 << 30})); err != nil {
			t.Fatal(err)
		}
		ctx := ctxT(t)
		if err := e.Load(ctx); err != nil {
			t.Fatal(err)
		}
		rec := make([]byte, testBS)
		start := clock.Elapsed()
		for range total / testBS {
			if rate > 0 {
				// The host's own time to produce the record.
				clock.Sleep(ctx, time.Duration(float64(testBS)/rate*float64(time.Second)))
			}
			if err := e.WriteRecord(ctx, rec); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.WriteFileMark(ctx); err != nil {
			t.Fatal(err)
		}
		return e.Stats(), clock.Elapsed() - start - prof.FileMark
	}
	seconds := func(rate float64) time.Duration { return time.Duration(total / rate * float64(time.Second)) }
	bytesTime := func(n, speed int64) time.Duration {
		return time.Duration(float64(n) / float64(speed) * float64(time.Second))
	}

	st, took := run(t, 0)
	if st.Stops != 0 {
		t.Fatalf("fed at full speed the drive stopped %d times", st.Stops)
	}
	within(t, "64 MiB fed at full speed", took, seconds(400e6), 0.01)

	// 200 MB/s is within LTO-9's speed matching (down to 133 MB/s).
	st, took = run(t, 200e6)
	if st.Stops != 0 {
		t.Fatalf("fed at 200 MB/s the drive stopped %d times", st.Stops)
	}
	// The file mark then flushes the half buffer the drive kept.
	within(t, "64 MiB fed at 200 MB/s", took, seconds(200e6)+bytesTime(prof.BufferBytes/2, prof.Speed), 0.01)

	// 50 MB/s: each cycle fills half the buffer, restarts (2 s, while the
	// host fills the rest and then waits), streams it out and runs dry, so
	// at most a buffer and a half goes to tape per stop, and the restarts
	// cost the host far more than its own 50 MB/s.
	st, took = run(t, 50e6)
	if minStops := int64(total / (prof.BufferBytes * 3 / 2)); st.Stops < minStops {
		t.Fatalf("fed at 50 MB/s the drive stopped %d times, want at least %d", st.Stops, minStops)
	}
	if st.Writing < time.Duration(st.Stops)*prof.Restart {
		t.Fatalf("writing time %s does not hold the %d restarts of %s", st.Writing, st.Stops, prof.Restart)
	}
	if took < seconds(50e6)+time.Duration(st.Stops)*prof.Restart/2 {
		t.Fatalf("64 MiB fed at 50 MB/s with %d stops took %s: the restarts cost nothing", st.Stops, took)
	}
	t.Logf("fed at 50 MB/s: %d stops in 64 MiB, %.1f MB/s", st.Stops, total/took.Seconds()/1e6)
}

func TestProfiles(t *testing.T) {
	fast, err := tape.ProfileNamed("fast")
	if err != nil || fast.Speed != tape.LTO9.Speed || fast.Load != tape.LTO9.Load/100 || fast.Restart != tape.LTO9.Restart/100 || fast.LocateAverage != tape.LTO9.LocateAverage/100 {
		t.Fatalf("fast profile %+v, %v", fast, err)
	}
	if p, err := tape.ProfileNamed(""); err != nil || p != tape.LTO9 {
		t.Fatalf("default profile %+v, %v", p, err)
	}
	if _, err := tape.ProfileNamed("lto5"); err == nil {
		t.Fatal("an unknown profile was accepted")
	}
}

// A byte damaged in an object's header: loading changes nothing of the
// file, the damaged block reads as a medium error naming it, and every
// other block, file mark and end of data stay where they were.
func TestDamagedCartridgeIsNotDestroyed(t *testing.T) {
	ctx := ctxT(t)
	rec := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, testBS) }
	// Three files of ten records each: blocks 0-9, mark 10, 11-20, mark
	// 21, 22-31, mark 32.
	const blocks = 33
	write := func(t *testing.T) string {
		path := newCartridge(t, tape.CartridgeSpec{Barcode: "DMG001L9", Capacity: 1 << 30})
		e := loadedEmulator(t, path)
		for f := range 3 {
			for r := range 10 {
				if err := e.WriteRecord(ctx, rec(f*10+r)); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.WriteFileMark(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		return path
	}
	objOff := func(block int) int64 { // file offset of a block's object
		marks := int64(block / 11)
		return 8192 + (int64(block)-marks)*(16+testBS) + marks*16
	}
	for _, c := range []struct {
		name  string
		block int   // the block whose header is damaged
		at    int64 // byte of the header
	}{
		{"record length", 4, 6},
		{"record crc", 15, 13},
		{"record kind", 22, 0},
		{"file mark", 21, 5},
		{"last block", 32, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := write(t)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			b := []byte{0}
			f.ReadAt(b, objOff(c.block)+c.at)
			b[0] ^= 0x5a
			f.WriteAt(b, objOff(c.block)+c.at)
			f.Close()
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}

			e := loadedEmulator(t, path)
			buf := make([]byte, testBS)
			for i := 0; i < blocks; i++ {
				_, err := e.ReadRecord(ctx, buf)
				var me *tape.MediumError
				switch {
				case i == c.block:
					if !errors.As(err, &me) || me.Block != int64(i) || !strings.Contains(err.Error(), "damaged") {
						t.Fatalf("block %d, the damaged one: %v, want a medium error naming it", i, err)
					}
				case i%11 == 10:
					if !errors.Is(err, tape.ErrFileMark) {
						t.Fatalf("block %d: %v, want the file mark", i, err)
					}
				default:
					if err != nil || !bytes.Equal(buf, rec(i-i/11)) {
						t.Fatalf("block %d: %v, or not the record written", i, err)
					}
				}
			}
			if _, err := e.ReadRecord(ctx, buf); !errors.Is(err, tape.ErrEndOfData) {
				t.Fatalf("after the last block: %v, want end of data", err)
			}
			if err := e.Locate(ctx, int64(c.block)+1); err != nil && c.block+1 < blocks {
				t.Fatal(err)
			}
			if err := e.SeekEndOfData(ctx); err != nil {
				t.Fatal(err)
			}
			if p, _ := e.Position(ctx); p.Block != blocks {
				t.Fatalf("end of data at block %d, want %d", p.Block, blocks)
			}
			if err := e.Unload(ctx); err != nil {
				t.Fatal(err)
			}
			e.Close()
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// The meta slots record the load; the tape is as it was.
			if len(after) != len(before) || !bytes.Equal(after[8192:], before[8192:]) {
				t.Fatalf("loading a damaged cartridge changed its tape: %d bytes, %d before", len(after), len(before))
			}
		})
	}
}
