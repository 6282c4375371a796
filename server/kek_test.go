package server

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/pki"
	"github.com/cairnbackup/cairn/wire"
)

func TestRaftWithoutTLSOnlyOnLoopback(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.CreateCA(filepath.Join(dir, "ca"), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.Issue(pki.IssueOptions{Name: "s1", Client: true, Server: true}, filepath.Join(dir, "s1"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := func(addr string, tune func(*Config)) Config {
		c := DefaultConfig()
		c.DataDir, c.RaftAddr = dir, addr
		if tune != nil {
			tune(&c)
		}
		return c
	}
	for _, addr := range []string{"127.0.0.1:7010", "127.0.0.2:7010", "[::1]:7010", "localhost:7010"} {
		c := cfg(addr, nil)
		if err := c.Validate(); err != nil {
			t.Errorf("plain Raft on %s, this machine only, refused: %v", addr, err)
		}
	}
	for _, addr := range []string{"10.0.0.1:7010", "0.0.0.0:7010", ":7010", "[::]:7010", "s1.example.net:7010", "192.168.1.5:7010"} {
		c := cfg(addr, nil)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "--insecure-raft") || !strings.Contains(err.Error(), "--tls-ca") {
			t.Errorf("plain Raft on %s: %v, want a refusal naming --tls-ca and --insecure-raft", addr, err)
		}
		c = cfg(addr, func(c *Config) { c.InsecureRaft = true })
		if err := c.Validate(); err != nil {
			t.Errorf("plain Raft on %s with insecure_raft: %v", addr, err)
		}
		c = cfg(addr, func(c *Config) { c.RaftTLS = pki.Files{CA: iss.CA, Cert: iss.Cert, Key: iss.Key} })
		if err := c.Validate(); err != nil {
			t.Errorf("Raft over TLS on %s: %v", addr, err)
		}
	}
}

func TestInsecureRaftIsSaidLoudly(t *testing.T) {
	var log bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&log, nil))
	c := DefaultConfig()
	c.RaftAddr, c.InsecureRaft = "10.0.0.1:7010", true
	warnInsecureRaft(c, logger)
	if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "INSECURE") || !strings.Contains(log.String(), "10.0.0.1:7010") {
		t.Errorf("insecure Raft started with: %q", log.String())
	}
	log.Reset()
	c.RaftAddr = "127.0.0.1:7010"
	warnInsecureRaft(c, logger)
	if log.Len() > 0 {
		t.Errorf("Raft on loopback warned: %q", log.String())
	}
}

// holding lists the files under dir that contain key, raw or in base64 (as
// JSON holds bytes).
func holding(t *testing.T, dir string, key []byte) []string {
	t.Helper()
	forms := [][]byte{key, []byte(base64.StdEncoding.EncodeToString(key)), []byte(base64.RawURLEncoding.EncodeToString(key))}
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, f := range forms {
			if bytes.Contains(data, f) {
				rel, _ := filepath.Rel(dir, path)
				found = append(found, rel)
				break
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestKEKStaysOutOfTheCatalogAndSnapshots: whatever the data directory
// holds of the catalog — catalog.db, the Raft log, a Raft snapshot (what a
// joining member receives, and a backup of the catalog is made of) — holds
// the data keys wrapped, never the KEK; with --kek-file the data directory
// holds no KEK at all, so a copy of it opens no data key.
func TestKEKStaysOutOfTheCatalogAndSnapshots(t *testing.T) {
	check := func(t *testing.T, h *harness, wantKEKFiles []string) {
		h.setup()
		var resp wire.KeyExportResp
		h.must(h.api(wire.OpKeyExport, wire.Empty{}, &resp))
		keys, err := h.srv.store.Keys()
		if err != nil || len(keys) == 0 || len(resp.Keys) == 0 {
			t.Fatalf("no data key to look for: %d in the catalog, %d exported, %v", len(keys), len(resp.Keys), err)
		}
		if err := h.srv.raft.Snapshot(); err != nil {
			t.Fatal(err)
		}
		dir := h.srv.cfg.DataDir
		snaps, _ := filepath.Glob(filepath.Join(dir, "raft", "snapshots", "*", "state.bin"))
		if len(snaps) == 0 {
			t.Fatalf("no Raft snapshot in %s", dir)
		}
		// The scan sees what is there: the wrapped key is in the catalog
		// and in the snapshot.
		wrapped := holding(t, dir, keys[0].Wrapped)
		if len(wrapped) < 2 {
			t.Fatalf("the wrapped data key was found only in %v, want it in catalog.db and the snapshot", wrapped)
		}
		if got := holding(t, dir, h.srv.keys().kek); !slicesEqual(got, wantKEKFiles) {
			t.Errorf("the KEK is in %v of the data directory, want %v", got, wantKEKFiles)
		}
		for _, k := range resp.Keys {
			if got := holding(t, dir, k.Key); len(got) > 0 {
				t.Errorf("HOLE: data key %s is in the clear in %v", k.ID, got)
			}
		}
	}
	t.Run("default: the kek file only", func(t *testing.T) {
		check(t, newHarness(t), []string{"kek"})
	})
	t.Run("--kek-file: nowhere", func(t *testing.T) {
		kekFile := filepath.Join(t.TempDir(), "offline", "cairn-kek")
		h := newHarness(t, func(c *Config) { c.KEKFile = kekFile })
		check(t, h, nil)
		if st, err := os.Stat(kekFile); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("the KEK file made on the first start: %v, %v", st, err)
		}
		if k, _ := os.ReadFile(kekFile); !bytes.Equal(k, h.srv.keys().kek) {
			t.Fatal("the server does not use the KEK in --kek-file")
		}
	})
}

func slicesEqual(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}

// newServer builds (and closes at the end of the test) a server on cfg,
// without NATS: enough for what New reads and refuses.
func newServer(t *testing.T, cfg Config) (*Server, error) {
	t.Helper()
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

func kekConfig(t *testing.T) Config {
	c := DefaultConfig()
	// Restarted on the same directory, with the address its Raft
	// configuration holds.
	c.Name, c.DataDir, c.RaftAddr = "s1", t.TempDir(), freeport.LoopbackAddr(t)
	return c
}

func TestKEKFileRules(t *testing.T) {
	t.Run("a missing KEK file is not replaced while the catalog exists", func(t *testing.T) {
		cfg := kekConfig(t)
		cfg.KEKFile = filepath.Join(t.TempDir(), "kek")
		s, err := newServer(t, cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if err := os.Remove(cfg.KEKFile); err != nil {
			t.Fatal(err)
		}
		_, err = newServer(t, cfg)
		if err == nil || !strings.Contains(err.Error(), "does not exist, but the catalog") {
			t.Fatalf("a server whose KEK file went missing: %v, want a refusal", err)
		}
		if _, err := os.Stat(cfg.KEKFile); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a new KEK was made in place of the missing one: %v", err)
		}
	})
	t.Run("a missing kek in the data directory neither", func(t *testing.T) {
		cfg := kekConfig(t)
		s, err := newServer(t, cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		os.Remove(filepath.Join(cfg.DataDir, "kek"))
		if _, err := newServer(t, cfg); err == nil || !strings.Contains(err.Error(), "does not exist, but the catalog") {
			t.Fatalf("a server whose kek went missing: %v, want a refusal", err)
		}
	})
	t.Run("moving the KEK out of the data directory", func(t *testing.T) {
		cfg := kekConfig(t)
		s, err := newServer(t, cfg)
		if err != nil {
			t.Fatal(err)
		}
		kek := s.keys().kek
		s.Close()
		inData := filepath.Join(cfg.DataDir, "kek")
		cfg.KEKFile = filepath.Join(t.TempDir(), "kek")
		if _, err := newServer(t, cfg); err == nil || !strings.Contains(err.Error(), "move that file to "+cfg.KEKFile) {
			t.Fatalf("--kek-file missing while the data directory still holds the kek: %v, want 'move it'", err)
		}
		data, _ := os.ReadFile(inData)
		if err := os.WriteFile(cfg.KEKFile, data, 0o600); err != nil {
			t.Fatal(err)
		}
		var log bytes.Buffer
		s, err = New(cfg, slog.New(slog.NewTextHandler(&log, nil)), nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if !bytes.Equal(s.keys().kek, kek) || !strings.Contains(log.String(), "a copy of the key-encryption key is still in the data directory") {
			t.Fatalf("a copy left in the data directory: same KEK %v, log %q", bytes.Equal(s.keys().kek, kek), log.String())
		}
		if err := os.Remove(inData); err != nil {
			t.Fatal(err)
		}
		s, err = newServer(t, cfg)
		if err != nil || !bytes.Equal(s.keys().kek, kek) {
			t.Fatalf("the KEK moved out of the data directory: %v", err)
		}
		s.Close()
		// Another key left in the data directory is another group's.
		if err := os.WriteFile(inData, keyring.NewKey(), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := newServer(t, cfg); !errors.Is(err, keyring.ErrOtherSecrets) {
			t.Fatalf("another kek in the data directory: %v, want ErrOtherSecrets", err)
		}
	})
	t.Run("the systemd credential", func(t *testing.T) {
		creds := t.TempDir()
		kek := keyring.NewKey()
		if err := os.WriteFile(filepath.Join(creds, KEKCredential), kek, 0o400); err != nil {
			t.Fatal(err)
		}
		t.Setenv("CREDENTIALS_DIRECTORY", creds)
		cfg := kekConfig(t)
		s, err := newServer(t, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(s.keys().kek, kek) {
			t.Fatal("the server does not use the KEK of its systemd credential")
		}
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "kek")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a kek in the data directory beside the credential: %v", err)
		}
		// --kek-file wins over the credential.
		s.Close()
		cfg.KEKFile = filepath.Join(t.TempDir(), "kek")
		if err := os.WriteFile(cfg.KEKFile, kek, 0o600); err != nil {
			t.Fatal(err)
		}
		if path, from := cfg.KEKPath(); path != cfg.KEKFile || from != KEKFromFile {
			t.Fatalf("KEKPath with --kek-file and a credential: %s from %s", path, from)
		}
	})
	t.Run("the group's secrets go to --kek-file", func(t *testing.T) {
		secrets := filepath.Join(t.TempDir(), "secrets.json")
		sec := keyring.NewSecrets()
		if err := keyring.WriteSecrets(secrets, sec); err != nil {
			t.Fatal(err)
		}
		cfg := kekConfig(t)
		cfg.SecretsFile, cfg.KEKFile = secrets, filepath.Join(t.TempDir(), "kek")
		s, err := newServer(t, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(s.keys().kek, sec.KEK) {
			t.Fatal("the server does not use the group's KEK")
		}
		if got := holding(t, cfg.DataDir, sec.KEK); len(got) > 0 {
			t.Fatalf("the group's KEK is in the data directory: %v", got)
		}
	})
	t.Run("--kek-file naming the data directory's kek", func(t *testing.T) {
		cfg := kekConfig(t)
		cfg.KEKFile = filepath.Join(cfg.DataDir, "kek")
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "outside --data") {
			t.Fatalf("--kek-file DATA/kek: %v", err)
		}
	})
}
