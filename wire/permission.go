package wire

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// NATS refuses a publish or a subscription that a credential's permissions
// do not allow by sending an asynchronous -ERR on the connection; the
// request itself is simply never delivered, so without help the caller
// waits for its whole timeout and is then told that nothing answers. The
// connection's error handler hands such refusals to the requests waiting
// on that connection, which fail at once with CodePermissionDenied.

var (
	publishDeniedRE   = regexp.MustCompile(`Publish to "(\S+)"`)
	subscribeDeniedRE = regexp.MustCompile(`Subscription to "(\S+)"`)
)

// denials tracks, per connection, the requests that a refusal can fail.
type denials struct {
	mu      sync.Mutex
	waiters map[*denialWaiter]struct{}
}

type denialWaiter struct {
	subject string
	inbox   string // the request's reply prefix: a refused inbox fails it too
	fail    context.CancelCauseFunc
}

var denialsByConn sync.Map // *nats.Conn -> *denials

func denialsOf(nc *nats.Conn) *denials {
	d, _ := denialsByConn.LoadOrStore(nc, &denials{waiters: map[*denialWaiter]struct{}{}})
	return d.(*denials)
}

// watchDenial makes ctx end with a permission error if NATS refuses this
// connection a publish to subject or the subscription of its reply inbox.
// The returned func stops watching.
func watchDenial(ctx context.Context, nc *nats.Conn, subject string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &denialWaiter{subject: subject, inbox: nc.Opts.InboxPrefix, fail: cancel}
	d := denialsOf(nc)
	d.mu.Lock()
	d.waiters[w] = struct{}{}
	d.mu.Unlock()
	return ctx, func() {
		d.mu.Lock()
		delete(d.waiters, w)
		d.mu.Unlock()
		cancel(nil)
	}
}

// noteDenial fails the requests that a permission violation reported on nc
// concerns. Every error handler of a Cairn connection calls it.
func noteDenial(nc *nats.Conn, err error) {
	if nc == nil || !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	msg := err.Error()
	pub, sub := "", ""
	if m := publishDeniedRE.FindStringSubmatch(msg); m != nil {
		pub = m[1]
	}
	if m := subscribeDeniedRE.FindStringSubmatch(msg); m != nil {
		sub = m[1]
	}
	v, ok := denialsByConn.Load(nc)
	if !ok {
		return
	}
	d := v.(*denials)
	d.mu.Lock()
	defer d.mu.Unlock()
	for w := range d.waiters {
		switch {
		case pub != "" && pub == w.subject:
			w.fail(permissionDenied("publish to", pub))
		case sub != "" && w.inbox != "" && strings.HasPrefix(sub, w.inbox):
			w.fail(permissionDenied("subscribe to", sub))
		}
	}
}

// forgetConn drops what is kept for a closed connection.
func forgetConn(nc *nats.Conn) {
	denialsByConn.Delete(nc)
	tlsByConn.Delete(nc)
}

func permissionDenied(what, subject string) *Error {
	return Errorf(CodePermissionDenied, denialHint(what, subject), "permission denied for subject %q: NATS does not let this role's credential %s it", subject, what)
}
