package wire

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// NATSAuth is how a role's NATS connection checks the NATS server and
// proves who it is: TLS (the CA that signed the server's certificate, and a
// client certificate when the server verifies clients) and a credential (an
// nkey seed file, or a user and password). Every field is optional; none set
// is an anonymous connection, which a Cairn NATS server refuses: the
// embedded one of `cairn dev` gives every role an nkey, as a deployment's
// configuration from 'cairn cert nats-config' does.
//
// In a role's config file the fields are nats_ca, nats_cert, ... as the
// flags --nats-ca, --nats-cert, ... (the json names with the prefix nats_;
// package internal/configfile); the older names are those of the object
// "nats_auth": {"ca_file": ...}, still read.
type NATSAuth struct {
	// CAFile is the CA certificate that verifies the NATS server's
	// certificate; setting it turns TLS on.
	CAFile string `json:"ca,omitempty" config:"alias=ca_file"`
	// CertFile is this role's client certificate, for a NATS server whose
	// tls block says verify: true ('cairn cert issue --client').
	CertFile string `json:"cert,omitempty" config:"alias=cert_file"`
	// KeyFile is the key of CertFile.
	KeyFile string `json:"key,omitempty" config:"alias=key_file"`
	// NkeyFile is a file holding the user's nkey seed (SU...), as
	// 'cairn cert nats-config' writes one per role. The seed never leaves
	// the host: the server only checks a signature of its nonce.
	NkeyFile string `json:"nkey,omitempty" config:"alias=nkey_file"`
	// User is the NATS user of a password credential, the other kind.
	User string `json:"user,omitempty"`
	// Password is User's password. Set in a file only readable by the
	// role, or in the environment (CAIRN_NATS_PASSWORD): a flag shows in
	// ps.
	Password string `json:"password,omitempty"`
}

// Validate names a half-given or unreadable setting and the flag to fix.
func (a NATSAuth) Validate() error {
	var errs []error
	if (a.CertFile == "") != (a.KeyFile == "") {
		errs = append(errs, errors.New("a NATS client certificate needs both --nats-cert and --nats-key"))
	}
	if a.NkeyFile != "" && a.User != "" {
		errs = append(errs, errors.New("pass either --nats-nkey or --nats-user, not both"))
	}
	if a.Password != "" && a.User == "" {
		errs = append(errs, errors.New("--nats-password needs --nats-user"))
	}
	for _, f := range []struct{ flag, path string }{{"nats-ca", a.CAFile}, {"nats-cert", a.CertFile}, {"nats-key", a.KeyFile}, {"nats-nkey", a.NkeyFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				err = errors.New("no such file")
			}
			errs = append(errs, fmt.Errorf("--%s %s: %w", f.flag, f.path, err))
		}
	}
	return errors.Join(errs...)
}

// options turns a into nats.go options, and the TLS files they read
// (nil for a plain connection).
func (a NATSAuth) options() ([]nats.Option, *natsTLS, error) {
	if err := a.Validate(); err != nil {
		return nil, nil, err
	}
	var opts []nats.Option
	var t *natsTLS
	if a.CAFile != "" || a.CertFile != "" {
		var err error
		if t, err = newNATSTLS(a); err != nil {
			return nil, nil, err
		}
		opts = append(opts, t.option())
	}
	if a.NkeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(a.NkeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--nats-nkey %s is not an nkey user seed file (%w): use one 'cairn cert nats-config' wrote", a.NkeyFile, err)
		}
		opts = append(opts, o)
	}
	if a.User != "" {
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	}
	return opts, t, nil
}

// ConnectOptions are the options of a NATS connection with auth and the
// role's own inbox prefix (see Inbox): what Connect and the admin commands
// share.
func ConnectOptions(name string, auth NATSAuth, inbox string) ([]nats.Option, error) {
	opts, _, err := connectOptions(name, auth, inbox)
	return opts, err
}

func connectOptions(name string, auth NATSAuth, inbox string) ([]nats.Option, *natsTLS, error) {
	opts, t, err := auth.options()
	if err != nil {
		return nil, nil, Errorf(CodeInvalidArgument, "correct the NATS flag or config field named", "NATS connection: %w", err)
	}
	opts = append(opts, nats.Name(name), nats.Timeout(5*time.Second),
		nats.ErrorHandler(func(nc *nats.Conn, _ *nats.Subscription, err error) { noteDenial(nc, err) }),
		nats.ClosedHandler(forgetConn))
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	return opts, t, nil
}

// reconnectDelay is the pause before reconnect attempt n: quick at first,
// since a NATS restart takes a second, then every 10 s at most, with
// jitter from nats.go so that a thousand agents do not come back at once.
func reconnectDelay(attempts int) time.Duration {
	d := 250 * time.Millisecond
	for i := 1; i < attempts && d < 10*time.Second; i++ {
		d *= 2
	}
	return min(d, 10*time.Second)
}

// ConnectError explains a failed connection: an authorization failure or a
// TLS problem says so, rather than "cannot reach".
func ConnectError(url string, err error, reachHint string) *Error {
	switch {
	case errors.Is(err, nats.ErrNkeysNotSupported):
		// 'cairn cert nats-config' with client certificates maps each
		// role's user from its certificate and lists no nkey.
		return Errorf(CodeInvalidArgument, "this NATS server takes each role's user from its client certificate: start the role without --nats-nkey (CAIRN_NATS_NKEY, nkey_file)",
			"NATS at %s takes no nkey: %w", url, err)
	case IsAuthError(err):
		return Errorf(CodeInvalidArgument, "pass this role's credential: its certificate (--nats-cert, --nats-key) where the NATS server maps users from certificates, else --nats-nkey (or --nats-user and --nats-password), as 'cairn cert nats-config' or 'cairn dev' wrote it; "+
			"an admin command on the machine of 'cairn dev' finds its credential by itself when run as the user who started it",
			"NATS at %s refused this role's credentials (none given, or not ones it knows): %w", url, err)
	case errors.Is(err, nats.ErrSecureConnRequired):
		return Errorf(CodeInvalidArgument, "pass --nats-ca with the CA that signed the NATS server's certificate",
			"NATS at %s requires TLS: %w", url, err)
	case isTLSError(err):
		return Errorf(CodeInvalidArgument, "pass --nats-ca with the CA that signed the NATS server's certificate, and --nats-cert/--nats-key when it verifies clients",
			"TLS with NATS at %s failed: %w", url, err)
	}
	return Errorf(CodeUnavailable, reachHint, "cannot reach NATS at %s: %w", url, err)
}

func isTLSError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "tls:") || strings.Contains(s, "x509:") || strings.Contains(s, "certificate")
}

// Connect opens a role's NATS connection with auth, its replies confined to
// inbox (see Inbox). A role outlives NATS: it waits for NATS when started
// first, and reconnects forever, with backoff, after losing it, even when
// NATS refused its credentials (nats.go gives up after the same
// authorization error twice by default; an administrator who fixes the
// NATS configuration must not also have to restart every role). It logs
// every change of the connection's state; ConnMetrics exports it.
func Connect(url, name string, auth NATSAuth, inbox string, logger *slog.Logger) (*nats.Conn, error) {
	opts, tlsFiles, err := connectOptions(name, auth, inbox)
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.RetryOnFailedConnect(true),
		nats.IgnoreAuthErrorAbort(),
		nats.ConnectHandler(func(c *nats.Conn) { logger.Info("NATS connected", "url", c.ConnectedUrl()) }),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if err != nil {
				logger.Warn("NATS connection lost; reconnecting until it is back", "err", err)
			}
		}),
		nats.ReconnectErrHandler(func(c *nats.Conn, err error) {
			// Each failed attempt: an unreachable URL, refused
			// credentials or a TLS mismatch keep the role waiting, so say
			// why at every attempt, with what to fix.
			logNATSDown(logger, url, err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { logger.Info("NATS reconnected", "url", c.ConnectedUrl()) }),
		nats.ClosedHandler(func(c *nats.Conn) {
			forgetConn(c)
			logger.Info("NATS connection closed")
		}),
		nats.ErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
			noteDenial(c, err)
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			if IsAuthError(err) {
				logNATSDown(logger, url, err)
				return
			}
			if errors.Is(err, nats.ErrPermissionViolation) {
				// The NATS server's permissions and this role disagree:
				// a configuration to fix, not a passing fault.
				logger.Error("NATS refused a subject to this role's credentials; regenerate the NATS configuration with 'cairn cert nats-config' or fix its permissions", "subject", subj, "err", err)
				return
			}
			logger.Warn("NATS error", "subject", subj, "err", err)
		}),
	)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, ConnectError(url, err, "start 'cairn dev' or 'cairn server', or pass the right --nats URL (or set CAIRN_NATS)")
	}
	if tlsFiles != nil {
		tlsByConn.Store(nc, tlsFiles)
	}
	if !nc.IsConnected() {
		logger.Warn("NATS not reachable yet; the role waits for it and retries", "url", url)
		go reportUntilConnected(nc, url, logger)
	}
	return nc, nil
}

// IsAuthError reports whether NATS refused a connection's credentials.
func IsAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked)
}

// logNATSDown says why an attempt to reach NATS failed and what to fix.
func logNATSDown(logger *slog.Logger, url string, err error) {
	we := ConnectError(url, err, "start NATS, or fix --nats (CAIRN_NATS)")
	logger.Warn("NATS not reachable; retrying", "err", we.Message, "hint", we.Hint)
}

// reportUntilConnected logs why a role still waits for its first
// connection. nats.go reports refused credentials only after a first
// successful connection, so a role started with a credential NATS does not
// accept would otherwise wait in silence.
func reportUntilConnected(nc *nats.Conn, url string, logger *slog.Logger) {
	var last string
	for !nc.IsConnected() && !nc.IsClosed() {
		if err := nc.LastError(); err != nil && err.Error() != last && IsAuthError(err) {
			last = err.Error()
			logNATSDown(logger, url, err)
		}
		time.Sleep(time.Second) // a status poll of a connection, at the pace a person reads a log
	}
}

// Flush makes sure NATS has the subscriptions made so far. A connection
// still waiting for NATS has nothing to flush: nats.go sends them when it
// connects.
func Flush(nc *nats.Conn) error {
	if !nc.IsConnected() {
		return nil
	}
	return nc.Flush()
}
