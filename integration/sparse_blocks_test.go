package integration

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/internal/holesdir"
	"github.com/cairnbackup/cairn/wire"
)

// TestSparseIncrementalSendsChangedBlocks: a 1 GiB disk image holding 100
// MiB of data in ten runs is backed up by blocks, run by run. After 2 MiB
// and 4 KiB changed in place and 1 MiB was written into a hole, the
// incremental stores about the changed blocks, not the image; a restore
// of each point in time, whole and of the image alone, gives it back with
// the same size, content (SHA-256) and data regions, its holes holes (its
// allocated blocks those of the original), and so does 'cairn volume
// extract' of its volumes with no server. A synthetic full of the chain
// holds the image with its holes, restores the same, and the next
// incremental builds on it by blocks again.
func TestSparseIncrementalSendsChangedBlocks(t *testing.T) {
	dir := holesdir.Dir(t)
	s := newStack(t, stackOpts{})
	src := filepath.Join(dir, "vm")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(src, "disk.img")
	_, random, _ := largeFiles(t, 16)
	const size = 1 << 30
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	write := func(at int64, data []byte) {
		t.Helper()
		if _, err := f.WriteAt(data, at); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range int64(10) {
		write(i*100<<20+1<<20, random(10<<20))
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	stored := func(id uint64) int64 {
		t.Helper()
		var list []wire.BackupInfo
		s.json(&list, "backup", "list", "--client", s.client)
		for _, b := range list {
			if b.ID == id {
				return b.StoredBytes
			}
		}
		t.Fatalf("backup %d is not in the list", id)
		return 0
	}
	// restored checks the restores of backup id, whole or of the image
	// alone or both, against the image's state want.
	restored := func(what string, id uint64, want sparseState, kinds ...bool) {
		t.Helper()
		for _, one := range kinds {
			to := filepath.Join(dir, fmt.Sprintf("r%d-%v", id, one))
			args := []string{"--backup", strconv.FormatUint(id, 10)}
			if one {
				args = append(args, img)
			}
			j := s.restore(to, args...)
			// The blocks read from earlier sessions are not entries: a
			// restore of a chain said "3 of 578 entries restored".
			if j.Entries != j.Restored || j.Lost != 0 {
				t.Errorf("%s (the image alone: %v): %d of %d entries restored, %d lost", what, one, j.Restored, j.Entries, j.Lost)
			}
			got := sparseStateOf(t, filepath.Join(to, img))
			if got.size != want.size || got.sum != want.sum || !slices.Equal(got.regions, want.regions) {
				t.Errorf("%s (the image alone: %v): size %d, sha256 %x, %d data regions; want %d, %x, %d", what, one, got.size, got.sum, len(got.regions), want.size, want.sum, len(want.regions))
			}
			// Holes written as zeros would allocate the whole GiB.
			if got.blocks > want.blocks+want.blocks/16 {
				t.Errorf("%s (the image alone: %v): %d bytes allocated, the original %d: holes were filled", what, one, got.blocks*512, want.blocks*512)
			}
			if err := os.RemoveAll(to); err != nil {
				t.Fatal(err)
			}
		}
	}

	full := s.backup("full", src)
	fullState := sparseStateOf(t, img)
	fullStored := stored(full.BackupID)

	write(3*100<<20+5<<20, random(2<<20)) // in place
	write(7*100<<20+1<<20+12345, random(4096))
	write(950<<20, random(1<<20)) // into a hole: a new run
	const changed = 3<<20 + 4096
	incr := s.backup("incremental", src)
	incrState := sparseStateOf(t, img)
	incrStored := stored(incr.BackupID)
	t.Logf("1 GiB image, 100 MiB of data: the full stored %d bytes; the incremental after %d bytes changed stored %d (%.2fx)", fullStored, changed, incrStored, float64(incrStored)/changed)
	// A change costs the blocks around it: 192 KiB on average, 1 MiB at
	// most, at each end of each of the three changes.
	if incrStored > changed+3<<20 {
		t.Errorf("the incremental stored %d bytes for %d changed: more than the blocks around the changes", incrStored, changed)
	}
	if len(incrState.regions) != len(fullState.regions)+1 {
		t.Fatalf("the image has %d data regions after a write into a hole, %d before", len(incrState.regions), len(fullState.regions))
	}
	whole, alone := false, true
	restored("full", full.BackupID, fullState, whole)
	restored("incremental", incr.BackupID, incrState, whole, alone)
	// With no server: 'cairn volume extract' of the volumes assembles the
	// image from the blocks of both sessions the same way.
	keys := filepath.Join(t.TempDir(), "keys.json")
	s.ok("key", "export", "--to", keys)
	vols := s.volumes()
	args := []string{"volume", "extract", vols[len(vols)-1].Path, "--key-file", keys, "--to", filepath.Join(dir, "extract")}
	for _, v := range vols[:len(vols)-1] {
		args = append(args, "--volume", v.Path)
	}
	s.ok(args...)
	if got := sparseStateOf(t, filepath.Join(dir, "extract", img)); got.size != incrState.size || got.sum != incrState.sum || !slices.Equal(got.regions, incrState.regions) || got.blocks > incrState.blocks+incrState.blocks/16 {
		t.Errorf("volume extract: size %d, sha256 %x, %d data regions, %d bytes allocated; want %d, %x, %d, %d", got.size, got.sum, len(got.regions), got.blocks*512, incrState.size, incrState.sum, len(incrState.regions), incrState.blocks*512)
	}
	if err := os.RemoveAll(filepath.Join(dir, "extract")); err != nil {
		t.Fatal(err)
	}

	var j wire.JobInfo
	s.json(&j, "backup", "consolidate", "--client", s.client, "--wait")
	if j.State != "success" || j.BackupID == 0 {
		t.Fatalf("synthetic full job %d ended %s: %s", j.ID, j.State, j.Error)
	}
	restored("synthetic full", j.BackupID, incrState, whole)
	write(5*100<<20+1<<20, random(4096))
	next := s.backup("incremental", src)
	if nextStored := stored(next.BackupID); nextStored > 4096+2<<20 {
		t.Errorf("the incremental after the synthetic full stored %d bytes for 4096 changed", nextStored)
	}
	restored("incremental after the synthetic full", next.BackupID, sparseStateOf(t, img), alone)
}

// sparseState is what a restore of a file with holes must give back.
type sparseState struct {
	size    int64
	sum     [32]byte // SHA-256 of the content, holes as zeros
	regions [][2]int64
	blocks  int64 // st_blocks
}

func sparseStateOf(t *testing.T, p string) sparseState {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	out := sparseState{size: st.Size, blocks: st.Blocks}
	h := sha256.New()
	zeros := make([]byte, 1<<20)
	buf := make([]byte, 1<<20)
	hashed := int64(0)
	skip := func(n int64) { // a hole: hashed as zeros, not read
		for ; n > 0; n -= min(n, int64(len(zeros))) {
			h.Write(zeros[:min(n, int64(len(zeros)))])
		}
	}
	for off := int64(0); off < st.Size; {
		start, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		end, err := unix.Seek(int(f.Fd()), start, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		out.regions = append(out.regions, [2]int64{start, end})
		skip(start - hashed)
		for at := start; at < end; {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), end-at)], at)
			if err != nil {
				t.Fatal(err)
			}
			h.Write(buf[:n])
			at += int64(n)
		}
		hashed, off = end, end
	}
	skip(st.Size - hashed)
	h.Sum(out.sum[:0])
	return out
}
