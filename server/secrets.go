package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/wire"
)

// groupSecrets are what a server holds for its group: the key-encryption
// key every data key of the catalog is wrapped with, and the key it signs
// job tickets with. A rotation replaces both at once.
type groupSecrets struct {
	kek    []byte
	signer ed25519.PrivateKey
	kekFP  string
}

func newGroupSecrets(kek []byte, signer ed25519.PrivateKey) *groupSecrets {
	return &groupSecrets{kek: kek, signer: signer, kekFP: keyring.KEKFingerprint(kek)}
}

func (g *groupSecrets) ticketPublic() ed25519.PublicKey { return g.signer.Public().(ed25519.PublicKey) }

// ticketFP is the fingerprint of the ticket signing key.
func (g *groupSecrets) ticketFP() string { return keyring.TicketKeyFingerprint(g.ticketPublic()) }

// keys are the secrets this server uses now. A rotation works in three
// steps: every member prepares the new secrets (prepareSecrets, into
// s.next), the leader rewraps the data keys and commits the new KEK's
// fingerprint through Raft, then each member adopts what it prepared as
// soon as its catalog says the group has rotated to it: here, at the first
// use after that, or in kekLoop within seconds.
func (s *Server) keys() *groupSecrets {
	cur := s.secrets.Load()
	n := s.next.Load()
	if n == nil {
		return cur
	}
	if g := s.group(); g == nil || g.KEKFingerprint != n.kekFP {
		return cur
	}
	s.adopt(n)
	return s.secrets.Load()
}

// unwrap opens a data key of the catalog with the KEK in use. During a
// rotation a key read a moment before or after the catalog took the new
// wrapping may be wrapped with the KEK just replaced or about to be
// adopted: those are tried too, so no key operation fails because it ran
// in that moment.
func (s *Server) unwrap(k *catalog.Key) ([]byte, error) {
	material, err := keyring.Unwrap(s.keys().kek, k.ID, k.Wrapped)
	if err == nil || !errors.Is(err, keyring.ErrWrongKEK) {
		return material, err
	}
	for _, other := range []*groupSecrets{s.next.Load(), s.prev.Load()} {
		if other == nil {
			continue
		}
		if m, err := keyring.Unwrap(other.kek, k.ID, k.Wrapped); err == nil {
			return m, nil
		}
	}
	return nil, err
}

// adopt makes n the secrets in use, and writes them where the server reads
// its keys at start: the KEK file and ticket.key.
func (s *Server) adopt(n *groupSecrets) {
	s.adoptMu.Lock()
	defer s.adoptMu.Unlock()
	if s.secrets.Load() == n {
		return
	}
	s.prev.Store(s.secrets.Load())
	s.secrets.Store(n)
	s.next.CompareAndSwap(n, nil)
	if err := s.writeSecrets(n); err != nil {
		s.log.Error("the group's secrets were rotated, and this server uses the new ones, but could not write them where it reads its keys at start: "+
			"put them there before it restarts, or it will not open the catalog's data keys",
			"err", err, "hint", "copy the new secrets file's KEK into place, or start the server once with --secrets and the new secrets file")
		return
	}
	s.log.Info("the group's secrets were rotated: this server uses the new key-encryption key and ticket signing key, and wrote them in place of the old ones",
		"kek_fingerprint", n.kekFP, "ticket_key_fingerprint", n.ticketFP(), "kek", s.kekPath)
}

// writeSecrets replaces the KEK file and ticket.key with n's, each at once
// (a rename). A KEK from a systemd credential cannot be written from here.
func (s *Server) writeSecrets(n *groupSecrets) error {
	var errs []error
	if s.kekSource == KEKFromCredential {
		errs = append(errs, fmt.Errorf("the KEK comes from the systemd credential %s, which the server cannot change: "+
			"encrypt the new KEK into it (systemd-creds encrypt --name=%s) before the next restart", KEKCredential, KEKCredential))
	} else if err := replaceKeyFile(s.kekPath, n.kek); err != nil {
		errs = append(errs, fmt.Errorf("key-encryption key: %w", err))
	}
	if err := replaceKeyFile(filepath.Join(s.cfg.DataDir, "ticket.key"), n.signer.Seed()); err != nil {
		errs = append(errs, fmt.Errorf("ticket signing key: %w", err))
	}
	return errors.Join(errs...)
}

// replaceKeyFile replaces the key file at path with data (mode 0600),
// durably and at once.
func replaceKeyFile(path string, data []byte) error {
	tmp := path + ".rotate"
	os.Remove(tmp) // left by a rotation that stopped half-way
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// prepareSecrets reads the new secrets of a rotation from the file the
// leader names, keeps them until the group has rotated to them (keys), and
// answers their fingerprints. The same path on every member: the secrets
// never cross NATS.
func (s *Server) prepareSecrets(_ context.Context, _ string, req wire.SecretsRotateReq) (wire.SecretsPrepareResp, error) {
	resp := wire.SecretsPrepareResp{Server: s.cfg.Name}
	sec, err := keyring.ReadSecrets(req.File)
	if err != nil {
		return resp, wire.Errorf(wire.CodeInvalidArgument,
			"copy the new secrets file ('cairn cluster init --out FILE') to the same path on every server, readable by the user the server runs as",
			"server %s: %w", s.cfg.Name, err)
	}
	n := newGroupSecrets(sec.KEK, ed25519.NewKeyFromSeed(sec.TicketSeed))
	resp.KEKFingerprint, resp.TicketKeyFingerprint = n.kekFP, n.ticketFP()
	if cur := s.keys(); cur.kekFP == n.kekFP {
		return resp, nil // in use already: a rotation run again after it went through
	}
	s.next.Store(n)
	s.log.Info("prepared the group's new secrets for a rotation", "file", req.File, "kek_fingerprint", n.kekFP)
	return resp, nil
}

// prepareTimeout bounds the wait for one member's answer to prepare.
const prepareTimeout = 10 * time.Second

// rotateSecrets replaces the group's KEK and ticket signing key with those
// of the secrets file at req.File on every member. Every member must read
// the same new secrets first; then every data key is unwrapped with the old
// KEK and wrapped with the new one, and the catalog takes the new wrapped
// keys, the new KEK's fingerprint and the new ticket key in one command. A
// refusal at any step changes nothing.
func (s *Server) rotateSecrets(ctx context.Context, _ string, req wire.SecretsRotateReq) (wire.SecretsRotateResp, error) {
	var resp wire.SecretsRotateResp
	if req.File == "" || !filepath.IsAbs(req.File) {
		return resp, wire.Errorf(wire.CodeInvalidArgument, "pass the absolute path the new secrets file has on every server",
			"the new secrets file %q is not an absolute path", req.File)
	}
	g := s.group()
	if g == nil {
		return resp, wire.Errorf(wire.CodeUnavailable, "retry in a few seconds", "the group has not recorded its identity yet")
	}
	resp.Group = g.ID
	cur := s.keys()
	if cur.kekFP != g.KEKFingerprint {
		return resp, wire.Errorf(wire.CodeKey, kekHint, "the leader %s does not hold the group's key-encryption key: no rotation through it", s.cfg.Name)
	}
	peers, _, err := s.raft.Configuration()
	if err != nil {
		return resp, wire.Errorf(wire.CodeUnavailable, "retry in a few seconds", "read the group's configuration: %w", err)
	}
	refused := func(code, hint, format string, args ...any) error {
		return wire.Errorf(code, hint, "rotation refused, nothing changed: "+format, args...)
	}
	mine, err := s.prepareSecrets(ctx, "", req)
	if err != nil {
		we := wireError(err)
		return resp, refused(we.Code, we.Hint, "%s", we.Message)
	}
	if mine.KEKFingerprint == g.KEKFingerprint {
		return resp, refused(wire.CodeAlreadyExists, "make new secrets with 'cairn cluster init --out FILE'",
			"the group's key-encryption key is the one in %s already", req.File)
	}
	if slices.Contains(g.RetiredKEKFingerprints, mine.KEKFingerprint) {
		return resp, refused(wire.CodeInvalidArgument, "make new secrets with 'cairn cluster init --out FILE'",
			"%s holds a key-encryption key this group used before", req.File)
	}
	var problems []string
	for _, p := range peers {
		if p.ID == s.cfg.Name {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, prepareTimeout)
		var theirs wire.SecretsPrepareResp
		err := wire.Request(pctx, s.nc, wire.ServerSubject(p.ID, wire.OpServerPrepareSecrets), req, &theirs)
		cancel()
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: %v", p.ID, err))
		case theirs.KEKFingerprint != mine.KEKFingerprint || theirs.TicketKeyFingerprint != mine.TicketKeyFingerprint:
			problems = append(problems, fmt.Sprintf("%s read other secrets from %s (KEK fingerprint %s) than %s (%s)",
				p.ID, req.File, theirs.KEKFingerprint, s.cfg.Name, mine.KEKFingerprint))
		}
	}
	if len(problems) > 0 {
		return resp, refused(wire.CodeUnavailable,
			"every member of the group must run and read the same new secrets file at that path: copy it to each, start any that is stopped (or remove it from the group with 'cairn cluster remove'), and run the rotation again",
			"%s", strings.Join(problems, "; "))
	}
	n := s.next.Load()
	if n == nil || n.kekFP != mine.KEKFingerprint {
		return resp, refused(wire.CodeUnavailable, "run the rotation again", "another rotation was prepared meanwhile")
	}
	keys, err := s.store.Keys()
	if err != nil {
		return resp, err
	}
	rot := &catalog.SecretsRotation{FromKEK: cur.kekFP, ToKEK: n.kekFP, TicketKey: n.ticketPublic()}
	for _, k := range keys {
		material, err := keyring.Unwrap(cur.kek, k.ID, k.Wrapped)
		if err != nil {
			return resp, refused(wire.CodeKey, kekHint, "%s", wire.AsError(s.unwrapError(k.ID, err)).Message)
		}
		w, err := keyring.Wrap(n.kek, k.ID, material)
		if err != nil {
			return resp, err
		}
		rot.Keys = append(rot.Keys, catalog.RewrappedKey{ID: k.ID, Wrapped: w})
	}
	if _, err := s.apply(ctx, &catalog.Command{Op: catalog.OpRotateSecrets, Rotation: rot}); err != nil {
		return resp, err
	}
	s.keys() // adopts them here at once
	s.log.Warn("the group's secrets were rotated", "from_kek_fingerprint", cur.kekFP, "to_kek_fingerprint", n.kekFP,
		"ticket_key_fingerprint", n.ticketFP(), "keys", len(rot.Keys), "file", req.File)
	resp.FromKEK, resp.ToKEK, resp.TicketKey, resp.Keys = cur.kekFP, n.kekFP, n.ticketFP(), len(rot.Keys)
	for _, p := range peers {
		resp.Servers = append(resp.Servers, p.ID)
	}
	slices.Sort(resp.Servers)
	return resp, nil
}

// installSecrets puts the secrets file's keys in place at start (a first
// start, or a server that missed a rotation) and refuses, naming the file,
// keys of another group. A secrets file that holds keys the group rotated
// away from is an old file of this group: it is ignored, with a warning.
func installSecrets(cfg Config, store *catalog.Store, kekPath, ticketPath string, logger *slog.Logger) error {
	sec, err := keyring.ReadSecrets(cfg.SecretsFile)
	if err != nil {
		return err
	}
	var g *catalog.Group
	if store != nil {
		if g, err = store.Group(); err != nil {
			return err
		}
	}
	if g != nil {
		fp := keyring.KEKFingerprint(sec.KEK)
		have, _ := os.ReadFile(kekPath)
		switch {
		case slices.Contains(g.RetiredKEKFingerprints, fp) && len(have) == keyring.KeySize && keyring.KEKFingerprint(have) == g.KEKFingerprint:
			logger.Warn("the secrets file holds secrets this group has rotated away from: ignored, the server keeps its current keys; "+
				"point --secrets (secrets in a config file) at the group's current file, or drop it: it is needed on a server's first start only",
				"secrets", cfg.SecretsFile, "group_kek_fingerprint", g.KEKFingerprint)
			return nil
		case fp == g.KEKFingerprint && len(have) == keyring.KeySize && slices.Contains(g.RetiredKEKFingerprints, keyring.KEKFingerprint(have)):
			// A member that stopped between a rotation and writing its
			// new keys: the secrets file brings them.
			if err := replaceKeyFile(kekPath, sec.KEK); err != nil {
				return fmt.Errorf("install the group's rotated key-encryption key from %s: %w", cfg.SecretsFile, err)
			}
			if err := replaceKeyFile(ticketPath, sec.TicketSeed); err != nil {
				return fmt.Errorf("install the group's rotated ticket signing key from %s: %w", cfg.SecretsFile, err)
			}
			logger.Info("installed the group's rotated secrets from the secrets file, in place of the keys the group rotated away from",
				"secrets", cfg.SecretsFile, "kek_fingerprint", fp)
			return nil
		}
	}
	return sec.Install(cfg.SecretsFile, kekPath, ticketPath)
}
