// Package sshdtest starts a real OpenSSH sshd for a test: on 127.0.0.1 at
// a free port, with a host key and a user key generated in the test's
// temporary directory, serving SFTP only (ForceCommand internal-sftp), and
// stopped by its process id when the test ends. The SFTP pool tests run
// against it rather than against an in-process SFTP server, so what they
// see (the fsync extension, rename semantics, a session process killed
// mid-upload) is what an administrator's target does.
//
// The SFTP user is the user running the test: sshd can log in no other
// user unless it runs as root, and creating a system user would change
// the machine. No ChrootDirectory: OpenSSH wants every component of the
// chroot path owned by root and writable by nobody else, which a path
// under /tmp (mode 1777) never is.
package sshdtest

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/internal/poll"
)

// Binary is where Debian's openssh-server puts sshd.
const Binary = "/usr/sbin/sshd"

// Server is a running sshd.
type Server struct {
	Host string
	Port int
	User string
	// KeyFile is the user's private key (OpenSSH format, mode 0600),
	// which the server authorizes.
	KeyFile string
	// KnownHosts is a known_hosts file naming the server's host key.
	KnownHosts string
	// HostKey is the server's public host key.
	HostKey ssh.PublicKey
	// Dir is a directory the SFTP user may write, for a pool's remote
	// directory (an absolute path on the server, which is this machine).
	Dir string
	// Log is sshd's log file, for a test's failure message.
	Log string

	opts Options
	cmd  *exec.Cmd
	stop func()
}

// asNobody makes nobody the SFTP user: the owner of Dir, able to reach it
// and to read the authorized keys (sshd reads them as the user).
func (s *Server) asNobody(t testing.TB, dir string) {
	t.Helper()
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("an append-only target needs a user other than root, and there is no nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(s.Dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s.User = nobody.Username
}

// Options change how the server is set up.
type Options struct {
	// AppendOnly serves SFTP the way an administrator sets up an
	// append-only target: internal-sftp refuses removes, renames,
	// attribute changes and links (-P), and creates every file read-only
	// (-u 0222), so the user may create a file and write it through the
	// handle that created it, and never open it for writing again. The
	// user must not be root, whom file modes do not stop: a test running
	// as root logs in as nobody, whose directory Dir then is.
	AppendOnly bool
}

// AppendOnlyCommand is the ForceCommand of an append-only target, as
// storagenode/DESIGN.md gives it to administrators.
const AppendOnlyCommand = "internal-sftp -u 0222 -P remove,rmdir,rename,posix-rename,setstat,fsetstat,lsetstat,hardlink,symlink,copy-data"

// Start starts sshd, or fails the test when it cannot: sshd missing fails
// under CAIRN_CI=1 (scripts/install-test-deps.sh installs it), and skips
// elsewhere.
func Start(t testing.TB) *Server { return StartWith(t, Options{}) }

// StartWith starts sshd set up as o says.
func StartWith(t testing.TB, o Options) *Server {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		if os.Getenv("CAIRN_CI") != "" {
			t.Fatalf("this test needs OpenSSH's sshd at %s (Debian: openssh-server; scripts/install-test-deps.sh installs it); under CAIRN_CI=1 it may not skip", Binary)
		}
		t.Skipf("SKIPPED: this test needs OpenSSH's sshd at %s (Debian: openssh-server); it fails instead under CAIRN_CI=1", Binary)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Server{Host: "127.0.0.1", User: u.Username, Dir: filepath.Join(dir, "remote"), Log: filepath.Join(dir, "sshd.log"), opts: o}
	if err := os.Mkdir(s.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if o.AppendOnly && os.Geteuid() == 0 {
		s.asNobody(t, dir)
	}
	hostKey, hostPub := writeKey(t, filepath.Join(dir, "host_ed25519"))
	s.HostKey = hostPub
	s.KeyFile, _ = writeKey(t, filepath.Join(dir, "user_ed25519"))
	userPub := mustPub(t, s.KeyFile)
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, ssh.MarshalAuthorizedKey(userPub), 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// sshd running as root wants its privilege separation directory,
		// which Debian's service unit makes at boot and a container lacks.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A port taken between our probe and sshd's bind makes sshd exit: try
	// another.
	var lastErr error
	for range 5 {
		s.Port = freeport.Loopback(t)
		if lastErr = s.run(t, dir, hostKey, authorized); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("start sshd: %v\n%s", lastErr, s.logText())
	}
	s.KnownHosts = filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(s.KnownHosts, []byte(knownhosts.Line([]string{s.Addr()}, hostPub)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *Server) run(t testing.TB, dir, hostKey, authorized string) error {
	conf := filepath.Join(dir, "sshd_config")
	force := "internal-sftp"
	if s.opts.AppendOnly {
		force = AppendOnlyCommand
	}
	text := strings.Join([]string{
		"ListenAddress 127.0.0.1",
		"Port " + strconv.Itoa(s.Port),
		"HostKey " + hostKey,
		"PidFile none",
		"AuthorizedKeysFile " + authorized,
		"AuthenticationMethods publickey",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"UsePAM no",
		// The temporary directory is the test user's, not laid out as a
		// home directory sshd would check.
		"StrictModes no",
		"AllowTcpForwarding no",
		"X11Forwarding no",
		"Subsystem sftp internal-sftp",
		"ForceCommand " + force,
		"LogLevel VERBOSE",
		"",
	}, "\n")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(Binary, "-D", "-f", conf, "-E", s.Log)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	err := poll.Wait(10*time.Second, func() error {
		select {
		case err := <-exited:
			exited <- err
			return nil
		default:
		}
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if !strings.HasPrefix(line, "SSH-2.0-") {
			return fmt.Errorf("%s answers %q, not an SSH banner", s.Addr(), line)
		}
		return nil
	})
	select {
	case werr := <-exited:
		return fmt.Errorf("sshd exited: %v", werr)
	default:
	}
	if err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return err
	}
	s.cmd = cmd
	s.stop = sync.OnceFunc(func() {
		// Stopped first, so it accepts no connection and forks no
		// session between the sessions' kill and its own: a client
		// redialling in that moment got a session that outlived the
		// server, and a backup went on to a target said to be gone.
		_ = cmd.Process.Signal(syscall.SIGSTOP)
		s.KillSessions(t)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	})
	t.Cleanup(s.stop)
	return nil
}

// Dial logs in to the server as its user with its key, checking its host
// key, as a client of the target would; the test's cleanup closes the
// connection.
func (s *Server) Dial(t testing.TB) *ssh.Client {
	t.Helper()
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
		t.Fatalf("log in to sshd at %s: %v\n%s", s.Addr(), err, s.logText())
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Stop kills sshd and its sessions, as a target that goes away does;
// the test's cleanup does it too.
func (s *Server) Stop() { s.stop() }

// PID is the listening sshd's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Sessions are the process ids of sshd's session processes (its
// descendants: one privileged monitor per connection and its unprivileged
// child running internal-sftp).
func (s *Server) Sessions(t testing.TB) []int {
	t.Helper()
	return descendants(t, s.PID())
}

// KillSessions SIGKILLs every session process, as a crash or an
// administrator's kill on the target would: the connections drop
// mid-request, and sshd goes on listening.
func (s *Server) KillSessions(t testing.TB) int {
	t.Helper()
	pids := s.Sessions(t)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return len(pids)
}

func (s *Server) logText() string {
	b, _ := os.ReadFile(s.Log)
	return string(b)
}

// descendants walks /proc for the processes whose parent chain leads to
// pid.
func descendants(t testing.TB, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	parent := map[int]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		parent[p] = pp
	}
	var out []int
	for p := range parent {
		for a := parent[p]; a > 1; a = parent[a] {
			if a == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// writeKey writes a new ed25519 private key in OpenSSH format at path,
// mode 0600, and returns the path and the public key.
func writeKey(t testing.TB, path string) (string, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return path, sp
}

func mustPub(t testing.TB, keyFile string) ssh.PublicKey {
	t.Helper()
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

// NewKey writes another user key in the test's temporary directory, one
// the server does not authorize, and returns its path.
func NewKey(t testing.TB) string {
	t.Helper()
	p, _ := writeKey(t, filepath.Join(t.TempDir(), "other_ed25519"))
	return p
}

// WrongKnownHosts writes a known_hosts file that names another key for
// the server's address, as after a man in the middle or a reinstalled
// target, and returns its path and that key.
func (s *Server) WrongKnownHosts(t testing.TB) (string, ssh.PublicKey) {
	t.Helper()
	dir := t.TempDir()
	_, other := writeKey(t, filepath.Join(dir, "other_host"))
	path := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(path, []byte(knownhosts.Line([]string{s.Addr()}, other)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, other
}

// SmallDir mounts a filesystem of size bytes (a tmpfs) at a new
// directory name under Dir, owned by the SFTP user, as a target whose
// disk fills up; the test's cleanup unmounts it. Mounting needs root: the
// test skips without it, and fails under CAIRN_CI=1.
func (s *Server) SmallDir(t testing.TB, name string, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CAIRN_CI") != "" {
			t.Fatal("this test mounts a small filesystem for the target, which needs root; under CAIRN_CI=1 it may not skip")
		}
		t.Skip("SKIPPED: this test mounts a small filesystem for the target, which needs root; it fails instead under CAIRN_CI=1")
	}
	u, err := user.Lookup(s.User)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.Dir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("size=%d,mode=0755,uid=%s,gid=%s", size, u.Uid, u.Gid)
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		if os.Getenv("CAIRN_CI") != "" {
			t.Fatalf("mount a %d-byte tmpfs at %s: %v", size, dir, err)
		}
		t.Skipf("SKIPPED: mount a %d-byte tmpfs at %s: %v (the machine forbids mounts); it fails instead under CAIRN_CI=1", size, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}
