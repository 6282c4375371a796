package pki

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParsePEM reads arbitrary bytes as the PEM files an operator hands
// the roles: a CA or host certificate, and a private key. What is refused
// names the file; what is accepted is a certificate, or a key that signs.
func FuzzParsePEM(f *testing.F) {
	dir := f.TempDir()
	ca, err := CreateCA(filepath.Join(dir, "ca"), "Fuzz CA", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	host, err := ca.Issue(IssueOptions{Name: "sn1", DNS: []string{"sn1.example"}, Server: true, Client: true}, filepath.Join(dir, "host"))
	if err != nil {
		f.Fatal(err)
	}
	var all []byte
	for _, p := range []string{host.Cert, host.Key, host.CA, filepath.Join(dir, "ca", CAKeyFile)} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		all = append(all, b...)
	}
	f.Add(all)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := parseCerts("in.pem", data)
		if err != nil && !strings.Contains(err.Error(), "in.pem") {
			t.Fatalf("error %q does not name the file", err)
		}
		for _, c := range certs {
			if c == nil || len(c.Raw) == 0 {
				t.Fatal("an empty certificate was accepted")
			}
			_ = Fingerprint(c)
		}
		key, err := parseKey("in.key", data)
		if err != nil {
			if !strings.Contains(err.Error(), "in.key") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if key.Public() == nil {
			t.Fatal("a key without a public half was accepted")
		}
	})
}
