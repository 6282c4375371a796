// Package freeport gives a test a TCP port of 127.0.0.1 for a server that
// must be told its port before it starts (sshd, versitygw, a NATS server a
// client dials before it is up, a Raft peer the others must know), rather
// than bind port 0 and say which it got.
//
// A port picked by binding port 0 and closing it is in the kernel's
// ephemeral range, where the next outgoing connection or port-0 listener of
// any process may take it before the server binds it: under make test's
// parallel packages that happened. So the ports come from below that range,
// which the kernel hands out to no one, and are shared out among concurrent
// test processes by a lock file per port, held until this process exits.
package freeport

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	mu     sync.Mutex
	locked []*os.File // the port locks, held until the process exits
)

// LoopbackAddr is "127.0.0.1:port" with a port that no other test process
// hands out and the kernel gives to no socket, until this process exits.
func LoopbackAddr(t testing.TB) string {
	t.Helper()
	return must[string](t)(Addr())
}

// Addr is LoopbackAddr for a program that is not a test (a benchmark's
// driver, bench/failover): the port stays reserved until it exits.
func Addr() (string, error) {
	lo, hi := reservablePorts()
	dir := filepath.Join(os.TempDir(), "cairn-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	start := lo + int(time.Now().UnixNano()%int64(hi-lo))
	for i := range hi - lo {
		port := lo + (start-lo+i)%(hi-lo)
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return "", fmt.Errorf("free port: %w", err)
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close() // another test process holds it
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			f.Close() // something outside the tests listens there
			continue
		}
		l.Close()
		locked = append(locked, f)
		return addr, nil
	}
	return "", fmt.Errorf("no free port in %d-%d", lo, hi)
}

// Loopback is LoopbackAddr's port.
func Loopback(t testing.TB) int {
	t.Helper()
	return must[int](t)(Port())
}

// must ends the test t on an error, or gives the value.
func must[V any](t testing.TB) func(V, error) V {
	return func(v V, err error) V {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// Port is Addr's port.
func Port() (int, error) {
	addr, err := Addr()
	if err != nil {
		return 0, err
	}
	_, p, _ := net.SplitHostPort(addr)
	return strconv.Atoi(p)
}

// reservablePorts is a range of 10000 ports outside the kernel's ephemeral
// range (net.ipv4.ip_local_port_range).
func reservablePorts() (lo, hi int) {
	eLo, eHi := 32768, 60999
	if data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(data)); len(f) == 2 {
			if a, err := strconv.Atoi(f[0]); err == nil {
				eLo = a
			}
			if b, err := strconv.Atoi(f[1]); err == nil {
				eHi = b
			}
		}
	}
	if eLo-10000 >= 1024 {
		return eLo - 10000, eLo
	}
	return eHi + 1, min(eHi+10001, 65536)
}
