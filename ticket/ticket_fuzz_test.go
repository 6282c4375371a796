package ticket

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var fuzzNow = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// fuzzKey is a fixed signing key, so the fuzzer's corpus stays meaningful
// from one run to the next.
func fuzzKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed([]byte(strings.Repeat("k", ed25519.SeedSize)))
}

// FuzzVerify presents arbitrary strings as job tickets to a node holding a
// real key: only tickets the key signed, unchanged, are accepted, and every
// refusal is a *ticket.Error with a reason.
func FuzzVerify(f *testing.F) {
	key := fuzzKey()
	signed := map[string]bool{}
	for _, tk := range []Ticket{
		{JobID: 7, Client: "web", Node: "sn1", Op: OpBackup, Pool: "Default", Level: "full", KeyID: "k1", Attempt: 2,
			Issued: fuzzNow, Expires: fuzzNow.Add(time.Hour)},
		{JobID: 8, Client: "web", Node: "sn1", Op: OpRestore, BackupID: 3, Sessions: []string{"s1", "s2"},
			Issued: fuzzNow, Expires: fuzzNow.Add(time.Hour)},
		{V: 2, JobID: 9, Node: "sn1", Op: OpBackup, Issued: fuzzNow, Expires: fuzzNow.Add(time.Hour)},
		{JobID: 10, Node: "sn1", Op: OpBackup, Issued: fuzzNow.Add(-2 * time.Hour), Expires: fuzzNow.Add(-time.Hour)},
	} {
		tk.ID = fmt.Sprint("fuzz-", tk.JobID) // fixed, so every worker signs the same seeds
		s, err := Sign(tk, key)
		if err != nil {
			f.Fatal(err)
		}
		signed[s] = true
		f.Add(s)
	}
	f.Add("")
	f.Add("a.b")
	f.Add("eyJ2IjoxfQ.")
	pub := key.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, s string) {
		tk, err := Verify(s, pub, fuzzNow, time.Second)
		if err != nil {
			var te *Error
			if !errors.As(err, &te) || te.Reason == "" || err.Error() == "" {
				t.Fatalf("refusal %T %v is not a ticket error with a reason", err, err)
			}
			return
		}
		// ed25519 signatures are not malleable: an accepted ticket is one
		// the key signed, byte for byte.
		if !signed[s] {
			t.Fatalf("accepted a ticket the key did not sign: %q (%+v)", s, tk)
		}
	})
}

// FuzzSignVerify signs tickets of arbitrary content and verifies them: a
// ticket the servers sign is read back by the node exactly as it was.
func FuzzSignVerify(f *testing.F) {
	f.Add(uint64(7), "web", "sn1", "backup", "Default", uint64(0), "full", "k1", 1, "s1", int64(0), int64(3600))
	f.Add(uint64(8), "web", "sn1", "restore", "", uint64(3), "", "", 0, "", int64(-60), int64(60))
	key := fuzzKey()
	pub := key.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, job uint64, client, node, op, pool string, backup uint64, level, keyID string, attempt int, session string, issued, expires int64) {
		in := Ticket{JobID: job, Client: client, Node: node, Op: Op(op), Pool: pool, BackupID: backup, Level: level,
			KeyID: keyID, Attempt: attempt, Issued: fuzzNow.Add(time.Duration(issued % 1e6 * 1e9)),
			Expires: fuzzNow.Add(time.Duration(expires % 1e6 * 1e9))}
		if session != "" {
			in.Sessions = []string{session}
		}
		for _, s := range []string{client, node, op, pool, level, keyID, session} {
			if !utf8.ValidString(s) {
				return // JSON carries text: the servers' names and ids are validated text
			}
		}
		s, err := Sign(in, key)
		if err != nil {
			t.Fatal(err)
		}
		out, err := Verify(s, pub, fuzzNow, time.Second)
		switch {
		case in.Expires.Add(time.Second).Before(fuzzNow):
			if !errors.Is(err, &Error{Reason: Expired}) {
				t.Fatalf("expired ticket: %v", err)
			}
			return
		case in.Issued.After(fuzzNow.Add(time.Second)):
			if !errors.Is(err, &Error{Reason: Malformed}) {
				t.Fatalf("ticket from the future: %v", err)
			}
			return
		case err != nil:
			t.Fatalf("verify a ticket just signed: %v", err)
		}
		in.V, in.ID = 1, out.ID
		if out.Client != in.Client || out.Node != in.Node || out.Op != in.Op ||
			out.JobID != in.JobID || out.BackupID != in.BackupID || out.Pool != in.Pool || out.Level != in.Level ||
			out.KeyID != in.KeyID || out.Attempt != in.Attempt || !out.Issued.Equal(in.Issued) || !out.Expires.Equal(in.Expires) ||
			len(out.Sessions) != len(in.Sessions) {
			t.Fatalf("signed %+v, verified %+v", in, out)
		}
	})
}

// TestVerifyRefusesAnotherSpellingOfATicket: base64 decoding skips line
// breaks, so a ticket with one inserted verified as the ticket signed. A
// ticket is one string: any other spelling of it is malformed.
func TestVerifyRefusesAnotherSpellingOfATicket(t *testing.T) {
	key := fuzzKey()
	s, err := Sign(Ticket{ID: "t1", JobID: 7, Node: "sn1", Op: OpBackup, Issued: fuzzNow, Expires: fuzzNow.Add(time.Hour)}, key)
	if err != nil {
		t.Fatal(err)
	}
	pub := key.Public().(ed25519.PublicKey)
	if _, err := Verify(s, pub, fuzzNow, time.Second); err != nil {
		t.Fatal(err)
	}
	dot := strings.IndexByte(s, '.')
	for _, bad := range []string{
		s[:10] + "\n" + s[10:],
		s[:dot+5] + "\r\n" + s[dot+5:],
		s + "\n",
	} {
		if _, err := Verify(bad, pub, fuzzNow, time.Second); !errors.Is(err, &Error{Reason: Malformed}) {
			t.Errorf("Verify(%q) = %v, want malformed", bad, err)
		}
	}
}
