package server

import (
	"context"
	"fmt"
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
	checked map[string]bool // key IDs this KEK opens
	bad     error           // the first key it does not open
}

// kekHint is what to do about a KEK that does not match the catalog.
const kekHint = "start every server of the group with the same secrets file (--secrets, from 'cairn cluster init'); " +
	"a server's own kek file was made without it"

// checkKEK tries this server's KEK on the catalog's keys it has not tried
// yet, logs the first that does not open, and returns the failure (kept
// until restart: the KEK does not change while the server runs).
func (s *Server) checkKEK() error {
	keys, err := s.store.Keys()
	if err != nil {
		return nil // the catalog says why elsewhere
	}
	s.kekState.mu.Lock()
	defer s.kekState.mu.Unlock()
	if s.kekState.checked == nil {
		s.kekState.checked = map[string]bool{}
	}
	if s.kekState.bad != nil {
		return s.kekState.bad
	}
	for _, k := range keys {
		if s.kekState.checked[k.ID] {
			continue
		}
		if _, err := keyring.Unwrap(s.kek, k.ID, k.Wrapped); err != nil {
			s.kekState.bad = wire.Errorf(wire.CodeKey, kekHint,
				"server %s cannot unwrap data key %s of the catalog with its key-encryption key (%s/kek): it is not the group's",
				s.cfg.Name, k.ID, s.cfg.DataDir)
			s.log.Error("this server's key-encryption key does not open the catalog's data keys: backups and restores through it will fail",
				"key", k.ID, "kek", s.cfg.DataDir+"/kek", "hint", kekHint)
			return s.kekState.bad
		}
		s.kekState.checked[k.ID] = true
	}
	return nil
}

// kekLoop checks the KEK at start and again as keys arrive: a server that
// just joined receives the catalog after it started.
func (s *Server) kekLoop(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		if err := s.checkKEK(); err != nil {
			return // said once; every key operation says it again
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// unwrapError is the answer of a key operation whose unwrap failed.
func (s *Server) unwrapError(id string, err error) error {
	return wire.Errorf(wire.CodeKey, kekHint+"; or pass the escrowed key with 'cairn volume extract --key-file'",
		"server %s cannot unwrap data key %s: %v", s.cfg.Name, id, fmt.Sprint(err))
}
