package integration

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/disk"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// chainListing is what 'cairn volume ls --json' of several volumes prints.
type chainListing struct {
	Sessions []struct {
		Session string `json:"session"`
		Client  string `json:"client"`
		Level   string `json:"level"`
		Backup  uint64 `json:"backup_id"`
		Parent  uint64 `json:"parent_backup"`
		State   string `json:"state"`
	} `json:"sessions"`
	Chain []string `json:"chain"`
	Files []struct {
		Path       string `json:"path"`
		From       string `json:"from_session"`
		BlocksFrom []struct {
			Session string `json:"session"`
			Volume  string `json:"volume"`
			Problem string `json:"problem"`
		} `json:"blocks_from"`
	} `json:"files"`
	Warnings []string `json:"warnings"`
}

// volumeChainWithNoCatalog is what an administrator who lost the catalog
// does with the pile of volumes a full and two changed-block incrementals
// lie on (the full spans vols, the incrementals lie on the last): 'cairn
// volume ls' of them all lists the sessions and, at each point in time,
// the files and where their blocks lie; 'volume extract --at' of each
// point gives back every file byte for byte (a file deleted by then
// stays deleted), whatever order the volumes come in and if one comes
// twice, and '--session' of an incremental its own files, assembled; a volume left out stops it before it
// writes anything, naming the volume; a volume cut short loses only what
// lay past the cut, named; and the volume of another client, with a key
// the key file does not hold, is no trouble unless it is read.
func volumeChainWithNoCatalog(t *testing.T, s *stack, src string, states []map[string][32]byte, vols []wire.VolumeInfo) {
	keys := filepath.Join(t.TempDir(), "keys.json")
	s.ok("key", "export", "--to", keys)
	paths := func(vs ...wire.VolumeInfo) []string {
		var out []string
		for _, v := range vs {
			out = append(out, v.Path)
		}
		return out
	}
	all := paths(vols...)
	// The pile in another order, one volume twice.
	pile := append(slices.Clone(all), all[0])
	slices.Reverse(pile)

	var l chainListing
	s.json(&l, append(append([]string{"volume", "ls"}, pile...), "--key-file", keys)...)
	if len(l.Sessions) != len(states) || l.Sessions[0].Level != "full" || l.Sessions[1].Level != "incremental" {
		t.Fatalf("volume ls of the pile: %+v", l.Sessions)
	}
	// Each session's header names the backup it builds on, as the
	// catalog's parents.
	for i := 1; i < len(l.Sessions); i++ {
		if l.Sessions[i].Parent != l.Sessions[i-1].Backup || l.Sessions[i].Parent == 0 {
			t.Errorf("session %d, backup %d, builds on backup %d; want %d", i, l.Sessions[i].Backup, l.Sessions[i].Parent, l.Sessions[i-1].Backup)
		}
	}
	if !slices.ContainsFunc(l.Warnings, func(w string) bool { return strings.Contains(w, "are the same volume") }) {
		t.Errorf("volume ls of a pile with a volume twice does not say so: %q", l.Warnings)
	}
	var sessions []string
	for _, ss := range l.Sessions {
		sessions = append(sessions, ss.Session)
	}
	last := sessions[len(sessions)-1]
	s.json(&l, append(append([]string{"volume", "ls"}, pile...), "--key-file", keys, "--at", last[:8])...)
	if !slices.Equal(l.Chain, sessions) {
		t.Fatalf("volume ls --at the last incremental: chain %q, want %q", l.Chain, sessions)
	}
	for _, f := range l.Files {
		if filepath.Base(f.Path) != "main.db" {
			continue
		}
		from := map[string]string{}
		for _, b := range f.BlocksFrom {
			from[b.Session] = b.Volume + b.Problem
		}
		if f.From != last || from[sessions[0]] == "" || from[sessions[1]] == "" {
			t.Errorf("volume ls --at: main.db comes from %s with blocks from %v; want from %s, blocks from %s and %s", f.From, from, last, sessions[0], sessions[1])
		}
	}

	// Every point in time, each with the pile in another order.
	for i, ss := range sessions {
		order := slices.Clone(pile)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		to := filepath.Join(t.TempDir(), "at")
		s.ok(append([]string{"volume", "extract", order[0], "--key-file", keys, "--to", to, "--at", ss}, volumeFlags(order[1:])...)...)
		sameDigests(t, "volume extract --at session "+ss, digests(t, filepath.Join(to, src)), states[i])
	}

	// One session's own entries: the last incremental holds main.db
	// alone, whose blocks come from the two sessions before it.
	to := filepath.Join(t.TempDir(), "session")
	s.ok(append([]string{"volume", "extract", all[len(all)-1], "--key-file", keys, "--to", to, "--session", last}, volumeFlags(all)...)...)
	if got := digests(t, filepath.Join(to, src)); len(got) != 1 || got["main.db"] != states[len(states)-1]["main.db"] {
		t.Errorf("volume extract --session of the last incremental: %d files, main.db right %v", len(got), got["main.db"] == states[len(states)-1]["main.db"])
	}

	extract := func(to string, at string, vs ...string) []string {
		args := []string{"volume", "extract", vs[0], "--key-file", keys, "--to", to}
		if at != "" {
			args = append(args, "--at", at)
		}
		return append(args, volumeFlags(vs[1:])...)
	}
	nothingIn := func(what, dir string) {
		t.Helper()
		if es, err := os.ReadDir(dir); err == nil && len(es) > 0 {
			t.Errorf("%s wrote %d entries into %s; want nothing written", what, len(es), dir)
		}
	}
	// A volume left out: the full's first, its second, its last. The
	// error names the session, the files that need it, and the volume:
	// by its id, which the part after it names, and by its name and id,
	// which the incrementals' headers recorded of their chain (the only
	// word of the last part's volume: the part before it says only that
	// the session goes on).
	for left, want := range map[int]string{0: vols[0].ID.String(), 1: vols[1].ID.String(), 2: "after part 1, which lies on volume " + vols[1].Name} {
		given := slices.Delete(slices.Clone(all), left, left+1)
		to := filepath.Join(t.TempDir(), "missing")
		recorded := fmt.Sprintf("%s [%s]", vols[left].Name, vols[left].ID)
		s.fails(1, []string{"not every volume of the chain is given", sessions[0], want, recorded, "main.db", "nothing was extracted", "--volume"},
			extract(to, last, given...)...)
		nothingIn("volume extract with a volume left out", to)
		s.fails(1, []string{sessions[0], want, "main.db"},
			append(append([]string{"volume", "ls"}, given...), "--key-file", keys, "--at", last)...)
	}

	// The first volume cut short, in the middle of the full's blocks:
	// main.db, whose blocks lay past the cut, is named lost with the
	// volume; every other file comes back whole.
	b, err := os.ReadFile(all[0])
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "cut.cvol")
	if err := os.WriteFile(cut, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	to = filepath.Join(t.TempDir(), "cut")
	s.fails(1, []string{"main.db", vols[0].Name, "stops at stream offset"}, extract(to, last, append([]string{cut}, all[1:]...)...)...)
	got := digests(t, filepath.Join(to, src))
	for p, d := range states[len(states)-1] {
		if g, ok := got[p]; p != "main.db" && g != d || p == "main.db" && ok {
			t.Errorf("volume extract with a volume cut short: %s present %v, digest right %v", p, ok, g == d)
		}
	}

	// A file among them that is no volume (a damaged copy whose label
	// and blocks are gone): named, and nothing written.
	junk := filepath.Join(t.TempDir(), "Default-0009.cvol")
	if err := os.WriteFile(junk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	to = filepath.Join(t.TempDir(), "junk")
	s.fails(1, []string{"Default-0009.cvol", "not a Cairn volume"}, extract(to, last, append(slices.Clone(all), junk)...)...)
	nothingIn("volume extract with a file that is no volume", to)

	// The volume of another client, with a key the key file does not
	// hold, made later than the chain.
	other := otherClientVolume(t)
	withOther := append(slices.Clone(all), other)
	to = filepath.Join(t.TempDir(), "other")
	s.ok(extract(to, last, withOther...)...)
	sameDigests(t, "volume extract --at a session, with another client's volume in the pile", digests(t, filepath.Join(to, src)), states[len(states)-1])
	s.fails(1, []string{"2 clients", "db02", "web01"}, extract(filepath.Join(t.TempDir(), "two"), "now", withOther...)...)
	to = filepath.Join(t.TempDir(), "client")
	s.ok(append(extract(to, "now", withOther...), "--client", "web01")...)
	sameDigests(t, "volume extract --at now --client web01", digests(t, filepath.Join(to, src)), states[len(states)-1])
	// Read whole, the pile needs the other key: nothing is written.
	to = filepath.Join(t.TempDir(), "everything")
	s.fails(1, []string{"other-key", "db02.cvol"}, extract(to, "", withOther...)...)
	nothingIn("volume extract of a session whose key is not given", to)
}

// volumeFlags gives each volume with --volume.
func volumeFlags(vs []string) []string {
	var out []string
	for _, v := range vs {
		out = append(out, "--volume", v)
	}
	return out
}

// otherClientVolume writes, with the volume writer, a disk volume holding
// one session of client db02 encrypted with a key of its own (other-key),
// made an hour from now.
func otherClientVolume(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	p := &disk.Pool{Name: "Other", Dir: dir, BlockSize: 64 << 10}
	id := uuid.New()
	created := time.Now().UTC().Add(time.Hour)
	if err := p.Create("db02", volume.Label{VolumeID: id, Created: created}); err != nil {
		t.Fatal(err)
	}
	a, err := p.OpenAppend("db02", id, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	m := sha256.Sum256([]byte("another key"))
	w, err := volume.NewSessionWriter(volume.SessionInfo{SessionID: uuid.New(), JobID: 1, BackupID: 1, Client: "db02", Level: "full",
		Pool: "Other", Created: created}, &volume.Key{ID: "other-key", Material: m[:]}, a, volume.WriterOptions{TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("select 1;\n")
	h := sha256.Sum256(content)
	rec := volume.AppendRecord(nil, volume.RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: "/srv/db/q.sql", Type: fileindex.TypeFile, Mode: 0o600, Size: int64(len(content))}))
	rec = volume.AppendDataRecord(rec, 0, content)
	if err := w.Write(volume.AppendFileEnd(rec, volume.EndOK, h[:])); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	path, err := p.Path("db02")
	if err != nil {
		t.Fatal(err)
	}
	return path
}
