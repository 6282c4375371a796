// Package tapetest is the contract test suite of tape.Drive: every
// implementation (the emulator, the Linux driver over a faked st device,
// a real drive on a test bench) runs it in a few lines, so they all keep
// the contract written on tape.Drive.
package tapetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/media/tape"
)

// Harness is what an implementation gives the suite.
type Harness struct {
	// BlockSize is the block size the drive sets at every Load.
	BlockSize int
	// New returns a drive holding a new blank cartridge made to spec,
	// loaded. The suite closes it.
	New func(t *testing.T, spec tape.CartridgeSpec) tape.Drive
	// Empty returns a drive with no cartridge in it.
	Empty func(t *testing.T) tape.Drive
	// Inject gives a drive New returned the faults f (replacing earlier
	// ones).
	Inject func(t *testing.T, d tape.Drive, f tape.Faults)
	// SetWriteProtect unloads d's cartridge, moves its write-protect tab
	// and loads it again in d.
	SetWriteProtect func(t *testing.T, d tape.Drive, on bool)
	// Reopen returns a new Drive for the same drive and cartridge as d,
	// which the suite has closed, loaded again: what a restarted process
	// gets.
	Reopen func(t *testing.T, d tape.Drive) tape.Drive
}

// TestDrive runs the contract tests.
func TestDrive(t *testing.T, h Harness) {
	s := &suite{h: h, bs: h.BlockSize}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"LoadSetsBlockSize", s.testLoad},
		{"FileMarksAndEndOfData", s.testFileMarks},
		{"Positioning", s.testPositioning},
		{"WriteInTheMiddleEndsTheData", s.testOverwrite},
		{"ImplicitFileMarks", s.testImplicitMarks},
		{"BlockSizeMismatch", s.testBlockSize},
		{"EarlyWarning", s.testEarlyWarning},
		{"EarlyEndOfMedium", s.testEarlyEnd},
		{"WriteProtected", s.testWriteProtected},
		{"NoMedium", s.testNoMedium},
		{"MediumError", s.testMediumError},
		{"Hang", s.testHang},
		{"Busy", s.testBusy},
		{"StatusReportsCleaningAndSoftErrors", s.testCleaning},
		{"SurvivesReopen", s.testReopen},
	} {
		t.Run(tc.name, tc.fn)
	}
}

type suite struct {
	h  Harness
	bs int
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// spec is a cartridge of n blocks with a zone of z blocks.
func (s *suite) spec(n, z int) tape.CartridgeSpec {
	return tape.CartridgeSpec{Barcode: "TST001L9", Capacity: int64(n * s.bs), EarlyWarningZone: int64(z * s.bs)}
}

func (s *suite) newDrive(t *testing.T, spec tape.CartridgeSpec) tape.Drive {
	t.Helper()
	d := s.h.New(t, spec)
	t.Cleanup(func() { d.Close() })
	return d
}

// rec is record i: its number, then a pattern.
func (s *suite) rec(i int) []byte {
	b := make([]byte, s.bs)
	for j := range b {
		b[j] = byte(i*7 + j)
	}
	binary.BigEndian.PutUint64(b, uint64(i))
	return b
}

func (s *suite) write(t *testing.T, d tape.Drive, ids ...int) {
	t.Helper()
	for _, i := range ids {
		if err := d.WriteRecord(ctxT(t), s.rec(i)); err != nil {
			t.Fatalf("write record %d: %v", i, err)
		}
	}
}

func mark(t *testing.T, d tape.Drive) {
	t.Helper()
	if err := d.WriteFileMark(ctxT(t)); err != nil {
		t.Fatalf("write file mark: %v", err)
	}
}

// expect reads the next object: a record number, or -1 for a file mark,
// or -2 for end of data.
func (s *suite) expect(t *testing.T, d tape.Drive, want ...int) {
	t.Helper()
	buf := make([]byte, s.bs)
	for _, w := range want {
		n, err := d.ReadRecord(ctxT(t), buf)
		switch w {
		case -1:
			if !errors.Is(err, tape.ErrFileMark) || n != 0 {
				t.Fatalf("read = %d, %v; want a file mark", n, err)
			}
		case -2:
			if !errors.Is(err, tape.ErrEndOfData) || n != 0 {
				t.Fatalf("read = %d, %v; want end of data", n, err)
			}
		default:
			if err != nil || n != s.bs {
				t.Fatalf("read = %d, %v; want record %d", n, err, w)
			}
			if !bytes.Equal(buf, s.rec(w)) {
				t.Fatalf("read record %d, want %d", binary.BigEndian.Uint64(buf), w)
			}
		}
	}
}

func pos(t *testing.T, d tape.Drive) tape.Position {
	t.Helper()
	p, err := d.Position(ctxT(t))
	if err != nil {
		t.Fatalf("position: %v", err)
	}
	return p
}

// at checks the position; file and record are checked when the drive
// knows them (-1 is allowed after a locate), or when want is -1 never.
func at(t *testing.T, d tape.Drive, block, file, record int64) {
	t.Helper()
	p := pos(t, d)
	if p.Block != block || (p.File >= 0 && file >= 0 && p.File != file) || (p.Record >= 0 && record >= 0 && p.Record != record) {
		t.Fatalf("position %+v, want block %d, file %d, record %d", p, block, file, record)
	}
}

func status(t *testing.T, d tape.Drive) tape.Status {
	t.Helper()
	st, err := d.Status(ctxT(t))
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

func (s *suite) testLoad(t *testing.T) {
	d := s.newDrive(t, s.spec(100, 10))
	st := status(t, d)
	if !st.Medium || st.BlockSize != s.bs || !st.BeginningOfMedium || st.WriteProtected || st.Density == 0 {
		t.Fatalf("status after load %+v; want a ready medium at BOT, block size %d, a density code", st, s.bs)
	}
	at(t, d, 0, 0, 0)
	if err := d.SetBlockSize(ctxT(t), 2*s.bs); err != nil {
		t.Fatal(err)
	}
	if st := status(t, d); st.BlockSize != 2*s.bs {
		t.Fatalf("block size %d after setting %d", st.BlockSize, 2*s.bs)
	}
	if err := d.SetBlockSize(ctxT(t), 0); !errors.Is(err, tape.ErrBlockSize) {
		t.Fatalf("SetBlockSize(0) = %v; variable block mode must be refused with ErrBlockSize", err)
	}
	// Fixed block mode is set again at every load.
	if err := d.Unload(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if st := status(t, d); st.Medium {
		t.Fatalf("status after unload %+v, want no medium", st)
	}
	if err := d.Load(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if st := status(t, d); !st.Medium || st.BlockSize != s.bs {
		t.Fatalf("status after reload %+v, want block size %d", st, s.bs)
	}
}

// layout writes records 0 1 2 | 3 4 | (blocks 0-2, mark 3, 4-5, mark 6,
// end of data 7).
func (s *suite) layout(t *testing.T, d tape.Drive) {
	s.write(t, d, 0, 1, 2)
	mark(t, d)
	s.write(t, d, 3, 4)
	mark(t, d)
}

func (s *suite) testFileMarks(t *testing.T) {
	d := s.newDrive(t, s.spec(100, 10))
	s.layout(t, d)
	at(t, d, 7, 2, 0)
	if err := d.Rewind(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	at(t, d, 0, 0, 0)
	s.expect(t, d, 0, 1, 2)
	at(t, d, 3, 0, 3)
	s.expect(t, d, -1)
	at(t, d, 4, 1, 0)
	if st := status(t, d); !st.FileMark {
		t.Fatalf("status just past a file mark %+v, want FileMark", st)
	}
	s.expect(t, d, 3, 4, -1)
	// Past the last file mark: end of data, and it stays so.
	s.expect(t, d, -2, -2, -2)
	if st := status(t, d); !st.EndOfData {
		t.Fatalf("status at end of data %+v, want EndOfData", st)
	}
	// A buffer smaller than a block is refused.
	if err := d.Rewind(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadRecord(ctxT(t), make([]byte, s.bs-1)); !errors.Is(err, tape.ErrBlockSize) {
		t.Fatalf("read into a short buffer: %v, want ErrBlockSize", err)
	}
	// Two file marks in a row mean end of data.
	d2 := s.newDrive(t, s.spec(100, 10))
	s.write(t, d2, 0)
	mark(t, d2)
	mark(t, d2)
	s.write(t, d2, 1)
	mark(t, d2)
	if err := d2.Rewind(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	s.expect(t, d2, 0, -1, -2)
}

func (s *suite) testPositioning(t *testing.T) {
	d := s.newDrive(t, s.spec(100, 10))
	s.layout(t, d)
	ctx := ctxT(t)
	if err := d.Locate(ctx, 5); err != nil {
		t.Fatal(err)
	}
	at(t, d, 5, 1, 1)
	s.expect(t, d, 4, -1)
	if err := d.Locate(ctx, 3); err != nil {
		t.Fatal(err)
	}
	s.expect(t, d, -1, 3)
	if err := d.Locate(ctx, 1); err != nil {
		t.Fatal(err)
	}
	s.expect(t, d, 1)
	// Past end of data: stop there, say so.
	if err := d.Locate(ctx, 100); !errors.Is(err, tape.ErrEndOfData) {
		t.Fatalf("locate past end of data: %v, want ErrEndOfData", err)
	}
	at(t, d, 7, -1, -1)
	if err := d.Locate(ctx, -1); err == nil {
		t.Fatal("locate to block -1 succeeded")
	}

	if err := d.Rewind(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.SpaceFileMarks(ctx, 1); err != nil {
		t.Fatal(err)
	}
	at(t, d, 4, 1, 0)
	s.expect(t, d, 3)
	if err := d.SpaceFileMarks(ctx, 1); err != nil {
		t.Fatal(err)
	}
	at(t, d, 7, 2, 0)
	if err := d.SpaceFileMarks(ctx, 1); !errors.Is(err, tape.ErrEndOfData) {
		t.Fatalf("space past the last file mark: %v, want ErrEndOfData", err)
	}
	at(t, d, 7, -1, -1)
	// Backward: before (on the BOT side of) the mark.
	if err := d.SpaceFileMarks(ctx, -1); err != nil {
		t.Fatal(err)
	}
	at(t, d, 6, -1, -1)
	s.expect(t, d, -1)
	if err := d.Locate(ctx, 6); err != nil {
		t.Fatal(err)
	}
	if err := d.SpaceFileMarks(ctx, -2); !errors.Is(err, tape.ErrBeginningOfMedium) {
		t.Fatalf("space back over more marks than there are: %v, want ErrBeginningOfMedium", err)
	}
	at(t, d, 0, 0, 0)
	if err := d.SpaceFileMarks(ctx, 2); err != nil {
		t.Fatal(err)
	}
	at(t, d, 7, 2, 0)

	if err := d.Rewind(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.SeekEndOfData(ctx); err != nil {
		t.Fatal(err)
	}
	at(t, d, 7, 2, 0)
	if st := status(t, d); !st.EndOfData || st.BeginningOfMedium {
		t.Fatalf("status at end of data %+v", st)
	}
	// Appending there.
	s.write(t, d, 5)
	mark(t, d)
	if err := d.Locate(ctx, 7); err != nil {
		t.Fatal(err)
	}
	s.expect(t, d, 5, -1, -2)
}

func (s *suite) testOverwrite(t *testing.T) {
	d := s.newDrive(t, s.spec(100, 10))
	s.layout(t, d)
	ctx := ctxT(t)
	if err := d.Locate(ctx, 4); err != nil {
		t.Fatal(err)
	}
	s.write(t, d, 9)
	mark(t, d)
	if err := d.SeekEndOfData(ctx); err != nil {
		t.Fatal(err)
	}
	at(t, d, 6, 2, 0)
	if err := d.Rewind(ctx); err != nil {
		t.Fatal(err)
	}
	s.expect(t, d, 0, 1, 2, -1, 9, -1, -2)
	// A file mark written in the middle ends the data too.
	if err := d.Locate(ctx, 1); err != nil {
		t.Fatal(err)
	}
	mark(t, d)
	if err := d.Rewind(ctx); err != nil {
		t.Fatal(err)
	}
	s.expect(t, d, 0, -1, -2)
}

func (s *suite) testImplicitMarks(t *testing.T) {
	ctx := ctxT(t)
	// Rewind after writing terminates the file.
	d := s.newDrive(t, s.spec(100, 10))
	s.write(t, d, 0, 1)
	if err := d.Rewind(ctx); err != nil {
		t.Fatal(err)
	}
	s.expect(t, d, 0, 1, -1, -2)

	// So does a locate.
	d = s.newDrive(t, s.spec(100, 10))
	s.write(t, d, 0, 1)
	if err := d.Locate(ctx, 0); err != nil {
		t.Fatal(err)
	}
	s.expect(t, d, 0, 1, -1, -2)

	// A backward space writes the mark and counts it: back over it and
	// the mark before, as st's MTBSF does.
	d = s.newDrive(t, s.spec(100, 10))
	s.write(t, d, 0)
	mark(t, d)
	s.write(t, d, 1, 2)
	if err := d.SpaceFileMarks(ctx, -1); err != nil {
		t.Fatal(err)
	}
	at(t, d, 1, -1, -1)
	s.expect(t, d, -1, 1, 2, -1, -2)

	// After a file mark nothing more is due.
	d = s.newDrive(t, s.spec(100, 10))
	s.write(t, d, 0)
	mark(t, d)
	if err := d.Rewind(ctx); err != nil {
		t.Fatal(err)
	}
	s.expect(t, d, 0, -1, -2)
	at(t, d, 2, -1, -1)
}

func (s *suite) testBlockSize(t *testing.T) {
	d := s.newDrive(t, s.spec(100, 10))
	ctx := ctxT(t)
	if err := d.WriteRecord(ctx, make([]byte, s.bs-1)); !errors.Is(err, tape.ErrBlockSize) {
		t.Fatalf("write of a short record: %v, want ErrBlockSize", err)
	}
	if err := d.WriteRecord(ctx, make([]byte, s.bs+1)); !errors.Is(err, tape.ErrBlockSize) {
		t.Fatalf("write of a long record: %v, want ErrBlockSize", err)
	}
	s.write(t, d, 0, 1)
	mark(t, d)
	if err := d.Rewind(ctx); err != nil {
		t.Fatal(err)
	}
	// Records of another size cannot be read, and the tape stays before
	// the record, so it can be read with the right size.
	if err := d.SetBlockSize(ctx, 2*s.bs); err != nil {
		t.Fatal(err)
	}
	if n, err := d.ReadRecord(ctx, make([]byte, 2*s.bs)); err == nil {
		t.Fatalf("read a %d-byte record with block size %d: %d bytes, no error", s.bs, 2*s.bs, n)
	}
	at(t, d, 0, -1, -1)
	if err := d.SetBlockSize(ctx, s.bs); err != nil {
		t.Fatal(err)
	}
	s.expect(t, d, 0, 1, -1)
}

func (s *suite) testEarlyWarning(t *testing.T) {
	// 40 blocks to the physical end, early warning 10 blocks before it.
	d := s.newDrive(t, s.spec(40, 10))
	ctx := ctxT(t)
	n := 0
	for ; ; n++ {
		err := d.WriteRecord(ctx, s.rec(n))
		if errors.Is(err, tape.ErrEarlyWarning) {
			break
		}
		if err != nil {
			t.Fatalf("write %d: %v before any early warning", n, err)
		}
		if n > 40 {
			t.Fatal("no early warning in 40 blocks")
		}
	}
	// The write that reached the point (block 30) went through; the next
	// one was refused and wrote nothing.
	if n != 30 {
		t.Fatalf("early warning on write %d, want 30 (the write after the one that reached block 30)", n)
	}
	at(t, d, 30, 0, 30)
	if st := status(t, d); !st.EarlyWarning {
		t.Fatalf("status after early warning %+v, want EarlyWarning", st)
	}
	// From now on everything goes through: the trailer, a file mark.
	s.write(t, d, 30, 31, 32)
	mark(t, d)
	n = 33
	var eom error
	for ; n < 50; n++ {
		if eom = d.WriteRecord(ctx, s.rec(n)); eom != nil {
			break
		}
	}
	var e *tape.EndOfMediumError
	if !errors.As(eom, &e) || !errors.Is(eom, tape.ErrEndOfMedium) || !errors.Is(eom, syscall.ENOSPC) {
		t.Fatalf("write past the physical end: %v; want an *EndOfMediumError that is ErrEndOfMedium and ENOSPC", eom)
	}
	// 40 blocks of data fit, the file mark took none.
	if n != 40 {
		t.Fatalf("the physical end came after %d records, want 40", n)
	}
	mark(t, d)
	if err := d.Rewind(ctx); err != nil {
		t.Fatal(err)
	}
	want := []int{}
	for i := range 33 {
		want = append(want, i)
	}
	want = append(want, -1)
	for i := 33; i < 40; i++ {
		want = append(want, i)
	}
	s.expect(t, d, append(want, -1, -2)...)

	// Moving the tape re-arms the warning: the next write in the zone is
	// accepted, the one after refused once.
	if err := d.Locate(ctx, 35); err != nil {
		t.Fatal(err)
	}
	s.write(t, d, 100)
	if err := d.WriteRecord(ctx, s.rec(101)); !errors.Is(err, tape.ErrEarlyWarning) {
		t.Fatalf("second write after a locate into the zone: %v, want ErrEarlyWarning", err)
	}
	s.write(t, d, 101, 102)
}

func (s *suite) testEarlyEnd(t *testing.T) {
	d := s.newDrive(t, s.spec(40, 10))
	s.h.Inject(t, d, tape.Faults{EndOfMediumAt: int64(5 * s.bs)})
	s.write(t, d, 0, 1, 2, 3, 4)
	err := d.WriteRecord(ctxT(t), s.rec(5))
	if !errors.Is(err, tape.ErrEndOfMedium) || errors.Is(err, tape.ErrEarlyWarning) {
		t.Fatalf("write past an early physical end: %v, want ErrEndOfMedium with no warning", err)
	}
	s.h.Inject(t, d, tape.Faults{})
}

func (s *suite) testWriteProtected(t *testing.T) {
	d := s.newDrive(t, s.spec(100, 10))
	s.write(t, d, 0, 1)
	mark(t, d)
	s.h.SetWriteProtect(t, d, true)
	ctx := ctxT(t)
	if st := status(t, d); !st.WriteProtected || !st.Medium {
		t.Fatalf("status %+v, want a write-protected medium", st)
	}
	if err := d.SeekEndOfData(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteRecord(ctx, s.rec(2)); !errors.Is(err, tape.ErrWriteProtected) {
		t.Fatalf("write to a protected cartridge: %v, want ErrWriteProtected", err)
	}
	if err := d.WriteFileMark(ctx); !errors.Is(err, tape.ErrWriteProtected) {
		t.Fatalf("file mark on a protected cartridge: %v, want ErrWriteProtected", err)
	}
	if err := d.Rewind(ctx); err != nil {
		t.Fatal(err)
	}
	s.expect(t, d, 0, 1, -1, -2)
	s.h.SetWriteProtect(t, d, false)
	if err := d.SeekEndOfData(ctx); err != nil {
		t.Fatal(err)
	}
	s.write(t, d, 2)

	// A cartridge made protected.
	spec := s.spec(100, 10)
	spec.WriteProtected = true
	d = s.newDrive(t, spec)
	if err := d.WriteRecord(ctx, s.rec(0)); !errors.Is(err, tape.ErrWriteProtected) {
		t.Fatalf("write to a protected blank cartridge: %v, want ErrWriteProtected", err)
	}
}

func (s *suite) testNoMedium(t *testing.T) {
	ctx := ctxT(t)
	d := s.h.Empty(t)
	t.Cleanup(func() { d.Close() })
	if err := d.Load(ctx); !errors.Is(err, tape.ErrNoMedium) {
		t.Fatalf("load with no cartridge: %v, want ErrNoMedium", err)
	}
	if st, err := d.Status(ctx); err != nil || st.Medium {
		t.Fatalf("status of an empty drive: %+v, %v", st, err)
	}
	checkAll := func(d tape.Drive) {
		t.Helper()
		for name, err := range map[string]error{
			"read":     func() error { _, err := d.ReadRecord(ctx, make([]byte, s.bs)); return err }(),
			"write":    d.WriteRecord(ctx, s.rec(0)),
			"mark":     d.WriteFileMark(ctx),
			"rewind":   d.Rewind(ctx),
			"locate":   d.Locate(ctx, 0),
			"space":    d.SpaceFileMarks(ctx, 1),
			"eod":      d.SeekEndOfData(ctx),
			"position": func() error { _, err := d.Position(ctx); return err }(),
			"unload":   d.Unload(ctx),
		} {
			if !errors.Is(err, tape.ErrNoMedium) {
				t.Errorf("%s with no medium: %v, want ErrNoMedium", name, err)
			}
		}
	}
	checkAll(d)
	// And after unloading.
	d2 := s.newDrive(t, s.spec(100, 10))
	if err := d2.Unload(ctx); err != nil {
		t.Fatal(err)
	}
	checkAll(d2)
}

func (s *suite) testMediumError(t *testing.T) {
	d := s.newDrive(t, s.spec(100, 10))
	s.write(t, d, 0, 1, 2, 3, 4, 5)
	mark(t, d)
	s.h.Inject(t, d, tape.Faults{MediumErrorAt: []int64{3}})
	ctx := ctxT(t)
	if err := d.Rewind(ctx); err != nil {
		t.Fatal(err)
	}
	s.expect(t, d, 0, 1, 2)
	_, err := d.ReadRecord(ctx, make([]byte, s.bs))
	var me *tape.MediumError
	if !errors.As(err, &me) || !errors.Is(err, tape.ErrMedium) || me.Block != 3 || me.Op != "read" {
		t.Fatalf("read of bad block 3: %v; want a *MediumError naming block 3", err)
	}
	// Reading goes on after a locate past it.
	if err := d.Locate(ctx, 4); err != nil {
		t.Fatal(err)
	}
	s.expect(t, d, 4, 5, -1)
	// Writing onto a bad spot fails the same way.
	s.h.Inject(t, d, tape.Faults{MediumErrorAt: []int64{7}})
	if err := d.SeekEndOfData(ctx); err != nil {
		t.Fatal(err)
	}
	err = d.WriteRecord(ctx, s.rec(6))
	if !errors.As(err, &me) || me.Block != 7 || me.Op != "write" {
		t.Fatalf("write to bad block 7: %v; want a *MediumError naming block 7", err)
	}
	s.h.Inject(t, d, tape.Faults{})
}

func (s *suite) testHang(t *testing.T) {
	d := s.newDrive(t, s.spec(100, 10))
	s.write(t, d, 0)
	mark(t, d)
	s.h.Inject(t, d, tape.Faults{Hang: true})
	t.Cleanup(func() { s.h.Inject(t, d, tape.Faults{}) })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := d.Rewind(ctx)
	took := time.Since(start)
	var he *tape.HungError
	if !errors.As(err, &he) || !errors.Is(err, tape.ErrHung) || !errors.Is(err, context.DeadlineExceeded) || he.Op == "" {
		t.Fatalf("rewind on a hung drive: %v; want a *HungError wrapping the deadline", err)
	}
	if took > 5*time.Second {
		t.Fatalf("the hung call returned after %s; the deadline was 50ms", took)
	}
	// Until it recovers, the drive answers busy or hung, never blocks past
	// the deadline.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := d.Status(ctx2); !errors.Is(err, tape.ErrHung) && !errors.Is(err, tape.ErrBusy) {
		t.Fatalf("status of a hung drive: %v, want ErrHung or ErrBusy", err)
	}
	s.h.Inject(t, d, tape.Faults{})
	eventually(t, 10*time.Second, func() error {
		_, err := d.Status(ctxT(t))
		return err
	})
	if err := d.Rewind(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	s.expect(t, d, 0, -1)
}

func (s *suite) testBusy(t *testing.T) {
	d := s.newDrive(t, s.spec(100, 10))
	s.h.Inject(t, d, tape.Faults{Hang: true})
	done := make(chan error, 1)
	go func() {
		// Until it gets the drive: the probe below may hold it a moment.
		for {
			err := d.Rewind(ctxT(t))
			if !errors.Is(err, tape.ErrBusy) {
				done <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	// While one command runs, another is refused at once.
	eventually(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := d.Status(ctx)
		if !errors.Is(err, tape.ErrBusy) {
			return fmt.Errorf("status while a rewind runs: %v, want ErrBusy", err)
		}
		if time.Since(start) > time.Second {
			return fmt.Errorf("ErrBusy took %s; it must come at once", time.Since(start))
		}
		return nil
	})
	s.h.Inject(t, d, tape.Faults{})
	if err := <-done; err != nil {
		t.Fatalf("the rewind that waited: %v", err)
	}
	at(t, d, 0, 0, 0)
}

func (s *suite) testCleaning(t *testing.T) {
	d := s.newDrive(t, s.spec(100, 10))
	if st := status(t, d); st.CleaningRequested {
		t.Fatalf("a new drive asks for cleaning: %+v", st)
	}
	s.h.Inject(t, d, tape.Faults{CleaningRequested: true, SoftErrors: 3})
	if st := status(t, d); !st.CleaningRequested || st.SoftErrors != 3 {
		t.Fatalf("status %+v, want a cleaning request and 3 soft errors", st)
	}
	s.h.Inject(t, d, tape.Faults{})
}

func (s *suite) testReopen(t *testing.T) {
	d := s.h.New(t, s.spec(100, 10))
	s.write(t, d, 0, 1)
	mark(t, d)
	s.write(t, d, 2)
	// Close after a write writes the file mark.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := s.h.Reopen(t, d)
	t.Cleanup(func() { d2.Close() })
	if err := d2.Rewind(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	s.expect(t, d2, 0, 1, -1, 2, -1, -2)
	st := status(t, d2)
	if cm := st.Cartridge; cm != nil && (cm.LoadCount < 2 || cm.BytesWritten != int64(3*s.bs) || cm.Barcode != "TST001L9") {
		t.Fatalf("cartridge memory %+v; want 2 loads, %d bytes written, barcode TST001L9", cm, 3*s.bs)
	}
	if _, err := d.Status(ctxT(t)); !errors.Is(err, tape.ErrClosed) {
		t.Fatalf("status of a closed drive: %v, want ErrClosed", err)
	}
}

// eventually polls f until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
