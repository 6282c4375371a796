package ticket

import (
	"crypto/ed25519"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func keys(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func TestSignVerify(t *testing.T) {
	pub, priv := keys(t)
	now := time.Now()
	s, err := Sign(Ticket{JobID: 7, Client: "web", Node: "sn1", Op: OpBackup, Issued: now, Expires: now.Add(time.Minute)}, priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Verify(s, pub, now, time.Second)
	if err != nil || got.JobID != 7 || got.Client != "web" || got.ID == "" {
		t.Fatalf("%+v %v", got, err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	pub, priv := keys(t)
	otherPub, otherPriv := keys(t)
	_ = otherPub
	now := time.Now()
	good := Ticket{JobID: 7, Op: OpBackup, Issued: now, Expires: now.Add(time.Minute)}
	s, _ := Sign(good, priv)
	forged, _ := Sign(good, otherPriv)
	expired, _ := Sign(Ticket{JobID: 7, Issued: now.Add(-time.Hour), Expires: now.Add(-time.Minute)}, priv)
	// Tamper with the payload but keep the signature.
	p, sig, _ := strings.Cut(s, ".")
	tampered := p[:len(p)-2] + "AA." + sig

	for _, c := range []struct {
		name   string
		ticket string
		reason Reason
	}{
		{"missing", "", Missing},
		{"garbage", "not-a-ticket", Malformed},
		{"forged", forged, BadSignature},
		{"tampered", tampered, BadSignature},
		{"expired", expired, Expired},
	} {
		_, err := Verify(c.ticket, pub, now, time.Second)
		if !errors.Is(err, &Error{Reason: c.reason}) {
			t.Errorf("%s: err = %v, want %s", c.name, err, c.reason)
		}
		if err != nil && err.Error() == "" {
			t.Errorf("%s: empty message", c.name)
		}
	}
}

func TestGuardRefusesReplayAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tickets.db")
	g, err := OpenGuard(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tk := Ticket{ID: NewID(), JobID: 3, Expires: now.Add(time.Minute)}
	if err := g.Use(tk, now); err != nil {
		t.Fatal(err)
	}
	if err := g.Use(tk, now); !errors.Is(err, &Error{Reason: Replayed}) {
		t.Fatalf("second use: %v", err)
	}
	g.Close()
	g, err = OpenGuard(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.Use(tk, now); !errors.Is(err, &Error{Reason: Replayed}) {
		t.Fatalf("use after reopen: %v", err)
	}
	if err := g.Use(Ticket{ID: NewID(), Expires: now.Add(time.Minute)}, now); err != nil {
		t.Fatal(err)
	}
}
