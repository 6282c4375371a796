// Package pki makes the certificates a Cairn deployment runs on: one
// certificate authority per deployment (an ECDSA P-256 key that signs
// everything), and per-host certificates issued by it for the NATS server,
// the Raft transport between backup servers, and the roles' NATS
// connections. It also loads those files into TLS configurations that
// verify the peer against the CA, which is what `cairn server --tls-*` and
// the roles' `--nats-ca/--nats-cert/--nats-key` use.
//
// The files are PEM: DIR/ca.crt and DIR/ca.key for the CA (the key is mode
// 0600 and never leaves the machine it was made on), DIR/<name>.crt and
// DIR/<name>.key for an issued certificate, with a copy of ca.crt beside
// them so that one directory holds everything a host needs.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// File names in a CA directory and beside issued certificates.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Default lifetimes. A CA outlives the certificates it signs; a host
// certificate is renewed with another `cairn cert issue`.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 2 * 365 * 24 * time.Hour
)

// ErrExists is returned instead of replacing a certificate or key: a
// replaced CA key orphans every certificate it signed.
var ErrExists = errors.New("already exists")

// CA is a loaded certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Dir is where ca.crt and ca.key are.
	Dir string
}

// CreateCA makes a new CA in dir (created 0700 when missing): ca.crt and
// ca.key (0600). name goes into the CA's subject, to tell deployments
// apart. It refuses to replace an existing CA.
func CreateCA(dir, name string, validity time.Duration) (*CA, error) {
	if name == "" {
		name = "Cairn CA"
	}
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return nil, fmt.Errorf("CA file %s %w: a new CA would orphan every certificate the old one signed; choose another --out directory", p, ErrExists)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Cairn"}},
		NotBefore:             now.Add(-time.Hour), // hosts whose clocks lag a little
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // signs host certificates only, no intermediate CAs
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("CA directory: %w", err)
	}
	if err := writeKey(keyPath, key); err != nil {
		return nil, err
	}
	if err := writeNew(certPath, pemCert(der), 0o644); err != nil {
		os.Remove(keyPath)
		return nil, err
	}
	return &CA{Cert: cert, Key: key, Dir: dir}, nil
}

// MissingCAError is a CA directory that lacks the CA's certificate or its
// key: certificates are issued on the machine where 'cairn cert ca' made
// the CA, which alone holds ca.key.
type MissingCAError struct {
	Dir  string
	Path string // the missing file: ca.crt or ca.key in Dir
	Err  error  // what opening it said
}

func (e *MissingCAError) Error() string {
	if filepath.Base(e.Path) == CAKeyFile {
		return fmt.Sprintf("the CA key %s is missing: issue certificates on the machine that holds it (only ca.crt is copied to hosts)", e.Path)
	}
	return fmt.Sprintf("no CA in %s: %s is missing; make one with 'cairn cert ca --out %s'", e.Dir, e.Path, e.Dir)
}

func (e *MissingCAError) Unwrap() error { return e.Err }

// LoadCA reads the CA in dir, its private key included.
func LoadCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certs, err := readCerts(certPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &MissingCAError{Dir: dir, Path: certPath, Err: err}
		}
		return nil, err
	}
	data, err := os.ReadFile(keyPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &MissingCAError{Dir: dir, Path: keyPath, Err: err}
		}
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	key, err := parseKey(keyPath, data)
	if err != nil {
		return nil, err
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", certPath)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("the CA key %s does not belong to the certificate %s: they come from different CAs", keyPath, certPath)
	}
	return &CA{Cert: cert, Key: key, Dir: dir}, nil
}

// IssueOptions describe a host certificate.
type IssueOptions struct {
	// Name is the host's name: the certificate's common name and its file
	// names. It is also a SAN when it is a DNS name or an IP address.
	Name string
	// IPs and DNS are the addresses peers reach the host at; a peer that
	// dials 10.0.0.1:7010 checks that the certificate names 10.0.0.1.
	IPs []net.IP
	DNS []string
	// Server allows the certificate to authenticate a listening side
	// (NATS server, Raft transport, data port), Client a dialing side (a
	// role's NATS connection, the Raft transport's outgoing connections).
	// A backup server's Raft certificate needs both.
	Server, Client bool
	// Validity is the certificate's lifetime; DefaultCertValidity when 0.
	Validity time.Duration
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?$`)

// ValidateName checks a certificate name: it becomes file names and the
// common name, so no slashes, spaces or leading dots.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) || strings.Contains(name, "..") {
		return fmt.Errorf("certificate name %q is not valid: use a host name (letters, digits, '.', '-', '_'; starting and ending with a letter or digit)", name)
	}
	return nil
}

// Issued names the files Issue wrote.
type Issued struct {
	Cert, Key, CA string
	// SANs lists the names and addresses the certificate is valid for.
	SANs []string
}

// Subject is the subject of the certificate Issue makes for name. A NATS
// server that maps users from certificates (verify_and_map) knows each
// role's user by it: a certificate of another CA must carry the same.
func Subject(name string) pkix.Name {
	return pkix.Name{CommonName: name, Organization: []string{"Cairn"}}
}

// Issue signs a certificate for o.Name and writes NAME.crt, NAME.key (0600)
// and a copy of ca.crt into outDir. It refuses to replace existing files.
func (ca *CA) Issue(o IssueOptions, outDir string) (*Issued, error) {
	if err := ValidateName(o.Name); err != nil {
		return nil, err
	}
	if !o.Server && !o.Client {
		return nil, errors.New("a certificate must allow server or client authentication, or both")
	}
	if o.Validity <= 0 {
		o.Validity = DefaultCertValidity
	}
	dns := append([]string(nil), o.DNS...)
	ips := append([]net.IP(nil), o.IPs...)
	if ip := net.ParseIP(o.Name); ip != nil {
		ips = appendIP(ips, ip)
	} else if isDNSName(o.Name) && !contains(dns, o.Name) {
		dns = append([]string{o.Name}, dns...)
	}
	for _, d := range dns {
		if !isDNSName(d) {
			return nil, fmt.Errorf("--dns %q is not a DNS name", d)
		}
	}
	if o.Server && len(dns) == 0 && len(ips) == 0 {
		return nil, fmt.Errorf("a server certificate needs the addresses peers dial: pass --ip or --dns")
	}
	out := &Issued{
		Cert: filepath.Join(outDir, o.Name+".crt"),
		Key:  filepath.Join(outDir, o.Name+".key"),
		CA:   filepath.Join(outDir, CACertFile),
	}
	for _, p := range []string{out.Cert, out.Key} {
		if _, err := os.Stat(p); err == nil {
			return nil, fmt.Errorf("%s %w; remove it first to replace the certificate, or choose another --out", p, ErrExists)
		}
	}
	if err := ca.checkCACopy(out.CA); err != nil {
		return nil, err
	}
	der, key, err := ca.sign(o.Name, dns, ips, o.Server, o.Client, o.Validity)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return nil, fmt.Errorf("certificate directory: %w", err)
	}
	if err := writeKey(out.Key, key); err != nil {
		return nil, err
	}
	if err := writeNew(out.Cert, pemCert(der), 0o644); err != nil {
		os.Remove(out.Key)
		return nil, err
	}
	if _, err := os.Stat(out.CA); errors.Is(err, fs.ErrNotExist) {
		if err := writeNew(out.CA, pemCert(ca.Cert.Raw), 0o644); err != nil {
			return nil, err
		}
	}
	out.SANs = append(out.SANs, dns...)
	for _, ip := range ips {
		out.SANs = append(out.SANs, ip.String())
	}
	return out, nil
}

// sign makes a new key and a certificate for it, signed by the CA, valid
// from now for validity but never beyond the CA itself.
func (ca *CA) sign(name string, dns []string, ips []net.IP, server, client bool, validity time.Duration) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        Subject(name),
		NotBefore:      now.Add(-time.Hour),
		NotAfter:       notAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		DNSNames:       dns,
		IPAddresses:    ips,
		SubjectKeyId:   keyID(&key.PublicKey),
		AuthorityKeyId: ca.Cert.SubjectKeyId,
	}
	if server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate for %s: %w", name, err)
	}
	return der, key, nil
}

// checkCACopy refuses to issue into a directory whose ca.crt is another
// CA's: the host would trust one CA and present a certificate of another.
func (ca *CA) checkCACopy(path string) error {
	certs, err := readCerts(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !certs[0].Equal(ca.Cert) {
		return fmt.Errorf("%s is the certificate of another CA (%s); issue into another --out directory", path, certs[0].Subject.CommonName)
	}
	return nil
}

func appendIP(ips []net.IP, ip net.IP) []net.IP {
	for _, have := range ips {
		if have.Equal(ip) {
			return ips
		}
	}
	return append(ips, ip)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

var dnsLabelRE = regexp.MustCompile(`^(\*|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)$`)

func isDNSName(s string) bool {
	if s == "" || len(s) > 253 || net.ParseIP(s) != nil {
		return false
	}
	for i, l := range strings.Split(s, ".") {
		if !dnsLabelRE.MatchString(l) || (l == "*" && i > 0) {
			return false
		}
	}
	return true
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func keyID(pub *ecdsa.PublicKey) []byte {
	b, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(b)
	return sum[:20]
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// writeNew writes a file that must not exist yet, durably.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s %w", path, ErrExists)
		}
		return err
	}
	if _, err := f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// ReadCertificate reads the first certificate of a PEM file.
func ReadCertificate(path string) (*x509.Certificate, error) {
	certs, err := readCerts(path)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// readCerts reads every certificate in a PEM file.
func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseCerts(path, data)
}

// parseCerts decodes every certificate in the PEM content of the file at path.
func parseCerts(path string, data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate file %s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return certs, nil
}

func parseKey(path string, data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("key file %s holds no PEM key", path)
	}
	var k any
	var err error
	switch b.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key file %s: %T cannot sign", path, k)
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// Fingerprint is the hex SHA-256 of a certificate, as `openssl x509
// -fingerprint -sha256` prints it without the colons.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return fmt.Sprintf("%x", sum[:])
}

// Renewed is what Renew did: the certificate it replaced and the one it
// wrote in its place.
type Renewed struct {
	Cert, Key string
	Old, New  *x509.Certificate
}

// Renew replaces the certificate at certPath (NAME.crt, its key NAME.key
// beside it, or made there when it was removed), which this CA issued, with a new certificate for the same
// name, addresses and uses, on a new key, valid for validity from now (but
// never beyond the CA). Each file is replaced by a rename, keeping the old
// file's mode, owner and group (a key made readable to the group cairn
// stays so); the key goes first, so a role that reads the pair in between
// finds a key that does not match its certificate, refuses it and keeps the
// pair in use until the next reload.
func (ca *CA) Renew(certPath string, validity time.Duration) (*Renewed, error) {
	if validity <= 0 {
		validity = DefaultCertValidity
	}
	base, ok := strings.CutSuffix(certPath, ".crt")
	if !ok {
		return nil, fmt.Errorf("%s: renew the NAME.crt file 'cairn cert issue' wrote (its key NAME.key beside it)", certPath)
	}
	keyPath := base + ".key"
	certs, err := readCerts(certPath)
	if err != nil {
		return nil, err
	}
	old := certs[0]
	if err := old.CheckSignatureFrom(ca.Cert); err != nil {
		return nil, fmt.Errorf("%s (%s) was not issued by the CA in %s (%s): renew it with its own CA, or issue a new one", certPath, old.Subject.CommonName, ca.Dir, ca.Cert.Subject.CommonName)
	}
	if old.IsCA {
		return nil, fmt.Errorf("%s is a CA certificate: a CA is not renewed in place (README: rotating the CA)", certPath)
	}
	name := old.Subject.CommonName
	if err := ValidateName(name); err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	var server, client bool
	for _, u := range old.ExtKeyUsage {
		server = server || u == x509.ExtKeyUsageServerAuth
		client = client || u == x509.ExtKeyUsageClientAuth
	}
	if !server && !client {
		return nil, fmt.Errorf("%s allows neither server nor client authentication; issue a new certificate instead", certPath)
	}
	der, key, err := ca.sign(name, old.DNSNames, old.IPAddresses, server, client, validity)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	// The old key may be gone from the CA's machine once its host had it:
	// the new one is made here all the same.
	if _, err := os.Stat(keyPath); errors.Is(err, fs.ErrNotExist) {
		err = writeNew(keyPath, keyPEM, 0o600)
		if err != nil {
			return nil, err
		}
	} else if err := replaceFile(keyPath, keyPEM); err != nil {
		return nil, err
	}
	if err := replaceFile(certPath, pemCert(der)); err != nil {
		return nil, fmt.Errorf("%w (the new key is in place: run the renewal again)", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Renewed{Cert: certPath, Key: keyPath, Old: old, New: cert}, nil
}

// replaceFile replaces the file at path with data, durably and at once (a
// rename), keeping its mode, owner and group.
func replaceFile(path string, data []byte) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := path + ".renew"
	os.Remove(tmp) // a renewal that failed before
	if err := writeNew(tmp, data, st.Mode().Perm()); err != nil {
		return err
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		if err := os.Lchown(tmp, int(sys.Uid), int(sys.Gid)); err != nil && (int(sys.Uid) != os.Getuid() || int(sys.Gid) != os.Getgid()) {
			os.Remove(tmp)
			return fmt.Errorf("give the new %s the owner of the old one (uid %d, gid %d): %w; renew as root, or as its owner", path, sys.Uid, sys.Gid, err)
		}
	}
	// writeNew made it with the umask applied: the old mode, exactly.
	if err := os.Chmod(tmp, st.Mode().Perm()); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
