package cluster

import (
	"context"
	"fmt"
	"github.com/cairnbackup/cairn/internal/poll"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/catalog"
)

// TestRecoverSurvivorOfLostMajority: three voters, two lost for good; the
// survivor cannot commit. Recovered as a group of one it elects itself,
// holds every committed change, takes writes, and a fresh server joins it.
func TestRecoverSurvivorOfLostMajority(t *testing.T) {
	s1 := startServer(t, "s1", t.TempDir(), true)
	s2 := startServer(t, "s2", t.TempDir(), false)
	s3 := startServer(t, "s3", t.TempDir(), false)
	s1.waitLeader()
	for _, s := range []*server{s2, s3} {
		join(t, s1, s)
	}
	job := populate(s1, 10)
	// A snapshot and a log tail after it: recovery must restore one and
	// replay the other.
	if err := s1.node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := 10; i < 15; i++ {
		s1.apply(&catalog.Command{Op: catalog.OpAppendJobLog, JobLog: &catalog.JobLog{JobID: job, Lines: []catalog.LogLine{{Msg: fmt.Sprintf("line %d", i)}}}})
	}
	want := dump(t, s1.store)

	// Two servers are gone for good; the survivor has no majority.
	s2.stop()
	s3.stop()
	poll.Until(t, 15*time.Second, func() error {
		if s1.node.IsLeader() {
			return fmt.Errorf("s1 still leads")
		}
		return nil
	})
	actx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err := s1.node.Apply(actx, &catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "lost"}})
	cancel()
	if err == nil {
		t.Fatal("a server without a majority committed a write")
	}

	// Recovery needs the server stopped.
	peersFile := filepath.Join(t.TempDir(), "peers.json")
	if err := os.WriteFile(peersFile, []byte(fmt.Sprintf(`[{"id":"s1","address":%q}]`, s1.cfg.BindAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	peers, err := ReadPeers(peersFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := Recover(s1.cfg, s1.store, peers, testLogger(t)); err == nil || !strings.Contains(err.Error(), "stop the server") {
		t.Fatalf("recover of a running server: %v", err)
	}
	s1.stop()
	store, err := catalog.Open(filepath.Join(s1.dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Recover(s1.cfg, store, []Peer{{ID: "s2", Addr: "127.0.0.1:1", Voter: true}}, testLogger(t)); err == nil || !strings.Contains(err.Error(), "does not list this server") {
		t.Fatalf("peers without the survivor: %v", err)
	}
	if err := Recover(s1.cfg, store, peers, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	store.Close()

	s1.start()
	s1.waitLeader()
	if err := s1.node.Barrier(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, s1.store); got != want {
		t.Fatalf("the recovered catalog differs from the committed one:\n%s\n---\n%s", got, want)
	}
	if st := s1.node.Stats(); len(st.Peers) != 1 || st.Peers[0].ID != "s1" || !st.Peers[0].Voter {
		t.Fatalf("recovered configuration: %+v", st.Peers)
	}
	s1.apply(&catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "after-recovery"}})

	// A fresh server joins the recovered group and gets all of it.
	s4 := startServer(t, "s4", t.TempDir(), false)
	join(t, s1, s4)
	poll.Until(t, 15*time.Second, func() error {
		if _, err := s4.store.Client("after-recovery"); err != nil {
			return err
		}
		return nil
	})
	if got, want := dump(t, s4.store), dump(t, s1.store); got != want {
		t.Fatalf("the new member's catalog differs from the leader's")
	}
	// Both vote now: writes commit with the two of them.
	s1.apply(&catalog.Command{Op: catalog.OpRegisterClient, Client: &catalog.Client{Name: "two-voters"}})
	poll.Until(t, 10*time.Second, func() error {
		_, err := s4.store.Client("two-voters")
		return err
	})
}

func TestReadPeersErrors(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"garbage": "{", "old-format": `["10.0.0.1:7010"]`} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		if _, err := ReadPeers(p); err == nil || !strings.Contains(err.Error(), `"address"`) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := ReadPeers(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing peers file")
	}
	if err := Recover(testConfig("s1", t.TempDir(), false), nil, []Peer{{ID: "s1", Addr: "127.0.0.1:1", Voter: true}}, testLogger(t)); err == nil || !strings.Contains(err.Error(), "no Raft state") {
		t.Fatalf("recover of an empty directory: %v", err)
	}
}
