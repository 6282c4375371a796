package integration

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/devstack"
	"github.com/cairnbackup/cairn/wire"
)

// TestIncrementalSendsChangedBlocks: after a full backup, 4 KiB changed in
// place inside a 24 MiB file and 1 MiB appended to an 8 MiB one make
// incrementals that store the blocks around the changes, not the files;
// restores of every point in time, of the whole tree and of one file,
// assemble the files from the blocks in the sessions of the chain and
// give back exactly what was there.
//
// On disk volumes of 12 MiB the chain spans three volumes; 'cairn volume
// extract' with no server, given them all, assembles the files the same
// way, and given only the last, names what lies on the others
// (volumeChainWithNoCatalog goes through the rest of it).
func TestIncrementalSendsChangedBlocks(t *testing.T) {
	s := newStack(t, stackOpts{poolOpts: ",volume-size=12m"})
	src, states := changedBlocks(t, s, func(level, src string) uint64 { return s.backup(level, src).BackupID })

	vols := s.volumes()
	if len(vols) < 3 {
		t.Fatalf("the chain lies on %d volumes, want it to span three", len(vols))
	}
	slices.SortFunc(vols, func(a, b wire.VolumeInfo) int { return strings.Compare(a.Name, b.Name) })
	keys := filepath.Join(t.TempDir(), "keys.json")
	s.ok("key", "export", "--to", keys)
	args := []string{"volume", "extract", vols[len(vols)-1].Path, "--key-file", keys}
	for _, v := range vols[:len(vols)-1] {
		args = append(args, "--volume", v.Path)
	}
	to := filepath.Join(t.TempDir(), "extract")
	s.ok(append(args, "--to", to)...)
	// Every session read, a file deleted comes from the session before.
	everything := maps.Clone(states[len(states)-1])
	everything["new.txt"] = states[1]["new.txt"]
	sameDigests(t, "volume extract of the chain", digests(t, filepath.Join(to, src)), everything)
	s.fails(1, []string{"main.db", "not every volume of the chain is given", "--volume"},
		"volume", "extract", vols[len(vols)-1].Path, "--key-file", keys, "--to", filepath.Join(t.TempDir(), "alone"))
	volumeChainWithNoCatalog(t, s, src, states, vols)
}

// TestIncrementalSendsChangedBlocksOnTape: the same on tapes of 24 MiB, so
// that the full spans tapes: a restore reads the blocks of each session
// where they lie, each tape once, positioned.
func TestIncrementalSendsChangedBlocksOnTape(t *testing.T) {
	s, _ := startTapeStack(t, devstack.Config{CartridgeBytes: 24 << 20, EarlyWarningBytes: 15 << 20, SpoolChunkBytes: 1 << 20})
	s.ok("media", "label", "--library", "lib1", "--slots", "1-4", "--pool", "Weekly")
	src, states := changedBlocks(t, s, func(level, src string) uint64 {
		var j wire.JobInfo
		s.json(&j, "backup", "--client", s.client, "--path", src, "--level", level, "--pool", "Weekly", "--wait")
		if j.State != "success" || j.BackupID == 0 {
			t.Fatalf("backup job %d ended %s (backup %d): %s", j.ID, j.State, j.BackupID, j.Error)
		}
		return j.BackupID
	})
	used := 0
	for _, v := range s.volumes() {
		if v.Bytes > 0 {
			used++
		}
	}
	if used < 2 {
		t.Fatalf("the chain lies on %d tape, want it to span tapes", used)
	}

	// With no server, copies of the cartridges (the library holds the
	// files it has loaded) list the chain and give back its last point
	// in time byte for byte.
	pile := t.TempDir()
	var carts []string
	err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".tape") && d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			carts = append(carts, filepath.Base(p))
			return os.WriteFile(filepath.Join(pile, filepath.Base(p)), b, 0o644)
		}
		return err
	})
	if err != nil || len(carts) < 2 {
		t.Fatalf("cartridge files: %q, %v", carts, err)
	}
	keys := filepath.Join(t.TempDir(), "keys.json")
	s.ok("key", "export", "--to", keys)
	var l chainListing
	s.json(&l, "volume", "ls", pile)
	if len(l.Sessions) != len(states) {
		t.Fatalf("volume ls of the cartridges: %d sessions, want %d", len(l.Sessions), len(states))
	}
	to := filepath.Join(t.TempDir(), "tape-at")
	s.ok("volume", "extract", pile, "--key-file", keys, "--at", l.Sessions[len(l.Sessions)-1].Session, "--to", to)
	sameDigests(t, "volume extract --at of the cartridges", digests(t, filepath.Join(to, src)), states[len(states)-1])
}

// changedBlocks runs the chain and its restores, and returns the tree's
// path and its state at each backup.
func changedBlocks(t *testing.T, s *stack, backup func(level, src string) uint64) (string, []map[string][32]byte) {
	src, random, put := largeFiles(t, 14)
	main, log := filepath.Join(src, "main.db"), filepath.Join(src, "wal.log")
	mainData, logData := random(24<<20), random(8<<20)
	put(main, mainData, 0)
	put(log, logData, 0)
	put(filepath.Join(src, "small.conf"), []byte("threads = 4\n"), 0)
	states := []map[string][32]byte{}
	snapshot := func() { states = append(states, digests(t, src)) }

	vol := func() int64 {
		var n int64
		for _, v := range s.volumes() {
			n += v.Bytes
		}
		return n
	}
	backups := []uint64{backup("full", src)}
	snapshot()
	grown := []int64{vol()}

	// In place inside the large file, an append to the other, a new small file.
	copy(mainData[10<<20:], random(4096))
	put(main, mainData, 1)
	logData = append(logData, random(1<<20)...)
	put(log, logData, 1)
	put(filepath.Join(src, "new.txt"), []byte("hello\n"), 1)
	backups = append(backups, backup("incremental", src))
	snapshot()
	grown = append(grown, vol())

	// Another change in place: the blocks now come from three sessions.
	// The new file goes again, so the last point in time has a deletion.
	copy(mainData[20<<20:], random(4096))
	put(main, mainData, 2)
	if err := os.Remove(filepath.Join(src, "new.txt")); err != nil {
		t.Fatal(err)
	}
	backups = append(backups, backup("incremental", src))
	snapshot()
	grown = append(grown, vol())

	for i := 1; i < len(grown); i++ {
		g := grown[i] - grown[i-1]
		t.Logf("incremental %d stored %d bytes (the full %d)", i, g, grown[0])
		// A change costs the blocks around it (1 MiB on average, 8 MiB
		// at most), where the files are 24 and 8 MiB.
		if g > 12<<20 {
			t.Errorf("incremental %d stored %d bytes: more than the blocks around its changes", i, g)
		}
	}
	for i, id := range backups {
		to := filepath.Join(t.TempDir(), fmt.Sprintf("r%d", i))
		s.restore(to, "--backup", strconv.FormatUint(id, 10))
		sameDigests(t, fmt.Sprintf("restore of backup %d", i), digests(t, filepath.Join(to, src)), states[i])
	}
	// One file: only its blocks are read, from every session that holds some.
	one := filepath.Join(t.TempDir(), "one")
	s.restore(one, "--backup", strconv.FormatUint(backups[2], 10), main)
	got := digests(t, filepath.Join(one, src))
	if len(got) != 1 || got["main.db"] != states[2]["main.db"] {
		t.Fatalf("single-file restore of main.db: %d files, digest %x, want %x", len(got), got["main.db"], states[2]["main.db"])
	}
	return src, states
}

// largeFiles makes an empty tree for large files, and gives random bytes
// (the same for the same seed) and put, which writes a file with an mtime
// of the given hour.
func largeFiles(t *testing.T, seed uint64) (src string, random func(n int) []byte, put func(p string, data []byte, hour int)) {
	src = filepath.Join(t.TempDir(), "db")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	random = func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	put = func(p string, data []byte, hour int) {
		t.Helper()
		if err := os.WriteFile(p, data, 0o640); err != nil {
			t.Fatal(err)
		}
		at := time.Date(2026, 1, 1, hour, 0, 0, 0, time.UTC)
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	return src, random, put
}

// digests are the SHA-256 of each regular file under dir, by its path
// relative to dir.
func digests(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = sha256.Sum256(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameDigests(t *testing.T, what string, got, want map[string][32]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d files, want %d", what, len(got), len(want))
	}
	for p, w := range want {
		if g, ok := got[p]; !ok || g != w {
			t.Errorf("%s: %s differs (present %v)", what, p, ok)
		}
	}
}
