package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairnbackup/cairn/sample"
)

// TestChainRestoreSendsStoredBlocks restores the point in time of an
// incremental that changed, deleted and added small files among many and
// changed a large one in place: the full's entries the incremental shadows
// lie between the ones the restore reads from the full, and the plan says
// which of those follow one another, so that the storage node passes the
// blocks inside each run on as stored. The agent ends a restore at any
// entry its read did not name, so a block passed on across a shadowed
// entry would fail this restore; it must succeed, exactly, and go partly
// by stored blocks.
func TestChainRestoreSendsStoredBlocks(t *testing.T) {
	s := newStack(t, stackOpts{})
	src, _, put := largeFiles(t, 31)
	rnd := rand.New(rand.NewPCG(31, 32))
	var small []string
	for d := range 4 {
		dir := filepath.Join(src, fmt.Sprintf("d%d", d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range 400 {
			p := filepath.Join(dir, fmt.Sprintf("f%03d.log", f))
			put(p, sample.LogText(rnd, 1000+rnd.IntN(4000)), 0)
			small = append(small, p)
		}
	}
	logs := map[string][]byte{}
	for i := range 3 {
		p := filepath.Join(src, fmt.Sprintf("app%d.log", i))
		logs[p] = sample.LogText(rnd, 12<<20)
		put(p, logs[p], 0)
	}
	s.backup("full", src)

	for i := 0; i < len(small); i += 160 {
		put(small[i], sample.LogText(rnd, 3000), 1) // changed
		if err := os.Remove(small[i+7]); err != nil {
			t.Fatal(err)
		}
		put(small[i+20]+".new", sample.LogText(rnd, 2000), 1)
	}
	changed := filepath.Join(src, "app1.log")
	copy(logs[changed][6<<20:], sample.LogText(rnd, 64<<10))
	put(changed, logs[changed], 1)
	incr := s.backup("incremental", src)
	want := digests(t, src)

	before, err := metricValue(s.storage.metricsAddr(), "cairn_node_stored_blocks_sent_total")
	if err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(t.TempDir(), "restored")
	s.restore(to, "--backup", fmt.Sprint(incr.BackupID))
	sameDigests(t, "the restore of the incremental", digests(t, filepath.Join(to, src)), want)
	after, err := metricValue(s.storage.metricsAddr(), "cairn_node_stored_blocks_sent_total")
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 20 {
		t.Fatalf("the restore of a chain went by %v stored blocks; its unchanged large files alone fill more", after-before)
	}
	t.Logf("%v blocks went as stored", after-before)
}
