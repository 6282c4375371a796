package wire

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// Envelope wraps every message.
type Envelope struct {
	V     int             `json:"v"`
	Body  json.RawMessage `json:"body,omitempty"`
	Error *Error          `json:"error,omitempty"`
}

// Marshal wraps body in an envelope of the current version.
//
// It writes the envelope around the body itself, with the bytes
// encoding/json would write for Envelope: given the body as a
// json.RawMessage, encoding/json scans it again to check and compact it,
// which for a restore plan page of a megabyte took longer than encoding
// the page (BenchmarkPlanPageJSON). What json.Marshal returns is already
// compact, valid, HTML-escaped JSON, so there is nothing to redo.
func Marshal(body any) ([]byte, error) {
	if body == nil {
		return json.Marshal(Envelope{V: Version})
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode message: %w", err)
	}
	msg := make([]byte, 0, len(b)+len(`{"v":,"body":}`)+4)
	msg = append(msg, `{"v":`...)
	msg = strconv.AppendInt(msg, Version, 10)
	msg = append(msg, `,"body":`...)
	msg = append(msg, b...)
	return append(msg, '}'), nil
}

// MarshalError wraps an error reply.
func MarshalError(e *Error) []byte {
	b, _ := json.Marshal(Envelope{V: Version, Error: e})
	return b
}

// Unmarshal opens an envelope. It returns a wire Error for data that is not
// an envelope or of another version; an error reply comes back as its Error.
func Unmarshal(data []byte) (json.RawMessage, error) {
	var env Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, Errorf(CodeBadRequest, "", "message is not valid JSON: %w", err)
	}
	if env.V != Version {
		return nil, Errorf(CodeUnsupportedVersion, "",
			"message version %d is not supported (this program speaks version %d)", env.V, Version)
	}
	if env.Error != nil {
		if env.Error.Hint == "" {
			env.Error.Hint = defaultHints[env.Error.Code]
		}
		return nil, env.Error
	}
	return env.Body, nil
}

// Decode unmarshals a body into T. Unknown fields are allowed, so a newer
// sender's additions do not break an older receiver.
func Decode[T any](body json.RawMessage) (T, error) {
	var v T
	if len(body) == 0 || bytes.Equal(body, []byte("null")) {
		return v, nil
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return v, Errorf(CodeBadRequest, "", "malformed %T: %w", v, err)
	}
	return v, nil
}

// Request sends req on subject and decodes the reply into resp (which may be
// nil). A missing responder or a timeout becomes a wire Error with a hint.
func Request(ctx context.Context, nc *nats.Conn, subject string, req, resp any) error {
	return RequestIn(ctx, nc, "", subject, req, resp)
}

// RequestIn is Request for the servers of group (in GroupHeader): only
// they answer it. An empty group sends none, as Request does.
func RequestIn(ctx context.Context, nc *nats.Conn, group, subject string, req, resp any) error {
	data, err := Marshal(req)
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	if err := fits(nc, "request to", subject, data); err != nil {
		return err
	}
	ctx, stop := watchDenial(ctx, nc, subject)
	defer stop()
	out := &nats.Msg{Subject: subject, Data: data}
	if group != "" {
		out.Header = nats.Header{GroupHeader: []string{group}}
	}
	msg, err := nc.RequestMsgWithContext(ctx, out)
	if err != nil {
		var denied *Error
		if cause := context.Cause(ctx); errors.As(cause, &denied) && denied.Code == CodePermissionDenied {
			return denied
		}
		switch {
		case errors.Is(err, nats.ErrMaxPayload):
			return tooLarge("request to", subject, len(data), nc.MaxPayload())
		case errors.Is(err, nats.ErrNoResponders):
			return Errorf(CodeUnavailable, "", "nothing answers %s", Describe(subject))
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
			return &noAnswer{Errorf(CodeTimeout, "", "no answer on %s in time", Describe(subject))}
		}
		return fmt.Errorf("request %s: %w", subject, err)
	}
	body, err := Unmarshal(msg.Data)
	if err != nil {
		return err
	}
	if resp == nil {
		return nil
	}
	if err := json.Unmarshal(body, resp); err != nil {
		return Errorf(CodeBadRequest, "", "malformed reply on %s: %w", subject, err)
	}
	return nil
}

// ErrNoAnswer matches the error of a request that got no answer in time:
// unlike a refusal, or nothing listening, it may have been received and
// carried out, and its answer lost.
var ErrNoAnswer = errors.New("no answer in time")

// noAnswer is the timeout Error of a request nobody answered in time.
type noAnswer struct{ err *Error }

func (e *noAnswer) Error() string        { return e.err.Error() }
func (e *noAnswer) Unwrap() error        { return e.err }
func (e *noAnswer) Is(target error) bool { return target == ErrNoAnswer }

// Publish sends a message that expects no reply.
func Publish(nc *nats.Conn, subject string, body any) error {
	return PublishIn(nc, "", subject, body)
}

// PublishIn is Publish of a message of group (in GroupHeader), as
// RequestIn is of Request.
func PublishIn(nc *nats.Conn, group, subject string, body any) error {
	data, err := Marshal(body)
	if err != nil {
		return err
	}
	if err := fits(nc, "message on", subject, data); err != nil {
		return err
	}
	out := &nats.Msg{Subject: subject, Data: data}
	if group != "" {
		out.Header = nats.Header{GroupHeader: []string{group}}
	}
	if err := nc.PublishMsg(out); err != nil {
		if errors.Is(err, nats.ErrMaxPayload) {
			return tooLarge("message on", subject, len(data), nc.MaxPayload())
		}
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

// fits refuses a message bigger than the connection's max_payload, which
// the NATS server announces when the connection is made. nats.go would
// refuse it too, with a bare error; this one has a code and a hint, and a
// request refused here fails at once instead of waiting for its timeout.
func fits(nc *nats.Conn, what, subject string, data []byte) error {
	if limit := nc.MaxPayload(); limit > 0 && int64(len(data)) > limit {
		return tooLarge(what, subject, len(data), limit)
	}
	return nil
}

func tooLarge(what, subject string, size int, limit int64) *Error {
	if limit > 0 {
		return Errorf(CodeTooLarge, "", "the %s %s is %d bytes, more than the %d bytes the NATS server accepts in one message (max_payload)",
			what, Describe(subject), size, limit)
	}
	return Errorf(CodeTooLarge, "", "the %s %s is %d bytes, more than the NATS server accepts in one message (max_payload)",
		what, Describe(subject), size)
}

// Respond sends data as the reply to m. A reply over the connection's
// max_payload cannot be sent: the requester gets a CodeTooLarge error in
// its place, so it fails at once instead of waiting for an answer that
// never comes, and the oversize reply is logged as the bug it is. Other
// failures (the connection closing) are logged too; the requester's
// timeout covers them.
func Respond(m *nats.Msg, data []byte, logger *slog.Logger) {
	if m.Reply == "" {
		return
	}
	err := m.Respond(data)
	if errors.Is(err, nats.ErrMaxPayload) {
		logger.Error("reply too large for NATS; answered with an error instead", "subject", m.Subject, "bytes", len(data))
		err = m.Respond(MarshalError(tooLarge("reply to", m.Subject, len(data), 0)))
	}
	if err != nil {
		logger.Warn("reply failed", "subject", m.Subject, "err", err)
	}
}

// Handler answers one request. The body is the envelope's content; the
// result is marshalled as the reply's body, an error as an error reply.
type Handler func(ctx context.Context, subject string, body json.RawMessage) (any, error)

// Serve subscribes h to subject (in queue group queue when not empty). Each
// message runs in its own goroutine; a panic in h is recovered, logged and
// answered as an internal error, so one bad message never takes a process down.
func Serve(ctx context.Context, nc *nats.Conn, subject, queue string, logger *slog.Logger, h Handler) (*nats.Subscription, error) {
	return subscribe(nc, subject, queue, func(m *nats.Msg) {
		go HandleMsg(ctx, m, logger, h)
	})
}

// subscribe subscribes cb to subject, in queue group queue unless it is
// empty.
func subscribe(nc *nats.Conn, subject, queue string, cb nats.MsgHandler) (*nats.Subscription, error) {
	var sub *nats.Subscription
	var err error
	if queue != "" {
		sub, err = nc.QueueSubscribe(subject, queue, cb)
	} else {
		sub, err = nc.Subscribe(subject, cb)
	}
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	return sub, nil
}

// HandleMsg answers one message with h, as Serve does for each message.
func HandleMsg(ctx context.Context, m *nats.Msg, logger *slog.Logger, h Handler) {
	reply := func(data []byte) { Respond(m, data, logger) }
	defer func() {
		if r := recover(); r != nil {
			logger.Error("handler panicked", "subject", m.Subject, "panic", r, "stack", string(debug.Stack()))
			reply(MarshalError(Errorf(CodeInternal, "", "internal error handling %s", m.Subject)))
		}
	}()
	body, err := Unmarshal(m.Data)
	if err != nil {
		logger.Debug("rejected message", "subject", m.Subject, "err", err)
		reply(MarshalError(AsError(err)))
		return
	}
	res, err := h(ctx, m.Subject, body)
	if err != nil {
		we := AsError(err)
		if we.Code == CodeInternal {
			logger.Error("request failed", "subject", m.Subject, "err", err)
		}
		reply(MarshalError(we))
		return
	}
	data, err := Marshal(res)
	if err != nil {
		reply(MarshalError(AsError(err)))
		return
	}
	reply(data)
}

// Router dispatches operations to handlers by name, answering unknown ones
// with an error that lists what it knows.
type Router struct {
	ops map[string]Handler
}

// NewRouter returns an empty router.
func NewRouter() *Router { return &Router{ops: map[string]Handler{}} }

// Handle registers h for op.
func (r *Router) Handle(op string, h Handler) { r.ops[op] = h }

// Dispatch returns a Handler that looks the operation up with opOf.
func (r *Router) Dispatch(opOf func(subject string) (string, bool)) Handler {
	return func(ctx context.Context, subject string, body json.RawMessage) (any, error) {
		op, ok := opOf(subject)
		h := r.ops[op]
		if !ok || h == nil {
			return nil, Errorf(CodeUnknownOperation, "", "unknown operation %q on %s", op, Describe(subject))
		}
		return h(ctx, subject, body)
	}
}

// Typed adapts a function of a decoded request to a Handler.
func Typed[Req any, Resp any](f func(ctx context.Context, subject string, req Req) (Resp, error)) Handler {
	return func(ctx context.Context, subject string, body json.RawMessage) (any, error) {
		req, err := Decode[Req](body)
		if err != nil {
			return nil, err
		}
		return f(ctx, subject, req)
	}
}

// Transient reports whether err may go away by itself: no leader while the
// servers elect one (or until a majority is back, which a role's background
// request waits for and an admin's command does not), nothing answering
// for a moment, a timeout.
func Transient(err error) bool {
	switch CodeOf(err) {
	case CodeNotLeader, CodeNoQuorum, CodeUnavailable, CodeTimeout:
		return true
	}
	return false
}

// RequestRetry is Request that retries transient failures until ctx ends:
// what a storage node or agent uses so that a leader election in the middle
// of a job delays its reports instead of failing it, and a report whose
// outcome the servers could not confirm is sent again until they can. The
// servers' side of every operation sent this way accepts a repeat.
func RequestRetry(ctx context.Context, nc *nats.Conn, subject string, req, resp any, each time.Duration) error {
	return RequestRetryIn(ctx, nc, "", subject, req, resp, each)
}

// RequestRetryIn is RequestRetry for the servers of group (see RequestIn).
func RequestRetryIn(ctx context.Context, nc *nats.Conn, group, subject string, req, resp any, each time.Duration) error {
	wait := 100 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, each)
		err := RequestIn(rctx, nc, group, subject, req, resp)
		cancel()
		// An outcome the servers could not confirm is asked again: the
		// repeat finds out whether the first one was carried out. Given
		// up on, it would have a storage node report a session failed
		// that the catalog records (TestClusterChaos saw it).
		if err == nil || !(Transient(err) || CodeOf(err) == CodeOutcomeUnknown) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}
