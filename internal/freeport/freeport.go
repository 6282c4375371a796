// Package freeport finds a free TCP port on 127.0.0.1 for a server a test
// starts as a process (sshd, versitygw), which must be told its port
// rather than pick one. The port is free when asked; a server that lost
// it to another meanwhile fails to start, and its starter tries another.
package freeport

import (
	"net"
	"testing"
)

// Loopback is a TCP port of 127.0.0.1 that no one listens on now.
func Loopback(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
