package agent

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cairnbackup/cairn/wire"
)

// An order of a later attempt that comes while the earlier attempt is
// still ending here (its failure on its way to the servers) runs once the
// earlier one lets go, instead of being taken and not run: that cost the
// servers an attempt and a liveness timeout (TestClusterStorageNodes saw
// attempt 2 lost so). One that does not let go in time is refused, to be
// ordered again.
func TestLaterAttemptRunsOnceTheEarlierEnds(t *testing.T) {
	synctest.Test(t, testLaterAttemptRunsOnceTheEarlierEnds)
}

func testLaterAttemptRunsOnceTheEarlierEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := &Agent{ctx: ctx, jobs: map[uint64]*runningJob{}, finished: map[uint64]wire.JobDoneReq{}}
	a.cfg.Name = "web"
	if !a.claim(7, 1) {
		t.Fatal("attempt 1 not claimed")
	}
	ending := make(chan struct{})
	stopped := make(chan error, 1)
	a.track(7, func(ctx context.Context) {
		<-ctx.Done() // attempt 1 reports its failure until told it is over
		stopped <- context.Cause(ctx)
		<-ending
	})
	go func() {
		// The earlier attempt lets go a moment after it is stopped.
		<-time.After(50 * time.Millisecond)
		close(ending)
	}()
	if err := a.endEarlierAttempt(7, 2); err != nil {
		t.Fatalf("attempt 2 while attempt 1 ends: %v", err)
	}
	if err := <-stopped; err == nil {
		t.Fatal("attempt 1 was not told it is over")
	}
	if !a.claim(7, 2) {
		t.Fatal("attempt 2 not claimed once attempt 1 let go")
	}
	a.unclaim(7)

	// An attempt that does not let go: the order is refused, not lost.
	if !a.claim(8, 1) {
		t.Fatal("job 8 not claimed")
	}
	stuck := make(chan struct{})
	a.track(8, func(context.Context) { <-stuck })
	err := a.endEarlierAttempt(8, 2)
	if wire.CodeOf(err) != wire.CodeUnavailable {
		t.Fatalf("attempt 2 while attempt 1 hangs: %v", err)
	}
	if a.claim(8, 2) {
		t.Fatal("attempt 2 claimed while attempt 1 still runs")
	}
	close(stuck)
	a.wg.Wait()
}
