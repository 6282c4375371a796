// Package natsd runs the NATS server embedded in one process, for `cairn dev`,
// `cairn demo` and tests. A real deployment points every role at an external
// NATS cluster instead; nothing else in Cairn depends on the server being
// embedded.
//
// The embedded server serves one machine: it listens on 127.0.0.1 only, and
// it knows each role by its nkey with the same per-role permissions as a
// deployment's configuration (natsauth), so that another local user cannot
// connect and act as an admin, and one role cannot act as another.
package natsd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// host is the one address the embedded server listens on.
const host = "127.0.0.1"

// Config of an embedded NATS server.
type Config struct {
	// Port to listen on (on 127.0.0.1); 0 picks a free port.
	Port int
	// MaxPayload bounds one message; Cairn's own messages stay below 1 MiB,
	// the NATS default an external cluster most likely has.
	MaxPayload int32
	// Users are the nkey users the server lets in, each with its role's
	// permissions (natsauth.User.Embedded). A connection with no
	// credential, or one not listed, is refused.
	Users []User
	// Anonymous lets connections in with no credential and no
	// permissions, in place of Users: only for a package's own tests,
	// where nothing but the test process runs. Start refuses a Config
	// with neither, so that no caller forgets authentication by omission.
	Anonymous bool
}

// User is one nkey user of the embedded server and what it may publish and
// subscribe to.
type User struct {
	// NKey is the user's public nkey (U...).
	NKey string
	// Name says who it is in errors ("admin admin").
	Name               string
	Publish, Subscribe []string
	// AllowResponses lets it answer the requests it receives, as
	// allow_responses: true in a configuration file.
	AllowResponses bool
}

// Server is a running embedded NATS server.
type Server struct {
	srv *server.Server
}

// Start starts a server and waits until it accepts connections.
func Start(cfg Config, logger *slog.Logger) (*Server, error) {
	switch {
	case len(cfg.Users) == 0 && !cfg.Anonymous:
		return nil, errors.New("embedded NATS server: no users: give every role an nkey user (natsauth.LoadOrCreateUser)")
	case len(cfg.Users) > 0 && cfg.Anonymous:
		return nil, errors.New("embedded NATS server: users and anonymous access both asked for")
	}
	port := cfg.Port
	if port == 0 {
		port = -1 // nats-server's "any free port"
	} else if err := portFree(host, port); err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName: "cairn-embedded",
		Host:       host,
		Port:       port,
		NoSigs:     true,
		MaxPayload: cfg.MaxPayload,
	}
	for _, u := range cfg.Users {
		nu, err := nkeyUser(u)
		if err != nil {
			return nil, err
		}
		opts.Nkeys = append(opts.Nkeys, nu)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	srv.SetLoggerV2(&slogBridge{l: logger.With("component", "nats")}, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS server on %s: not ready after 10s (is the port %d in use?)",
			net.JoinHostPort(host, strconv.Itoa(cfg.Port)), cfg.Port)
	}
	return &Server{srv: srv}, nil
}

// ErrPortInUse is returned by Start when another process listens on the
// port it was given.
var ErrPortInUse = errors.New("the port is in use")

// portFree tells at once whether the port can be listened on: nats-server
// retries a busy port until its start times out, so a second 'cairn dev'
// on the same port said so only after ten seconds, and vaguely.
func portFree(host string, port int) error {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("embedded NATS server on %s: %w by another process (another cairn dev or server?): stop it, or choose another port", addr, ErrPortInUse)
		}
		return fmt.Errorf("embedded NATS server on %s: %w", addr, err)
	}
	return ln.Close()
}

// nkeyUser is u as nats-server's options hold it.
func nkeyUser(u User) (*server.NkeyUser, error) {
	if u.NKey == "" {
		return nil, fmt.Errorf("embedded NATS server: user %s has no public nkey", u.Name)
	}
	perms := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: u.Publish},
		Subscribe: &server.SubjectPermission{Allow: u.Subscribe},
	}
	if u.AllowResponses {
		// As allow_responses: true in a configuration file.
		perms.Response = &server.ResponsePermission{MaxMsgs: server.DEFAULT_ALLOW_RESPONSE_MAX_MSGS, Expires: server.DEFAULT_ALLOW_RESPONSE_EXPIRATION}
	}
	return &server.NkeyUser{Nkey: u.NKey, Permissions: perms}, nil
}

// URL is the client URL of the server.
func (s *Server) URL() string { return s.srv.ClientURL() }

// Shutdown stops the server and waits for it.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// slogBridge carries the NATS server's log into slog.
type slogBridge struct{ l *slog.Logger }

func (b *slogBridge) Noticef(format string, v ...any) { b.l.Debug(fmt.Sprintf(format, v...)) }
func (b *slogBridge) Warnf(format string, v ...any)   { b.l.Warn(fmt.Sprintf(format, v...)) }
func (b *slogBridge) Fatalf(format string, v ...any)  { b.l.Error(fmt.Sprintf(format, v...)) }
func (b *slogBridge) Errorf(format string, v ...any)  { b.l.Error(fmt.Sprintf(format, v...)) }
func (b *slogBridge) Debugf(format string, v ...any)  { b.l.Debug(fmt.Sprintf(format, v...)) }
func (b *slogBridge) Tracef(format string, v ...any)  {}
