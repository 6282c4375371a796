package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/sample"
	"github.com/cairnbackup/cairn/wire"
)

// TestStorageNodeKilledMidChainRestore kills the agent, then the storage
// node, with SIGKILL in the middle of a restore of a chain whose large
// files were changed in place, so that each is assembled from blocks of
// two sessions and waits for the second's while the first is read
// (killMidRestore says what must hold).
func TestStorageNodeKilledMidChainRestore(t *testing.T) {
	s := newStack(t, stackOpts{})
	src, random, put := largeFiles(t, 23)
	var names []string
	data := map[string][]byte{}
	for i := range 8 {
		name := fmt.Sprintf("disk%d.img", i)
		names = append(names, name)
		data[name] = random(32 << 20)
		put(filepath.Join(src, name), data[name], 0)
	}
	s.backup("full", src)
	for _, name := range names {
		copy(data[name][16<<20:], random(4096))
		put(filepath.Join(src, name), data[name], 1)
	}
	incr := s.backup("incremental", src)
	want := digests(t, src)

	killMidRestore(t, s, src, want, incr.BackupID)
}

// TestKilledMidWholeRestore kills the agent, then the storage node, with
// SIGKILL in the middle of a whole restore of a full of compressible
// files, whose blocks go to the agent as stored and are decompressed
// there: the same holds as for a chain (TestStorageNodeKilledMidChainRestore),
// and the restore that succeeds went by stored blocks.
func TestKilledMidWholeRestore(t *testing.T) {
	s := newStack(t, stackOpts{})
	src, _, put := largeFiles(t, 29)
	rnd := rand.New(rand.NewPCG(29, 30))
	for i := range 8 {
		put(filepath.Join(src, fmt.Sprintf("app%d.log", i)), sample.LogText(rnd, 24<<20), 0)
	}
	for i := range 300 {
		put(filepath.Join(src, fmt.Sprintf("small%03d.txt", i)), sample.LogText(rnd, 1000+i*37), 0)
	}
	full := s.backup("full", src)
	killMidRestore(t, s, src, digests(t, src), full.BackupID)
	sent, err := metricValue(s.storage.metricsAddr(), "cairn_node_stored_blocks_sent_total")
	if err != nil || sent == 0 {
		t.Fatalf("the storage node sent %v stored blocks (%v) for a whole restore of compressible files", sent, err)
	}
}

// killMidRestore restores backup of src, whose files have the digests
// want, three times: the agent killed in the middle, then the storage
// node. The target holds no temporary file and no file under its name
// with anything but its backed-up content, after either kill; the restore
// whose node was killed fails, saying so; once the node is back the same
// restore succeeds.
func killMidRestore(t *testing.T, s *stack, src string, want map[string][32]byte, backup uint64) {
	t.Helper()
	// start starts the restore of the backup into a new directory,
	// and stops p once the restore shows progress; it returns the job and
	// the directory.
	start := func(p *proc) (uint64, string) {
		t.Helper()
		to := filepath.Join(t.TempDir(), "restored")
		var started wire.JobStarted
		s.json(&started, "restore", "--client", s.client, "--to", to, "--backup", strconv.FormatUint(backup, 10), "--wait=false")
		id := started.JobID
		s.waitStreaming(id, 60*time.Second, nil)
		pause(t, p)
		if j := s.job(id); j.State != "running" {
			t.Fatalf("the restore ended (%s) before %s was stopped; make the tree bigger", j.State, p.name)
		}
		return id, to
	}
	// checkLeft fails the test for a temporary file in to, or a file under
	// its name with anything but its backed-up content.
	checkLeft := func(what, to string) {
		t.Helper()
		left := map[string][32]byte{}
		if _, err := os.Stat(filepath.Join(to, src)); err == nil {
			left = digests(t, filepath.Join(to, src))
		}
		for name, got := range left {
			switch {
			case strings.HasPrefix(filepath.Base(name), ".cairn-restore-"):
				t.Errorf("%s left a temporary file: %s", what, name)
			case got != want[name]:
				t.Errorf("%s left %s with content that is not its backup's", what, name)
			}
		}
		t.Logf("%s left %d of %d files, each whole", what, len(left), len(want))
	}

	// The agent killed: what waited for blocks goes with it.
	id, to := start(s.agent)
	kill(s.agent)
	checkLeft("the killed agent", to)
	s.agent.start()
	s.waitReady()
	j := s.waitEnded(id, 2*time.Minute)
	t.Logf("the restore its agent was killed in ended %s at attempt %d: %s", j.State, j.Attempt, j.Error)
	if j.State == "success" {
		sameDigests(t, "the restore its agent was killed in", digests(t, filepath.Join(to, src)), want)
	} else {
		checkLeft("the restore its agent was killed in", to)
	}

	// The storage node killed: the restore fails and the agent lets go of
	// what waited.
	id, to = start(s.storage)
	kill(s.storage)
	failed := s.waitEnded(id, 60*time.Second)
	if failed.State != "failed" {
		t.Fatalf("the restore whose node was killed ended %s: %+v", failed.State, failed)
	}
	t.Logf("the restore failed: %s", failed.Error)
	checkLeft("the failed restore", to)

	s.storage.start()
	s.waitReady()
	again := filepath.Join(t.TempDir(), "again")
	s.restore(again, "--backup", strconv.FormatUint(backup, 10))
	sameDigests(t, "the restore once the node is back", digests(t, filepath.Join(again, src)), want)
}
