package sshdtest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pkg/sftp"
)

// The fixture's sshd takes its user's key, checks out against its
// known_hosts, serves SFTP into Dir, and runs no command but internal-sftp.
func TestServerServesSFTPOnly(t *testing.T) {
	s := Start(t)
	c := s.Dial(t)
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	f, err := sc.Create(filepath.Join(s.Dir, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got, err := os.ReadFile(filepath.Join(s.Dir, "hello")); err != nil || string(got) != "hi" {
		t.Fatalf("the file sent is %q, %v", got, err)
	}
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if out, err := sess.Output("echo shell"); err == nil && string(out) == "shell\n" {
		t.Fatal("the SFTP user ran a shell command")
	}
	if len(s.Sessions(t)) == 0 {
		t.Fatal("no session process under sshd while a client is connected")
	}
}
