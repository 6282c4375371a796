package pki

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// lockedBuffer is a log sink the watch's goroutine and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestExpiryWatch(t *testing.T) {
	ca := mustCA(t, filepath.Join(t.TempDir(), "ca"))
	out := t.TempDir()
	short, err := ca.Issue(IssueOptions{Name: "web1", Client: true, Validity: 20 * 24 * time.Hour}, out)
	if err != nil {
		t.Fatal(err)
	}
	long, err := ca.Issue(IssueOptions{Name: "s1", IPs: nil, DNS: []string{"s1.example.net"}, Server: true, Client: true}, out)
	if err != nil {
		t.Fatal(err)
	}
	web1, err := NewKeyPair(short.Cert, short.Key)
	if err != nil {
		t.Fatal(err)
	}
	_, s1, err := MutualTLSReloadable(Files{CA: long.CA, Cert: long.Cert, Key: long.Key})
	if err != nil {
		t.Fatal(err)
	}

	var logs lockedBuffer
	now := time.Now()
	w := &ExpiryWatch{Log: slog.New(slog.NewTextHandler(&logs, nil)), Now: func() time.Time { return now }}
	w.Add(func() []LoadedCert { return web1.Loaded("nats client") })
	w.Add(func() []LoadedCert { return s1.Loaded("raft") })

	soon := w.Check()
	if len(soon) != 1 || soon[0].Cert.Subject.CommonName != "web1" {
		t.Fatalf("Check found %v expiring within 30 days, want web1's certificate (20 days) alone", soon)
	}
	text := logs.String()
	for _, want := range []string{"level=WARN", "expires soon", "use=\"nats client\"", "days_left=19", "cairn cert renew"} {
		if !strings.Contains(text, want) {
			t.Errorf("the warning does not say %q:\n%s", want, text)
		}
	}

	// The metric: one series per certificate, with its expiry.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(w)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got[labels["use"]+" "+labels["subject"]] = m.GetGauge().GetValue()
		}
	}
	if len(got) != 3 {
		t.Errorf("%d series, want 3 (web1, s1, the CA as raft's): %v", len(got), got)
	}
	for key, c := range map[string]*LoadedCert{
		"nats client CN=web1,O=Cairn": {Cert: web1.Current().Leaf},
		"raft CN=s1,O=Cairn":          {Cert: s1.Current().Leaf},
		"raft ca CN=test CA,O=Cairn":  {Cert: ca.Cert},
	} {
		if v, ok := got[key]; !ok || int64(v) != c.Cert.NotAfter.Unix() {
			t.Errorf("cairn_cert_expiry_timestamp_seconds{%s} = %v (present %v), want %d; all: %v", key, v, ok, c.Cert.NotAfter.Unix(), got)
		}
	}

	// Past its expiry, an error.
	now = short.notAfter(t).Add(time.Hour)
	logs = lockedBuffer{}
	w.Check()
	if text := logs.String(); !strings.Contains(text, "level=ERROR") || !strings.Contains(text, "EXPIRED") {
		t.Errorf("an expired certificate is not an error:\n%s", text)
	}

	// Renewed and reloaded: nothing to say, and the metric follows.
	now = time.Now()
	if _, err := ca.Renew(short.Cert, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := web1.Reload(); err != nil {
		t.Fatal(err)
	}
	if soon := w.Check(); len(soon) != 0 {
		t.Errorf("after the renewal and reload, Check still finds %v", soon)
	}
}

func (is *Issued) notAfter(t *testing.T) time.Time {
	t.Helper()
	c, err := ReadCertificate(is.Cert)
	if err != nil {
		t.Fatal(err)
	}
	return c.NotAfter
}

// TestExpiryWatchRuns checks that a role that runs for months looks again:
// a certificate that was far from expiry at start is warned about once the
// time comes, without a reload.
func TestExpiryWatchRuns(t *testing.T) {
	ca := mustCA(t, filepath.Join(t.TempDir(), "ca"))
	is, err := ca.Issue(IssueOptions{Name: "web1", Client: true, Validity: 40 * 24 * time.Hour}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	kp, err := NewKeyPair(is.Cert, is.Key)
	if err != nil {
		t.Fatal(err)
	}
	issued := time.Now()
	synctest.Test(t, func(t *testing.T) {
		// The bubble's clock starts in 2000: the watch's clock is the
		// time the certificate was issued plus the bubble's time since.
		start := time.Now()
		var logs lockedBuffer
		w := &ExpiryWatch{Log: slog.New(slog.NewTextHandler(&logs, nil)), Now: func() time.Time { return issued.Add(time.Since(start)) }}
		w.Add(func() []LoadedCert { return kp.Loaded("nats client") })
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			w.Run(ctx, 0)
			close(done)
		}()
		synctest.Wait()
		if strings.Contains(logs.String(), "expires soon") {
			t.Fatalf("warned at start about a certificate with 40 days left:\n%s", logs.String())
		}
		time.Sleep(9 * 24 * time.Hour) // 31 days left: not yet
		synctest.Wait()
		if strings.Contains(logs.String(), "expires soon") {
			t.Fatalf("warned with 31 days left:\n%s", logs.String())
		}
		time.Sleep(2 * 24 * time.Hour) // 29 days left
		synctest.Wait()
		if !strings.Contains(logs.String(), "expires soon") {
			t.Fatalf("no warning with 29 days left:\n%s", logs.String())
		}
		cancel()
		<-done
	})
}
