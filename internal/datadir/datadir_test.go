package datadir

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestOneHolderAtATime: a directory held cannot be taken again, even by
// another Lock of the same process, and the refusal names the holder; once
// released it can. A lock file a dead process left behind holds nothing.
func TestOneHolderAtATime(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	first, err := Acquire(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir, "dev")
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.PID != os.Getpid() || inUse.Role != "server" || inUse.Dir != dir {
		t.Fatalf("a held directory taken again: %v (%+v)", err, inUse)
	}
	if want := "data directory " + dir + " is in use by PID " + strconv.Itoa(os.Getpid()) + " (cairn server)"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	again, err := Acquire(dir, "dev")
	if err != nil {
		t.Fatalf("a released directory: %v", err)
	}
	again.Release()

	// What a process killed with SIGKILL leaves: its PID in an unlocked file.
	if err := os.WriteFile(filepath.Join(dir, LockName), []byte("999999999 server\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Acquire(dir, "server")
	if err != nil {
		t.Fatalf("a lock file a dead process left: %v", err)
	}
	defer l.Release()
	if data, _ := os.ReadFile(filepath.Join(dir, LockName)); string(data) != strconv.Itoa(os.Getpid())+" server\n" {
		t.Errorf("lock file holds %q", data)
	}
}
