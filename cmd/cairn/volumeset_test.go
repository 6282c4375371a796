package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	goldenV2Volume = "../../media/volume/testdata/golden-v2.cvol"
	goldenV3Volume = "../../media/volume/testdata/golden-v3.cvol"
)

// The golden volumes, whose headers name no parents (they predate it),
// read as piles. golden-v2 holds the two sessions of golden-v1 again, on a
// volume of its own, and an incremental: the two are one chain of three
// sessions, each read once. golden-v3, given twice, holds a full and an
// incremental that kept blocks of it: its large file is listed with where
// its blocks lie and extracted whole, checked against its SHA-256.
func TestVolumePileOfGoldenVolumes(t *testing.T) {
	ctx := context.Background()
	ls := func(args ...string) setListing {
		t.Helper()
		code, out, errOut := cli(ctx, append([]string{"--json", "volume", "ls", "--key-file", goldenKeys}, args...)...)
		var l setListing
		if err := json.Unmarshal([]byte(out), &l); code != 0 || err != nil {
			t.Fatalf("volume ls %s: exit %d, %v\n%s", strings.Join(args, " "), code, err, errOut)
		}
		return l
	}
	l := ls(goldenV2Volume, goldenVolume)
	if len(l.Volumes) != 2 || len(l.Sessions) != 3 {
		t.Fatalf("golden-v1 and v2: %d volumes, %d sessions; want 2 and 3", len(l.Volumes), len(l.Sessions))
	}
	last := l.Sessions[2].Session
	if l = ls(goldenVolume, goldenV2Volume, "--at", last.String()); len(l.Chain) != 3 || l.Chain[2] != last {
		t.Fatalf("chain at golden-v2's last incremental: %v", l.Chain)
	}
	to := filepath.Join(t.TempDir(), "v2")
	if code, out, errOut := cli(ctx, "volume", "extract", goldenV2Volume, "--volume", goldenVolume, "--key-file", goldenKeys, "--at", last.String(), "--to", to); code != 0 {
		t.Fatalf("volume extract --at golden-v2's last incremental: exit %d\n%s\n%s", code, out, errOut)
	}
	if b, err := os.ReadFile(filepath.Join(to, "etc/motd")); err != nil || len(b) != 13 {
		t.Errorf("/etc/motd at golden-v2's last incremental: %q, %v; want its 13 bytes", b, err)
	}

	l = ls(goldenV3Volume, goldenV3Volume)
	if len(l.Volumes) != 1 || len(l.Sessions) != 2 || len(l.Warnings) != 1 {
		t.Fatalf("golden-v3 twice: %d volumes, %d sessions, warnings %q", len(l.Volumes), len(l.Sessions), l.Warnings)
	}
	last = l.Sessions[1].Session
	l = ls(goldenV3Volume, goldenV3Volume, "--at", last.String())
	var large *chainFile
	for i := range l.Files {
		if l.Files[i].Blocks != nil {
			large = &l.Files[i]
		}
	}
	if large == nil || len(large.BlocksFrom) != 1 || large.BlocksFrom[0].Session != l.Chain[0] || large.BlocksFrom[0].Volume != "golden-v3" {
		t.Fatalf("the large file at golden-v3's incremental: %+v", large)
	}
	to = filepath.Join(t.TempDir(), "v3")
	if code, out, errOut := cli(ctx, "volume", "extract", goldenV3Volume, "--volume", goldenV3Volume, "--key-file", goldenKeys, "--at", last.String(), "--to", to); code != 0 {
		t.Fatalf("volume extract --at golden-v3's incremental: exit %d\n%s\n%s", code, out, errOut)
	}
	b, err := os.ReadFile(filepath.Join(to, large.Path))
	if sum := sha256.Sum256(b); err != nil || int64(len(b)) != large.Size || string(sum[:]) != string(large.Hash) {
		t.Fatalf("%s extracted: %d bytes, %v; want %d bytes of its digest", large.Path, len(b), err, large.Size)
	}
	// golden-v1 holds none of that chain.
	code, _, errOut := cli(ctx, "volume", "extract", goldenVolume, "--key-file", goldenKeys, "--at", last.String(), "--to", filepath.Join(t.TempDir(), "y"))
	if code == 0 || !strings.Contains(errOut, "neither a session on the volumes given nor a time") {
		t.Fatalf("volume extract --at a session golden-v1 does not hold: exit %d\n%s", code, errOut)
	}
}
