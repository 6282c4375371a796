package keyring

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Secrets are what every server of a Raft group must hold alike: the KEK,
// because the catalog's data keys are wrapped with it and any member may
// have to unwrap them, and the ticket signing key, because storage nodes
// check tickets against the group's public keys as its catalog records
// them, whichever server signed them. 'cairn cluster join' compares a new
// server's fingerprints of both with the group's. `cairn cluster init` writes them to a file
// that each server is started with (--secrets).
type Secrets struct {
	V   int    `json:"v"`
	KEK []byte `json:"kek"` // base64 in JSON
	// TicketSeed is the ed25519 seed of the ticket signing key.
	TicketSeed []byte `json:"ticket_seed"`
}

// NewSecrets makes fresh secrets for a new group.
func NewSecrets() *Secrets {
	return &Secrets{V: 1, KEK: NewKey(), TicketSeed: NewKey()[:ed25519.SeedSize]}
}

func (s *Secrets) check(path string) error {
	if s.V != 1 {
		return fmt.Errorf("secrets file %s has version %d; this program reads version 1", path, s.V)
	}
	if len(s.KEK) != KeySize || len(s.TicketSeed) != ed25519.SeedSize {
		return fmt.Errorf("secrets file %s is damaged (a key has the wrong length); restore it from your copy", path)
	}
	return nil
}

// WriteSecrets writes s to a new file with mode 0600; it never replaces one,
// since servers started with it would then hold other keys than their group.
func WriteSecrets(path string, s *Secrets) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := writeNew(path, append(data, '\n')); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("secrets file %s already exists: a secrets file is never replaced; choose another name", path)
		}
		return fmt.Errorf("write secrets file: %w", err)
	}
	return nil
}

// ReadSecrets reads a file WriteSecrets wrote.
func ReadSecrets(path string) (*Secrets, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("secrets file %s does not exist: copy the group's file here (from 'cairn cluster init')", path)
		}
		return nil, fmt.Errorf("read secrets file: %w", err)
	}
	return parseSecrets(path, data)
}

// parseSecrets decodes the content of the secrets file at path.
func parseSecrets(path string, data []byte) (*Secrets, error) {
	var s Secrets
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%s is not a Cairn secrets file (%w); write one with 'cairn cluster init'", path, err)
	}
	if err := s.check(path); err != nil {
		return nil, err
	}
	return &s, nil
}

// ErrOtherSecrets means a data directory holds keys other than the secrets
// file's.
var ErrOtherSecrets = errors.New("the data directory holds other keys than the secrets file")

// Install makes the KEK at kekPath and the signing key at ticketPath those of
// s: it writes the ones that are missing (a server's first start) and
// refuses, naming the file, when one differs, because a server must not
// silently swap the keys its catalog was written with.
func (s *Secrets) Install(secretsPath, kekPath, ticketPath string) error {
	for _, f := range []struct {
		what, path string
		want       []byte
	}{{"key-encryption key", kekPath, s.KEK}, {"ticket signing key", ticketPath, s.TicketSeed}} {
		have, err := os.ReadFile(f.path)
		switch {
		case err == nil:
			if !bytes.Equal(have, f.want) {
				return fmt.Errorf("%w: the %s %s is not the one in %s; this data directory belongs to another group, "+
					"or was started without --secrets and made its own: start it with its own group's secrets file, "+
					"or with a new --data directory to join this group", ErrOtherSecrets, f.what, f.path, secretsPath)
			}
		case errors.Is(err, fs.ErrNotExist):
			if err := writeNew(f.path, f.want); err != nil {
				return fmt.Errorf("install the %s from %s: %w", f.what, secretsPath, err)
			}
		default:
			return fmt.Errorf("read the %s: %w", f.what, err)
		}
	}
	return nil
}
