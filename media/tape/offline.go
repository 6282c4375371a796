package tape

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// Cartridge is the volume on an emulated cartridge file read with no
// library and no server, as 'cairn volume ls/extract' read a disk volume
// file: the cartridge goes into a drive of its own (an emulator on a
// virtual clock, so nothing waits for tape motion), its files are mapped
// by spacing over the file marks (MapVolume), and the volume is read
// through a Reader. Loading it counts a load in the cartridge's memory,
// as any drive does; nothing on the tape changes.
type Cartridge struct {
	*Reader
	e *Emulator
}

// IsCartridgeFile tells whether the file at path is an emulated
// cartridge: it starts with the cartridge's magic.
func IsCartridgeFile(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, len(cartMagic))
	_, err = io.ReadFull(f, b)
	return err == nil && bytes.Equal(b, []byte(cartMagic))
}

// OpenCartridge loads the cartridge file at path and opens its volume. A
// cartridge loaded in a running library's drive is ErrBusy: read a copy
// of the file, or unload it first.
func OpenCartridge(ctx context.Context, path string) (*Cartridge, error) {
	e := NewEmulator(EmulatorConfig{Name: "offline " + path, Clock: NewVirtualClock()})
	if err := e.Insert(path); err != nil {
		return nil, err
	}
	if err := e.Load(ctx); err != nil {
		return nil, errors.Join(err, e.Close())
	}
	lay, err := MapVolume(ctx, e)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("cartridge %s: %w", path, err), e.Close())
	}
	r := NewReader(ctx, e, lay.BlockSize, lay.PartStarts(), ReaderOptions{Size: lay.End, OnMediumError: func(*MediumError) {}})
	return &Cartridge{Reader: r, e: e}, nil
}

// Close takes the cartridge out of its drive.
func (c *Cartridge) Close() error { return c.e.Close() }
