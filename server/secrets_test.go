package server

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/wire"
)

func writeSecrets(t *testing.T) (string, *keyring.Secrets) {
	t.Helper()
	sec := keyring.NewSecrets()
	path := filepath.Join(t.TempDir(), "secrets.json")
	if err := keyring.WriteSecrets(path, sec); err != nil {
		t.Fatal(err)
	}
	return path, sec
}

func exportKeys(h *harness) map[string][]byte {
	h.t.Helper()
	var resp wire.KeyExportResp
	h.must(h.api(wire.OpKeyExport, wire.Empty{}, &resp))
	out := map[string][]byte{}
	for _, k := range resp.Keys {
		out[k.ID] = k.Key
	}
	return out
}

// TestRotateSecrets rotates a group's secrets: every data key opens with the
// new KEK and is the same key as before, the old KEK opens none, tickets are
// signed with the new key while the old one stays valid beside it, the new
// keys are written where the server reads them at start, and a refused
// rotation changes nothing. At a restart, the old secrets file is ignored
// with a warning, and a server that missed the rotation's end takes the new
// one.
func TestRotateSecrets(t *testing.T) {
	oldFile, old := writeSecrets(t)
	kekFile := filepath.Join(t.TempDir(), "kek")
	var cfg Config
	h := newHarness(t, func(c *Config) {
		c.SecretsFile, c.KEKFile = oldFile, kekFile
		cfg = *c
	})
	h.setup()
	before := exportKeys(h)
	if len(before) == 0 {
		t.Fatal("no data key to rotate")
	}
	g0 := h.srv.group()
	newFile, sec := writeSecrets(t)

	// Refusals first: nothing changes.
	for _, tc := range []struct {
		file, code, says string
	}{
		{"secrets.json", wire.CodeInvalidArgument, "absolute path"},
		{filepath.Join(t.TempDir(), "nosuch.json"), wire.CodeInvalidArgument, "does not exist"},
		{oldFile, wire.CodeAlreadyExists, "already"},
	} {
		err := h.api(wire.OpSecretsRotate, wire.SecretsRotateReq{File: tc.file}, nil)
		wantCode(t, err, tc.code)
		if !strings.Contains(err.Error(), tc.says) {
			t.Errorf("rotation with %s: %v, want it to say %q", tc.file, err, tc.says)
		}
	}
	if g := h.srv.group(); g.KEKFingerprint != g0.KEKFingerprint || len(g.TicketKeys) != 1 {
		t.Fatalf("a refused rotation changed the group: %+v", g)
	}

	var resp wire.SecretsRotateResp
	h.must(h.api(wire.OpSecretsRotate, wire.SecretsRotateReq{File: newFile}, &resp))
	if resp.Keys != len(before) || resp.FromKEK != keyring.KEKFingerprint(old.KEK) || resp.ToKEK != keyring.KEKFingerprint(sec.KEK) ||
		len(resp.Servers) != 1 || resp.Group != g0.ID {
		t.Errorf("rotation answered %+v, want %d keys from %s to %s by s1", resp, len(before), keyring.KEKFingerprint(old.KEK), keyring.KEKFingerprint(sec.KEK))
	}

	// Every data key is the same key, wrapped with the new KEK only.
	after := exportKeys(h)
	for id, k := range before {
		if !bytes.Equal(after[id], k) {
			t.Errorf("data key %s changed in the rotation: what it encrypted would be lost", id)
		}
	}
	keys, err := h.srv.store.Keys()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, err := keyring.Unwrap(sec.KEK, k.ID, k.Wrapped); err != nil {
			t.Errorf("key %s does not open with the new KEK: %v", k.ID, err)
		}
		if _, err := keyring.Unwrap(old.KEK, k.ID, k.Wrapped); !errors.Is(err, keyring.ErrWrongKEK) {
			t.Errorf("key %s still opens with the old KEK", k.ID)
		}
	}
	newTicket := ed25519.NewKeyFromSeed(sec.TicketSeed).Public().(ed25519.PublicKey)
	oldTicket := ed25519.NewKeyFromSeed(old.TicketSeed).Public().(ed25519.PublicKey)
	g := h.srv.group()
	if g.KEKFingerprint != resp.ToKEK || len(g.TicketKeys) != 2 || !bytes.Equal(g.TicketKeys[0], newTicket) || !bytes.Equal(g.TicketKeys[1], oldTicket) {
		t.Errorf("group after the rotation: %+v", g)
	}
	if !h.srv.ticketPublic().Equal(newTicket) {
		t.Error("the server still signs tickets with the old key")
	}
	var reg wire.NodeRegisterResp
	h.must(h.node(wire.OpNodeRegister, wire.NodeRegisterReq{ID: "sn1", DataAddr: "127.0.0.1:1", CertSHA256: strings.Repeat("ab", 32),
		Pools: []wire.NodePool{{Name: "Default", Type: "disk", Dir: "/srv/pool", MaxVolumeBytes: 64 << 20}}}, &reg))
	if len(reg.TicketKeys) != 2 || !bytes.Equal(reg.TicketKey, newTicket) {
		t.Errorf("a storage node is handed ticket keys %x (first %x), want the new and the old", reg.TicketKeys, reg.TicketKey)
	}
	if k, _ := os.ReadFile(kekFile); !bytes.Equal(k, sec.KEK) {
		t.Error("the KEK file does not hold the new KEK")
	}
	if k, _ := os.ReadFile(filepath.Join(cfg.DataDir, "ticket.key")); !bytes.Equal(k, sec.TicketSeed) {
		t.Error("ticket.key does not hold the new ticket signing key")
	}
	h.srv.Close()

	// Restarted with the old secrets file, as a unit that names it for
	// good: the file is ignored, and said so.
	var log lockedLog // the server's goroutines log while the test reads
	s, err := New(cfg, slog.New(slog.NewTextHandler(&log, nil)), nil)
	if err != nil {
		t.Fatalf("restart with the secrets file the group rotated away from: %v", err)
	}
	if !bytes.Equal(s.keys().kek, sec.KEK) || s.checkKEK() != nil || !strings.Contains(log.String(), "rotated away from") {
		t.Errorf("restart with the old secrets file: new KEK in use %v, check %v, log:\n%s", bytes.Equal(s.keys().kek, sec.KEK), s.checkKEK(), log.String())
	}
	s.Close()

	// A member that stopped before writing its new keys: started with the
	// new secrets file, it takes them.
	if err := os.WriteFile(kekFile, old.KEK, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "ticket.key"), old.TicketSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.SecretsFile = newFile
	s, err = New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatalf("restart with the new secrets file after a missed rotation: %v", err)
	}
	if !bytes.Equal(s.keys().kek, sec.KEK) || s.checkKEK() != nil || !s.ticketPublic().Equal(newTicket) {
		t.Error("a server that missed the rotation did not take the new secrets from the file")
	}
	s.Close()

	// Another group's secrets are still refused.
	cfg.SecretsFile, _ = writeSecrets(t)
	if _, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil); !errors.Is(err, keyring.ErrOtherSecrets) {
		t.Errorf("start with another group's secrets: %v, want ErrOtherSecrets", err)
	}
}

// TestRotateSecretsWithCredentialKEK: a KEK from a systemd credential,
// which the server cannot write, is rotated all the same: the server uses
// the new KEK (every key opens), leaves the credential as it is and writes
// the new ticket key; putting the new KEK into the credential is the
// operator's step, before a restart.
func TestRotateSecretsWithCredentialKEK(t *testing.T) {
	creds := t.TempDir()
	oldKEK := keyring.NewKey()
	if err := os.WriteFile(filepath.Join(creds, KEKCredential), oldKEK, 0o400); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	h := newHarness(t)
	h.setup()
	before := exportKeys(h)
	newFile, sec := writeSecrets(t)
	h.must(h.api(wire.OpSecretsRotate, wire.SecretsRotateReq{File: newFile}, nil))
	if after := exportKeys(h); len(after) != len(before) {
		t.Fatalf("%d keys after the rotation, %d before", len(after), len(before))
	}
	if h.srv.checkKEK() != nil || !bytes.Equal(h.srv.keys().kek, sec.KEK) {
		t.Error("the server does not use the new KEK after the rotation")
	}
	if k, _ := os.ReadFile(filepath.Join(creds, KEKCredential)); !bytes.Equal(k, oldKEK) {
		t.Error("the server wrote into its systemd credential")
	}
	if k, _ := os.ReadFile(filepath.Join(h.srv.cfg.DataDir, "ticket.key")); !bytes.Equal(k, sec.TicketSeed) {
		t.Error("ticket.key does not hold the new ticket key")
	}
	if err := h.srv.writeSecrets(h.srv.keys()); err == nil || !strings.Contains(err.Error(), "systemd-creds encrypt") {
		t.Errorf("writing the rotated keys with a credential KEK: %v, want it to say how to update the credential", err)
	}
}

// TestUnwrapDuringRotation: a key operation that read a data key a moment
// before the catalog took its new wrapping (or before this server adopted
// the secrets the catalog already names) opens it all the same, with the
// KEK just replaced or about to be adopted; a key of another KEK does not
// open.
func TestUnwrapDuringRotation(t *testing.T) {
	oldFile, old := writeSecrets(t)
	h := newHarness(t, func(c *Config) { c.SecretsFile = oldFile })
	h.setup()
	material := keyring.NewKey()
	wrapWith := func(kek []byte) *catalog.Key {
		w, err := keyring.Wrap(kek, "k", material)
		if err != nil {
			t.Fatal(err)
		}
		return &catalog.Key{ID: "k", Wrapped: w}
	}
	newFile, sec := writeSecrets(t)
	if _, err := h.srv.prepareSecrets(h.ctx, "", wire.SecretsRotateReq{File: newFile}); err != nil {
		t.Fatal(err)
	}
	// Prepared, not adopted: a key already wrapped with the new KEK.
	if m, err := h.srv.unwrap(wrapWith(sec.KEK)); err != nil || !bytes.Equal(m, material) {
		t.Errorf("a key wrapped with the prepared KEK: %v", err)
	}
	h.must(h.api(wire.OpSecretsRotate, wire.SecretsRotateReq{File: newFile}, nil))
	// Adopted: a key read with its old wrapping.
	if m, err := h.srv.unwrap(wrapWith(old.KEK)); err != nil || !bytes.Equal(m, material) {
		t.Errorf("a key wrapped with the KEK the rotation replaced: %v", err)
	}
	if _, err := h.srv.unwrap(wrapWith(keyring.NewKey())); !errors.Is(err, keyring.ErrWrongKEK) {
		t.Errorf("a key of another KEK: %v, want ErrWrongKEK", err)
	}
}

// lockedLog is a log sink that the server's goroutines write and a test
// reads at the same time.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
