package storagenode

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// A synthetic full reports what it read and wrote to the servers at every
// heartbeat interval, on the node's progress subject, naming the node's
// group, until it stops.
func TestConsolidationReportsProgress(t *testing.T) {
	r := newRig(t, true)
	r.waitRegistered()
	var mu sync.Mutex
	var got []wire.Progress
	sub, err := r.nc.Subscribe(wire.NodeProgressSubject("sn1"), func(m *nats.Msg) {
		body, err := wire.Unmarshal(m.Data)
		if err != nil {
			t.Errorf("progress report: %v", err)
			return
		}
		var p wire.Progress
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("progress report: %v", err)
			return
		}
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := r.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pr := &consolidateProgress{job: 7}
	stop := r.node.reportProgress(pr)
	defer stop()
	for _, read := range []int64{1 << 20, 5 << 20} {
		pr.read.Store(read)
		poll.Until(t, 10*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			for _, p := range got {
				if p.JobID == 7 && p.Bytes == read && p.Group == r.node.group.ID() && p.Phase == "reading the chain" {
					return nil
				}
			}
			return errors.New("no report of the bytes read")
		})
	}
}
