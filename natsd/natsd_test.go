package natsd

import (
	"io"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestStartServesClients(t *testing.T) {
	s, err := Start(Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("x")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("x", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5e9)
	if err != nil || string(m.Data) != "hello" {
		t.Fatalf("got %v %v", m, err)
	}
}
