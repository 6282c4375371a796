// Package natsd runs the NATS server embedded in one process, for `cairn dev`,
// `cairn demo` and tests. A real deployment points every role at an external
// NATS cluster instead; nothing else in Cairn depends on the server being
// embedded.
package natsd

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config of an embedded NATS server.
type Config struct {
	// Host to listen on; 127.0.0.1 unless set.
	Host string
	// Port to listen on; 0 picks a free port.
	Port int
	// MaxPayload bounds one message; Cairn's own messages stay below 1 MiB,
	// the NATS default an external cluster most likely has.
	MaxPayload int32
}

// Server is a running embedded NATS server.
type Server struct {
	srv *server.Server
}

// Start starts a server and waits until it accepts connections.
func Start(cfg Config, logger *slog.Logger) (*Server, error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	port := cfg.Port
	if port == 0 {
		port = -1 // nats-server's "any free port"
	}
	opts := &server.Options{
		ServerName: "cairn-embedded",
		Host:       cfg.Host,
		Port:       port,
		NoSigs:     true,
		MaxPayload: cfg.MaxPayload,
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
			net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)), cfg.Port)
	}
	return &Server{srv: srv}, nil
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
