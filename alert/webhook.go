package alert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cairnbackup/cairn/internal/buildinfo"
	"github.com/cairnbackup/cairn/internal/configfile"
)

// StatusError is a webhook's answer other than 2xx.
type StatusError struct {
	Sink string
	// URL is the webhook's scheme and host only: the path of many
	// webhooks is their secret.
	URL    string
	Status int
	// Body is the start of the answer's body, which often says what the
	// receiver did not like.
	Body string
	// RetryAfter is the answer's Retry-After when it gave a number of
	// seconds, else 0.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("webhook %s: %s answered %d %s", e.Sink, e.URL, e.Status, http.StatusText(e.Status))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// TokenFileError is a webhook's token file that cannot be read or is empty.
type TokenFileError struct {
	Sink string
	Path string
	Err  error
}

func (e *TokenFileError) Error() string {
	return fmt.Sprintf("webhook %s: token file %s: %v", e.Sink, e.Path, e.Err)
}

func (e *TokenFileError) Unwrap() error { return e.Err }

// maxErrorBody is how much of a failed answer's body an error keeps; the
// rest is read and thrown away, up to maxDrain, so the connection can be
// used again.
const (
	maxErrorBody = 512
	maxDrain     = 64 << 10
)

type webhook struct {
	cfg    WebhookConfig
	where  string // scheme://host, what logs and errors name
	client *http.Client
}

func newWebhook(cfg WebhookConfig) (*webhook, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// An alert goes out now and then: keeping connections to every
	// webhook open between them buys nothing.
	tr.MaxIdleConnsPerHost = 1
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, configfile.AtField("ca", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, configfile.Fieldf("ca", "%s holds no PEM certificate: give the CA's certificate, PEM-encoded", cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, configfile.AtField("url", err)
	}
	w := &webhook{cfg: cfg, where: u.Scheme + "://" + u.Host, client: &http.Client{
		Transport: tr,
		// A redirect is answered as it is, a failure that names it: a
		// 302 would turn the post into a GET that carries no alert, and
		// the URL in the config is what needs fixing.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	w.cfg.Timeout = orDefault(cfg.Timeout, DefaultWebhookTimeout)
	if cfg.TokenFile != "" {
		if _, err := w.token(); err != nil {
			tr.CloseIdleConnections()
			return nil, configfile.AtField("token_file", err)
		}
	}
	return w, nil
}

func (w *webhook) name() string { return w.cfg.Name }
func (w *webhook) close()       { w.client.CloseIdleConnections() }

func (w *webhook) token() (string, error) {
	b, err := os.ReadFile(w.cfg.TokenFile)
	if err != nil {
		return "", &TokenFileError{Sink: w.cfg.Name, Path: w.cfg.TokenFile, Err: err}
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", &TokenFileError{Sink: w.cfg.Name, Path: w.cfg.TokenFile, Err: fmt.Errorf("empty: write the bearer token in it")}
	}
	return tok, nil
}

func (w *webhook) deliver(ctx context.Context, e Event, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook %s: %w", w.cfg.Name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "cairn/"+buildinfo.Version())
	req.Header.Set("X-Cairn-Alert-Kind", string(e.Kind))
	if w.cfg.TokenFile != "" {
		tok, err := w.token()
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		// url.Error quotes the whole URL, and the path of many webhooks
		// (Slack's, Teams') is their secret: keep it out of the logs.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("webhook %s: post to %s: %w", w.cfg.Name, w.where, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
		return nil
	}
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	return &StatusError{Sink: w.cfg.Name, URL: w.where, Status: resp.StatusCode, Body: strings.TrimSpace(string(head)),
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
}

// maxRetryAfter bounds what a Retry-After is read as; the worker caps the
// wait at its MaxBackoff anyway.
const maxRetryAfter = 24 * time.Hour

// parseRetryAfter reads a Retry-After of delay-seconds (RFC 9110 10.2.3);
// the other form, an HTTP date, would be read against the sender's clock
// and is ignored, as is anything not a number: 0.
func parseRetryAfter(h string) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" || len(h) > 10 {
		return 0
	}
	n, err := strconv.ParseUint(h, 10, 32)
	if err != nil {
		return 0
	}
	return min(time.Duration(n)*time.Second, maxRetryAfter)
}
