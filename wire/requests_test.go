package wire

import (
	"testing"
	"time"
)

// TestRequestsCloseWaitsThenRefuses: Close returns only after the requests
// running end, and a request that comes after it is not run.
func TestRequestsCloseWaitsThenRefuses(t *testing.T) {
	var r Requests
	started, release, ended := make(chan struct{}), make(chan struct{}), make(chan struct{})
	if !r.Go(func() {
		close(started)
		<-release
		close(ended)
	}) {
		t.Fatal("a request before Close was refused")
	}
	<-started
	closed := make(chan struct{})
	go func() {
		r.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while a request ran")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-closed
	select {
	case <-ended:
	default:
		t.Fatal("Close returned before the request ended")
	}
	if r.Go(func() { t.Error("a request after Close ran") }) {
		t.Fatal("a request after Close was taken")
	}
}

func TestParseLabels(t *testing.T) {
	got, err := ParseLabels([]string{"role=db", "env=prod=eu", "empty="})
	if err != nil || len(got) != 3 || got["role"] != "db" || got["env"] != "prod=eu" || got["empty"] != "" {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range [][]string{{"role"}, {"=db"}, {"a=1", "a=2"}} {
		if _, err := ParseLabels(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if got, err := ParseLabels(nil); got != nil || err != nil {
		t.Errorf("no labels: %v %v", got, err)
	}
}
