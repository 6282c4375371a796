package natsauth

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nkeys"
)

// FuzzSeedFile reads arbitrary bytes as a role's nkey seed file, as 'cairn
// cert nats-config' does when it finds one: only a user seed is accepted,
// its public key is a user key, and the file is never rewritten.
func FuzzSeedFile(f *testing.F) {
	dir := f.TempDir()
	u, err := LoadOrCreateUser(dir, "agent", "web")
	if err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(u.SeedFile)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	acct, _ := nkeys.CreateAccount()
	aseed, _ := acct.Seed()
	f.Add(aseed)
	f.Add([]byte("-----BEGIN USER NKEY SEED-----\n" + string(bytes.TrimSpace(seed)) + "\n------END USER NKEY SEED------\n"))
	f.Add([]byte("SUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
	dir = f.TempDir()
	path := filepath.Join(dir, SeedFileName("agent", "web"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		u, err := LoadOrCreateUser(dir, "agent", "web")
		after, rerr := os.ReadFile(path)
		if rerr != nil || !bytes.Equal(after, data) {
			t.Fatalf("the seed file was changed (%v)", rerr)
		}
		if err != nil {
			return
		}
		if !nkeys.IsValidPublicUserKey(u.NKey) {
			t.Fatalf("accepted %q, whose public key %q is not a user's", data, u.NKey)
		}
	})
}
