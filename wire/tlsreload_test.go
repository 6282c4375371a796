package wire

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/pki"
)

// TestReloadTLSPresentsARenewedCertificate renews a role's NATS client
// certificate in place and sends what SIGHUP does (ReloadTLS): the
// connection comes back at once presenting the new certificate, which the
// NATS server sees; reloading unchanged files keeps the connection; a file
// that does not load is an error and changes nothing.
func TestReloadTLSPresentsARenewedCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.CreateCA(filepath.Join(dir, "ca"), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(pki.IssueOptions{Name: "nats", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true}, filepath.Join(dir, "nats"))
	if err != nil {
		t.Fatal(err)
	}
	role, err := ca.Issue(pki.IssueOptions{Name: "web1", Client: true}, filepath.Join(dir, "web1"))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: srv.Cert, KeyFile: srv.Key, CaFile: srv.CA, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, TLSConfig: tc, TLSVerify: true, TLSTimeout: 5})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(ns.Shutdown)

	nc, err := Connect("tls://"+ns.Addr().String(), "web1", NATSAuth{CAFile: role.CA, CertFile: role.Cert, KeyFile: role.Key}, "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	presented := func() (string, error) {
		cz, err := ns.Connz(&server.ConnzOptions{Username: true})
		if err != nil {
			return "", err
		}
		if len(cz.Conns) != 1 || len(cz.Conns[0].TLSPeerCerts) == 0 {
			return "", fmt.Errorf("the NATS server has %d connections", len(cz.Conns))
		}
		return cz.Conns[0].TLSPeerCerts[0].CertSha256, nil
	}
	certHash := func(path string) string {
		kp, err := tls.LoadX509KeyPair(path, filepath.Join(filepath.Dir(path), "web1.key"))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(kp.Certificate[0])
		return hex.EncodeToString(sum[:])
	}
	first := certHash(role.Cert)
	poll.Until(t, 10*time.Second, func() error {
		got, err := presented()
		if err == nil && got != first {
			return fmt.Errorf("the server sees certificate %s, want %s", got, first)
		}
		return err
	})

	said, err := ReloadTLS(nc)
	if err != nil || len(said) != 2 {
		t.Fatalf("reload of unchanged files: %v, %v", said, err)
	}
	if nc.Stats().Reconnects != 0 {
		t.Fatal("reloading an unchanged certificate reconnected")
	}

	renewed, err := ca.Issue(pki.IssueOptions{Name: "web1", Client: true}, filepath.Join(dir, "renewed"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ from, to string }{{renewed.Cert, role.Cert}, {renewed.Key, role.Key}} {
		data, err := os.ReadFile(f.from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.to, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	second := certHash(role.Cert)
	if said, err = ReloadTLS(nc); err != nil {
		t.Fatalf("reload of a renewed certificate: %v", err)
	}
	t.Logf("reloaded: %v", said)
	poll.Until(t, 10*time.Second, func() error {
		got, err := presented()
		if err == nil && got != second {
			return fmt.Errorf("the server sees certificate %.16s, want the renewed %.16s", got, second)
		}
		return err
	})

	// The client's side of the reconnect may finish after the server saw
	// the new connection.
	poll.Until(t, 10*time.Second, func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("not reconnected yet")
		}
		return nil
	})
	reconnects := nc.Stats().Reconnects

	if err := os.WriteFile(role.Cert, []byte("-----BEGIN CERT"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReloadTLS(nc); err == nil {
		t.Fatal("a half-written certificate reloaded")
	}
	if !nc.IsConnected() || nc.Stats().Reconnects != reconnects {
		t.Fatalf("a failed reload touched the connection (connected %v, %d reconnects, was %d)", nc.IsConnected(), nc.Stats().Reconnects, reconnects)
	}
}
