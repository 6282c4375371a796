package tape_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairnbackup/cairn/media/tape"
)

// fuzzBS is the block size the fuzzed drive reads with: small, so that
// the fuzzer can make whole records.
const fuzzBS = 16

var castagnoliTable = crc32.MakeTable(crc32.Castagnoli)

// cartObject encodes one object of a cartridge file (cartridge.go): kind
// 1 record or 2 file mark.
func cartObject(kind byte, data []byte) []byte {
	b := make([]byte, 16, 16+len(data))
	b[0] = kind
	binary.BigEndian.PutUint32(b[4:8], uint32(len(data)))
	binary.BigEndian.PutUint32(b[8:12], crc32.Checksum(data, castagnoliTable))
	binary.BigEndian.PutUint32(b[12:16], crc32.Checksum(b[:12], castagnoliTable))
	return append(b, data...)
}

// cartSlot encodes a meta slot holding info, with sequence number seq.
func cartSlot(seq uint64, info tape.CartridgeInfo) []byte {
	js, _ := json.Marshal(info)
	b := make([]byte, 24, 24+len(js))
	copy(b, "CRNTAPE1")
	binary.BigEndian.PutUint64(b[8:16], seq)
	binary.BigEndian.PutUint32(b[16:20], uint32(len(js)))
	binary.BigEndian.PutUint32(b[20:24], crc32.Checksum(js, castagnoliTable))
	return append(b, js...)
}

// FuzzCartridge loads cartridge files whose first meta slot and tape are
// arbitrary, and reads the tape through: the emulator reports what it
// cannot parse, never panics or hangs, and never changes the tape part of
// the file, whatever it holds.
func FuzzCartridge(f *testing.F) {
	rec := func(b byte) []byte { return cartObject(1, bytes.Repeat([]byte{b}, fuzzBS)) }
	mark := cartObject(2, nil)
	tapeOf := func(objs ...[]byte) []byte { return bytes.Join(objs, nil) }
	good := tapeOf(rec(1), rec(2), mark, rec(3), mark, mark)
	newer := cartSlot(9, tape.CartridgeInfo{Barcode: "FUZ001L9", Capacity: 1 << 30, EarlyWarningZone: 1 << 20})
	damaged := bytes.Clone(good)
	damaged[16+fuzzBS+5] ^= 0x5a // the second record's length
	f.Add([]byte{}, good)
	f.Add(newer, good)
	f.Add(newer, damaged)
	f.Add([]byte{}, append(bytes.Clone(good), rec(4)[:20]...))                      // torn tail
	f.Add([]byte{}, append(bytes.Clone(good), make([]byte, 40)...))                 // zeros after
	f.Add([]byte{}, append(bytes.Clone(good), []byte("garbage after the tape")...)) // garbage
	f.Add([]byte{}, tapeOf(rec(1), cartObject(1, []byte("a record of another size")), mark))
	f.Add([]byte("CRNTAPE1 but not a slot"), good)
	f.Fuzz(func(t *testing.T, slot, log []byte) {
		if len(slot) > 4096 || len(log) > 1<<20 {
			return
		}
		path := filepath.Join(t.TempDir(), "fuzz.tape")
		if err := tape.CreateCartridge(path, tape.CartridgeSpec{Barcode: "FUZ000L9", Capacity: 1 << 30}); err != nil {
			t.Fatal(err)
		}
		file, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		copy(file[:4096], slot)
		file = append(file[:8192], log...)
		if err := os.WriteFile(path, file, 0o640); err != nil {
			t.Fatal(err)
		}
		tape.ReadCartridgeInfo(path)

		ctx := context.Background()
		e := tape.NewEmulator(tape.EmulatorConfig{Name: "fuzz", Clock: tape.NewVirtualClock(), BlockSize: fuzzBS})
		defer e.Close()
		if err := e.Insert(path); err != nil {
			t.Fatal(err)
		}
		if err := e.Load(ctx); err == nil {
			buf := make([]byte, fuzzBS)
			for range 4 * (len(log)/16 + 2) {
				_, err := e.ReadRecord(ctx, buf)
				var me *tape.MediumError
				switch {
				case err == nil, errors.Is(err, tape.ErrFileMark), errors.As(err, &me):
					continue
				case errors.Is(err, tape.ErrBlockSize):
					// st backs up over a record of another size: step over it.
					p, err := e.Position(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if err := e.Locate(ctx, p.Block+1); err != nil && !errors.Is(err, tape.ErrEndOfData) {
						t.Fatal(err)
					}
					continue
				case errors.Is(err, tape.ErrEndOfData):
				default:
					t.Fatalf("reading the tape: %v", err)
				}
				break
			}
			if err := e.SeekEndOfData(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := e.Status(ctx); err != nil {
				t.Fatal(err)
			}
			if err := e.SpaceFileMarks(ctx, -1); err != nil && !errors.Is(err, tape.ErrBeginningOfMedium) {
				t.Fatal(err)
			}
			if err := e.Locate(ctx, 1); err != nil && !errors.Is(err, tape.ErrEndOfData) {
				t.Fatal(err)
			}
			if err := e.SpaceFileMarks(ctx, 1); err != nil && !errors.Is(err, tape.ErrEndOfData) {
				t.Fatal(err)
			}
			if err := e.Unload(ctx); err != nil {
				t.Fatal(err)
			}
		}
		after, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != len(file) || !bytes.Equal(after[8192:], file[8192:]) {
			t.Fatalf("loading and reading changed the tape: %d bytes, %d before", len(after), len(file))
		}
	})
}
