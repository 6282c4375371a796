package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// TestQuietClientIncrementalsCostWhatTheyHold backs up a quiet client
// hourly, as it were: each incremental holds one changed 13-byte file, and
// the disk volume grows by a few KiB for it, not by a block (256 KiB).
// Then the storage node is killed with SIGKILL in the middle of a session
// that starts at such a page-aligned committed end: the torn tail is cut
// back to it, the session runs again, the next tiny incremental lands
// right after it, and 'cairn volume ls' and 'extract', with no server,
// find every session by scanning the volume.
func TestQuietClientIncrementalsCostWhatTheyHold(t *testing.T) {
	s := newStack(t, stackOpts{})
	src := filepath.Join(t.TempDir(), "quiet")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	motd := filepath.Join(src, "motd")
	write := func(i int) {
		if err := os.WriteFile(motd, fmt.Appendf(nil, "hello, %05d\n", i), 0o644); err != nil {
			t.Fatal(err)
		}
		// Incrementals compare mtimes: make each change visible.
		at := time.Date(2026, 1, 1, i, 0, 0, 0, time.UTC)
		if err := os.Chtimes(motd, at, at); err != nil {
			t.Fatal(err)
		}
	}
	write(0)
	s.backup("full", src)
	vol := s.volumes()[0]
	const hourly = 8
	sessions := 1
	incremental := func(i int) {
		t.Helper()
		write(i)
		before := fileSize(t, vol.Path)
		s.backup("incremental", src)
		sessions++
		grew := fileSize(t, vol.Path) - before
		if grew > 8<<10 || grew <= 0 || grew%4096 != 0 {
			t.Fatalf("an incremental of one 13-byte file grew volume %s by %d bytes; want a few KiB, on a page", vol.Name, grew)
		}
		if i == 1 {
			t.Logf("an incremental of one 13-byte file takes %d bytes on the disk volume", grew)
		}
	}
	for i := 1; i <= hourly; i++ {
		incremental(i)
	}
	for _, v := range s.volumes() {
		if v.Name == vol.Name && v.Bytes != fileSize(t, vol.Path) {
			t.Fatalf("volume file %s has %d bytes; the catalog has %d committed", vol.Path, fileSize(t, vol.Path), v.Bytes)
		}
	}
	committed := fileSize(t, vol.Path)

	// Kill the storage node in the middle of the next session.
	big := filepath.Join(t.TempDir(), "big")
	writeRandomFiles(t, big, 8, 32<<20, 17)
	var started wire.JobStarted
	s.json(&started, "backup", "--client", s.client, "--path", big, "--level", "full")
	poll.Until(t, 30*time.Second, func() error {
		if fileSize(t, vol.Path) <= committed+1<<20 {
			return fmt.Errorf("the big backup has not written 1 MiB to volume %s yet", vol.Name)
		}
		return nil
	})
	s.storage.kill()
	parts := volumeParts(t, vol.Path)
	if len(parts) != sessions+1 || !parts[sessions].Torn || parts[sessions].VolumeStart != committed {
		t.Fatalf("volume %s after the kill: %d parts (want %d committed and a torn one at %d): last %+v", vol.Name, len(parts), sessions, committed, parts[len(parts)-1])
	}
	s.storage.start()
	s.waitReady()
	var retried wire.JobInfo
	poll.Until(t, 60*time.Second, func() error {
		retried = s.job(started.JobID)
		if retried.State == "queued" || retried.State == "running" {
			return fmt.Errorf("job %d still %s", retried.ID, retried.State)
		}
		return nil
	})
	if retried.State != "success" || retried.Attempt != 2 {
		t.Fatalf("the retried backup: %+v", retried)
	}
	if !strings.Contains(s.storage.logText(), "cut off an uncommitted tail") {
		t.Errorf("the storage node did not report cutting the torn tail off a volume")
	}
	sessions++
	incremental(hourly + 1)

	// No server, no catalog: the volume alone lists every session.
	parts = volumeParts(t, vol.Path)
	if len(parts) != sessions {
		t.Fatalf("volume %s holds %d parts, want %d", vol.Name, len(parts), sessions)
	}
	for i, p := range parts {
		if p.Torn || p.VolumeStart%4096 != 0 {
			t.Errorf("part %d: torn %v (%s), at %d", i, p.Torn, p.TornReason, p.VolumeStart)
		}
	}
	keys := filepath.Join(t.TempDir(), "keys.json")
	s.ok("key", "export", "--to", keys)
	var listing volumeListing
	s.json(&listing, "volume", "ls", vol.Path, "--key-file", keys)
	if len(listing.Sessions) != sessions || listing.Label.FormatVersion != volume.FormatVersion || listing.Label.PartAlign != 4096 {
		t.Fatalf("volume ls: %d sessions (want %d), label %+v", len(listing.Sessions), sessions, listing.Label)
	}
	last := listing.Sessions[len(listing.Sessions)-1]
	to := filepath.Join(t.TempDir(), "extract")
	s.ok("volume", "extract", vol.Path, "--key-file", keys, "--session", last.Session, "--to", to)
	got, err := os.ReadFile(filepath.Join(to, motd))
	if want := fmt.Sprintf("hello, %05d\n", hourly+1); err != nil || string(got) != want {
		t.Fatalf("volume extract of the last session: %q, %v; want %q", got, err, want)
	}
}
