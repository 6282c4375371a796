package alert

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"time"

	"github.com/cairnbackup/cairn/internal/configfile"
)

// Config says where alerts go and how often one is repeated. It is read
// from a role's config file (package internal/configfile): a zero field
// takes the default its comment gives, so that an item of a list needs only
// what differs.
type Config struct {
	// Webhooks receive each alert as a JSON POST.
	Webhooks []WebhookConfig `json:"webhooks" config:"fileonly"`
	// Commands run for each alert, the alert as JSON on their stdin.
	Commands []CommandConfig `json:"commands" config:"fileonly"`
	// RepeatInterval is how long the same condition (an RPO breach of one
	// client and policy, a short pool, missed runs of one policy) is not
	// sent again while it lasts; a change of its state (the breach ends)
	// is sent at once. 0 means 4h.
	RepeatInterval time.Duration `json:"repeat_interval,omitempty"`
	// QueueSize is how many alerts wait for each webhook or command while
	// it is slow or down; when full the oldest is dropped, counted in
	// cairn_alerts_dropped_total and logged. 0 means 256.
	QueueSize int `json:"queue_size,omitempty"`
}

// WebhookConfig is a URL that receives each alert as a JSON POST.
type WebhookConfig struct {
	// Name is the webhook in logs and in the sink label of the metrics;
	// letters, digits, '-' and '_'.
	Name string `json:"name"`
	// URL is where the alert is posted, http or https; through the proxy
	// that $HTTPS_PROXY or $HTTP_PROXY names, when the server has one
	// ($NO_PROXY as usual).
	URL string `json:"url"`
	// TokenFile holds a bearer token, sent as "Authorization: Bearer
	// TOKEN" and read again before every post, so that a rotated token
	// needs no restart. Empty sends no Authorization header.
	TokenFile string `json:"token_file,omitempty"`
	// CAFile is a PEM file of the CA certificates that sign the webhook
	// server's certificate; only they are trusted. Empty trusts the
	// system's roots.
	CAFile string `json:"ca,omitempty"`
	// Timeout bounds one post, from the dial to the end of the answer. 0
	// means 10s.
	Timeout time.Duration `json:"timeout,omitempty"`
	// Attempts is how many times an alert is posted before it is given up
	// (counted in cairn_alerts_failed_total); a 4xx answer other than 408
	// and 429, and a redirect, are not tried again, since the same post
	// would get the same answer. 0 means 5.
	Attempts int `json:"attempts,omitempty"`
	// Backoff is the wait before the second attempt, doubled before each
	// later one up to MaxBackoff; each wait is drawn between half of it
	// and all of it, so that many servers' retries do not arrive together.
	// 0 means 1s.
	Backoff time.Duration `json:"backoff,omitempty"`
	// MaxBackoff caps the wait between two attempts, a longer wait the
	// webhook asks for in a Retry-After included. 0 means 1m.
	MaxBackoff time.Duration `json:"max_backoff,omitempty"`
	// Kinds are the kinds of alert sent here (job_failed, rpo_breach,
	// rpo_resolved, missed_run, pool_short); empty sends every kind.
	Kinds []string `json:"kinds,omitempty"`
}

// CommandConfig is a program run for each alert: no shell, the alert's JSON
// on its stdin and its main fields in the environment (CAIRN_ALERT_KIND,
// CAIRN_ALERT_SUMMARY, ...; the package doc lists them).
type CommandConfig struct {
	// Name is the command in logs and in the sink label of the metrics;
	// letters, digits, '-' and '_'.
	Name string `json:"name"`
	// Path is the program, an absolute path: it runs as the server's user,
	// so it is named exactly rather than looked up in $PATH.
	Path string `json:"path"`
	// Args are the program's arguments, as they are: no shell expands
	// them.
	Args []string `json:"args,omitempty"`
	// Timeout bounds a run: past it the program's process group gets
	// SIGTERM, and SIGKILL 5s later. 0 means 30s.
	Timeout time.Duration `json:"timeout,omitempty"`
	// Attempts is how many times an alert is run before it is given up,
	// when the program fails or times out. 0 means 1: a program that
	// failed may have done part of its work.
	Attempts int `json:"attempts,omitempty"`
	// Backoff is the wait before the second attempt, as for a webhook. 0
	// means 1s.
	Backoff time.Duration `json:"backoff,omitempty"`
	// MaxBackoff caps the wait between two attempts. 0 means 1m.
	MaxBackoff time.Duration `json:"max_backoff,omitempty"`
	// Kinds are the kinds of alert run here; empty runs every kind.
	Kinds []string `json:"kinds,omitempty"`
}

// Defaults of the zero fields.
const (
	DefaultRepeatInterval = 4 * time.Hour
	DefaultQueueSize      = 256
	DefaultWebhookTimeout = 10 * time.Second
	DefaultWebhookTries   = 5
	DefaultCommandTimeout = 30 * time.Second
	DefaultBackoff        = time.Second
	DefaultMaxBackoff     = time.Minute
	// KillGrace is how long a command has between SIGTERM and SIGKILL.
	KillGrace = 5 * time.Second
)

var sinkName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Validate names every bad field by its path in the file
// (webhooks[1].url) and says how to fix it.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, configfile.Fieldf(field, format, args...))
	}
	if c.RepeatInterval < 0 {
		bad("repeat_interval", "%s is negative: use 0 for the default (4h) or a duration", c.RepeatInterval)
	}
	if c.QueueSize < 0 {
		bad("queue_size", "%d is negative: use 0 for the default (256) or more", c.QueueSize)
	}
	names := map[string]string{}
	name := func(path, n string) {
		switch {
		case n == "":
			bad(path+".name", "empty: name it, for the logs and metrics")
		case !sinkName.MatchString(n):
			bad(path+".name", "%q: use letters, digits, '-' and '_'", n)
		case names[n] != "":
			bad(path+".name", "%q is also the name of %s: names must differ", n, names[n])
		default:
			names[n] = path
		}
	}
	retry := func(path string, attempts int, backoff, maxBackoff time.Duration) {
		if attempts < 0 {
			bad(path+".attempts", "%d is negative: use 0 for the default or 1 and more", attempts)
		}
		if backoff < 0 {
			bad(path+".backoff", "%s is negative: use 0 for the default (1s) or a duration", backoff)
		}
		if maxBackoff < 0 {
			bad(path+".max_backoff", "%s is negative: use 0 for the default (1m) or a duration", maxBackoff)
		}
		if backoff > 0 && maxBackoff > 0 && maxBackoff < backoff {
			bad(path+".max_backoff", "%s is shorter than backoff %s: make it longer", maxBackoff, backoff)
		}
	}
	kinds := func(path string, ks []string) {
		for i, k := range ks {
			if !Kind(k).valid() {
				bad(fmt.Sprintf("%s.kinds[%d]", path, i), "%q is no kind of alert: use one of %v", k, Kinds)
			}
		}
	}
	for i, w := range c.Webhooks {
		path := fmt.Sprintf("webhooks[%d]", i)
		name(path, w.Name)
		u, err := url.Parse(w.URL)
		switch {
		case w.URL == "":
			bad(path+".url", "empty: give the http:// or https:// URL to post alerts to")
		case err != nil:
			bad(path+".url", "%v", err)
		case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
			bad(path+".url", "%q is no http:// or https:// URL", w.URL)
		case w.CAFile != "" && u.Scheme != "https":
			bad(path+".ca", "a CA file needs an https:// URL, and %q is not one", w.URL)
		}
		if w.Timeout < 0 {
			bad(path+".timeout", "%s is negative: use 0 for the default (10s) or a duration", w.Timeout)
		}
		retry(path, w.Attempts, w.Backoff, w.MaxBackoff)
		kinds(path, w.Kinds)
	}
	for i, cmd := range c.Commands {
		path := fmt.Sprintf("commands[%d]", i)
		name(path, cmd.Name)
		if !filepath.IsAbs(cmd.Path) {
			bad(path+".path", "%q is not an absolute path: give the program's full path (no shell or $PATH runs it)", cmd.Path)
		}
		if cmd.Timeout < 0 {
			bad(path+".timeout", "%s is negative: use 0 for the default (30s) or a duration", cmd.Timeout)
		}
		retry(path, cmd.Attempts, cmd.Backoff, cmd.MaxBackoff)
		kinds(path, cmd.Kinds)
	}
	return errors.Join(errs...)
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
