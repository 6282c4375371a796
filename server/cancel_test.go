package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/wire"
)

// cancelOrders records the job.cancel orders a subject gets.
type cancelOrders struct {
	mu     sync.Mutex
	orders []wire.CancelJob
}

func (h *harness) cancelOrders(subject string) *cancelOrders {
	c := &cancelOrders{}
	sub, err := h.nc.Subscribe(subject, func(m *nats.Msg) {
		body, err := wire.Unmarshal(m.Data)
		if err != nil {
			return
		}
		var o wire.CancelJob
		if json.Unmarshal(body, &o) == nil {
			c.mu.Lock()
			c.orders = append(c.orders, o)
			c.mu.Unlock()
		}
		data, _ := wire.Marshal(wire.CancelResult{Running: true})
		m.Respond(data)
	})
	h.must(err)
	h.t.Cleanup(func() { sub.Unsubscribe() })
	h.must(h.nc.Flush())
	return c
}

func (c *cancelOrders) wait(t *testing.T, job uint64, reason string) wire.CancelJob {
	t.Helper()
	var got wire.CancelJob
	poll.Until(t, 10*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, o := range c.orders {
			if o.JobID == job && strings.Contains(o.Reason, reason) {
				got = o
				return nil
			}
		}
		return fmt.Errorf("no cancel order for job %d saying %q: %+v", job, reason, c.orders)
	})
	return got
}

// A job the servers fail is stopped where it runs: the storage node and
// the agent each get a cancel order naming the job, its attempt and the
// reason, and the agent asking whether the job still runs hears it does
// not.
func TestFailedJobIsStoppedAtNodeAndAgent(t *testing.T) {
	h := newHarness(t)
	_, orders := h.setup()
	atNode := h.cancelOrders(wire.NodeSubject("sn1", wire.OpCancel))
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/data"}, Level: "full"}, &started))
	<-orders
	h.must(h.agent(wire.OpJobAlive, wire.JobAliveReq{JobID: started.JobID, Attempt: 1}, nil))
	wantCode(t, h.agent(wire.OpJobAlive, wire.JobAliveReq{JobID: started.JobID, Attempt: 2}, nil), wire.CodeAborted)
	var g wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: started.JobID, Pool: "Default"}, &g))

	// The agent goes silent: the watchdog fails the job.
	h.mu.Lock()
	h.agentSilent = true
	h.mu.Unlock()
	o := atNode.wait(t, started.JobID, "agent of client web stopped answering")
	if o.Attempt != 1 {
		t.Fatalf("cancel order %+v: want attempt 1", o)
	}
	poll.Until(t, 10*time.Second, func() error {
		for {
			select {
			case m := <-orders:
				if strings.HasSuffix(m.Subject, "."+wire.OpCancel) {
					return nil
				}
			default:
				return errors.New("the agent got no cancel order")
			}
		}
	})
	wantCode(t, h.agent(wire.OpJobAlive, wire.JobAliveReq{JobID: started.JobID, Attempt: 1}, nil), wire.CodeAborted)
}

// committedBackup runs a backup of entries through the protocol as the
// node and the agent would, and returns its session.
func (h *harness) committedBackup(orders chan *nats.Msg, entries []fileindex.Entry) uuid.UUID {
	h.t.Helper()
	var started wire.JobStarted
	h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv"}, Level: "full"}, &started))
	<-orders
	var g wire.VolumeGrant
	h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: started.JobID, Pool: "Default"}, &g))
	h.must(h.node(wire.OpVolumeLabeled, wire.VolumeLabeled{JobID: started.JobID, VolumeID: g.ID}, nil))
	b := fileindex.NewSegmentBuilder(0)
	for i := range entries {
		h.must(b.Add(&entries[i]))
	}
	seg := b.Flush()
	h.must(h.node(wire.OpSessionIndex, wire.SessionIndexReq{JobID: started.JobID, First: fileindex.Path(seg.First), Last: fileindex.Path(seg.Last), Count: seg.Count, Data: seg.Data}, nil))
	session := uuid.New()
	h.must(h.node(wire.OpSessionCommit, wire.SessionCommitReq{
		JobID: started.JobID, SessionID: session, Segments: 1,
		Parts: []wire.SessionPart{{VolumeID: g.ID, VolumeStart: 256 << 10, DataStart: 256<<10 + 64, End: 512 << 10, Final: true}},
		Stats: wire.SessionStats{Entries: int64(len(entries))},
	}, nil))
	return session
}

// A restore that lost entries fails, and says how many of how many it
// restored and lost; its log names every lost entry the agent listed and
// how many more there are, never "every other entry was restored".
func TestRestoreReportAccountsForEveryEntry(t *testing.T) {
	h := newHarness(t)
	_, orders := h.setup()
	var entries []fileindex.Entry
	for i := range 5 {
		entries = append(entries, fileindex.Entry{Path: fmt.Sprintf("/srv/f%d", i), Type: fileindex.TypeFile, Size: 10, Loc: fileindex.Location{Seq: uint64(i), EndSeq: uint64(i)}})
	}
	h.committedBackup(orders, entries)
	var rs wire.JobStarted
	h.must(h.api(wire.OpRestoreStart, wire.RestoreStartReq{PointInTime: wire.PointInTime{Client: "web"}, To: "/r"}, &rs))
	m := <-orders
	body, err := wire.Unmarshal(m.Data)
	h.must(err)
	var order wire.RunRestore
	h.must(json.Unmarshal(body, &order))
	if order.Recheck != time.Second {
		t.Fatalf("restore order %+v: want a recheck of half the liveness timeout", order)
	}
	h.must(h.agent(wire.OpJobDone, wire.JobDoneReq{JobID: rs.JobID, Attempt: order.Attempt, Files: 2, Bytes: 20,
		Entries: 5, Restored: 2, Lost: 3, Damaged: []string{"/srv/f2: block seq 2 is damaged", "/srv/f3: the volume was truncated"}}, nil))
	var job wire.JobInfo
	h.must(h.api(wire.OpJobShow, wire.JobShowReq{ID: rs.JobID}, &job))
	if job.State != "failed" || job.ErrorCode != wire.CodeCorrupt || job.Entries != 5 || job.Restored != 2 || job.Lost != 3 ||
		!strings.Contains(job.Error, "3 of 5 entries could not be restored") || !strings.Contains(job.Error, "2 were restored") {
		t.Fatalf("restore with lost entries: %+v", job)
	}
	var log []string
	for _, l := range job.Log {
		log = append(log, l.Level+": "+l.Msg)
	}
	all := strings.Join(log, "\n")
	for _, want := range []string{
		"error: lost: /srv/f2: block seq 2 is damaged",
		"error: lost: /srv/f3: the volume was truncated",
		"error: ... and 1 more lost entries not listed here",
		"info: restore ended: 2 of 5 entries restored (2 files, 20 B), 3 lost, 0 left out",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("the job log does not say %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "every other entry") {
		t.Errorf("the job log claims the rest was restored:\n%s", all)
	}
}
