// Package sftpvol keeps volumes as files on an SFTP server: NAME.cvol in
// one remote directory, each holding the volume format of media/volume
// byte for byte, as a disk pool's files do (media/disk), so a volume
// copied off the target reads with `cairn volume` as it is.
//
// The target is an administrator's offsite server, reached over SSH
// (golang.org/x/crypto/ssh) with github.com/pkg/sftp:
//
//   - Its host key is checked against a known_hosts file and never
//     accepted blindly: an unknown or changed key is a *HostKeyError with
//     the fingerprint seen and the ones expected.
//   - A new volume is written under a temporary name (its label, synced)
//     and renamed to NAME.cvol once complete, with the plain SFTP rename,
//     which never replaces a file: a volume file on the target always
//     starts with a whole label, and no volume is ever overwritten.
//   - Sessions append in place. What counts on a volume is what the
//     catalog records as its committed end: bytes past it are a session
//     that never committed, cut off when the volume is next opened for
//     appending (or by the rollback of the failed session), as on disk.
//     So an upload cut mid-way is never recorded half.
//   - A dropped connection is redialled with backoff, and the write,
//     sync or read that it broke is redone at the same offset (SFTP
//     writes and reads are positional, so redoing one is harmless). A
//     target that stays away past the retries is an *UnreachableError.
//
// A volume has one writer at a time because the catalog grants it to one
// session at a time; SFTP has no lock to enforce that on the target.
package sftpvol

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/cairnbackup/cairn/media/volume"
)

// Ext is the file name extension of volumes, as on disk.
const Ext = ".cvol"

// tmpInfix marks a volume file being created: NAME.cvol.tmp-RANDOM.
const tmpInfix = ".tmp-"

// Config is one SFTP target.
type Config struct {
	// Pool names the pool in errors.
	Pool string
	Host string
	Port int // 0 is 22
	User string
	// KeyFile is the private key to log in with (OpenSSH or PEM format,
	// unencrypted). Empty uses the ssh-agent at $SSH_AUTH_SOCK.
	KeyFile string
	// KnownHosts is the known_hosts file the target's host key must be
	// in.
	KnownHosts string
	// Dir is the remote directory of the volume files (absolute).
	Dir string
	// MaxVolumeBytes caps each volume file; 0 means no cap.
	MaxVolumeBytes int64
	// AppendOnly says the target lets this user create files but not
	// delete, rename or rewrite them (DESIGN.md, "Append-only SFTP
	// targets"): each volume is then written once, under its final name,
	// and never cut back or deleted; the target's owner deletes expired
	// volumes.
	AppendOnly bool
	// BytesPerSecond caps the pool's reads and writes together, over all
	// its streams; 0 means no limit.
	BytesPerSecond int64
	// Streams is how many connections the pool opens to the target, a
	// long write or read going out in ranges over all of them at once
	// (0: 1). More than one helps where one TCP stream cannot fill the
	// link (a long round trip); an append-only target takes one.
	Streams int
	// Retry is how a dropped or refused connection is tried again.
	Retry Retry
}

func (c Config) streams() int { return max(1, c.Streams) }

// Retry says how often and how long a pool tries to reach its target
// again.
type Retry struct {
	// Attempts is how many times a connection is tried in all before the
	// operation fails (0: 6).
	Attempts int
	// Backoff is the wait after the first failure, doubled after each
	// one (0: 1s), up to MaxBackoff (0: 30s).
	Backoff, MaxBackoff time.Duration
	// DialTimeout bounds one TCP connection and SSH handshake (0: 15s).
	DialTimeout time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = 6
	}
	if r.Backoff <= 0 {
		r.Backoff = time.Second
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = 30 * time.Second
	}
	if r.DialTimeout <= 0 {
		r.DialTimeout = 15 * time.Second
	}
	return r
}

// Addr is the target's host:port.
func (c Config) Addr() string {
	port := c.Port
	if port == 0 {
		port = 22
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(port))
}

// Validate names the first field that is wrong and how to fix it.
func (c Config) Validate() error {
	switch {
	case c.Pool == "":
		return errors.New("sftp pool: no name")
	case c.Host == "":
		return fmt.Errorf("sftp pool %q: no host", c.Pool)
	case c.Port < 0 || c.Port > 65535:
		return fmt.Errorf("sftp pool %q: port %d is not a TCP port", c.Pool, c.Port)
	case c.User == "":
		return fmt.Errorf("sftp pool %q: no user", c.Pool)
	case c.KnownHosts == "":
		return fmt.Errorf("sftp pool %q: no known_hosts file: the target's host key is never accepted unchecked; add it with ssh-keyscan -p PORT HOST >> FILE after checking its fingerprint", c.Pool)
	case c.Dir == "" || !path.IsAbs(c.Dir):
		return fmt.Errorf("sftp pool %q: remote directory %q must be an absolute path", c.Pool, c.Dir)
	case c.MaxVolumeBytes < 0:
		return fmt.Errorf("sftp pool %q: max volume bytes %d is negative; use 0 for no limit", c.Pool, c.MaxVolumeBytes)
	case c.BytesPerSecond < 0:
		return fmt.Errorf("sftp pool %q: bandwidth limit %d bytes/s is negative; use 0 for no limit", c.Pool, c.BytesPerSecond)
	case c.BytesPerSecond > 0 && c.BytesPerSecond < minBytesPerSecond:
		return fmt.Errorf("sftp pool %q: bandwidth limit %d bytes/s is below the least of %d: raise it, or use 0 for no limit", c.Pool, c.BytesPerSecond, minBytesPerSecond)
	case c.Streams < 0 || c.Streams > maxStreams:
		return fmt.Errorf("sftp pool %q: %d streams: give 1 to %d (0 is 1)", c.Pool, c.Streams, maxStreams)
	case c.AppendOnly && c.Streams > 1:
		return fmt.Errorf("sftp pool %q: an append-only target lets a volume be written only through the connection that created it: set streams to 1", c.Pool)
	}
	return nil
}

// Errors a caller acts on.
var (
	// ErrWrongVolume: the file holds another volume than the catalog expects.
	ErrWrongVolume = errors.New("volume file holds another volume")
	// ErrMissingData: the file is shorter than what the catalog records
	// as committed: data is lost on the target.
	ErrMissingData = errors.New("volume file is shorter than its committed data")
	// ErrSealed: an append-only target takes nothing more on the volume
	// (it was written before, or the connection writing it dropped).
	ErrSealed = errors.New("volume is sealed on an append-only target")
	// ErrOwnerReclaims: the volume is on an append-only target, where its
	// file is the target owner's to delete.
	ErrOwnerReclaims = errors.New("the target is append-only: its owner deletes expired volumes")
)

// maxStreams bounds Config.Streams: each is a connection and an sshd
// process on the target.
const maxStreams = 16

// HostKeyError is a host key the known_hosts file does not vouch for.
// Its message, as AuthError's and UnreachableError's, leaves the pool to
// the operation that wraps it ("sftp pool P: open volume V: ...").
type HostKeyError struct {
	Pool, Addr, KnownHosts string
	// Seen is the SHA256 fingerprint of the key the target showed.
	Seen string
	// Expected are the fingerprints known_hosts names for the target;
	// none when the target is unknown there.
	Expected []string
	Err      error
}

func (e *HostKeyError) Error() string {
	if len(e.Expected) == 0 {
		return fmt.Sprintf("host %s is not in %s (its key is %s): check that fingerprint with the target's administrator, then add the key (ssh-keyscan -p PORT HOST >> %s)", e.Addr, e.KnownHosts, e.Seen, e.KnownHosts)
	}
	return fmt.Sprintf("host key of %s changed: it is %s, %s expects %s; refusing to connect: someone may be in between, or the target was reinstalled (then check the new key with its administrator and replace its line)", e.Addr, e.Seen, e.KnownHosts, strings.Join(e.Expected, " or "))
}

func (e *HostKeyError) Unwrap() error { return e.Err }

// AuthError is a login the target refused, or one the node could not try:
// no key file configured and no ssh-agent to ask (NoAgent).
type AuthError struct {
	Pool, Addr, User, KeyFile string
	NoAgent                   bool
	Err                       error
}

func (e *AuthError) Error() string {
	if e.NoAgent {
		return fmt.Sprintf("no key to log in to %s as user %s: set key_file in the pool's configuration, or run the storage node with an ssh-agent holding the key ($SSH_AUTH_SOCK): %v", e.Addr, e.User, e.Err)
	}
	key := "the ssh-agent's keys"
	if e.KeyFile != "" {
		key = "key " + e.KeyFile
	}
	return fmt.Sprintf("%s refused user %s with %s: add its public key to the user's authorized_keys on the target: %v", e.Addr, e.User, key, e.Err)
}

func (e *AuthError) Unwrap() error { return e.Err }

// UnreachableError is a target that stayed away through every retry.
type UnreachableError struct {
	Pool, Addr string
	Attempts   int
	For        time.Duration
	Err        error // the last failure
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("target %s unreachable after %d attempts over %s: %v", e.Addr, e.Attempts, e.For.Round(time.Millisecond), e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// knownHostsError is a known_hosts file that cannot be read: the target
// is not tried at all.
type knownHostsError struct {
	path string
	err  error
}

func (e *knownHostsError) Error() string {
	return fmt.Sprintf("read known_hosts file %s (the target's host key is checked against it): %v", e.path, e.err)
}

func (e *knownHostsError) Unwrap() error { return e.err }

// Pool is one SFTP target's volume directory. Its connections (one per
// stream, Config.Streams) are shared by every Appender and reader of the
// pool, and each is redialled when it drops.
type Pool struct {
	cfg   Config
	retry Retry
	links []*link
	limit *limiter // nil: no bandwidth limit
	stats stats

	// fresh are the handles of volumes Create made on an append-only
	// target, which OpenAppend takes: there a volume file can be written
	// only through the handle that created it.
	freshMu sync.Mutex
	fresh   map[string]*file

	// dials counts connections made, for tests of a cut connection.
	dials atomic.Int64

	// done is closed by Close, which a redial waiting out its backoff
	// (holding a link's mu) heeds.
	done      chan struct{}
	closeOnce sync.Once
}

// link is one of the pool's connections to the target.
type link struct {
	mu   sync.Mutex
	conn *conn // nil until the first use, or after a drop
}

// ErrClosed is an operation on a pool after Close.
var ErrClosed = errors.New("sftp pool closed")

// conn is one SSH connection and its SFTP session.
type conn struct {
	ssh  *ssh.Client
	sftp *sftp.Client
	dead chan struct{} // closed when the SSH connection ends
}

// New returns the pool of cfg; it connects on first use.
func New(cfg Config) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Pool{cfg: cfg, retry: cfg.Retry.withDefaults(), done: make(chan struct{}), fresh: map[string]*file{}}
	for range cfg.streams() {
		p.links = append(p.links, &link{})
	}
	if cfg.BytesPerSecond > 0 {
		p.limit = newLimiter(cfg.BytesPerSecond)
	}
	return p, nil
}

// Config is the pool's configuration.
func (p *Pool) Config() Config { return p.cfg }

// Close drops the connections; the pool dials no more.
func (p *Pool) Close() error {
	p.closeOnce.Do(func() { close(p.done) })
	var err error
	for _, l := range p.links {
		l.mu.Lock()
		if c := l.conn; c != nil {
			l.conn = nil
			c.sftp.Close()
			err = errors.Join(err, c.ssh.Close())
		}
		l.mu.Unlock()
	}
	return err
}

func (p *Pool) closed() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// client returns link l's live connection, dialling one (up to attempts
// times, with backoff) when there is none or the one there is has dropped.
func (p *Pool) client(ctx context.Context, l *link, attempts int) (*conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.closed() {
		return nil, fmt.Errorf("sftp pool %q: %w", p.cfg.Pool, ErrClosed)
	}
	if c := l.conn; c != nil {
		select {
		case <-c.dead:
			c.sftp.Close()
			l.conn = nil
		default:
			return c, nil
		}
	}
	start := time.Now()
	wait := p.retry.Backoff
	var last error
	for attempt := 1; ; attempt++ {
		c, err := p.dial(ctx)
		if err == nil {
			p.dials.Add(1)
			l.conn = c
			p.stats.reached()
			return c, nil
		}
		p.stats.dialFailed(err)
		var hk *HostKeyError
		var ae *AuthError
		var ke *knownHostsError
		if errors.As(err, &hk) || errors.As(err, &ae) || errors.As(err, &ke) || ctx.Err() != nil {
			return nil, err // trying again changes nothing
		}
		last = err
		if attempt >= attempts {
			err := &UnreachableError{Pool: p.cfg.Pool, Addr: p.cfg.Addr(), Attempts: attempt, For: time.Since(start), Err: last}
			p.stats.unreachable(err)
			return nil, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("sftp pool %q: reaching %s: %w (last failure: %v)", p.cfg.Pool, p.cfg.Addr(), ctx.Err(), last)
		case <-p.done:
			t.Stop()
			return nil, fmt.Errorf("sftp pool %q: %w while reaching %s (last failure: %v)", p.cfg.Pool, ErrClosed, p.cfg.Addr(), last)
		case <-t.C:
		}
		wait = min(2*wait, p.retry.MaxBackoff)
	}
}

// drop forgets link l's connection c after an operation on it failed for
// want of the transport, so the next client call dials again; a newer
// connection is kept.
func (p *Pool) drop(l *link, c *conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == c {
		l.conn = nil
		c.sftp.Close()
		c.ssh.Close()
	}
}

func (p *Pool) dial(ctx context.Context) (*conn, error) {
	hostKeys, err := knownhosts.New(p.cfg.KnownHosts)
	if err != nil {
		return nil, &knownHostsError{p.cfg.KnownHosts, err}
	}
	auth, done, err := p.auth()
	if err != nil {
		return nil, err
	}
	// The agent signs during the handshake only: its connection is not
	// kept for the life of the SSH one (a redial would open one more).
	defer done()
	cc := &ssh.ClientConfig{
		User: p.cfg.User,
		Auth: []ssh.AuthMethod{auth},
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			err := hostKeys(host, remote, key)
			var ke *knownhosts.KeyError
			if errors.As(err, &ke) {
				e := &HostKeyError{Pool: p.cfg.Pool, Addr: p.cfg.Addr(), KnownHosts: p.cfg.KnownHosts, Seen: ssh.FingerprintSHA256(key), Err: err}
				for _, k := range ke.Want {
					e.Expected = append(e.Expected, ssh.FingerprintSHA256(k.Key))
				}
				return e
			}
			return err
		},
		Timeout: p.retry.DialTimeout,
	}
	d := net.Dialer{Timeout: p.retry.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", p.cfg.Addr())
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(p.retry.DialTimeout))
	sc, chans, reqs, err := ssh.NewClientConn(nc, p.cfg.Addr(), cc)
	if err != nil {
		nc.Close()
		var hk *HostKeyError
		if errors.As(err, &hk) {
			return nil, hk
		}
		if strings.Contains(err.Error(), "unable to authenticate") {
			return nil, &AuthError{Pool: p.cfg.Pool, Addr: p.cfg.Addr(), User: p.cfg.User, KeyFile: p.cfg.KeyFile, Err: err}
		}
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	client := ssh.NewClient(sc, chans, reqs)
	s, err := sftp.NewClient(client, sftp.UseConcurrentWrites(true))
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("start SFTP on %s (is the sftp subsystem enabled?): %w", p.cfg.Addr(), err)
	}
	c := &conn{ssh: client, sftp: s, dead: make(chan struct{})}
	go func() {
		_ = client.Wait()
		close(c.dead)
	}()
	return c, nil
}

// auth is how the pool's user proves itself: its key file, or the keys of
// the ssh-agent at $SSH_AUTH_SOCK. done releases what the method holds,
// once the handshake is over.
func (p *Pool) auth() (m ssh.AuthMethod, done func(), err error) {
	if p.cfg.KeyFile == "" {
		sock := os.Getenv("SSH_AUTH_SOCK")
		if sock == "" {
			return nil, nil, &AuthError{Pool: p.cfg.Pool, Addr: p.cfg.Addr(), User: p.cfg.User, NoAgent: true, Err: errors.New("no key file configured and no ssh-agent ($SSH_AUTH_SOCK is empty)")}
		}
		ac, err := net.Dial("unix", sock)
		if err != nil {
			return nil, nil, &AuthError{Pool: p.cfg.Pool, Addr: p.cfg.Addr(), User: p.cfg.User, NoAgent: true, Err: fmt.Errorf("reach the ssh-agent at %s: %w", sock, err)}
		}
		return ssh.PublicKeysCallback(agent.NewClient(ac).Signers), func() { ac.Close() }, nil
	}
	b, err := os.ReadFile(p.cfg.KeyFile)
	if err != nil {
		return nil, nil, &AuthError{Pool: p.cfg.Pool, Addr: p.cfg.Addr(), User: p.cfg.User, KeyFile: p.cfg.KeyFile, Err: err}
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, nil, &AuthError{Pool: p.cfg.Pool, Addr: p.cfg.Addr(), User: p.cfg.User, KeyFile: p.cfg.KeyFile, Err: fmt.Errorf("read the key: %w", err)}
	}
	return ssh.PublicKeys(signer), func() {}, nil
}

// transport says whether err is the connection failing rather than the
// target answering: the operation is then redone on a new connection.
func transport(c *conn, err error) bool {
	if err == nil {
		return false
	}
	select {
	case <-c.dead:
		return true
	default:
	}
	var ne net.Error
	if errors.Is(err, sftp.ErrSSHFxConnectionLost) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.As(err, &ne) {
		return true
	}
	var se *sftp.StatusError
	if errors.As(err, &se) || !errors.Is(err, io.EOF) {
		return false
	}
	// io.EOF is both a read's end of file and a request that could not be
	// sent ("failed to send packet: EOF") on a connection whose end the
	// watcher has not yet seen: only asking the target tells them apart.
	_, _, perr := c.ssh.SendRequest("keepalive@openssh.com", true, nil)
	return perr != nil
}

// do runs op on a live connection of link l, and again on a new one
// while the connection drops under it, within the pool's retries.
func (p *Pool) do(ctx context.Context, l *link, op func(c *conn) error) error {
	var err error
	for range p.retry.Attempts {
		var c *conn
		if c, err = p.client(ctx, l, p.retry.Attempts); err != nil {
			return err
		}
		if err = op(c); !transport(c, err) {
			return err
		}
		p.stats.failed(err)
		p.drop(l, c)
	}
	err = &UnreachableError{Pool: p.cfg.Pool, Addr: p.cfg.Addr(), Attempts: p.retry.Attempts, Err: err}
	p.stats.unreachable(err)
	return err
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$`)

// Path is the remote file of volume name.
func (p *Pool) Path(name string) (string, error) {
	if !validName.MatchString(name) {
		return "", fmt.Errorf("sftp pool %q: %q is not a valid volume name (letters, digits, '.', '_' and '-', starting with a letter or digit)", p.cfg.Pool, name)
	}
	return path.Join(p.cfg.Dir, name+Ext), nil
}

// Create writes a new volume holding only its label: under a temporary
// name, synced, then renamed to the volume's name (a rename that never
// replaces a file), and the label read back. It leaves no file behind
// when it fails.
//
// On an append-only target, which refuses renames and a second opening
// for writing, the label is written under the volume's name itself, with
// an exclusive create, and the handle is kept for OpenAppend: the volume
// is written once, through it. A failure there leaves the file, which
// the target's owner removes (DESIGN.md, "Append-only SFTP targets").
func (p *Pool) Create(ctx context.Context, name string, label volume.Label) error {
	final, err := p.Path(name)
	if err != nil {
		return err
	}
	if err := volume.ValidBlockSize(label.BlockSize); err != nil {
		return fmt.Errorf("sftp pool %q: volume %s: %w", p.cfg.Pool, name, err)
	}
	label = volume.PagedLabel(label, p.cfg.Pool, name)
	data, err := volume.EncodeLabel(label)
	if err != nil {
		return fmt.Errorf("sftp pool %q: create volume %s: %w", p.cfg.Pool, name, err)
	}
	if p.cfg.AppendOnly {
		return p.createOnce(ctx, name, final, label, data)
	}
	var r [8]byte
	_, _ = rand.Read(r[:])
	tmp := final + tmpInfix + hex.EncodeToString(r[:])
	l := p.links[0]
	err = p.do(ctx, l, func(c *conn) error {
		f, err := c.sftp.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.WriteAt(data, 0); err != nil {
			return err
		}
		return syncFile(f)
	})
	if err == nil {
		err = p.do(ctx, l, func(c *conn) error {
			err := c.sftp.Rename(tmp, final)
			if err != nil {
				// A rename redone after a drop may find it done already.
				if _, serr := c.sftp.Stat(tmp); errors.Is(serr, os.ErrNotExist) {
					if _, ferr := c.sftp.Stat(final); ferr == nil {
						return nil
					}
				}
			}
			return err
		})
		if err != nil {
			err = fmt.Errorf("rename it to %s (a file of that name exists, or the target refused): %w", final, err)
		}
	}
	if err != nil {
		_ = p.do(ctx, l, func(c *conn) error {
			if err := c.sftp.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			return nil
		})
		return fmt.Errorf("sftp pool %q: create volume %s: %w", p.cfg.Pool, name, err)
	}
	rd, err := p.OpenRead(ctx, name)
	if err != nil {
		return err
	}
	defer rd.Close()
	return p.checkLabel(rd, final, label)
}

func (p *Pool) checkLabel(r io.ReaderAt, file string, label volume.Label) error {
	got, err := volume.ReadLabel(r)
	if err != nil {
		return fmt.Errorf("sftp pool %q: read back the label of %s: %w", p.cfg.Pool, file, err)
	}
	if got.VolumeID != label.VolumeID || got.Name != label.Name || got.BlockSize != label.BlockSize {
		return fmt.Errorf("sftp pool %q: the label read back from %s differs from the one written: the target is not keeping what is written", p.cfg.Pool, file)
	}
	return nil
}

// createOnce is Create on an append-only target.
func (p *Pool) createOnce(ctx context.Context, name, final string, label volume.Label, data []byte) error {
	fl := &file{p: p, l: p.links[0], path: final, flag: os.O_RDWR, once: true}
	err := p.do(ctx, fl.l, func(c *conn) error {
		if fl.c == c {
			return nil
		}
		if fl.c != nil {
			// The connection dropped after the create went through: the
			// file is there and may no more be written.
			return fmt.Errorf("the connection dropped while creating %s: %w", final, ErrSealed)
		}
		f, err := c.sftp.OpenFile(final, os.O_RDWR|os.O_CREATE|os.O_EXCL)
		if err != nil {
			return err
		}
		fl.c, fl.f = c, f
		return nil
	})
	if err == nil {
		err = fl.run(ctx, func(f *sftp.File) error {
			if _, err := f.WriteAt(data, 0); err != nil {
				return err
			}
			if err := syncFile(f); err != nil {
				return err
			}
			return p.checkLabel(f, final, label)
		})
	}
	if err != nil {
		_ = fl.close()
		return fmt.Errorf("sftp pool %q: create volume %s on the append-only target (a file of that name exists, or the target refused): %w", p.cfg.Pool, name, err)
	}
	p.freshMu.Lock()
	if old := p.fresh[name]; old != nil {
		_ = old.close()
	}
	p.fresh[name] = fl
	p.freshMu.Unlock()
	return nil
}

// syncFile asks the target to make f durable (fsync@openssh.com). A
// target without the extension cannot promise durability; its writes are
// taken as they are, which is all SFTP offers there.
func syncFile(f *sftp.File) error {
	err := f.Sync()
	var se *sftp.StatusError
	if errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxOpUnsupported {
		return nil
	}
	return err
}

// Usage reports the free and total bytes of the target's filesystem
// (statvfs@openssh.com); ok is false when the target does not tell. It
// tries once, with no retry: it is a figure for a report, and the next
// report asks again.
func (p *Pool) Usage(ctx context.Context) (free, total int64, ok bool) {
	l := p.links[0]
	c, err := p.client(ctx, l, 1)
	if err != nil {
		return 0, 0, false
	}
	st, err := c.sftp.StatVFS(p.cfg.Dir)
	if err != nil {
		if transport(c, err) {
			// A probe, not an operation: the outage, if it is one, counts
			// at the next connection attempt.
			p.drop(l, c)
		}
		return 0, 0, false
	}
	return int64(st.Bavail * st.Frsize), int64(st.Blocks * st.Frsize), true
}

// whyFailed tells a full target from other failures of a write of n
// bytes: OpenSSH answers a write that found no room with the generic
// "failure" (it has no status code for ENOSPC), so the target is asked
// how much room its filesystem has.
func (p *Pool) whyFailed(ctx context.Context, err error, n int) error {
	var se *sftp.StatusError
	if !errors.As(err, &se) || se.FxCode() != sftp.ErrSSHFxFailure {
		return err
	}
	free, total, ok := p.Usage(ctx)
	if !ok || free > int64(n)+fullSlack {
		return err
	}
	return &FullError{Pool: p.cfg.Pool, Addr: p.cfg.Addr(), Dir: p.cfg.Dir, Free: free, Total: total, Err: err}
}

// fullSlack is room a filesystem keeps from a write that fills it (its
// last partial blocks, metadata).
const fullSlack = 64 << 10

// FullError is a write the target refused for want of room.
type FullError struct {
	Pool, Addr, Dir string
	Free, Total     int64
	Err             error
}

func (e *FullError) Error() string {
	return fmt.Sprintf("the target's filesystem holding %s on %s is full (%d of %d bytes free): free space there, or give the pool a volume size limit", e.Dir, e.Addr, e.Free, e.Total)
}

func (e *FullError) Unwrap() error { return e.Err }

// Delete removes volume name, which the catalog says is volume id, once
// its backups have all expired. A file already gone is success. On an
// append-only target it removes nothing: it is ErrOwnerReclaims while
// the file is there, and success once the target's owner removed it.
func (p *Pool) Delete(ctx context.Context, name string, id uuid.UUID) error {
	pth, err := p.Path(name)
	if err != nil {
		return err
	}
	err = p.do(ctx, p.links[0], func(c *conn) error {
		f, err := c.sftp.Open(pth)
		if err != nil {
			return err
		}
		l, err := volume.ReadLabel(f)
		f.Close()
		if err == nil && l.VolumeID != id {
			return fmt.Errorf("volume file %s holds volume %s, the catalog's is %s; it is kept: %w", pth, l.VolumeID, id, ErrWrongVolume)
		}
		if p.cfg.AppendOnly {
			return fmt.Errorf("volume file %s: %w", pth, ErrOwnerReclaims)
		}
		return c.sftp.Remove(pth)
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sftp pool %q: delete volume %s: %w", p.cfg.Pool, name, err)
	}
	return nil
}

// file is a remote file reopened on its link's current connection when
// the one it was opened on dropped.
type file struct {
	p    *Pool
	l    *link
	path string
	flag int
	// once: the file was created on an append-only target, where it may
	// not be opened for writing again.
	once bool

	mu sync.Mutex // guards c and f against the reads of a ReaderAt at once
	c  *conn
	f  *sftp.File
}

func (p *Pool) open(ctx context.Context, l *link, pth string, flag int) (*file, error) {
	fl := &file{p: p, l: l, path: pth, flag: flag}
	if err := p.do(ctx, l, func(c *conn) error { return fl.reopen(c) }); err != nil {
		return nil, err
	}
	return fl, nil
}

func (fl *file) reopen(c *conn) error {
	if fl.c == c {
		return nil
	}
	if fl.once {
		return fmt.Errorf("the connection dropped while writing %s, which an append-only target lets no one open for writing again: %w", fl.path, ErrSealed)
	}
	f, err := c.sftp.OpenFile(fl.path, fl.flag)
	if err != nil {
		return err
	}
	if fl.f != nil {
		_ = fl.f.Close()
	}
	fl.c, fl.f = c, f
	return nil
}

// run does op on the file, reopening it on a new connection while the
// connection drops under it.
func (fl *file) run(ctx context.Context, op func(f *sftp.File) error) error {
	return fl.p.do(ctx, fl.l, func(c *conn) error {
		fl.mu.Lock()
		err := fl.reopen(c)
		f := fl.f
		fl.mu.Unlock()
		if err != nil {
			return err
		}
		return op(f)
	})
}

func (fl *file) close() error {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.f == nil {
		return nil
	}
	err := fl.f.Close()
	c := fl.c
	fl.f, fl.c = nil, nil
	if err != nil && transport(c, err) {
		return nil // the handle went with the connection
	}
	return err
}

// striped is one remote file opened on each of the pool's links, so a
// long read or write is cut into as many ranges, each sent on its own
// connection at once: one TCP stream with SSH's window may not fill a
// long, fat link. The handle of link 0 is opened first; the others when a
// transfer first needs them.
type striped struct {
	p     *Pool
	ctx   context.Context
	mu    sync.Mutex // guards files: a ReaderAt is read from at once
	files []*file
}

// minStripe is the least a range of a striped transfer carries: below
// it, one connection's round trips cost less than waiting for several.
const minStripe = 64 << 10

func (p *Pool) openStriped(ctx context.Context, first *file) *striped {
	st := &striped{p: p, ctx: ctx, files: make([]*file, len(p.links))}
	st.files[0] = first
	return st
}

// each runs op on len(b) bytes at off, cut into ranges on several links
// when b is long enough, after the bandwidth limit lets them through; n
// is what all ranges did, the first error is returned.
func (st *striped) each(b []byte, off int64, op func(f *sftp.File, b []byte, off int64) (int, error)) (int, error) {
	ways := min(len(st.files), len(b)/minStripe)
	if ways <= 1 {
		if err := st.p.limit.wait(st.ctx, len(b)); err != nil {
			return 0, err
		}
		var n int
		err := st.files[0].run(st.ctx, func(f *sftp.File) error {
			var err error
			n, err = op(f, b, off)
			return err
		})
		return n, err
	}
	size := (len(b) + ways - 1) / ways
	ns := make([]int, ways)
	errs := make([]error, ways)
	var wg sync.WaitGroup
	for i := range ways {
		lo, hi := i*size, min(len(b), (i+1)*size)
		wg.Go(func() {
			if errs[i] = st.p.limit.wait(st.ctx, hi-lo); errs[i] != nil {
				return
			}
			st.mu.Lock()
			fl := st.files[i]
			if fl == nil {
				first := st.files[0]
				fl = &file{p: st.p, l: st.p.links[i], path: first.path, flag: first.flag}
				st.files[i] = fl
			}
			st.mu.Unlock()
			errs[i] = fl.run(st.ctx, func(f *sftp.File) error {
				var err error
				ns[i], err = op(f, b[lo:hi], off+int64(lo))
				return err
			})
		})
	}
	wg.Wait()
	n := 0
	for i := range ways {
		n += ns[i]
		if errs[i] != nil {
			return n, errs[i]
		}
		if lo, hi := i*size, min(len(b), (i+1)*size); ns[i] < hi-lo {
			return n, io.ErrUnexpectedEOF
		}
	}
	return n, nil
}

// sync makes every handle's writes durable.
func (st *striped) sync() error {
	for _, fl := range st.files {
		if fl != nil {
			if err := fl.run(st.ctx, syncFile); err != nil {
				return err
			}
		}
	}
	return nil
}

func (st *striped) close() error {
	var err error
	for _, fl := range st.files {
		if fl != nil {
			err = errors.Join(err, fl.close())
		}
	}
	return err
}

// Reader reads a remote volume file with range reads.
type Reader struct {
	st   *striped
	size int64
}

// OpenRead opens volume name for reading.
func (p *Pool) OpenRead(ctx context.Context, name string) (*Reader, error) {
	pth, err := p.Path(name)
	if err != nil {
		return nil, err
	}
	fl, err := p.open(ctx, p.links[0], pth, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("sftp pool %q: open volume %s: %w", p.cfg.Pool, name, err)
	}
	r := &Reader{st: p.openStriped(ctx, fl)}
	if err := fl.run(ctx, func(f *sftp.File) error {
		st, err := f.Stat()
		if err == nil {
			r.size = st.Size()
		}
		return err
	}); err != nil {
		fl.close()
		return nil, fmt.Errorf("sftp pool %q: open volume %s: %w", p.cfg.Pool, name, err)
	}
	return r, nil
}

// Size is the file's size when it was opened.
func (r *Reader) Size() int64 { return r.size }

// ReadAt reads len(b) bytes at off, redone on a new connection when the
// connection drops.
func (r *Reader) ReadAt(b []byte, off int64) (int, error) {
	start := time.Now()
	n, err := r.st.each(b, off, func(f *sftp.File, b []byte, off int64) (int, error) {
		n, err := f.ReadAt(b, off)
		if err == io.EOF && n == len(b) {
			err = nil
		}
		return n, err
	})
	r.st.p.stats.read(n, time.Since(start))
	if err == nil && n < len(b) {
		err = io.EOF
	}
	return n, err
}

func (r *Reader) Close() error { return r.st.close() }

// Appender is a remote volume file open for appending one session part
// after another. It implements volume.Appender.
type Appender struct {
	pool  *Pool
	name  string
	st    *striped
	ctx   context.Context
	label volume.Label
	off   int64
	// TornBytes is what OpenAppend cut off past the committed end: a
	// session that never committed. The caller logs it.
	TornBytes int64
}

var (
	_ volume.Appender    = (*Appender)(nil)
	_ volume.PartAligner = (*Appender)(nil)
)

// OpenAppend opens volume name, which the catalog says is volume id with
// committedEnd bytes committed, for appending at committedEnd. Bytes past
// committedEnd are cut off and counted in TornBytes. ctx bounds every
// operation of the Appender (its retries included).
//
// On an append-only target only a volume Create just made can be opened,
// once: any other is ErrSealed.
func (p *Pool) OpenAppend(ctx context.Context, name string, id uuid.UUID, committedEnd int64) (*Appender, error) {
	pth, err := p.Path(name)
	if err != nil {
		return nil, err
	}
	var fl *file
	if p.cfg.AppendOnly {
		p.freshMu.Lock()
		fl = p.fresh[name]
		delete(p.fresh, name)
		p.freshMu.Unlock()
		if fl == nil {
			return nil, fmt.Errorf("sftp pool %q: volume %s was written before; on an append-only target it takes no more: %w", p.cfg.Pool, name, ErrSealed)
		}
	} else if fl, err = p.open(ctx, p.links[0], pth, os.O_RDWR); err != nil {
		return nil, fmt.Errorf("sftp pool %q: open volume %s for appending: %w", p.cfg.Pool, name, err)
	}
	a, err := p.openAppend(ctx, fl, name, id, committedEnd)
	if err != nil {
		fl.close()
		return nil, err
	}
	return a, nil
}

func (p *Pool) openAppend(ctx context.Context, fl *file, name string, id uuid.UUID, committedEnd int64) (*Appender, error) {
	var l volume.Label
	var size int64
	err := fl.run(ctx, func(f *sftp.File) error {
		var err error
		if l, err = volume.ReadLabel(f); err != nil {
			return err
		}
		st, err := f.Stat()
		if err == nil {
			size = st.Size()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sftp pool %q: volume %s: %w", p.cfg.Pool, name, err)
	}
	if l.VolumeID != id {
		return nil, fmt.Errorf("sftp pool %q: volume file %s holds volume %s, catalog expects %s: %w", p.cfg.Pool, fl.path, l.VolumeID, id, ErrWrongVolume)
	}
	if pa := int64(l.PartAlignment()); committedEnd < int64(l.BlockSize) || committedEnd%pa != 0 {
		return nil, fmt.Errorf("sftp pool %q: volume %s: committed end %d is not a multiple of the part alignment %d past the label", p.cfg.Pool, name, committedEnd, pa)
	}
	if size < committedEnd {
		return nil, fmt.Errorf("sftp pool %q: volume file %s on %s is %d bytes, but the catalog has %d bytes committed on it: mark the volume damaged and check the target: %w", p.cfg.Pool, fl.path, p.cfg.Addr(), size, committedEnd, ErrMissingData)
	}
	a := &Appender{pool: p, name: name, st: p.openStriped(ctx, fl), ctx: ctx, label: l, off: committedEnd}
	if torn := size - committedEnd; torn > 0 {
		if err := a.truncate(committedEnd); err != nil {
			return nil, err
		}
		a.TornBytes = torn
	}
	return a, nil
}

func (a *Appender) VolumeID() uuid.UUID { return a.label.VolumeID }
func (a *Appender) BlockSize() int      { return a.label.BlockSize }
func (a *Appender) Label() volume.Label { return a.label }
func (a *Appender) Name() string        { return a.name }
func (a *Appender) Offset() int64       { return a.off }

// PartAlign makes the session writer start parts on the volume's part
// alignment (volume.PartAligner): a page in format 2.
func (a *Appender) PartAlign() int { return a.label.PartAlignment() }
func (a *Appender) Remaining() int64 {
	if a.pool.cfg.MaxVolumeBytes == 0 {
		return math.MaxInt64 - a.off
	}
	return max(0, a.pool.cfg.MaxVolumeBytes-a.off)
}

// Write writes p at Offset; a write the connection broke is redone whole
// at the same offset on a new connection. With several streams, a long
// p goes out in ranges over them at once.
func (a *Appender) Write(p []byte) (int, error) {
	off := a.off
	start := time.Now()
	n, err := a.st.each(p, off, func(f *sftp.File, b []byte, off int64) (int, error) {
		n, err := f.WriteAt(b, off)
		if err == nil && n != len(b) {
			err = io.ErrShortWrite
		}
		return n, err
	})
	a.pool.stats.wrote(n, time.Since(start))
	if err != nil {
		a.pool.stats.failed(err)
		err = a.pool.whyFailed(a.ctx, err, len(p))
		return 0, fmt.Errorf("sftp pool %q: write volume %s at offset %d: %w", a.pool.cfg.Pool, a.name, off, err)
	}
	a.off += int64(len(p))
	return len(p), nil
}

// Sync makes what was written durable on the target. After a redial it
// syncs the file through the new handle, which covers the writes the old
// one made: they reached the target's file before they were answered.
func (a *Appender) Sync() error {
	if err := a.st.sync(); err != nil {
		a.pool.stats.failed(err)
		err = a.pool.whyFailed(a.ctx, err, 0)
		return fmt.Errorf("sftp pool %q: sync volume %s: %w", a.pool.cfg.Pool, a.name, err)
	}
	return nil
}

// Truncate cuts the volume back to to (at or past the label, at most
// Offset), to roll back a session that failed, and syncs. An append-only
// target cuts nothing: ErrSealed.
func (a *Appender) Truncate(to int64) error {
	if to < int64(a.label.BlockSize) || to > a.off {
		return fmt.Errorf("sftp pool %q: volume %s: cannot truncate to %d: it must lie between the label end %d and the write offset %d", a.pool.cfg.Pool, a.name, to, a.label.BlockSize, a.off)
	}
	return a.truncate(to)
}

func (a *Appender) truncate(to int64) error {
	if a.pool.cfg.AppendOnly {
		return fmt.Errorf("sftp pool %q: volume %s: an append-only target cuts nothing back: %w", a.pool.cfg.Pool, a.name, ErrSealed)
	}
	err := a.st.files[0].run(a.ctx, func(f *sftp.File) error {
		if err := f.Truncate(to); err != nil {
			return err
		}
		return syncFile(f)
	})
	if err != nil {
		return fmt.Errorf("sftp pool %q: truncate volume %s to %d: %w", a.pool.cfg.Pool, a.name, to, err)
	}
	a.off = to
	return nil
}

// Close releases the remote file. It does not sync: the session writer
// syncs every part it closes.
func (a *Appender) Close() error {
	if err := a.st.close(); err != nil {
		return fmt.Errorf("sftp pool %q: close volume %s: %w", a.pool.cfg.Pool, a.name, err)
	}
	return nil
}
