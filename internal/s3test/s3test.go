// Package s3test starts a real S3 server for a test: versitygw (posix
// backend, with a versioning directory so buckets can have object lock)
// on 127.0.0.1 at a free port, serving buckets from the test's temporary
// directory, and stopped by its process id when the test ends. The S3
// pool tests run against it rather than against a fake, because what
// they check (a locked object's delete or overwrite refused, multipart
// uploads never completed, range reads) is the server's to enforce.
package s3test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/internal/poll"
)

// Name is the server's command; scripts/install-test-deps.sh installs it
// with go install into $(go env GOPATH)/bin.
const Name = "versitygw"

// The server's root account.
const (
	AccessKey = "cairntestaccess"
	SecretKey = "cairntestsecret0123456789"
)

// Server is a running versitygw.
type Server struct {
	Host string
	Port int
	// Root holds the buckets (one directory each).
	Root string
	// Log is the server's output, for a test's failure message.
	Log string

	bin  string
	vdir string
	cmd  *exec.Cmd
	mu   sync.Mutex
	stop func()
}

// buildWait bounds the wait for a versitygw that
// scripts/install-test-deps.sh is building in the background.
const buildWait = 8 * time.Minute

// Binary finds versitygw on PATH or in the Go binary directory. While
// scripts/install-test-deps.sh builds it in the background (its marker
// file names a live process), it waits for the build to end.
func Binary() (string, bool) {
	var dirs []string
	for _, d := range []string{os.Getenv("GOBIN"), os.Getenv("GOPATH")} {
		if d != "" {
			dirs = append(dirs, d, filepath.Join(filepath.SplitList(d)[0], "bin"))
		}
	}
	if h, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(h, "go", "bin"))
	}
	find := func() (string, bool) {
		if p, err := exec.LookPath(Name); err == nil {
			return p, true
		}
		for _, d := range dirs {
			p := filepath.Join(d, Name)
			if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
				return p, true
			}
		}
		return "", false
	}
	building := func() bool {
		for _, d := range dirs {
			b, err := os.ReadFile(filepath.Join(d, ".versitygw-building"))
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && syscall.Kill(pid, 0) == nil {
				return true
			}
		}
		return false
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	var p string
	var ok bool
	_ = poll.Wait(buildWait, func() error {
		if p, ok = find(); ok || !building() {
			return nil
		}
		return errors.New("versitygw is being built")
	})
	return p, ok
}

// buildMu makes the tests of a package wait for a build one at a time.
var buildMu sync.Mutex

// Start starts versitygw, or fails the test when it cannot: the binary
// missing fails under CAIRN_CI=1 (scripts/install-test-deps.sh installs
// it), and skips elsewhere.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, ok := Binary()
	if !ok {
		if os.Getenv("CAIRN_CI") != "" {
			t.Fatalf("this test needs the S3 server %s (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0; scripts/install-test-deps.sh installs it); under CAIRN_CI=1 it may not skip", Name)
		}
		t.Skipf("SKIPPED: this test needs the S3 server %s (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0); it fails instead under CAIRN_CI=1", Name)
	}
	dir := t.TempDir()
	s := &Server{Host: "127.0.0.1", Root: filepath.Join(dir, "root"), Log: filepath.Join(dir, "versitygw.log"), bin: bin, vdir: filepath.Join(dir, "versions")}
	for _, d := range []string{s.Root, s.vdir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	for range 5 {
		s.Port = freeport.Loopback(t)
		if err = s.run(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("start %s: %v\n%s", Name, err, s.LogText())
	}
	t.Cleanup(s.Stop)
	return s
}

// run starts the server on s.Port and waits until it answers HTTP.
func (s *Server) run() error {
	lf, err := os.OpenFile(s.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd := exec.Command(s.bin, "--port", s.Addr(), "--access", AccessKey, "--secret", SecretKey,
		"posix", "--versioning-dir", s.vdir, s.Root)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	err = poll.Wait(20*time.Second, func() error {
		select {
		case err := <-exited:
			exited <- err
			return nil
		default:
		}
		c := http.Client{Timeout: time.Second}
		resp, err := c.Get("http://" + s.Addr() + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	select {
	case werr := <-exited:
		return fmt.Errorf("%s exited: %v", Name, werr)
	default:
	}
	if err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return err
	}
	s.mu.Lock()
	s.cmd = cmd
	s.stop = sync.OnceFunc(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	})
	s.mu.Unlock()
	return nil
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Endpoint is the server's URL.
func (s *Server) Endpoint() string { return "http://" + s.Addr() }

// PID is the server's process id.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd.Process.Pid
}

// Stop kills the server with SIGKILL, as a crash or a cut link would end
// it; the test's cleanup does it too.
func (s *Server) Stop() {
	s.mu.Lock()
	stop := s.stop
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Restart starts the server again on the same port and root, after Stop.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.run(); err != nil {
		t.Fatalf("restart %s: %v\n%s", Name, err, s.LogText())
	}
}

// LogText is what the server logged.
func (s *Server) LogText() string {
	b, _ := os.ReadFile(s.Log)
	return string(b)
}

// Client is a client with the server's root credentials.
func (s *Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.Addr(), &minio.Options{Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Bucket makes bucket name, with object lock enabled when lock is set.
func (s *Server) Bucket(t testing.TB, name string, lock bool) {
	t.Helper()
	if err := s.Client(t).MakeBucket(context.Background(), name, minio.MakeBucketOptions{Region: "us-east-1", ObjectLocking: lock}); err != nil {
		t.Fatalf("make bucket %s: %v", name, err)
	}
}
