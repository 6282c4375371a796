package tape_test

import (
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/media/tape"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/media/volume/volumetest"
)

// A cartridge file read with no library gives back the volume written on
// it: its label and its session; while a drive holds it, it is busy.
func TestOpenCartridge(t *testing.T) {
	path := newCartridge(t, tape.CartridgeSpec{Barcode: "OFF001L9", Capacity: 1 << 30, EarlyWarningZone: 64 << 20})
	e := loadedEmulator(t, path)
	id := uuid.New()
	if err := tape.WriteLabel(ctxT(t), e, volume.Label{VolumeID: id, Name: "OFF001L9", Barcode: "OFF001L9", Pool: "Tape", BlockSize: testBS}, false); err != nil {
		t.Fatal(err)
	}
	a, err := tape.OpenAppender(ctxT(t), e, id, testBS, 0, tape.AppenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	session := uuid.New()
	w, err := volume.NewSessionWriter(volume.SessionInfo{SessionID: session, Client: "web01", Level: "full"}, testKey(), a, volume.WriterOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(volumetest.AppendFile(nil, "/etc/motd", []byte("hello\n"))); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tape.OpenCartridge(ctxT(t), path); !errors.Is(err, tape.ErrBusy) {
		t.Fatalf("a cartridge loaded in a drive opens: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if !tape.IsCartridgeFile(path) {
		t.Fatalf("%s is not taken for a cartridge", path)
	}
	c, err := tape.OpenCartridge(ctxT(t), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v, err := volume.OpenVolume(c, c.Size())
	if err != nil {
		t.Fatal(err)
	}
	ps, err := v.Parts()
	if err != nil || len(ps) != 1 || ps[0].Header.SessionID != session || ps[0].Torn || v.Label().VolumeID != id {
		t.Fatalf("the cartridge's volume: label %+v, parts %+v, %v", v.Label(), ps, err)
	}
}
