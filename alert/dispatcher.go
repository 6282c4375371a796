package alert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnbackup/cairn/internal/configfile"
)

// Clock is the time the Dispatcher reads: the repeat interval and the waits
// between attempts run on it, so that a test can move it by hand. The real
// clock is the default.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// sink delivers one alert, once: the Dispatcher's worker for the sink does
// the queueing and the retries. Deliver returns when ctx is done, with its
// error.
type sink interface {
	name() string
	deliver(ctx context.Context, e Event, body []byte) error
	close()
}

// Options are what a Dispatcher takes beside its Config.
type Options struct {
	// Logger logs every alert dropped or given up, and every retry.
	Logger *slog.Logger
	// Clock is the real clock when nil.
	Clock Clock
}

// ErrClosed is what Send reports after Close.
var ErrClosed = errors.New("alert: the dispatcher is closed")

// Dispatcher sends alerts to the configured webhooks and commands. Send
// never blocks: each sink has a worker goroutine and a bounded queue of its
// own, so a dead webhook neither holds up a command nor grows memory. The
// Dispatcher owns its workers; Close stops them.
type Dispatcher struct {
	log    *slog.Logger
	clock  Clock
	repeat time.Duration

	// ctx is every delivery's and every wait's: Close cancels it when its
	// deadline passes.
	ctx    context.Context
	cancel context.CancelFunc
	// stop is closed by Close: a worker ends once its queue is empty.
	stop    chan struct{}
	wg      sync.WaitGroup
	workers []*worker

	mu        sync.Mutex
	closed    bool
	last      map[string]*sent // by Event.key
	lastSweep time.Time

	m metrics
}

// sent is what the Dispatcher remembers of a condition it last sent.
type sent struct {
	kind       Kind
	at         time.Time
	suppressed int
}

type metrics struct {
	sent, failed, dropped *prometheus.CounterVec
	suppressed            *prometheus.CounterVec
}

// New starts a Dispatcher for cfg, which it validates; a webhook's CA file
// and token file are read now, so that a bad one stops the server's start
// rather than the first alert. Its errors are configfile.FieldErrors that
// name the field (webhooks[0].token_file).
func New(cfg Config, opts Options) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var sinks []sink
	var policies []retryPolicy
	var kinds [][]string
	fail := func(err error) (*Dispatcher, error) {
		for _, s := range sinks {
			s.close()
		}
		return nil, err
	}
	for i, w := range cfg.Webhooks {
		s, err := newWebhook(w)
		if err != nil {
			return fail(configfile.In(fmt.Sprintf("webhooks[%d]", i), err))
		}
		sinks = append(sinks, s)
		policies = append(policies, retryPolicy{
			attempts: orDefault(w.Attempts, DefaultWebhookTries),
			backoff:  orDefault(w.Backoff, DefaultBackoff),
			max:      orDefault(w.MaxBackoff, DefaultMaxBackoff),
		})
		kinds = append(kinds, w.Kinds)
	}
	for _, c := range cfg.Commands {
		sinks = append(sinks, newCommand(c))
		policies = append(policies, retryPolicy{
			attempts: orDefault(c.Attempts, 1),
			backoff:  orDefault(c.Backoff, DefaultBackoff),
			max:      orDefault(c.MaxBackoff, DefaultMaxBackoff),
		})
		kinds = append(kinds, c.Kinds)
	}
	d := newDispatcher(cfg, opts)
	for i, s := range sinks {
		d.add(s, policies[i], kinds[i], orDefault(cfg.QueueSize, DefaultQueueSize))
	}
	return d, nil
}

// newDispatcher is a Dispatcher with no sink yet: add gives it some.
func newDispatcher(cfg Config, opts Options) *Dispatcher {
	d := &Dispatcher{
		log:    opts.Logger,
		clock:  opts.Clock,
		repeat: orDefault(cfg.RepeatInterval, DefaultRepeatInterval),
		stop:   make(chan struct{}),
		last:   map[string]*sent{},
		m: metrics{
			sent: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "cairn_alerts_sent_total", Help: "Alerts a webhook or command took, by sink.",
			}, []string{"sink"}),
			failed: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "cairn_alerts_failed_total", Help: "Alerts given up after their last attempt, by sink.",
			}, []string{"sink"}),
			dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "cairn_alerts_dropped_total", Help: "Alerts dropped unsent: the oldest of a full queue, or those left when the server stopped; by sink.",
			}, []string{"sink"}),
			suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "cairn_alerts_suppressed_total", Help: "Alerts not sent because the same condition was sent within the repeat interval, by kind.",
			}, []string{"kind"}),
		},
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.log = d.log.With("component", "alert")
	if d.clock == nil {
		d.clock = realClock{}
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	for _, k := range Kinds {
		d.m.suppressed.WithLabelValues(string(k))
	}
	return d
}

func (d *Dispatcher) add(s sink, p retryPolicy, kinds []string, queueSize int) {
	w := &worker{
		d: d, sink: s, retry: p, size: queueSize,
		wake:    make(chan struct{}, 1),
		sent:    d.m.sent.WithLabelValues(s.name()),
		failed:  d.m.failed.WithLabelValues(s.name()),
		dropped: d.m.dropped.WithLabelValues(s.name()),
		log:     d.log.With("sink", s.name()),
	}
	if len(kinds) > 0 {
		w.kinds = map[Kind]bool{}
		for _, k := range kinds {
			w.kinds[Kind(k)] = true
		}
	}
	d.workers = append(d.workers, w)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		w.run()
	}()
}

// Register registers the Dispatcher's metrics with reg.
func (d *Dispatcher) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{d.m.sent, d.m.failed, d.m.dropped, d.m.suppressed} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Send queues e for every sink that takes its kind, unless the same
// condition in the same state was queued less than the repeat interval ago:
// then e is counted in cairn_alerts_suppressed_total and in the Suppressed
// field of the next one queued. It reports whether e was queued. It never
// blocks on a sink. A queued alert counts as sent for the repeat interval
// even when its sinks then drop it or give it up: their metrics and log
// say so.
func (d *Dispatcher) Send(e Event) (bool, error) {
	return d.SendAck(e, nil)
}

// SendAck is Send, and then calls done (when not nil) once the Dispatcher
// is finished with e: every sink that takes its kind delivered it, gave it
// up after its last attempt or dropped it for a newer one from a full
// queue; or at once when e is not queued (held back by the repeat
// interval, or no sink takes its kind). done is never called when a sink
// dropped e because the Dispatcher closed first: whoever owes the alert
// still owes it then (the servers' catalog, which the next leader reads).
// done runs on a worker goroutine, or on Send's: it must not block.
func (d *Dispatcher) SendAck(e Event, done func()) (bool, error) {
	if e.Version == 0 {
		e.Version = Version
	}
	now := d.clock.Now()
	if e.Time.IsZero() {
		e.Time = now
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return false, ErrClosed
	}
	key := e.key()
	if prev := d.last[key]; prev != nil && prev.kind == e.Kind {
		if now.Sub(prev.at) < d.repeat {
			prev.suppressed++
			d.mu.Unlock()
			d.m.suppressed.WithLabelValues(string(e.Kind)).Inc()
			d.log.Debug("alert not sent again within the repeat interval", "kind", e.Kind, "subject", e.Subject(), "sent", prev.at, "repeat_interval", d.repeat)
			if done != nil {
				done()
			}
			return false, nil
		}
		e.Suppressed = prev.suppressed
	}
	body, err := json.Marshal(e)
	if err != nil {
		d.mu.Unlock()
		return false, fmt.Errorf("alert: encoding %s: %w", e.Kind, err)
	}
	d.last[key] = &sent{kind: e.Kind, at: now}
	// After the lookup: a sweep first would forget the count of alerts
	// held back that this one is to carry.
	d.sweep(now)
	// Queued under d.mu, which Close takes to close: an alert accepted
	// before Close is in a queue before the workers are told to stop,
	// and so is delivered or counted dropped, never left behind.
	var takers []*worker
	for _, w := range d.workers {
		if w.kinds == nil || w.kinds[e.Kind] {
			takers = append(takers, w)
		}
	}
	var a *ack
	if done != nil && len(takers) > 0 {
		a = &ack{done: done}
		a.left.Store(int32(len(takers)))
	}
	for _, w := range takers {
		w.push(queued{e: e, body: body, ack: a})
	}
	d.mu.Unlock()
	if done != nil && len(takers) == 0 {
		done()
	}
	return true, nil
}

// sweep forgets conditions sent longer than the repeat interval ago, which
// dedupe would send again anyway, so that the memory of one alert per
// failed job does not grow for the life of the server. d.mu is held.
func (d *Dispatcher) sweep(now time.Time) {
	if now.Sub(d.lastSweep) < d.repeat {
		return
	}
	d.lastSweep = now
	for k, s := range d.last {
		if now.Sub(s.at) >= d.repeat {
			delete(d.last, k)
		}
	}
}

// Close stops taking alerts and lets the workers deliver what their queues
// hold until ctx is done; then it cancels the deliveries under way, drops
// what is left (counted and logged) and returns ctx's error. It returns
// once every worker has ended.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.stop)
	d.mu.Unlock()
	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		d.cancel()
		<-done
		err = fmt.Errorf("alert: closing: alerts left undelivered: %w", ctx.Err())
	}
	d.cancel()
	for _, w := range d.workers {
		w.sink.close()
	}
	return err
}

// retryPolicy is how often and how far apart a sink's attempts are.
type retryPolicy struct {
	attempts     int
	backoff, max time.Duration
}

// wait is the pause after attempt (1 for the first) failed: backoff doubled
// for each attempt before, capped at max, then drawn uniformly from its
// upper half ("equal jitter"), so that retries stay exponential yet spread.
func (p retryPolicy) wait(attempt int) time.Duration {
	d := p.backoff
	for i := 1; i < attempt && d < p.max; i++ {
		d *= 2
	}
	if d > p.max {
		d = p.max
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

type queued struct {
	e    Event
	body []byte
	ack  *ack // nil: nobody waits for the outcome
}

// ack calls done once every worker that took an alert is finished with it,
// unless one dropped it unsent because the Dispatcher closed.
type ack struct {
	left atomic.Int32
	lost atomic.Bool
	done func()
}

// finish is one worker's end with the alert; lost says it was dropped
// because the Dispatcher closed.
func (a *ack) finish(lost bool) {
	if a == nil {
		return
	}
	if lost {
		a.lost.Store(true)
	}
	if a.left.Add(-1) == 0 && !a.lost.Load() {
		a.done()
	}
}

// worker delivers the alerts of one sink, in the order they were sent. It
// owns the sink; its queue is shared with Send under mu.
type worker struct {
	d     *Dispatcher
	sink  sink
	retry retryPolicy
	kinds map[Kind]bool // nil: every kind
	log   *slog.Logger

	sent, failed, dropped prometheus.Counter

	mu    sync.Mutex
	queue []queued
	size  int
	wake  chan struct{}
}

// push queues q, dropping the oldest alert when the queue is full: the
// newest says most about the present state.
func (w *worker) push(q queued) {
	w.mu.Lock()
	var old *queued
	if len(w.queue) >= w.size {
		o := w.queue[0]
		old = &o
		w.queue = append(w.queue[:0], w.queue[1:]...)
	}
	w.queue = append(w.queue, q)
	w.mu.Unlock()
	if old != nil {
		w.log.Warn("alert queue full: the oldest alert is dropped unsent", "queue_size", w.size,
			"kind", old.e.Kind, "subject", old.e.Subject(), "time", old.e.Time)
		w.dropped.Inc()
		old.ack.finish(false)
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// next is the oldest queued alert; false when the Dispatcher stops and the
// queue is empty.
func (w *worker) next() (queued, bool) {
	for {
		w.mu.Lock()
		if len(w.queue) > 0 {
			q := w.queue[0]
			w.queue[0] = queued{}
			w.queue = w.queue[1:]
			w.mu.Unlock()
			return q, true
		}
		w.mu.Unlock()
		select {
		case <-w.wake:
		case <-w.d.stop:
			w.mu.Lock()
			n := len(w.queue)
			w.mu.Unlock()
			if n == 0 {
				return queued{}, false
			}
		}
	}
}

func (w *worker) run() {
	for {
		q, ok := w.next()
		if !ok {
			return
		}
		if w.d.ctx.Err() != nil {
			w.dropRest(q)
			return
		}
		w.deliver(q)
	}
}

// dropRest drops q and everything queued after it, when Close's deadline
// passed.
func (w *worker) dropRest(q queued) {
	w.mu.Lock()
	rest := w.queue
	n := 1 + len(rest)
	w.queue = nil
	w.mu.Unlock()
	q.ack.finish(true)
	for _, r := range rest {
		r.ack.finish(true)
	}
	w.log.Warn("alerts dropped unsent: the server stopped before they were delivered", "alerts", n, "first_kind", q.e.Kind, "first_subject", q.e.Subject())
	w.dropped.Add(float64(n))
}

func (w *worker) deliver(q queued) {
	q.ack.finish(!w.attempt(q))
}

// attempt delivers q, trying again as its sink's retry policy says; false
// when it was dropped because the Dispatcher closed.
func (w *worker) attempt(q queued) bool {
	ctx := w.d.ctx
	for attempt := 1; ; attempt++ {
		err := w.sink.deliver(ctx, q.e, q.body)
		if err == nil {
			w.sent.Inc()
			return true
		}
		if ctx.Err() != nil {
			w.log.Warn("alert dropped: the server stopped while it was delivered", "kind", q.e.Kind, "subject", q.e.Subject(), "attempt", attempt, "err", err)
			w.dropped.Inc()
			return false
		}
		if attempt >= w.retry.attempts || !retryable(err) {
			// Logged before counted: whoever sees the count finds the
			// reason in the log.
			w.log.Error("alert given up", "kind", q.e.Kind, "subject", q.e.Subject(), "attempts", attempt, "err", err)
			w.failed.Inc()
			return true
		}
		wait := w.retry.wait(attempt)
		var se *StatusError
		if errors.As(err, &se) && se.RetryAfter > wait {
			// The receiver said when it will take the alert; sooner
			// would spend an attempt for nothing.
			wait = min(se.RetryAfter, w.retry.max)
		}
		w.log.Warn("alert not delivered, will try again", "kind", q.e.Kind, "subject", q.e.Subject(), "attempt", attempt, "retry_in", wait, "err", err)
		select {
		case <-w.d.clock.After(wait):
		case <-ctx.Done():
			w.log.Warn("alert dropped: the server stopped before it was tried again", "kind", q.e.Kind, "subject", q.e.Subject(), "attempts", attempt)
			w.dropped.Inc()
			return false
		}
	}
}

// retryable says whether another attempt may succeed: not after an answer
// that says the request itself is wrong.
func retryable(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status >= 500 || se.Status == 408 || se.Status == 429
	}
	return true
}
