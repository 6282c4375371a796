package server

import (
	"testing"
	"time"

	"github.com/cairnbackup/cairn/catalog"
)

// acquired takes the grant lock of key in a goroutine and reports when it
// holds it; release lets it go.
func acquired(g *grantLocks, key string) (held <-chan struct{}, release chan<- struct{}) {
	h, r := make(chan struct{}), make(chan struct{})
	go func() {
		unlock := g.lock(key)
		close(h)
		<-r
		unlock()
	}()
	return h, r
}

// TestGrantsOfTwoPoolsRunAtOnce: a grant in one pool, held across its Raft
// round trips, does not hold up a grant in another pool, while a second
// grant of the same pool, and of another tape pool of the same library
// (they share its scratch tapes), waits for it.
func TestGrantsOfTwoPoolsRunAtOnce(t *testing.T) {
	var s Server
	diskA := &catalog.Pool{Name: "a", Type: catalog.PoolTypeDisk}
	diskB := &catalog.Pool{Name: "b", Type: catalog.PoolTypeDisk}
	tape1 := &catalog.Pool{Name: "t1", Type: catalog.PoolTypeTape}
	tape2 := &catalog.Pool{Name: "t2", Type: catalog.PoolTypeTape}

	mustHold := func(name string, held <-chan struct{}) {
		t.Helper()
		select {
		case <-held:
		case <-time.After(10 * time.Second):
			t.Fatalf("a grant in %s waited for grants in other pools", name)
		}
	}
	heldA, releaseA := acquired(&s.grants, grantKey(diskA, ""))
	mustHold("pool a", heldA)
	heldT1, releaseT1 := acquired(&s.grants, grantKey(tape1, "lib1"))
	mustHold("tape pool t1 in lib1", heldT1)

	// Another pool, another library: granted while the others are held.
	heldB, releaseB := acquired(&s.grants, grantKey(diskB, ""))
	mustHold("pool b", heldB)
	heldOtherLib, releaseOtherLib := acquired(&s.grants, grantKey(tape2, "lib2"))
	mustHold("tape pool t2 in lib2", heldOtherLib)
	close(releaseB)
	close(releaseOtherLib)

	// The same pool, and a tape pool of the same library, wait.
	heldA2, releaseA2 := acquired(&s.grants, grantKey(diskA, ""))
	heldT2, releaseT2 := acquired(&s.grants, grantKey(tape2, "lib1"))
	waitsFor := func(name string, held <-chan struct{}, release chan<- struct{}) {
		t.Helper()
		select {
		case <-held:
			t.Fatalf("%s was granted while another grant of its volumes was held", name)
		case <-time.After(100 * time.Millisecond):
		}
		close(release)
	}
	waitsFor("a second grant in pool a", heldA2, releaseA)
	<-heldA2
	close(releaseA2)
	waitsFor("a grant in tape pool t2 of lib1", heldT2, releaseT1)
	<-heldT2
	close(releaseT2)
}
