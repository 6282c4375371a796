package s3test

import (
	"context"
	"testing"
)

// The server serves buckets with object lock, and keeps them across a
// SIGKILL and a restart on the same root.
func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	s.Bucket(t, "locked", true)
	c := s.Client(t)
	ctx := context.Background()
	state, _, _, _, err := c.GetObjectLockConfig(ctx, "locked")
	if err != nil || state != "Enabled" {
		t.Fatalf("object lock of a bucket made with it: %q, %v", state, err)
	}
	pid := s.PID()
	s.Stop()
	if _, err := c.BucketExists(ctx, "locked"); err == nil {
		t.Fatal("the server answers after Stop")
	}
	s.Restart(t)
	if s.PID() == pid {
		t.Fatal("Restart did not start another process")
	}
	if ok, err := c.BucketExists(ctx, "locked"); err != nil || !ok {
		t.Fatalf("bucket after a restart: %v, %v", ok, err)
	}
}
