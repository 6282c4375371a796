package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustCA(t *testing.T, dir string) *CA {
	t.Helper()
	ca, err := CreateCA(dir, "test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestCreateAndLoadCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca := mustCA(t, dir)
	if !ca.Cert.IsCA || ca.Cert.Subject.CommonName != "test CA" {
		t.Fatalf("CA certificate %+v", ca.Cert.Subject)
	}
	for name, want := range map[string]os.FileMode{CAKeyFile: 0o600, CACertFile: 0o644} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != want {
			t.Fatalf("%s: mode %v, want %v (%v)", name, st.Mode().Perm(), want, err)
		}
	}
	if _, err := CreateCA(dir, "", 0); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "orphan") {
		t.Fatalf("second CA in the same directory: %v", err)
	}
	got, err := LoadCA(dir)
	if err != nil || !got.Cert.Equal(ca.Cert) {
		t.Fatalf("load: %v", err)
	}

	var missing *MissingCAError
	empty := t.TempDir()
	if _, err := LoadCA(empty); !errors.As(err, &missing) || missing.Path != filepath.Join(empty, CACertFile) ||
		!errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "cairn cert ca") {
		t.Fatalf("load from an empty directory: %v", err)
	}
	other := mustCA(t, filepath.Join(t.TempDir(), "other"))
	mixed := t.TempDir()
	copyFile(t, filepath.Join(dir, CACertFile), filepath.Join(mixed, CACertFile))
	copyFile(t, filepath.Join(other.Dir, CAKeyFile), filepath.Join(mixed, CAKeyFile))
	if _, err := LoadCA(mixed); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("certificate and key of different CAs: %v", err)
	}
	os.Remove(filepath.Join(mixed, CAKeyFile))
	if _, err := LoadCA(mixed); !errors.As(err, &missing) || missing.Path != filepath.Join(mixed, CAKeyFile) ||
		!strings.Contains(err.Error(), "key") || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("CA without its key: %v", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestIssue(t *testing.T) {
	ca := mustCA(t, filepath.Join(t.TempDir(), "ca"))
	out := filepath.Join(t.TempDir(), "s1")
	got, err := ca.Issue(IssueOptions{Name: "s1.example.net", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Client: true}, out)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(got.Key); st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode().Perm())
	}
	certs, err := readCerts(got.Cert)
	if err != nil {
		t.Fatal(err)
	}
	c := certs[0]
	if c.Subject.CommonName != "s1.example.net" || len(c.DNSNames) != 1 || c.DNSNames[0] != "s1.example.net" ||
		len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Fatalf("names: CN %q DNS %v IP %v", c.Subject.CommonName, c.DNSNames, c.IPAddresses)
	}
	if err := CheckUsage(c, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatal(err)
	}
	pool, err := CertPool(got.CA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: "s1.example.net"}); err != nil {
		t.Fatalf("verify against the CA copy: %v", err)
	}
	if _, err := ca.Issue(IssueOptions{Name: "s1.example.net", Server: true, IPs: []net.IP{net.ParseIP("::1")}}, out); !errors.Is(err, ErrExists) {
		t.Fatalf("issue over an existing certificate: %v", err)
	}

	// A client certificate needs no address and allows no server use.
	cl, err := ca.Issue(IssueOptions{Name: "web1", Client: true}, out)
	if err != nil {
		t.Fatal(err)
	}
	certs, _ = readCerts(cl.Cert)
	if err := CheckUsage(certs[0], x509.ExtKeyUsageServerAuth); err == nil || !strings.Contains(err.Error(), "server") {
		t.Fatalf("client-only certificate allows server authentication: %v", err)
	}

	for _, bad := range []string{"", "../x", "a b", ".hidden", "x/y", "a..b"} {
		if _, err := ca.Issue(IssueOptions{Name: bad, Client: true}, out); err == nil || !strings.Contains(err.Error(), "not valid") {
			t.Errorf("name %q: %v", bad, err)
		}
	}
	if _, err := ca.Issue(IssueOptions{Name: "web_2", Server: true}, out); err == nil || !strings.Contains(err.Error(), "--ip or --dns") {
		t.Fatalf("server certificate without an address: %v", err)
	}
	if _, err := ca.Issue(IssueOptions{Name: "x", Server: true, DNS: []string{"bad name"}}, out); err == nil || !strings.Contains(err.Error(), "--dns") {
		t.Fatalf("bad DNS SAN: %v", err)
	}
	if _, err := ca.Issue(IssueOptions{Name: "x"}, out); err == nil {
		t.Fatal("a certificate with no usage was issued")
	}
	other := mustCA(t, filepath.Join(t.TempDir(), "other"))
	if _, err := other.Issue(IssueOptions{Name: "s2", Client: true}, out); err == nil || !strings.Contains(err.Error(), "another CA") {
		t.Fatalf("issue by another CA beside this CA's ca.crt: %v", err)
	}
}

// TestMutualTLS: two certificates of one CA shake hands; a certificate of
// another CA is refused by the listening side.
func TestMutualTLS(t *testing.T) {
	ca := mustCA(t, filepath.Join(t.TempDir(), "ca"))
	dir := t.TempDir()
	files := func(ca *CA, name, dir string) Files {
		is, err := ca.Issue(IssueOptions{Name: name, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Client: true}, dir)
		if err != nil {
			t.Fatal(err)
		}
		return Files{CA: is.CA, Cert: is.Cert, Key: is.Key}
	}
	a, err := MutualTLS(files(ca, "a", dir))
	if err != nil {
		t.Fatal(err)
	}
	b, err := MutualTLS(files(ca, "b", dir))
	if err != nil {
		t.Fatal(err)
	}
	other := mustCA(t, filepath.Join(t.TempDir(), "other"))
	x, err := MutualTLS(files(other, "x", t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}

	ln, err := tls.Listen("tcp", "127.0.0.1:0", a)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	errs := make(chan error, 3)
	go func() {
		for i := 0; i < 3; i++ {
			c, err := ln.Accept()
			if err != nil {
				errs <- err
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			errs <- c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	dial := func(cfg *tls.Config) error {
		cfg = cfg.Clone()
		cfg.ServerName = "127.0.0.1"
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		// TLS 1.3 reports the server's refusal of the client certificate on
		// the first read.
		_, err = c.Read(make([]byte, 1))
		return err
	}
	if err := dial(b); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("same CA: %v", err)
	}
	if err := <-errs; err != nil {
		t.Fatalf("same CA, listening side: %v", err)
	}
	// The foreign dialer refuses the listener's certificate...
	if err := dial(x); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("another CA, dialing side: %v", err)
	}
	<-errs
	// ...and the listener refuses the foreign certificate even from a
	// dialer that trusts anything.
	trusting := x.Clone()
	trusting.RootCAs = a.RootCAs
	if err := dial(trusting); err == nil {
		t.Fatal("a certificate of another CA was accepted")
	}
	if err := <-errs; err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("another CA, listening side: %v", err)
	}

	if _, err := MutualTLS(Files{CA: "/nonexistent/ca.crt"}); err == nil || !strings.Contains(err.Error(), "--tls-cert") {
		t.Fatalf("half-given files: %v", err)
	}
	mixed := files(ca, "m", t.TempDir())
	mixed.CA = filepath.Join(other.Dir, CACertFile)
	if _, err := MutualTLS(mixed); err == nil || !strings.Contains(err.Error(), "not signed by the CA") {
		t.Fatalf("certificate of another CA than --tls-ca: %v", err)
	}
}

// TestKeyPairReload renews a certificate in place, as an operator does
// before it expires: the handshakes after Reload present the new one, and
// a file caught half written, or a certificate of another CA, leaves the
// one in use as it was.
func TestKeyPairReload(t *testing.T) {
	ca := mustCA(t, filepath.Join(t.TempDir(), "ca"))
	first, err := ca.Issue(IssueOptions{Name: "s1", Server: true, Client: true}, filepath.Join(t.TempDir(), "a"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, kp, err := MutualTLSReloadable(Files{CA: first.CA, Cert: first.Cert, Key: first.Key})
	if err != nil {
		t.Fatal(err)
	}
	was := kp.Current().Leaf.SerialNumber
	if c, _ := cfg.GetCertificate(nil); c.Leaf.SerialNumber.Cmp(was) != 0 {
		t.Fatal("GetCertificate does not serve the loaded pair")
	}
	if changed, err := kp.Reload(); err != nil || changed {
		t.Fatalf("reload of the same files: changed %v, %v", changed, err)
	}

	renewed, err := ca.Issue(IssueOptions{Name: "s1", Server: true, Client: true}, filepath.Join(t.TempDir(), "b"))
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, renewed.Cert, first.Cert)
	copyFile(t, renewed.Key, first.Key)
	if changed, err := kp.Reload(); err != nil || !changed {
		t.Fatalf("reload of a renewed certificate: changed %v, %v", changed, err)
	}
	now := kp.Current().Leaf.SerialNumber
	if now.Cmp(was) == 0 {
		t.Fatal("the renewed certificate is not in use after Reload")
	}
	if c, _ := cfg.GetClientCertificate(nil); c.Leaf.SerialNumber.Cmp(now) != 0 {
		t.Fatal("GetClientCertificate does not present the renewed pair")
	}

	if err := os.WriteFile(first.Cert, []byte("-----BEGIN CERT"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := kp.Reload(); err == nil {
		t.Fatal("a half-written certificate file loaded")
	}
	if kp.Current().Leaf.SerialNumber.Cmp(now) != 0 {
		t.Fatal("a failed reload replaced the certificate in use")
	}

	other := mustCA(t, filepath.Join(t.TempDir(), "other"))
	foreign, err := other.Issue(IssueOptions{Name: "s1", Server: true, Client: true}, filepath.Join(t.TempDir(), "c"))
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, foreign.Cert, first.Cert)
	copyFile(t, foreign.Key, first.Key)
	if _, err := kp.Reload(); err == nil || !strings.Contains(err.Error(), "not signed by the CA") {
		t.Fatalf("a certificate of another CA: %v", err)
	}
	if kp.Current().Leaf.SerialNumber.Cmp(now) != 0 {
		t.Fatal("a certificate of another CA replaced the one in use")
	}
}

func TestRenew(t *testing.T) {
	ca := mustCA(t, filepath.Join(t.TempDir(), "ca"))
	out := filepath.Join(t.TempDir(), "s1")
	is, err := ca.Issue(IssueOptions{Name: "s1", IPs: []net.IP{net.ParseIP("10.0.0.1")}, DNS: []string{"s1.example.net"},
		Server: true, Client: true, Validity: 24 * time.Hour}, out)
	if err != nil {
		t.Fatal(err)
	}
	// An operator made the key readable to the role's group.
	if err := os.Chmod(is.Key, 0o640); err != nil {
		t.Fatal(err)
	}
	// A role has it loaded, and reloads it after the renewal.
	kp, err := NewKeyPair(is.Cert, is.Key)
	if err != nil {
		t.Fatal(err)
	}
	before := kp.Current().Leaf

	r, err := ca.Renew(is.Cert, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Old.SerialNumber.Cmp(before.SerialNumber) != 0 {
		t.Errorf("Renew says it replaced serial %x, the file held %x", r.Old.SerialNumber, before.SerialNumber)
	}
	n := r.New
	if n.Subject.String() != before.Subject.String() || !slices.Equal(n.DNSNames, before.DNSNames) ||
		len(n.IPAddresses) != 1 || !n.IPAddresses[0].Equal(before.IPAddresses[0]) || !slices.Equal(n.ExtKeyUsage, before.ExtKeyUsage) {
		t.Errorf("the renewed certificate is not for the same name, addresses and uses:\nold %v %v %v %v\nnew %v %v %v %v",
			before.Subject, before.DNSNames, before.IPAddresses, before.ExtKeyUsage, n.Subject, n.DNSNames, n.IPAddresses, n.ExtKeyUsage)
	}
	if time.Until(n.NotAfter) < DefaultCertValidity-time.Hour {
		t.Errorf("renewed certificate valid until %v, want about %v from now", n.NotAfter, DefaultCertValidity)
	}
	if publicKeysEqual(n.PublicKey, before.PublicKey) {
		t.Error("the renewed certificate has the old key: a renewal makes a new key")
	}
	if st, err := os.Stat(is.Key); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("the renewed key's mode is %v, want the old file's 0640 (%v)", st.Mode().Perm(), err)
	}
	if _, err := tls.LoadX509KeyPair(is.Cert, is.Key); err != nil {
		t.Fatalf("the renewed pair does not load: %v", err)
	}
	if _, err := n.Verify(x509.VerifyOptions{Roots: poolOf([]*x509.Certificate{ca.Cert}), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the renewed certificate does not verify against its CA: %v", err)
	}
	changed, err := kp.Reload()
	if err != nil || !changed || kp.Current().Leaf.SerialNumber.Cmp(n.SerialNumber) != 0 {
		t.Errorf("a role's reload after the renewal: changed %v, err %v", changed, err)
	}
	if left, _ := filepath.Glob(filepath.Join(out, "*.renew")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// The key removed from the CA's machine once its host had it: the
	// renewal makes one all the same.
	os.Remove(is.Key)
	if _, err := ca.Renew(is.Cert, 0); err != nil {
		t.Fatalf("renewal of a certificate whose key was removed: %v", err)
	}
	if _, err := tls.LoadX509KeyPair(is.Cert, is.Key); err != nil {
		t.Fatalf("the pair renewed without its old key does not load: %v", err)
	}
	if st, err := os.Stat(is.Key); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("a new key file has mode %v, want 0600 (%v)", st.Mode().Perm(), err)
	}

	other := mustCA(t, filepath.Join(t.TempDir(), "other"))
	if _, err := other.Renew(is.Cert, 0); err == nil || !strings.Contains(err.Error(), "not issued by the CA") {
		t.Errorf("renewal by another CA: %v", err)
	}
	if _, err := ca.Renew(filepath.Join(out, "ca.crt"), 0); err == nil {
		t.Error("Renew renewed the CA certificate beside a host's")
	}
	if _, err := ca.Renew(is.Key, 0); err == nil || !strings.Contains(err.Error(), "NAME.crt") {
		t.Errorf("renewal of a key file: %v", err)
	}
}
