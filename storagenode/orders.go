package storagenode

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/cairnbackup/cairn/wire"
)

// orderMemo carries out the servers' library orders (a label, a move) once
// per request id. The servers send an order again when they lost its
// answer (it took longer than they waited, or the leader changed while the
// robot moved): the repeat gets the first one's answer, waiting for it if
// it is still running, instead of moving or labeling a second time. It is
// kept in memory, for the last maxOrderMemo orders: a node that restarted
// does a repeat again, which the library's state then refuses (an empty
// source slot) or, for a label of the same volume, accepts as done.
type orderMemo struct {
	mu    sync.Mutex
	calls map[string]*orderCall
	order []string // finished keys, oldest first
}

const maxOrderMemo = 1000

type orderCall struct {
	params []byte // the order without its request id: a repeat must match
	done   chan struct{}
	resp   any
	err    error
}

// remember runs fn once for the request id, and gives later calls with the
// same id its result. params identify the order, so that one id reused for
// another order is refused.
func remember[T any](o *orderMemo, ctx context.Context, kind, requestID string, params any, fn func() (T, error)) (T, error) {
	var zero T
	if requestID == "" {
		return fn()
	}
	p, _ := json.Marshal(params)
	key := kind + "/" + requestID
	o.mu.Lock()
	if o.calls == nil {
		o.calls = map[string]*orderCall{}
	}
	if c := o.calls[key]; c != nil {
		o.mu.Unlock()
		if string(c.params) != string(p) {
			return zero, wire.Errorf(wire.CodeAlreadyExists, "give each order its own request id",
				"request id %s names another %s order", requestID, kind)
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			return zero, wire.Errorf(wire.CodeTimeout, "", "the %s order of request %s is still running", kind, requestID)
		}
		resp, _ := c.resp.(T)
		return resp, c.err
	}
	c := &orderCall{params: p, done: make(chan struct{})}
	o.calls[key] = c
	o.mu.Unlock()

	resp, err := fn()
	o.mu.Lock()
	c.resp, c.err = resp, err
	close(c.done)
	o.order = append(o.order, key)
	if len(o.order) > maxOrderMemo {
		delete(o.calls, o.order[0])
		o.order = o.order[1:]
	}
	o.mu.Unlock()
	return resp, err
}
