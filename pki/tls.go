package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"
)

// Files names the PEM files of one TLS identity: the CA that signs the
// peers' certificates, and this host's certificate and key.
type Files struct {
	// CA is the certificate of the CA that signs the peers' certificates
	// ('cairn cert ca'); only it is trusted, not the system's roots.
	CA string `json:"ca,omitempty"`
	// Cert is this host's certificate ('cairn cert issue').
	Cert string `json:"cert,omitempty"`
	// Key is the key of Cert.
	Key string `json:"key,omitempty"`
}

// Empty reports whether no file is named: TLS is off.
func (f Files) Empty() bool { return f.CA == "" && f.Cert == "" && f.Key == "" }

// Check reports files that are half given or missing. flag is the flag
// prefix the user sets them with ("tls" for --tls-ca, --tls-cert, --tls-key).
func (f Files) Check(flag string) error {
	if f.Empty() {
		return nil
	}
	var errs []error
	for _, x := range []struct{ name, path string }{{"ca", f.CA}, {"cert", f.Cert}, {"key", f.Key}} {
		if x.path == "" {
			errs = append(errs, fmt.Errorf("--%s-%s is empty: mutual TLS needs --%s-ca, --%s-cert and --%s-key together", flag, x.name, flag, flag, flag))
			continue
		}
		if _, err := os.Stat(x.path); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				err = fmt.Errorf("no such file (make one with 'cairn cert ca' and 'cairn cert issue')")
			}
			errs = append(errs, fmt.Errorf("--%s-%s %s: %w", flag, x.name, x.path, err))
		}
	}
	return errors.Join(errs...)
}

// MutualTLS loads f into a configuration for a transport whose members both
// dial and accept each other, such as Raft's: it presents the certificate,
// requires one from the peer, and verifies either against the CA in f.CA
// alone (not the system's roots). A dialer sets ServerName on a clone.
func MutualTLS(f Files) (*tls.Config, error) {
	cfg, _, err := MutualTLSReloadable(f)
	return cfg, err
}

// MutualTLSReloadable is MutualTLS whose certificate and key are read again
// by KeyPair.Reload: every handshake after it presents the new pair, so a
// renewed certificate needs no restart. The CA is read once: trusting
// another CA is a change of the group that a restart makes.
func MutualTLSReloadable(f Files) (*tls.Config, *KeyPair, error) {
	if err := f.Check("tls"); err != nil {
		return nil, nil, err
	}
	cas, err := ReadCACerts(f.CA)
	if err != nil {
		return nil, nil, err
	}
	pool := poolOf(cas)
	kp := &KeyPair{certFile: f.Cert, keyFile: f.Key, roots: pool, caFile: f.CA, caCerts: cas}
	if _, err := kp.Reload(); err != nil {
		return nil, nil, err
	}
	cert := kp.Current()
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Certificates is what a handshake falls back on; the callbacks
		// hand out the pair as last reloaded.
		Certificates:         []tls.Certificate{*cert},
		GetCertificate:       kp.GetCertificate,
		GetClientCertificate: kp.GetClientCertificate,
		RootCAs:              pool,
		ClientCAs:            pool,
		ClientAuth:           tls.RequireAndVerifyClientCert,
	}, kp, nil
}

// KeyPair is a certificate and key read from their files, and read again on
// Reload while connections go on using it. A pair that fails to load or to
// verify against the CA leaves the one in use as it was.
type KeyPair struct {
	certFile, keyFile string
	caFile            string
	roots             *x509.CertPool // nil: the chain is not checked
	caCerts           []*x509.Certificate

	mu   sync.RWMutex
	cert *tls.Certificate
}

// NewKeyPair loads the pair in certFile and keyFile, without checking
// whom it was issued by.
func NewKeyPair(certFile, keyFile string) (*KeyPair, error) {
	kp := &KeyPair{certFile: certFile, keyFile: keyFile}
	if _, err := kp.Reload(); err != nil {
		return nil, err
	}
	return kp, nil
}

// Reload reads the files again and reports whether the certificate
// changed.
func (k *KeyPair) Reload() (changed bool, err error) {
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return false, fmt.Errorf("load TLS certificate %s and key %s: %w", k.certFile, k.keyFile, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return false, fmt.Errorf("TLS certificate %s: %w", k.certFile, err)
	}
	cert.Leaf = leaf
	if k.roots != nil {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: k.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return false, fmt.Errorf("TLS certificate %s is not signed by the CA in %s: %w", k.certFile, k.caFile, err)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	changed = k.cert == nil || !bytes.Equal(k.cert.Certificate[0], cert.Certificate[0])
	k.cert = &cert
	return changed, nil
}

// Current is the pair in use.
func (k *KeyPair) Current() *tls.Certificate {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.cert
}

// Describe names the certificate in use for a log line: its subject,
// serial and expiry.
func (k *KeyPair) Describe() string {
	c := k.Current().Leaf
	return fmt.Sprintf("%s (%s, serial %x, valid until %s)", k.certFile, c.Subject.CommonName, c.SerialNumber, c.NotAfter.UTC().Format(time.RFC3339))
}

// Loaded is the pair in use, as use, and the CA it checks peers against
// (as use+" ca"), for an ExpiryWatch.
func (k *KeyPair) Loaded(use string) []LoadedCert {
	out := []LoadedCert{{Use: use, File: k.certFile, Cert: k.Current().Leaf}}
	for _, c := range k.caCerts {
		out = append(out, LoadedCert{Use: use + " ca", File: k.caFile, Cert: c})
	}
	return out
}

// GetCertificate is a tls.Config.GetCertificate that serves the pair in use.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.Current(), nil
}

// GetClientCertificate is a tls.Config.GetClientCertificate that presents
// the pair in use.
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.Current(), nil
}

// CertPool reads a PEM file of CA certificates into a pool.
func CertPool(path string) (*x509.CertPool, error) {
	certs, err := ReadCACerts(path)
	if err != nil {
		return nil, err
	}
	return poolOf(certs), nil
}

// ReadCACerts reads a PEM file of CA certificates: one, or several while a
// new CA replaces an old one.
func ReadCACerts(path string) ([]*x509.Certificate, error) {
	certs, err := readCerts(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("CA certificate %s: no such file", path)
		}
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	return certs, nil
}

func poolOf(certs []*x509.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool
}

// CheckUsage reports whether c may authenticate in every one of usages,
// naming what it lacks.
func CheckUsage(c *x509.Certificate, usages ...x509.ExtKeyUsage) error {
	has := map[x509.ExtKeyUsage]bool{}
	for _, u := range c.ExtKeyUsage {
		has[u] = true
	}
	if has[x509.ExtKeyUsageAny] {
		return nil
	}
	for _, u := range usages {
		if !has[u] {
			return fmt.Errorf("certificate %q does not allow %s authentication", c.Subject.CommonName, usageName(u))
		}
	}
	return nil
}

func usageName(u x509.ExtKeyUsage) string {
	switch u {
	case x509.ExtKeyUsageServerAuth:
		return "server"
	case x509.ExtKeyUsageClientAuth:
		return "client"
	}
	return fmt.Sprintf("usage %d", u)
}
