package cluster

import (
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairnbackup/cairn/internal/poll"
)

// The fence waits for a heartbeat under way (whose handler Raft runs on a
// connection goroutine of the transport, which raft.Shutdown does not wait
// for) and refuses the ones after it, so the log store never closes under
// one. Real transports on loopback.
func TestHeartbeatFenceWaitsForTheOneUnderWay(t *testing.T) {
	newTrans := func() *raft.NetworkTransport {
		tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	g := &guardedTransport{NetworkTransport: newTrans()}
	leader := newTrans()
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	g.SetHeartbeatHandler(func(rpc raft.RPC) {
		once.Do(func() { close(entered) })
		<-release
		rpc.Respond(&raft.AppendEntriesResponse{Term: 5, Success: true}, nil)
	})
	heartbeat := func() error {
		req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("leader"), Addr: []byte(leader.LocalAddr())}, Term: 5}
		return leader.AppendEntries("follower", g.LocalAddr(), req, &raft.AppendEntriesResponse{})
	}
	first := make(chan error, 1)
	go func() { first <- heartbeat() }()
	<-entered
	fenced := make(chan struct{})
	go func() {
		g.fence()
		close(fenced)
	}()
	poll.Holds(t, 300*time.Millisecond, func() error {
		select {
		case <-fenced:
			return errors.New("the fence went up with a heartbeat under way")
		default:
			return nil
		}
	})
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("the heartbeat under way: %v", err)
	}
	<-fenced
	if err := heartbeat(); err == nil || !strings.Contains(err.Error(), raft.ErrTransportShutdown.Error()) {
		t.Fatalf("a heartbeat after the fence: %v, want it refused", err)
	}
}
