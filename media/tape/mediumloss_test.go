package tape_test

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/media/volume/volumetest"
	"github.com/google/uuid"
)

// A medium error while a session is written ends its part on that tape at
// the last block wholly recorded, and the rest (with the block the error
// cut) goes on the next tape: every file reads back through the parts the
// writer returns, and the bad tape read with no catalog shows the part
// torn where the writer says it ends.
func TestMediumErrorMovesTheSessionOn(t *testing.T) {
	// The PartHeader's record, the one after it (the first block is not
	// whole yet), mid-part.
	for _, bad := range []int64{2, 3, 40} {
		m := newEmulatedMedium()
		id, d, first := m.labeledAppender(t)
		d.(*tape.Emulator).SetFaults(tape.Faults{MediumErrorAt: []int64{bad}})
		var lost []volume.Appender
		opts := volume.WriterOptions{TempDir: t.TempDir(),
			Lost: func(a volume.Appender, cause error) {
				var me *tape.MediumError
				if !errors.As(cause, &me) || me.Block != bad {
					t.Errorf("lost for %v, want a medium error at block %d", cause, bad)
				}
				lost = append(lost, a)
			},
			Next: func(volume.Appender) (volume.Appender, error) {
				id, d := m.label(t, 1<<30, 64<<20)
				return tape.OpenAppender(ctxT(t), d, id, testBS, 0, tape.AppenderOptions{})
			}}
		fs := files(11, 60, 100000) // 6 MB, incompressible
		sid := uuid.New()
		info := volume.SessionInfo{SessionID: sid, Client: "db-01", Level: "full", Pool: "Tape", Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), BlockRawSize: volume.MinBlockRawSize}
		w, err := volume.NewSessionWriter(info, testKey(), first, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			if err := w.Write(volumetest.AppendFile(nil, f.path, f.content)); err != nil {
				t.Fatal(err)
			}
		}
		res, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(lost) != 1 || lost[0].VolumeID() != id {
			t.Fatalf("block %d: lost volumes %v", bad, lost)
		}
		if bad <= 3 {
			// Not one block made it whole: nothing of the session is kept
			// on the bad tape.
			if len(res.Parts) != 1 || res.Parts[0].VolumeID == id {
				t.Fatalf("parts %+v", res.Parts)
			}
		} else {
			p := res.Parts[0]
			if len(res.Parts) != 2 || p.VolumeID != id || !p.Torn || p.Final || res.Parts[1].StreamStart != p.StreamEnd {
				t.Fatalf("block %d: parts %+v", bad, res.Parts)
			}
			// The catalog's view: the part start is all the Reader needs.
			cat := tape.NewReader(ctxT(t), d, testBS, []int64{p.VolumeStart}, tape.ReaderOptions{})
			got, err := readAll(t, sid, res, func(v uuid.UUID) (io.ReaderAt, error) {
				if v == id {
					return cat, nil
				}
				r, _ := readVolume(t, m.drive(v), tape.ReaderOptions{})
				return r, nil
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkFiles(t, got, fs)
			// No catalog: the part in the tape's last file (which st
			// closed with a mark when the tape moved after the failed
			// write) is torn where the writer ended it.
			lay, err := tape.MapVolume(ctxT(t), d)
			if err != nil || len(lay.Files) != 2 || lay.Files[1].Records != bad-2 {
				t.Fatalf("layout of the bad tape %+v, %v", lay, err)
			}
			r, size := readVolume(t, d, tape.ReaderOptions{})
			vol, err := volume.OpenVolume(r, size)
			if err != nil {
				t.Fatal(err)
			}
			parts, err := vol.Parts()
			if err != nil || len(parts) != 1 || !parts[0].Torn || parts[0].Ref() != p.Ref() {
				t.Fatalf("parts of the bad tape %+v, %v; the writer says %+v", parts, err, p)
			}
		}
		got, err := readAll(t, sid, res, func(v uuid.UUID) (io.ReaderAt, error) {
			r, _ := readVolume(t, m.drive(v), tape.ReaderOptions{})
			return r, nil
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkFiles(t, got, fs)
	}
}
