package sshdtest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// The fixture's sshd takes its user's key, checks out against its
// known_hosts, serves SFTP into Dir, and runs no command but internal-sftp.
func TestServerServesSFTPOnly(t *testing.T) {
	s := Start(t)
	b, err := os.ReadFile(s.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	hk, err := knownhosts.New(s.KnownHosts)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ssh.Dial("tcp", s.Addr(), &ssh.ClientConfig{User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: hk})
	if err != nil {
		t.Fatalf("%v\n%s", err, s.logText())
	}
	defer c.Close()
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
