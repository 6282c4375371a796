package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairnbackup/cairn/pki"
)

// tlsStream is a raft.StreamLayer of mutual TLS: each member presents its
// certificate and accepts only peers whose certificate the group's CA
// signed for both server and client authentication (what `cairn cert issue
// --client --server` makes). The second condition keeps out a certificate
// the same CA signed for an agent's or an admin's NATS connection.
type tlsStream struct {
	ln        net.Listener // plain TCP; the handshake runs per connection
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
	handshake time.Duration
	log       *slog.Logger

	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

var _ raft.StreamLayer = (*tlsStream)(nil)

func newTLSStream(bind string, advertise net.Addr, base *tls.Config, handshake time.Duration, log *slog.Logger) (*tlsStream, error) {
	if len(base.Certificates) == 0 || base.RootCAs == nil || base.ClientCAs == nil {
		return nil, errors.New("raft TLS config needs this server's certificate and the group's CA as RootCAs and ClientCAs (see pki.MutualTLS)")
	}
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the peer presented no certificate")
		}
		if err := pki.CheckUsage(cs.PeerCertificates[0], x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth); err != nil {
			return fmt.Errorf("not a backup server's certificate: %w (issue it with 'cairn cert issue --client --server')", err)
		}
		return nil
	}
	server := base.Clone()
	server.ClientAuth = tls.RequireAndVerifyClientCert
	server.MinVersion = tls.VersionTLS13
	server.VerifyConnection = verify
	client := base.Clone()
	client.MinVersion = tls.VersionTLS13
	client.VerifyConnection = verify

	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	s := &tlsStream{
		ln: ln, advertise: advertise, server: server, client: client, handshake: handshake, log: log,
		conns: make(chan net.Conn), done: make(chan struct{}),
	}
	go s.acceptLoop()
	return s, nil
}

// acceptLoop hands each connection to its own handshake, so one slow or
// hostile peer cannot hold up the members behind it.
func (s *tlsStream) acceptLoop() {
	delay := 5 * time.Millisecond
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("raft: accept failed", "err", err)
			time.Sleep(delay)
			delay = min(2*delay, time.Second)
			continue
		}
		delay = 5 * time.Millisecond
		go s.serverHandshake(c)
	}
}

func (s *tlsStream) serverHandshake(c net.Conn) {
	tc := tls.Server(c, s.server)
	_ = tc.SetDeadline(time.Now().Add(s.handshake))
	if err := tc.Handshake(); err != nil {
		s.log.Warn("raft: refused a connection at the TLS handshake", "remote", c.RemoteAddr().String(), "err", err,
			"hint", "a member's certificate must be signed by this group's CA (--tls-ca) and allow client and server authentication")
		c.Close()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	select {
	case s.conns <- tc:
	case <-s.done:
		tc.Close()
	}
}

// Accept returns the next connection that passed the handshake.
func (s *tlsStream) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

func (s *tlsStream) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		err = s.ln.Close()
	})
	return err
}

func (s *tlsStream) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.ln.Addr()
}

// Dial connects to a member and completes the handshake, checking that its
// certificate is the group CA's and names the host in address.
func (s *tlsStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(address))
	if err != nil {
		return nil, fmt.Errorf("raft address %q: %w", address, err)
	}
	cfg := s.client.Clone()
	cfg.ServerName = host
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: cfg}
	c, err := d.Dial("tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("raft TLS connection to %s: %w (its certificate must come from this group's CA and name %s)", address, err, host)
	}
	return c, nil
}
