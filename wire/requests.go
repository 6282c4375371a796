package wire

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"
)

// Requests owns the goroutines a process runs to answer requests, so that
// stopping it can wait for them before it closes what they use (Raft, a
// catalog, a job's state). The zero value is ready; after Close it starts
// nothing more.
type Requests struct {
	mu      sync.Mutex
	closed  bool
	wg      sync.WaitGroup
	running int
}

// Go runs f in a goroutine of the group, and reports false, running
// nothing, once the group is closed.
func (r *Requests) Go(f func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Add(1)
	r.running++
	go func() {
		defer r.wg.Done()
		defer func() {
			r.mu.Lock()
			r.running--
			r.mu.Unlock()
		}()
		f()
	}()
	return true
}

// Running is how many requests are being answered now.
func (r *Requests) Running() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running
}

// Close refuses new requests and waits for those running to end.
func (r *Requests) Close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.wg.Wait()
}

// Handle answers m with h in a goroutine of the group, or, once the group
// is closed, says that this process is stopping.
func (r *Requests) Handle(ctx context.Context, m *nats.Msg, logger *slog.Logger, h Handler) {
	if !r.Go(func() { HandleMsg(ctx, m, logger, h) }) {
		r.Refuse(m, logger)
	}
}

// Refuse tells the sender of m that this process is stopping, for callers
// that run their own handling under Go.
func (r *Requests) Refuse(m *nats.Msg, logger *slog.Logger) {
	if m.Reply != "" {
		Respond(m, MarshalError(Errorf(CodeUnavailable, "retry; another process answers, or this one once it is back", "stopping: this process takes no new request")), logger)
	}
}

// ServeIn is Serve with each message's goroutine owned by reqs.
func ServeIn(ctx context.Context, nc *nats.Conn, subject, queue string, logger *slog.Logger, reqs *Requests, h Handler) (*nats.Subscription, error) {
	return subscribe(nc, subject, queue, func(m *nats.Msg) { reqs.Handle(ctx, m, logger, h) })
}

// ServeOrders is ServeIn for the orders the servers send a storage node or
// agent (kind and name say which, for the message): an order whose
// GroupHeader names another group than group() (the role's own, empty
// while it does not know it) is refused with wrong_group naming both, so a
// server of another group with a node or client of the same name cannot
// drive this one.
func ServeOrders(ctx context.Context, nc *nats.Conn, subject, kind, name string, logger *slog.Logger, reqs *Requests, group func() string, h Handler) (*nats.Subscription, error) {
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		from, mine := m.Header.Get(GroupHeader), group()
		if from != "" && mine != "" && from != mine {
			logger.Warn("refused an order from a server of another group", "subject", m.Subject, "from_group", from, "group", mine)
			Respond(m, MarshalError(Errorf(CodeWrongGroup,
				fmt.Sprintf("two groups of servers share this NATS and each knows a %s %s: rename one of them, or give the other group its own NATS", kind, name),
				"%s %s belongs to group %s and takes no order from a server of group %s", kind, name, mine, from)), logger)
			return
		}
		reqs.Handle(ctx, m, logger, h)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	return sub, nil
}
