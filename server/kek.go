package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/wire"
)

// kekCheck tracks whether this server's KEK opens the data keys in the
// catalog. A member started without the group's secrets file makes a KEK of
// its own; it replicates the catalog fine but cannot unwrap a single key,
// and as leader it would wrap new pools' keys that no other member opens.
// That must show at start, in the log, and on every key operation, not on
// the day of a restore.
type kekCheck struct {
	mu      sync.Mutex
	fp      string          // the fingerprint of the KEK checked
	checked map[string]bool // key IDs this KEK opens
	bad     error           // the first key it does not open
}

// kekHint is what to do about a KEK that does not match the catalog.
const kekHint = "start every server of the group with the same secrets file (--secrets, from 'cairn cluster init'); " +
	"a server's own kek file was made without it"

// checkKEK tries this server's KEK on the catalog's keys it has not tried
// yet, logs the first that does not open, and returns the failure (kept
// until the KEK changes, which only a rotation does while the server runs).
func (s *Server) checkKEK() error {
	sec := s.keys()
	keys, err := s.store.Keys()
	if err != nil {
		return nil // the catalog says why elsewhere
	}
	s.kekState.mu.Lock()
	defer s.kekState.mu.Unlock()
	if s.kekState.fp != sec.kekFP {
		s.kekState.fp, s.kekState.checked, s.kekState.bad = sec.kekFP, map[string]bool{}, nil
	}
	if s.kekState.bad != nil {
		return s.kekState.bad
	}
	for _, k := range keys {
		if s.kekState.checked[k.ID] {
			continue
		}
		if _, err := keyring.Unwrap(sec.kek, k.ID, k.Wrapped); err != nil {
			if n := s.next.Load(); n != nil {
				if _, err := keyring.Unwrap(n.kek, k.ID, k.Wrapped); err == nil {
					// Wrapped by a rotation this server is about to adopt.
					continue
				}
			}
			s.kekState.bad = wire.Errorf(wire.CodeKey, kekHint,
				"server %s cannot unwrap data key %s of the catalog with its key-encryption key (%s): it is not the group's",
				s.cfg.Name, k.ID, s.kekPath)
			s.log.Error("this server's key-encryption key does not open the catalog's data keys: backups and restores through it will fail",
				"key", k.ID, "kek", s.kekPath, "hint", kekHint)
			return s.kekState.bad
		}
		s.kekState.checked[k.ID] = true
	}
	return nil
}

// kekLoop checks the KEK at start and again as keys arrive: a server that
// just joined receives the catalog after it started. It also adopts the
// secrets of a rotation (keys) within seconds of the group's.
func (s *Server) kekLoop(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		_ = s.checkKEK() // it logs a KEK that does not open a key, once
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// loadKEK reads the key-encryption key at path (chosen by cfg.KEKPath, from
// source), making it on a server's first start. Its rules keep the KEK where
// the operator put it, and out of the data directory when that is
// elsewhere:
//   - a missing KEK is made only while the catalog does not exist yet: a
//     new KEK opens none of an existing catalog's keys, and a KEK file on a
//     medium that is not mounted must not be quietly replaced;
//   - with the KEK outside the data directory, a kek file left in it is a
//     copy to remove (said at every start) or, when it differs, another
//     group's key (refused).
func loadKEK(cfg Config, path, source string, catalogExists bool, logger *slog.Logger) ([]byte, error) {
	catalogPath := filepath.Join(cfg.DataDir, "catalog.db")
	kek, err := keyring.ReadKEK(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && catalogExists && source != KEKFromDataDir && fileExists(filepath.Join(cfg.DataDir, "kek")):
		return nil, fmt.Errorf("the key-encryption key %s (%s) does not exist, and the catalog's KEK is still %s: move that file to %s",
			path, source, filepath.Join(cfg.DataDir, "kek"), path)
	case errors.Is(err, fs.ErrNotExist) && catalogExists:
		return nil, fmt.Errorf("the key-encryption key %s (%s) does not exist, but the catalog %s does: its data keys open only with the KEK "+
			"they were wrapped with; put that KEK file back (from where it is kept offline, or start once with the group's --secrets file)",
			path, source, catalogPath)
	case errors.Is(err, fs.ErrNotExist):
		if kek, err = keyring.LoadOrCreateKEK(path); err != nil {
			return nil, err
		}
		logger.Info("made a new key-encryption key: keep a copy offline, with the escrowed data keys", "kek", path)
	case err != nil:
		return nil, err
	}
	if source == KEKFromDataDir {
		return kek, nil
	}
	inData := filepath.Join(cfg.DataDir, "kek")
	left, err := os.ReadFile(inData)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return kek, nil
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", inData, err)
	case !bytes.Equal(left, kek):
		return nil, fmt.Errorf("%w: %s holds another key-encryption key than %s (%s); remove the one that is not this group's",
			keyring.ErrOtherSecrets, inData, path, source)
	}
	logger.Warn("a copy of the key-encryption key is still in the data directory, so any copy of the directory holds every data key: remove it",
		"copy", inData, "kek", path, "from", source)
	return kek, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// warnInsecureRaft says, at every start, that Raft runs in the clear and
// unauthenticated where other machines reach it (Validate refuses that
// without cfg.InsecureRaft).
func warnInsecureRaft(cfg Config, logger *slog.Logger) {
	if cfg.RaftTLS.Empty() && !IsLoopback(cfg.RaftAddr) {
		logger.Warn("INSECURE: Raft runs over plain TCP with no authentication on an address other machines reach (--insecure-raft): "+
			"whoever reaches it can pose as a member, read the catalog and append to its log; give --tls-ca, --tls-cert and --tls-key",
			"raft_addr", cfg.RaftAddr)
	}
}

// unwrapError is the answer of a key operation whose unwrap failed.
func (s *Server) unwrapError(id string, err error) error {
	return wire.Errorf(wire.CodeKey, kekHint+"; or pass the escrowed key with 'cairn volume extract --key-file'",
		"server %s cannot unwrap data key %s: %w", s.cfg.Name, id, err)
}
