package pki

import (
	"context"
	"crypto/x509"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultExpiryWarning is how long before one of its certificates expires a
// role starts to warn: time enough for 'cairn cert renew' and a reload,
// even over a holiday.
const DefaultExpiryWarning = 30 * 24 * time.Hour

// ExpiryCheckInterval is how often a running role looks at its
// certificates' expiry again, so a role that runs for months still warns.
const ExpiryCheckInterval = 12 * time.Hour

// LoadedCert is a certificate a role loaded and trusts or presents.
type LoadedCert struct {
	// Use says what the role uses it for: "nats client", "nats ca",
	// "raft", "raft ca", "data port".
	Use string
	// File is where it was read from.
	File string
	Cert *x509.Certificate
}

// ExpiryWatch follows the certificates a role loaded, as they are now
// (after a reload too): it exports each one's expiry to Prometheus
// (cairn_cert_expiry_timestamp_seconds, for an alert on
// "cairn_cert_expiry_timestamp_seconds - time() < 30*86400"), and Check logs
// a warning for each that expires within WarnWithin, an error for each that
// has expired. A certificate nothing renews otherwise stops a deployment on
// one day, two years after it was installed, without a word before.
type ExpiryWatch struct {
	// Log is where warnings go.
	Log *slog.Logger
	// WarnWithin is how long before expiry Check warns;
	// DefaultExpiryWarning when 0.
	WarnWithin time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu      sync.Mutex
	sources []func() []LoadedCert
}

// Add makes the watch follow the certificates src returns: it is called at
// every check and scrape, so it returns what the role uses at that moment.
func (w *ExpiryWatch) Add(src func() []LoadedCert) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sources = append(w.sources, src)
}

// Certs lists every certificate the role uses now.
func (w *ExpiryWatch) Certs() []LoadedCert {
	w.mu.Lock()
	sources := append([]func() []LoadedCert(nil), w.sources...)
	w.mu.Unlock()
	var out []LoadedCert
	for _, src := range sources {
		for _, c := range src() {
			if c.Cert != nil {
				out = append(out, c)
			}
		}
	}
	return out
}

func (w *ExpiryWatch) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// Check logs each certificate that expires within WarnWithin (a warning)
// or has expired (an error), saying how to renew it, and returns them.
func (w *ExpiryWatch) Check() []LoadedCert {
	within := w.WarnWithin
	if within <= 0 {
		within = DefaultExpiryWarning
	}
	now := w.now()
	var soon []LoadedCert
	for _, c := range w.Certs() {
		left := c.Cert.NotAfter.Sub(now)
		if left > within {
			continue
		}
		soon = append(soon, c)
		args := []any{"use", c.Use, "file", c.File, "subject", c.Cert.Subject.String(),
			"not_after", c.Cert.NotAfter.UTC().Format(time.RFC3339), "hint", renewHint(c)}
		if left <= 0 {
			w.Log.Error("a certificate this role uses has EXPIRED: its peers refuse it", args...)
			continue
		}
		w.Log.Warn("a certificate this role uses expires soon", append(args, "days_left", int(left.Hours()/24))...)
	}
	return soon
}

func renewHint(c LoadedCert) string {
	switch {
	case c.Use == "data port":
		return "remove data-tls.crt and data-tls.key from the storage node's --data directory and reload it (SIGHUP): it makes a new one and registers it"
	case c.Cert.IsCA:
		return "make a new CA and roll it out as README says (Rotating the CA)"
	}
	return "on the CA's machine: cairn cert renew --ca DIR " + c.Cert.Subject.CommonName + ".crt; copy it and its key here and reload the role (SIGHUP)"
}

// Run checks at once and then every interval (ExpiryCheckInterval when 0)
// until ctx ends.
func (w *ExpiryWatch) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = ExpiryCheckInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		w.Check()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

var descCertExpiry = prometheus.NewDesc("cairn_cert_expiry_timestamp_seconds",
	"When a certificate this role uses expires (Unix time), by use, file, subject and serial: alert on it minus time() below 30 days.",
	[]string{"use", "file", "subject", "serial"}, nil)

// Describe implements prometheus.Collector.
func (w *ExpiryWatch) Describe(ch chan<- *prometheus.Desc) { ch <- descCertExpiry }

// Collect implements prometheus.Collector.
func (w *ExpiryWatch) Collect(ch chan<- prometheus.Metric) {
	seen := map[[4]string]bool{}
	for _, c := range w.Certs() {
		labels := [4]string{c.Use, c.File, c.Cert.Subject.String(), c.Cert.SerialNumber.Text(16)}
		if seen[labels] {
			continue // one file loaded for two uses of the same name: one series
		}
		seen[labels] = true
		ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, float64(c.Cert.NotAfter.Unix()), labels[:]...)
	}
}
