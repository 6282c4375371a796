package sshdtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
)

// Agent starts OpenSSH's ssh-agent (openssh-client, which openssh-server
// brings) with keyFiles added, and returns its socket for $SSH_AUTH_SOCK.
// It is killed by its process id when the test ends.
func Agent(t testing.TB, keyFiles ...string) string {
	t.Helper()
	bin, err := exec.LookPath("ssh-agent")
	if err != nil {
		if os.Getenv("CAIRN_CI") != "" {
			t.Fatalf("this test needs OpenSSH's ssh-agent (Debian: openssh-client; scripts/install-test-deps.sh installs it); under CAIRN_CI=1 it may not skip")
		}
		t.Skipf("SKIPPED: this test needs OpenSSH's ssh-agent (Debian: openssh-client); it fails instead under CAIRN_CI=1")
	}
	// A socket path must fit in sun_path (108 bytes): t.TempDir's may not.
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	cmd := exec.Command(bin, "-D", "-a", sock)
	cmd.Stderr = os.Stderr // -D prints its socket on stdout, which the caller has
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ssh-agent: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// The socket's file appears at bind, before ssh-agent listens on it:
	// an ssh-add in between was refused. Wait for a connection.
	poll.Until(t, 10*time.Second, func() error {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return fmt.Errorf("ssh-agent's socket: %w", err)
		}
		return c.Close()
	})
	for _, k := range keyFiles {
		add := exec.Command("ssh-add", k)
		add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
		if out, err := add.CombinedOutput(); err != nil {
			t.Fatalf("ssh-add %s: %v: %s", k, err, out)
		}
	}
	return sock
}
