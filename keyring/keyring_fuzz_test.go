package keyring

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// FuzzKeyFile reads arbitrary bytes as an escrow key file (what 'cairn key
// export' writes and 'cairn volume ls/extract' reads): a file that is read
// holds only whole keys, and writes back to a file that reads the same.
func FuzzKeyFile(f *testing.F) {
	good := &File{V: 1, Keys: []FileKey{
		{ID: "k1", Pool: "Default", Key: bytes.Repeat([]byte{1}, KeySize), Created: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)},
		{ID: "k2", Key: bytes.Repeat([]byte{2}, KeySize)},
	}}
	b, _ := json.MarshalIndent(good, "", "  ")
	f.Add(b)
	f.Add([]byte(`{"v":1,"keys":[]}`))
	f.Add([]byte(`{"v":2,"keys":[{"id":"k","key":"AAAA"}]}`))
	f.Add([]byte(`{"v":1,"keys":[{"id":"k","key":"AAAA"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := parseFile("keys.json", data)
		if err != nil {
			if !strings.Contains(err.Error(), "keys.json") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		for _, k := range kf.Keys {
			if len(k.Key) != KeySize {
				t.Fatalf("key %q of %d bytes accepted", k.ID, len(k.Key))
			}
		}
		out, err := json.MarshalIndent(kf, "", "  ")
		if err != nil {
			t.Fatalf("a key file that was read does not write: %v", err)
		}
		again, err := parseFile("keys.json", out)
		if err != nil || len(again.Keys) != len(kf.Keys) {
			t.Fatalf("a key file written back does not read the same: %v", err)
		}
		for i, k := range kf.Keys {
			if got, ok := again.Lookup(k.ID); !ok || (again.Keys[i].ID == k.ID && !bytes.Equal(again.Keys[i].Key, k.Key)) || got == nil {
				t.Fatalf("key %q lost in the round trip", k.ID)
			}
		}
	})
}

// FuzzSecretsFile reads arbitrary bytes as a group's secrets file: one that
// is read holds a KEK and a ticket seed of the right sizes.
func FuzzSecretsFile(f *testing.F) {
	b, _ := json.MarshalIndent(&Secrets{V: 1, KEK: bytes.Repeat([]byte{1}, KeySize), TicketSeed: bytes.Repeat([]byte{2}, 32)}, "", "  ")
	f.Add(b)
	f.Add([]byte(`{"v":1,"kek":"AAAA","ticket_seed":"AAAA"}`))
	f.Add([]byte(`{"v":1,"other":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := parseSecrets("secrets.json", data)
		if err != nil {
			if !strings.Contains(err.Error(), "secrets.json") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if s.V != 1 || len(s.KEK) != KeySize || len(s.TicketSeed) != 32 {
			t.Fatalf("accepted %+v", s)
		}
	})
}

// FuzzUnwrap opens arbitrary bytes as a wrapped data key with a real KEK:
// only what Wrap made with this KEK and id opens, and to the key wrapped.
func FuzzUnwrap(f *testing.F) {
	kek := bytes.Repeat([]byte{7}, KeySize)
	key := bytes.Repeat([]byte{9}, KeySize)
	// Wrap's layout with a fixed nonce, so every fuzz worker holds the
	// same wrapped key.
	gcm, err := newGCM(kek)
	if err != nil {
		f.Fatal(err)
	}
	nonce := bytes.Repeat([]byte{3}, gcm.NonceSize())
	w := gcm.Seal(nonce, nonce, key, []byte("k1"))
	if got, err := Unwrap(kek, "k1", w); err != nil || !bytes.Equal(got, key) {
		f.Fatalf("the seed does not unwrap: %v", err)
	}
	f.Add("k1", w)
	f.Add("k2", w)
	f.Add("k1", w[:11])
	f.Add("", []byte{})
	f.Fuzz(func(t *testing.T, id string, wrapped []byte) {
		got, err := Unwrap(kek, id, wrapped)
		if err != nil {
			return
		}
		if id != "k1" || !bytes.Equal(wrapped, w) || !bytes.Equal(got, key) {
			t.Fatalf("unwrapped %x from %x as %q", got, wrapped, id)
		}
	})
}
