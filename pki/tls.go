package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Files names the PEM files of one TLS identity: the CA that signs the
// peers' certificates, and this host's certificate and key.
type Files struct {
	CA   string `json:"ca,omitempty"`
	Cert string `json:"cert,omitempty"`
	Key  string `json:"key,omitempty"`
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
	if err := f.Check("tls"); err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s and key %s: %w", f.Cert, f.Key, err)
	}
	pool, err := CertPool(f.CA)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s: %w", f.Cert, err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("TLS certificate %s is not signed by the CA in %s: %w", f.Cert, f.CA, err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// CertPool reads a PEM file of CA certificates into a pool.
func CertPool(path string) (*x509.CertPool, error) {
	certs, err := readCerts(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("CA certificate %s: no such file", path)
		}
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
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
