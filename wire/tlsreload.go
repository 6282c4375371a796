package wire

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/pki"
)

// natsTLS is a connection's client certificate and CA as last read from
// their files. nats.go asks for them at every handshake, so a reconnect
// after ReloadTLS presents a renewed certificate without a restart.
type natsTLS struct {
	caFile string
	cert   *pki.KeyPair // nil without a client certificate

	mu    sync.RWMutex
	roots *x509.CertPool
	cas   []*x509.Certificate
}

func newNATSTLS(a NATSAuth) (*natsTLS, error) {
	t := &natsTLS{caFile: a.CAFile}
	if a.CAFile != "" {
		cas, err := pki.ReadCACerts(a.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--nats-ca: %w", err)
		}
		t.roots, t.cas = certPool(cas), cas
	}
	if a.CertFile != "" {
		kp, err := pki.NewKeyPair(a.CertFile, a.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("--nats-cert: %w", err)
		}
		t.cert = kp
	}
	return t, nil
}

func (t *natsTLS) option() nats.Option {
	var certCB nats.TLSCertHandler
	var rootsCB nats.RootCAsHandler
	if t.cert != nil {
		certCB = func() (tls.Certificate, error) { return *t.cert.Current(), nil }
	}
	if t.caFile != "" {
		rootsCB = func() (*x509.CertPool, error) {
			t.mu.RLock()
			defer t.mu.RUnlock()
			return t.roots, nil
		}
	}
	return nats.ClientTLSConfig(certCB, rootsCB)
}

// reload reads the files again; what it says is for the role's log.
func (t *natsTLS) reload() (certChanged bool, said []string, err error) {
	if t.caFile != "" {
		cas, err := pki.ReadCACerts(t.caFile)
		if err != nil {
			return false, nil, fmt.Errorf("NATS CA: %w (the CA read before stays in use)", err)
		}
		t.mu.Lock()
		t.roots, t.cas = certPool(cas), cas
		t.mu.Unlock()
		said = append(said, "NATS CA "+t.caFile)
	}
	if t.cert != nil {
		changed, err := t.cert.Reload()
		if err != nil {
			return false, said, fmt.Errorf("NATS client certificate: %w (the certificate read before stays in use)", err)
		}
		certChanged = changed
		said = append(said, "NATS client certificate "+t.cert.Describe())
	}
	return certChanged, said, nil
}

func certPool(certs []*x509.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool
}

// loaded is what the connection presents and trusts now.
func (t *natsTLS) loaded() []pki.LoadedCert {
	var out []pki.LoadedCert
	if t.cert != nil {
		out = append(out, t.cert.Loaded("nats client")...)
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, c := range t.cas {
		out = append(out, pki.LoadedCert{Use: "nats ca", File: t.caFile, Cert: c})
	}
	return out
}

// LoadedCerts are the certificates a role's NATS connection (from Connect)
// presents and trusts now, as last reloaded: none on a plain connection.
func LoadedCerts(nc *nats.Conn) []pki.LoadedCert {
	if nc == nil {
		return nil
	}
	v, ok := tlsByConn.Load(nc)
	if !ok {
		return nil
	}
	return v.(*natsTLS).loaded()
}

var tlsByConn sync.Map // *nats.Conn -> *natsTLS

// ReloadTLS reads a role's NATS TLS files again (Connect's auth): the CA
// and the client certificate. A certificate that changed is presented at
// once, on a new connection (nats.go keeps the subscriptions and replays
// what is buffered); an unchanged one keeps the connection as it is. A file
// that does not load leaves what was in use, and says so. It returns what
// was reloaded, for the log.
func ReloadTLS(nc *nats.Conn) ([]string, error) {
	v, ok := tlsByConn.Load(nc)
	if !ok {
		return nil, nil // a plain connection: no TLS files to read
	}
	changed, said, err := v.(*natsTLS).reload()
	if err != nil {
		return said, err
	}
	if changed && nc.IsConnected() {
		if err := nc.ForceReconnect(); err != nil {
			return said, fmt.Errorf("reconnect to NATS with the new client certificate: %w", err)
		}
		said = append(said, "reconnected to NATS with it")
	}
	return said, nil
}
