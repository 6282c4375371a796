package keyring

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// LoadOrCreateSigningKey reads the servers' ed25519 ticket-signing key (its
// 32-byte seed) at path, creating it when the file does not exist.
func LoadOrCreateSigningKey(path string) (ed25519.PrivateKey, error) {
	seed, err := os.ReadFile(path)
	if err == nil {
		if len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("ticket signing key %s has %d bytes, want %d: the file is damaged; delete it to make a new one (running jobs will fail)", path, len(seed), ed25519.SeedSize)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read ticket signing key: %w", err)
	}
	seed = NewKey()[:ed25519.SeedSize]
	if err := writeNew(path, seed); err != nil {
		return nil, fmt.Errorf("create ticket signing key: %w", err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
