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
// is a plain connection, as to the embedded server of `cairn dev`.
type NATSAuth struct {
	// CAFile verifies the NATS server's certificate; setting it turns TLS on.
	CAFile string `json:"ca_file,omitempty"`
	// CertFile and KeyFile are this role's client certificate, for a NATS
	// server whose tls block says verify: true.
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	// NkeyFile is a file holding the user's nkey seed (SU...), as
	// 'cairn cert nats-config' writes one per role. The seed never leaves
	// the host: the server only checks a signature of its nonce.
	NkeyFile string `json:"nkey_file,omitempty"`
	// User and Password are the other kind of credential.
	User     string `json:"user,omitempty"`
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

// options turns a into nats.go options.
func (a NATSAuth) options() ([]nats.Option, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	var opts []nats.Option
	if a.CAFile != "" {
		opts = append(opts, nats.RootCAs(a.CAFile))
	}
	if a.CertFile != "" {
		opts = append(opts, nats.ClientCert(a.CertFile, a.KeyFile))
	}
	if a.NkeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(a.NkeyFile)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey %s is not an nkey user seed file (%v): use one 'cairn cert nats-config' wrote", a.NkeyFile, err)
		}
		opts = append(opts, o)
	}
	if a.User != "" {
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	}
	return opts, nil
}

// ConnectOptions are the options of a NATS connection with auth and the
// role's own inbox prefix (see Inbox): what Connect and the admin commands
// share.
func ConnectOptions(name string, auth NATSAuth, inbox string) ([]nats.Option, error) {
	opts, err := auth.options()
	if err != nil {
		return nil, Errorf(CodeInvalidArgument, "correct the NATS flag or config field named", "NATS connection: %v", err)
	}
	opts = append(opts, nats.Name(name), nats.Timeout(5*time.Second))
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	return opts, nil
}

// ConnectError explains a failed connection: an authorization failure or a
// TLS problem says so, rather than "cannot reach".
func ConnectError(url string, err error, reachHint string) error {
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return Errorf(CodeInvalidArgument, "check --nats-nkey (or --nats-user and --nats-password) against the NATS server's configuration ('cairn cert nats-config')",
			"NATS at %s refused this role's credentials: %v", url, err)
	case errors.Is(err, nats.ErrSecureConnRequired):
		return Errorf(CodeInvalidArgument, "pass --nats-ca with the CA that signed the NATS server's certificate",
			"NATS at %s requires TLS: %v", url, err)
	case isTLSError(err):
		return Errorf(CodeInvalidArgument, "pass --nats-ca with the CA that signed the NATS server's certificate, and --nats-cert/--nats-key when it verifies clients",
			"TLS with NATS at %s failed: %v", url, err)
	}
	return Errorf(CodeUnavailable, reachHint, "cannot reach NATS at %s: %v", url, err)
}

func isTLSError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "tls:") || strings.Contains(s, "x509:") || strings.Contains(s, "certificate")
}

// Connect opens a role's NATS connection with auth, its replies confined to
// inbox (see Inbox). It reconnects forever: a role outlives restarts of the
// NATS servers it talks to.
func Connect(url, name string, auth NATSAuth, inbox string, logger *slog.Logger) (*nats.Conn, error) {
	opts, err := ConnectOptions(name, auth, inbox)
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("NATS connection lost", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { logger.Info("NATS reconnected", "url", c.ConnectedUrl()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
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
	return nc, nil
}
