package server

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// The leader orders a locking volume's node to set its objects' locks
// after a hold; an order the node fails is sent again at the next tick of
// the expiry interval, not before, and a node that registers again gets
// the orders for all its volumes.
func TestObjectLockOrdersAreRetried(t *testing.T) {
	h := newFakeClockHarness(t, func(c *Config) { c.LivenessTimeout, c.StallTimeout = 5*time.Hour, 5*time.Hour })
	h.setup()
	register := func() {
		h.must(h.node(wire.OpNodeRegister, wire.NodeRegisterReq{
			ID: "sn1", DataAddr: "127.0.0.1:1", CertSHA256: strings.Repeat("ab", 32),
			Pools: []wire.NodePool{{Name: "Default", Type: "disk", Dir: "/srv/pool"}, {Name: "Vault", Type: "s3", Dir: "http://s3/vault/"}},
		}, nil))
	}
	register()
	vol := uuid.New()
	until := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err := h.srv.orch.Apply(h.ctx, &catalog.Command{Op: catalog.OpCreateVolume, Volume: &catalog.Volume{
		ID: vol, Pool: "Vault", Node: "sn1", MediaType: catalog.PoolTypeS3, LockedUntil: until}})
	h.must(err)
	bs := int64(catalog.DefaultBlockSize)
	_, err = h.srv.orch.Apply(h.ctx, &catalog.Command{Op: catalog.OpUpdateVolume, VolumeUpdate: &catalog.VolumeUpdate{ID: vol, State: catalog.VolumeAppend, Bytes: &bs}})
	h.must(err)

	var mu sync.Mutex
	var got []wire.ObjectLockOrder
	fail := true
	sub, err := h.nc.Subscribe(wire.NodeSubject("sn1", wire.OpNodeObjectLocks), func(m *nats.Msg) {
		body, err := wire.Unmarshal(m.Data)
		h.must(err)
		o, err := wire.Decode[wire.ObjectLockOrder](body)
		h.must(err)
		mu.Lock()
		got = append(got, o)
		f := fail
		mu.Unlock()
		if f {
			m.Respond(wire.MarshalError(wire.Errorf(wire.CodeIO, "", "the store did not answer")))
			return
		}
		data, _ := wire.Marshal(wire.ObjectLockResult{Objects: len(o.Objects)})
		m.Respond(data)
	})
	h.must(err)
	t.Cleanup(func() { sub.Unsubscribe() })
	h.must(h.nc.Flush())
	orders := func(n int) {
		t.Helper()
		poll.Until(t, 10*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(got) != n {
				return fmt.Errorf("%d orders, want %d", len(got), n)
			}
			return nil
		})
		mu.Lock()
		o := got[n-1]
		mu.Unlock()
		if o.VolumeID != vol || o.Pool != "Vault" || len(o.Objects) != 2 || o.Objects[0].Start != 0 || !o.Objects[0].Until.Equal(until) ||
			o.Objects[1] != (wire.ObjectLock{Start: 0, End: math.MaxInt64}) {
			t.Fatalf("order %d: %+v", n, o)
		}
	}

	// The client's hold: an order, which fails.
	h.must(h.api(wire.OpBackupHold, wire.HoldReq{Client: "web", Reason: "case 15"}, nil))
	orders(1)
	// Not again at once, nor before the interval's tick.
	poll.Holds(t, 300*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 1 {
			return fmt.Errorf("%d orders before the tick", len(got))
		}
		return nil
	})
	mu.Lock()
	fail = false
	mu.Unlock()
	h.advance(h.srv.cfg.ExpiryInterval)
	orders(2)
	// A node that registers again is sent its volumes' orders.
	register()
	orders(3)
}
