package storagenode

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/media/disk"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// TestVolumeDeleteOrder: the servers' order deletes an expired volume's
// file, answers a repeat as done, and refuses a file that holds another
// volume or a pool the node does not have, keeping the file.
func TestVolumeDeleteOrder(t *testing.T) {
	r := newRig(t, true)
	p := &disk.Pool{Name: "Default", Dir: r.pool}
	id := uuid.New()
	if err := p.Create("Default-0001", volume.Label{VolumeID: id}); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(r.ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	order := func(o wire.VolumeDeleteOrder) error {
		return wire.Request(context.Background(), nc, wire.NodeSubject("sn1", wire.OpNodeVolumeDelete), o, nil)
	}
	file := filepath.Join(r.pool, "Default-0001.cvol")
	if err := order(wire.VolumeDeleteOrder{Pool: "Default", Volume: "Default-0001", VolumeID: uuid.New()}); wire.CodeOf(err) != wire.CodeInvalidArgument {
		t.Fatalf("order naming another volume: %v", err)
	}
	if err := order(wire.VolumeDeleteOrder{Pool: "Nope", Volume: "Default-0001", VolumeID: id}); wire.CodeOf(err) != wire.CodeInvalidArgument {
		t.Fatalf("order for a pool the node lacks: %v", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("a refused order touched the file: %v", err)
	}
	for range 2 {
		if err := order(wire.VolumeDeleteOrder{Pool: "Default", Volume: "Default-0001", VolumeID: id}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("volume file after the order: %v", err)
		}
	}
}
