package integration

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/wire"
)

// TestWrongOrMissingKey reads a volume with keys that cannot open it: with
// no server (a key file holding another key under the right id, one
// lacking the id, none at all) and through the server (its key-encryption
// key replaced). Each fails naming the key the volume needs and writes
// nothing; the right key file restores the tree byte for byte.
func TestWrongOrMissingKey(t *testing.T) {
	s := newStack(t, stackOpts{})
	src := makeTree(t, smallSpec(5))
	snap := snapshot(t, src)
	s.backup("full", src)
	volPath := s.volumes()[0].Path
	var pools []wire.PoolInfo
	s.json(&pools, "pool", "list")
	keyID := pools[0].KeyID
	if keyID == "" {
		t.Fatalf("pool list names no key: %+v", pools)
	}

	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.json")
	s.ok("key", "export", "--to", keys)
	escrow, err := keyring.ReadFile(keys)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := escrow.Lookup(keyID); !ok {
		t.Fatalf("the exported key file lacks the pool's key %s: %v", keyID, escrow.IDs())
	}
	wrong := filepath.Join(dir, "wrong.json")
	if err := keyring.WriteFile(wrong, &keyring.File{V: 1, Keys: []keyring.FileKey{
		{ID: keyID, Pool: s.pool, Key: keyring.NewKey(), Created: time.Now()},
	}}, false); err != nil {
		t.Fatal(err)
	}
	lacking := filepath.Join(dir, "lacking.json")
	if err := keyring.WriteFile(lacking, &keyring.File{V: 1, Keys: []keyring.FileKey{
		{ID: "pool-Other-0badc0de", Pool: "Other", Key: keyring.NewKey(), Created: time.Now()},
	}}, false); err != nil {
		t.Fatal(err)
	}

	// With no server: 'cairn volume extract' and a key file.
	{
		for name, args := range map[string][]string{
			"different key under the same id": {"--key-file", wrong},
			"key file without the id":         {"--key-file", lacking},
			"no key file":                     nil,
		} {
			to := filepath.Join(dir, "extract-"+name)
			r := runCairn(t, s.url, append([]string{"volume", "extract", volPath, "--to", to}, args...)...)
			if r.code == 0 {
				t.Errorf("%s: extract succeeded:\n%s", name, r)
				continue
			}
			checkFailure(t, r, 1, keyID)
			emptyOrMissing(t, to)
		}
		to := filepath.Join(dir, "extract-right")
		s.ok("volume", "extract", volPath, "--key-file", keys, "--to", to)
		checkRestored(t, snap, to, src)
	}

	// Through the server.
	{
		// The server loses its key-encryption key: the wrapped data keys in
		// the catalog no longer open.
		s.server.stop()
		kek := filepath.Join(s.serverData, "kek")
		if err := os.WriteFile(kek, keyring.NewKey(), 0o600); err != nil {
			t.Fatal(err)
		}
		s.server.start()
		s.waitReady()
		to := filepath.Join(dir, "restore-bad-kek")
		s.fails(1, []string{keyID}, "restore", "--client", s.client, "--to", to)
		emptyOrMissing(t, to)
		// Nor can a backup get the pool's key to write with, and the volume
		// stays as it was.
		volSum := fileSHA(t, volPath)
		s.fails(1, []string{keyID}, "backup", "--client", s.client, "--path", src, "--wait")
		if fileSHA(t, volPath) != volSum {
			t.Errorf("a backup that could not get its key changed volume %s", volPath)
		}
		// Key export cannot hand out what it cannot unwrap either.
		s.fails(1, []string{keyID}, "key", "export", "--to", filepath.Join(dir, "keys-again.json"))
		// The escrowed key still reads the volume with no server.
		to = filepath.Join(dir, "extract-after")
		s.ok("volume", "extract", volPath, "--key-file", keys, "--to", to)
		checkRestored(t, snap, to, src)
	}
}
