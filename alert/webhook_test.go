package alert

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/configfile"
	"github.com/cairnbackup/cairn/internal/poll"
)

// receiver is a webhook receiver on a real listener: it answers the
// statuses the test queues (200 once they run out) and keeps every post.
type receiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	statuses []int
	posts    []post
	// hold, when set, makes every post wait until it is closed or the
	// post's connection goes.
	hold chan struct{}
	// retryAfter is the Retry-After header of every answer, when set.
	retryAfter string
}

type post struct {
	header http.Header
	body   []byte
	status int
}

func newReceiver(t *testing.T, tls bool) *receiver {
	r := &receiver{}
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		hold := r.hold
		status := http.StatusOK
		if len(r.statuses) > 0 {
			status, r.statuses = r.statuses[0], r.statuses[1:]
		}
		r.posts = append(r.posts, post{header: req.Header.Clone(), body: body, status: status})
		retryAfter := r.retryAfter
		r.mu.Unlock()
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		if hold != nil {
			select {
			case <-hold:
			case <-req.Context().Done():
				return
			}
		}
		if status >= 300 && status < 400 {
			w.Header().Set("Location", "/elsewhere")
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, "status %d from the test receiver\n", status)
	})
	if tls {
		r.srv = httptest.NewTLSServer(h)
	} else {
		r.srv = httptest.NewServer(h)
	}
	t.Cleanup(func() {
		r.release()
		r.srv.Close()
	})
	return r
}

func (r *receiver) answer(statuses ...int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses = append(r.statuses, statuses...)
}

func (r *receiver) holdAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hold = make(chan struct{})
}

func (r *receiver) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hold != nil {
		close(r.hold)
		r.hold = nil
	}
}

func (r *receiver) got() []post {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]post(nil), r.posts...)
}

func (r *receiver) hasPosts(n int) func() error {
	return func() error {
		if got := len(r.got()); got != n {
			return fmt.Errorf("%d posts, want %d", got, n)
		}
		return nil
	}
}

func decodeEvent(t *testing.T, b []byte) Event {
	t.Helper()
	var e Event
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("body %s: %v", b, err)
	}
	return e
}

func closeDispatcher(t *testing.T, d *Dispatcher) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = d.Close(ctx)
	})
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var t0 = time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)

// A receiver that fails the first posts gets the alert again after waits
// that double from the backoff, each within its jitter's bounds; every
// attempt carries the same body and headers, and the one it accepts is
// counted as sent.
func TestWebhookRetriesUntilAccepted(t *testing.T) {
	r := newReceiver(t, false)
	r.answer(503, 500, 429)
	clock := newFakeClock()
	log, logs := testLogger(t)
	token := writeFile(t, "token", "s3cret\n")
	d, err := New(Config{Webhooks: []WebhookConfig{{
		Name: "ops", URL: r.srv.URL + "/hook/secret-path", TokenFile: token,
		Attempts: 5, Backoff: 100 * time.Millisecond, MaxBackoff: 250 * time.Millisecond,
	}}}, Options{Logger: log, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	closeDispatcher(t, d)

	e := NewJobFailed(t0, 42, "web1", "nightly", "incremental", "agent web1 went offline")
	if ok, err := d.Send(e); !ok || err != nil {
		t.Fatalf("Send = %v, %v", ok, err)
	}
	// Waits after attempts 1, 2, 3: 100ms, 200ms, then 400ms capped at
	// 250ms, each drawn from its upper half.
	for i, full := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 250 * time.Millisecond} {
		poll.Until(t, 10*time.Second, r.hasPosts(i+1))
		var wait time.Duration
		poll.Until(t, 10*time.Second, clock.oneWait(&wait))
		if wait < full/2 || wait > full {
			t.Errorf("wait after attempt %d is %s, want %s to %s", i+1, wait, full/2, full)
		}
		clock.Advance(wait)
	}
	poll.Until(t, 10*time.Second, func() error {
		if n := counter(t, d, "cairn_alerts_sent_total", "sink", "ops"); n != 1 {
			return fmt.Errorf("sent = %v", n)
		}
		return nil
	})
	posts := r.got()
	if len(posts) != 4 {
		t.Fatalf("%d posts, want 4", len(posts))
	}
	for i, p := range posts {
		if string(p.body) != string(posts[0].body) {
			t.Errorf("post %d body %s differs from the first %s", i, p.body, posts[0].body)
		}
		if got := p.header.Get("Authorization"); got != "Bearer s3cret" {
			t.Errorf("post %d Authorization %q", i, got)
		}
		if got := p.header.Get("Content-Type"); got != "application/json" {
			t.Errorf("post %d Content-Type %q", i, got)
		}
		if got := p.header.Get("X-Cairn-Alert-Kind"); got != "job_failed" {
			t.Errorf("post %d X-Cairn-Alert-Kind %q", i, got)
		}
	}
	got := decodeEvent(t, posts[0].body)
	if got.Version != 1 || got.Kind != JobFailed || got.Job != 42 || got.Client != "web1" || !got.Time.Equal(t0) || got.Summary != e.Summary {
		t.Errorf("decoded %+v, sent %+v", got, e)
	}
	if n := counter(t, d, "cairn_alerts_failed_total", "sink", "ops"); n != 0 {
		t.Errorf("failed = %v", n)
	}
	if n := logs.count("will try again"); n != 3 {
		t.Errorf("%d retry log lines, want 3", n)
	}
	// The path of a webhook URL is often its secret.
	if strings.Contains(logs.String(), "secret-path") {
		t.Errorf("the log names the webhook's path:\n%s", logs)
	}

	// A rotated token is read for the next post, and alerts arrive in the
	// order they were sent.
	if err := os.WriteFile(token, []byte("rotated"), 0o600); err != nil {
		t.Fatal(err)
	}
	for id := uint64(100); id < 105; id++ {
		if _, err := d.Send(NewJobFailed(t0, id, "web1", "", "", "x")); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, 10*time.Second, r.hasPosts(9))
	for i, p := range r.got()[4:] {
		if e := decodeEvent(t, p.body); e.Job != uint64(100+i) {
			t.Errorf("post %d is job %d, want %d", 4+i, e.Job, 100+i)
		}
		if got := p.header.Get("Authorization"); got != "Bearer rotated" {
			t.Errorf("Authorization %q after the token file changed", got)
		}
	}
}

// A receiver that always fails gets Attempts posts and the alert is given
// up; one that says the request is wrong (400) gets one, and so does one
// that redirects: a client would follow a 302 with a GET, which says
// nothing, and the URL in the config is what needs fixing.
func TestWebhookGivesUp(t *testing.T) {
	for _, tc := range []struct {
		status, posts int
	}{{500, 3}, {400, 1}, {404, 1}, {408, 3}, {302, 1}, {307, 1}} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			r := newReceiver(t, false)
			r.answer(tc.status, tc.status, tc.status, tc.status)
			clock := newFakeClock()
			log, logs := testLogger(t)
			d, err := New(Config{Webhooks: []WebhookConfig{{Name: "ops", URL: r.srv.URL, Attempts: 3}}}, Options{Logger: log, Clock: clock})
			if err != nil {
				t.Fatal(err)
			}
			closeDispatcher(t, d)
			if _, err := d.Send(NewJobFailed(t0, 1, "c", "", "", "x")); err != nil {
				t.Fatal(err)
			}
			poll.Until(t, 10*time.Second, func() error {
				if n := counter(t, d, "cairn_alerts_failed_total", "sink", "ops"); n != 1 {
					clock.Advance(time.Minute)
					return fmt.Errorf("failed = %v", n)
				}
				return nil
			})
			if n := len(r.got()); n != tc.posts {
				t.Errorf("%d posts, want %d", n, tc.posts)
			}
			if !strings.Contains(logs.String(), fmt.Sprintf("answered %d", tc.status)) {
				t.Errorf("the log does not say what the receiver answered:\n%s", logs)
			}
		})
	}
}

// A receiver that never answers costs one Timeout per attempt, not the
// worker.
func TestWebhookTimeout(t *testing.T) {
	r := newReceiver(t, false)
	r.holdAll()
	clock := newFakeClock()
	log, logs := testLogger(t)
	d, err := New(Config{Webhooks: []WebhookConfig{{Name: "slow", URL: r.srv.URL, Attempts: 2, Timeout: 100 * time.Millisecond}}},
		Options{Logger: log, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	closeDispatcher(t, d)
	if _, err := d.Send(NewJobFailed(t0, 1, "c", "", "", "x")); err != nil {
		t.Fatal(err)
	}
	var wait time.Duration
	poll.Until(t, 10*time.Second, clock.oneWait(&wait))
	clock.Advance(wait)
	poll.Until(t, 10*time.Second, func() error {
		if n := counter(t, d, "cairn_alerts_failed_total", "sink", "slow"); n != 1 {
			return fmt.Errorf("failed = %v", n)
		}
		return nil
	})
	if n := len(r.got()); n != 2 {
		t.Errorf("%d posts, want 2", n)
	}
	if !strings.Contains(logs.String(), "deadline exceeded") {
		t.Errorf("the log does not say the post timed out:\n%s", logs)
	}
}

// While a receiver hangs, alerts queue up to QueueSize and the oldest are
// dropped, counted and logged; once it answers, the newest arrive in order.
func TestDeadWebhookDropsOldest(t *testing.T) {
	r := newReceiver(t, false)
	r.holdAll()
	log, logs := testLogger(t)
	d, err := New(Config{QueueSize: 3, Webhooks: []WebhookConfig{{Name: "dead", URL: r.srv.URL, Attempts: 1, Timeout: time.Minute}}},
		Options{Logger: log, Clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	closeDispatcher(t, d)
	send := func(id uint64) {
		if ok, err := d.Send(NewJobFailed(t0, id, "c", "", "", "x")); !ok || err != nil {
			t.Fatalf("Send(%d) = %v, %v", id, ok, err)
		}
	}
	send(1)
	poll.Until(t, 10*time.Second, r.hasPosts(1)) // the worker is stuck in it
	for id := uint64(2); id <= 100; id++ {
		send(id)
	}
	w := d.workers[0]
	w.mu.Lock()
	queued := len(w.queue)
	w.mu.Unlock()
	if queued != 3 {
		t.Errorf("%d alerts queued, want 3", queued)
	}
	if n := counter(t, d, "cairn_alerts_dropped_total", "sink", "dead"); n != 96 {
		t.Errorf("dropped = %v, want 96", n)
	}
	if n := logs.count("alert queue full"); n != 96 {
		t.Errorf("%d log lines of a full queue, want 96", n)
	}
	r.release()
	poll.Until(t, 10*time.Second, r.hasPosts(4))
	var jobs []uint64
	for _, p := range r.got() {
		jobs = append(jobs, decodeEvent(t, p.body).Job)
	}
	if fmt.Sprint(jobs) != "[1 98 99 100]" {
		t.Errorf("jobs posted %v, want [1 98 99 100]", jobs)
	}
	poll.Until(t, 10*time.Second, func() error {
		if n := counter(t, d, "cairn_alerts_sent_total", "sink", "dead"); n != 4 {
			return fmt.Errorf("sent = %v", n)
		}
		return nil
	})
}

// Close delivers what is queued; past its deadline it drops the rest and
// says so.
func TestClose(t *testing.T) {
	t.Run("drains", func(t *testing.T) {
		r := newReceiver(t, false)
		d, err := New(Config{Webhooks: []WebhookConfig{{Name: "ok", URL: r.srv.URL}}}, Options{Clock: newFakeClock()})
		if err != nil {
			t.Fatal(err)
		}
		for id := uint64(1); id <= 20; id++ {
			if _, err := d.Send(NewJobFailed(t0, id, "c", "", "", "x")); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(r.got()); n != 20 {
			t.Errorf("%d posts after Close, want 20", n)
		}
		if ok, err := d.Send(NewJobFailed(t0, 99, "c", "", "", "x")); ok || !errors.Is(err, ErrClosed) {
			t.Errorf("Send after Close = %v, %v", ok, err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		r := newReceiver(t, false)
		r.holdAll()
		log, logs := testLogger(t)
		d, err := New(Config{Webhooks: []WebhookConfig{{Name: "dead", URL: r.srv.URL, Timeout: time.Hour}}}, Options{Logger: log, Clock: newFakeClock()})
		if err != nil {
			t.Fatal(err)
		}
		for id := uint64(1); id <= 5; id++ {
			if _, err := d.Send(NewJobFailed(t0, id, "c", "", "", "x")); err != nil {
				t.Fatal(err)
			}
		}
		poll.Until(t, 10*time.Second, r.hasPosts(1))
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		err = d.Close(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close = %v, want the deadline", err)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("Close took %s past a 50ms deadline", el)
		}
		if n := counter(t, d, "cairn_alerts_dropped_total", "sink", "dead"); n != 5 {
			t.Errorf("dropped = %v, want 5 (one under way, four queued)", n)
		}
		if !strings.Contains(logs.String(), "server stopped") {
			t.Errorf("the log does not say why alerts were dropped:\n%s", logs)
		}
	})
}

// A webhook with a CA file trusts that CA only.
func TestWebhookCA(t *testing.T) {
	r := newReceiver(t, true)
	ca := writeFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.srv.Certificate().Raw})))
	for _, tc := range []struct {
		name, ca string
		sent     float64
	}{{"with CA", ca, 1}, {"system roots", "", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			log, logs := testLogger(t)
			d, err := New(Config{Webhooks: []WebhookConfig{{Name: "tls", URL: r.srv.URL, CAFile: tc.ca, Attempts: 1}}}, Options{Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			closeDispatcher(t, d)
			if _, err := d.Send(NewJobFailed(t0, 1, "c", "", "", "x")); err != nil {
				t.Fatal(err)
			}
			poll.Until(t, 10*time.Second, func() error {
				sent := counter(t, d, "cairn_alerts_sent_total", "sink", "tls")
				failed := counter(t, d, "cairn_alerts_failed_total", "sink", "tls")
				if sent+failed != 1 {
					return fmt.Errorf("sent %v, failed %v", sent, failed)
				}
				if sent != tc.sent {
					return fmt.Errorf("sent %v, want %v", sent, tc.sent)
				}
				return nil
			})
			if tc.sent == 0 && !strings.Contains(logs.String(), "certificate") {
				t.Errorf("the log does not say the certificate is not trusted:\n%s", logs)
			}
		})
	}
}

// A webhook whose token file or CA cannot be read stops New, naming it.
func TestWebhookBadFiles(t *testing.T) {
	dir := t.TempDir()
	empty := writeFile(t, "empty", " \n")
	notPEM := writeFile(t, "ca", "not a certificate")
	for _, tc := range []struct {
		cfg   WebhookConfig
		want  string
		field string
	}{
		{WebhookConfig{TokenFile: filepath.Join(dir, "missing")}, "no such file", "webhooks[1].token_file"},
		{WebhookConfig{TokenFile: empty}, "empty: write the bearer token", "webhooks[1].token_file"},
		{WebhookConfig{CAFile: notPEM}, "holds no PEM certificate", "webhooks[1].ca"},
		{WebhookConfig{CAFile: filepath.Join(dir, "missing")}, "no such file", "webhooks[1].ca"},
	} {
		tc.cfg.Name, tc.cfg.URL = "w", "https://alerts.example/hook"
		_, err := New(Config{Webhooks: []WebhookConfig{{Name: "ok", URL: "http://x"}, tc.cfg}}, Options{})
		var fe *configfile.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: New = %v, want a FieldError of %s saying %q", tc.cfg, err, tc.field, tc.want)
		}
	}
	var tfe *TokenFileError
	_, err := New(Config{Webhooks: []WebhookConfig{{Name: "w", URL: "http://x", TokenFile: empty}}}, Options{})
	if !errors.As(err, &tfe) || tfe.Path != empty {
		t.Errorf("New = %v, want a TokenFileError of %s", err, empty)
	}
}

// A receiver that says how long to wait (Retry-After in seconds, with a 429
// or a 503) gets the next attempt then, not sooner, and no later than
// MaxBackoff; a Retry-After shorter than the backoff does not shorten it.
func TestWebhookRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		header   string
		min, max time.Duration
	}{
		{"40", 40 * time.Second, 40 * time.Second},
		{"600", time.Minute, time.Minute},
		{"0", 500 * time.Millisecond, time.Second},
		{"Wed, 21 Oct 2026 07:28:00 GMT", 500 * time.Millisecond, time.Second}, // a date: not read
	} {
		t.Run(tc.header, func(t *testing.T) {
			r := newReceiver(t, false)
			r.answer(429)
			r.mu.Lock()
			r.retryAfter = tc.header
			r.mu.Unlock()
			clock := newFakeClock()
			d, err := New(Config{Webhooks: []WebhookConfig{{Name: "ops", URL: r.srv.URL}}}, Options{Clock: clock})
			if err != nil {
				t.Fatal(err)
			}
			closeDispatcher(t, d)
			if _, err := d.Send(NewJobFailed(t0, 1, "c", "", "", "x")); err != nil {
				t.Fatal(err)
			}
			var wait time.Duration
			poll.Until(t, 10*time.Second, clock.oneWait(&wait))
			if wait < tc.min || wait > tc.max {
				t.Errorf("waited %s after Retry-After %q, want %s to %s", wait, tc.header, tc.min, tc.max)
			}
			clock.Advance(wait)
			poll.Until(t, 10*time.Second, r.hasPosts(2))
		})
	}
}
