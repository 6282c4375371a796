// Command failover measures how long a Raft group of cairn servers takes to
// elect a new leader after its leader is killed with SIGKILL: it starts a
// nats-server and three `cairn server` processes on loopback with
// production timeouts, then, round after round, kills the leader, polls the
// survivors until one reports a new leader, and restarts the killed one.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/wire"
)

type member struct {
	name, raftAddr, dir string
	cmd                 *exec.Cmd
	log                 *os.File
}

func main() {
	cairn := flag.String("cairn", "bin/cairn", "cairn binary")
	natsBin := flag.String("nats-server", "nats-server", "nats-server binary")
	rounds := flag.Int("rounds", 10, "leader kills")
	work := flag.String("dir", "", "work directory (a temporary one when empty)")
	flag.Parse()
	if err := run(*cairn, *natsBin, *rounds, *work); err != nil {
		fmt.Fprintln(os.Stderr, "failover:", err)
		os.Exit(1)
	}
}

// freePort is a port of 127.0.0.1 outside the kernel's ephemeral range,
// reserved until this program exits (internal/freeport): a port picked by
// binding port 0 may be taken by any outgoing connection before the server
// that is told it binds it.
func freePort() int {
	p, err := freeport.Port()
	if err != nil {
		panic(err)
	}
	return p
}

func run(cairn, natsBin string, rounds int, work string) error {
	if work == "" {
		d, err := os.MkdirTemp("", "cairn-failover-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		work = d
	}
	cairn, _ = filepath.Abs(cairn)
	natsPort := freePort()
	url := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	ns := exec.Command(natsBin, "-a", "127.0.0.1", "-p", strconv.Itoa(natsPort))
	if err := ns.Start(); err != nil {
		return fmt.Errorf("start nats-server (install it with: go install github.com/nats-io/nats-server/v2@v2.15.2): %w", err)
	}
	defer func() { ns.Process.Kill(); ns.Wait() }()

	members := make([]*member, 3)
	for i := range members {
		members[i] = &member{name: fmt.Sprintf("s%d", i+1), raftAddr: fmt.Sprintf("127.0.0.1:%d", freePort()), dir: filepath.Join(work, fmt.Sprintf("s%d", i+1))}
	}
	start := func(m *member, bootstrap bool) error {
		if m.log == nil {
			f, err := os.Create(filepath.Join(work, m.name+".log"))
			if err != nil {
				return err
			}
			m.log = f
		}
		m.cmd = exec.Command(cairn, "server", "--nats", url, "--name", m.name, "--data", m.dir, "--raft-addr", m.raftAddr,
			"--bootstrap="+strconv.FormatBool(bootstrap), "--metrics-addr", "")
		m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
		return m.cmd.Start()
	}
	defer func() {
		for _, m := range members {
			if m.cmd != nil && m.cmd.Process != nil {
				m.cmd.Process.Kill()
				m.cmd.Wait()
			}
		}
	}()
	var nc *nats.Conn
	if err := waitFor(10*time.Second, func() (err error) {
		nc, err = wire.Connect(url, "failover-bench", wire.NATSAuth{}, "", slog.New(slog.NewTextHandler(io.Discard, nil)))
		return err
	}); err != nil {
		return err
	}
	defer nc.Close()
	ctx := context.Background()

	if err := start(members[0], true); err != nil {
		return err
	}
	if err := waitFor(30*time.Second, func() error { return leaderIs(ctx, nc, members[0].name, "s1") }); err != nil {
		return fmt.Errorf("s1 did not lead: %w", err)
	}
	// Every server of a group shares the key-encryption and ticket keys.
	for _, m := range members[1:] {
		if err := os.MkdirAll(m.dir, 0o700); err != nil {
			return err
		}
		for _, f := range []string{"kek", "ticket.key"} {
			b, err := os.ReadFile(filepath.Join(members[0].dir, f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(m.dir, f), b, 0o600); err != nil {
				return err
			}
		}
		if err := start(m, false); err != nil {
			return err
		}
		if err := waitFor(30*time.Second, func() error {
			return wire.Request(ctx, nc, wire.APISubject(wire.OpClusterJoin), wire.ClusterJoinReq{Name: m.name, RaftAddr: m.raftAddr}, nil)
		}); err != nil {
			return fmt.Errorf("join %s: %w", m.name, err)
		}
	}
	var times, serving []time.Duration
	for r := 0; r < rounds; r++ {
		var leader string
		if err := waitFor(30*time.Second, func() error {
			var err error
			leader, err = currentLeader(ctx, nc, members)
			if err == nil && !allFollowing(ctx, nc, members, leader) {
				err = errors.New("not every member follows yet")
			}
			return err
		}); err != nil {
			return fmt.Errorf("round %d: %w", r+1, err)
		}
		var killed *member
		for _, m := range members {
			if m.name == leader {
				killed = m
			}
		}
		t0 := time.Now()
		killed.cmd.Process.Signal(syscall.SIGKILL)
		killed.cmd.Wait()
		var next string
		if err := waitFor(60*time.Second, func() error {
			for _, m := range members {
				if m == killed {
					continue
				}
				var st wire.ServerStatus
				qctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				err := wire.Request(qctx, nc, wire.ServerSubject(m.name, wire.OpServerStatus), wire.Empty{}, &st)
				cancel()
				if err == nil && st.State == "Leader" {
					next = m.name
					return nil
				}
			}
			return errors.New("no new leader yet")
		}); err != nil {
			return fmt.Errorf("round %d: %w", r+1, err)
		}
		d := time.Since(t0)
		times = append(times, d)
		// Leading is not answering: the new leader takes requests on the
		// group's leader subject once it has seen it leads and read the
		// catalog.
		if err := waitFor(60*time.Second, func() error {
			return leaderServes(ctx, nc, next)
		}); err != nil {
			return fmt.Errorf("round %d: %w", r+1, err)
		}
		ds := time.Since(t0)
		serving = append(serving, ds)
		fmt.Printf("round %2d: killed leader %s, %s leads after %s, answers as leader after %s\n", r+1, killed.name, next, d.Round(time.Millisecond), ds.Round(time.Millisecond))
		if err := start(killed, false); err != nil {
			return err
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	fmt.Printf("time to a new leader after SIGKILL of the leader, 3 voters, %d rounds: min %s, median %s, max %s\n",
		len(times), times[0].Round(time.Millisecond), times[len(times)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond))
	sort.Slice(serving, func(i, j int) bool { return serving[i] < serving[j] })
	fmt.Printf("time until the new leader answers on the leader subject: min %s, median %s, max %s\n",
		serving[0].Round(time.Millisecond), serving[len(serving)/2].Round(time.Millisecond), serving[len(serving)-1].Round(time.Millisecond))
	return nil
}

// leaderServes asks name for a job list on its group's leader subject,
// which only a leader that serves requests subscribes.
func leaderServes(ctx context.Context, nc *nats.Conn, name string) error {
	var st wire.ServerStatus
	qctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := wire.Request(qctx, nc, wire.ServerSubject(name, wire.OpServerStatus), wire.Empty{}, &st); err != nil {
		return err
	}
	var jobs json.RawMessage
	return wire.Request(qctx, nc, wire.LeaderSubject(st.Group, wire.APISubject(wire.OpJobList)), wire.JobListReq{}, &jobs)
}

func leaderIs(ctx context.Context, nc *nats.Conn, name, want string) error {
	var st wire.ServerStatus
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := wire.Request(qctx, nc, wire.ServerSubject(name, wire.OpServerStatus), wire.Empty{}, &st); err != nil {
		return err
	}
	if st.Leader != want {
		return fmt.Errorf("leader %q", st.Leader)
	}
	return nil
}

func currentLeader(ctx context.Context, nc *nats.Conn, members []*member) (string, error) {
	for _, m := range members {
		var st wire.ServerStatus
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		err := wire.Request(qctx, nc, wire.ServerSubject(m.name, wire.OpServerStatus), wire.Empty{}, &st)
		cancel()
		if err == nil && st.State == "Leader" {
			return m.name, nil
		}
	}
	return "", errors.New("no leader")
}

func allFollowing(ctx context.Context, nc *nats.Conn, members []*member, leader string) bool {
	for _, m := range members {
		if leaderIs(ctx, nc, m.name, leader) != nil {
			return false
		}
	}
	return true
}

func waitFor(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
