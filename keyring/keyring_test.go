package keyring

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKEKCreatedOnceAndWrapUnwrap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek")
	kek, err := LoadOrCreateKEK(path)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadOrCreateKEK(path)
	if err != nil || !bytes.Equal(kek, again) {
		t.Fatalf("reload changed the KEK: %v", err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	dk := NewKey()
	w, err := Wrap(kek, "pool-Default-1", dk)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unwrap(kek, "pool-Default-1", w)
	if err != nil || !bytes.Equal(got, dk) {
		t.Fatalf("unwrap: %v", err)
	}
	if _, err := Unwrap(kek, "other-id", w); !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("unwrap under another id: %v", err)
	}
	if _, err := Unwrap(NewKey(), "pool-Default-1", w); !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("unwrap with another KEK: %v", err)
	}
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := LoadOrCreateKEK(path); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged KEK: %v", err)
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	f := &File{Keys: []FileKey{{ID: "a", Pool: "Default", Key: NewKey()}}}
	if err := WriteFile(path, f, false); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, f, false); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("overwrite without force: %v", err)
	}
	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := got.Lookup("a"); !ok || !bytes.Equal(k, f.Keys[0].Key) {
		t.Fatal("lookup")
	}
	if _, ok := got.Lookup("b"); ok {
		t.Fatal("lookup of a missing id")
	}
	os.WriteFile(path, []byte("{"), 0o600)
	if _, err := ReadFile(path); err == nil || !strings.Contains(err.Error(), "cairn key export") {
		t.Fatalf("garbage file: %v", err)
	}
}

func TestSigningKeyPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ticket.key")
	k1, err := LoadOrCreateSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreateSigningKey(path)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("reload: %v", err)
	}
}

func TestSecretsInstallOnceAndRefuseOthers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secrets.json")
	s := NewSecrets()
	if err := WriteSecrets(path, s); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("secrets file mode %v", st.Mode().Perm())
	}
	if err := WriteSecrets(path, NewSecrets()); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second write over the file: %v", err)
	}
	got, err := ReadSecrets(path)
	if err != nil || !bytes.Equal(got.KEK, s.KEK) || !bytes.Equal(got.TicketSeed, s.TicketSeed) {
		t.Fatalf("read back: %v", err)
	}

	data := filepath.Join(dir, "server")
	kek, tk := filepath.Join(data, "kek"), filepath.Join(data, "ticket.key")
	if err := got.Install(path, kek, tk); err != nil {
		t.Fatal(err)
	}
	if k, err := LoadOrCreateKEK(kek); err != nil || !bytes.Equal(k, s.KEK) {
		t.Fatalf("installed KEK: %v", err)
	}
	if k, err := LoadOrCreateSigningKey(tk); err != nil || !bytes.Equal(k.Seed(), s.TicketSeed) {
		t.Fatalf("installed signing key: %v", err)
	}
	if err := got.Install(path, kek, tk); err != nil {
		t.Fatalf("the same secrets again: %v", err)
	}
	other := NewSecrets()
	if err := other.Install("other.json", kek, tk); !errors.Is(err, ErrOtherSecrets) || !strings.Contains(err.Error(), "other.json") {
		t.Fatalf("other secrets over installed ones: %v", err)
	}

	// A server that made its own keys (no --secrets) is refused too.
	own := t.TempDir()
	if _, err := LoadOrCreateKEK(filepath.Join(own, "kek")); err != nil {
		t.Fatal(err)
	}
	if err := s.Install(path, filepath.Join(own, "kek"), filepath.Join(own, "ticket.key")); !errors.Is(err, ErrOtherSecrets) {
		t.Fatalf("secrets over a server's own KEK: %v", err)
	}

	for name, content := range map[string]string{"garbage": "{", "version": `{"v":2,"kek":"","ticket_seed":""}`, "short": `{"v":1,"kek":"AAAA","ticket_seed":"AAAA"}`} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		if _, err := ReadSecrets(p); err == nil {
			t.Errorf("%s secrets file accepted", name)
		}
	}
	if _, err := ReadSecrets(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "cairn cluster init") {
		t.Fatalf("missing secrets file: %v", err)
	}
}

// TestFingerprints: a fingerprint tells keys apart, is stable, and holds no
// part of the key.
func TestFingerprints(t *testing.T) {
	a, b := NewKey(), NewKey()
	if KEKFingerprint(a) != KEKFingerprint(a) || KEKFingerprint(a) == KEKFingerprint(b) {
		t.Fatalf("KEK fingerprints: %s %s %s", KEKFingerprint(a), KEKFingerprint(a), KEKFingerprint(b))
	}
	if strings.Contains(KEKFingerprint(a), hex.EncodeToString(a[:4])) {
		t.Fatalf("the fingerprint %s shows the key %x", KEKFingerprint(a), a)
	}
	pa := ed25519.NewKeyFromSeed(a).Public().(ed25519.PublicKey)
	pb := ed25519.NewKeyFromSeed(b).Public().(ed25519.PublicKey)
	if TicketKeyFingerprint(pa) == TicketKeyFingerprint(pb) || len(TicketKeyFingerprint(pa)) != 32 {
		t.Fatalf("ticket key fingerprints: %s %s", TicketKeyFingerprint(pa), TicketKeyFingerprint(pb))
	}
}

// TestWriteFileMakesNoDirectory: a key file for escrow goes into a
// directory that exists, or nowhere: a typo in the directory must not put
// every data key in the clear in a new directory nobody looks in.
func TestWriteFileMakesNoDirectory(t *testing.T) {
	dir := t.TempDir()
	f := &File{Keys: []FileKey{{ID: "k1", Pool: "Default", Key: NewKey()}}}
	missing := filepath.Join(dir, "no", "such", "keys.json")
	err := WriteFile(missing, f, false)
	var nd *NoDirError
	if !errors.As(err, &nd) || nd.Dir != filepath.Join(dir, "no", "such") || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("a key file in a directory that does not exist: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "no")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("WriteFile made a directory: %v", err)
	}
	notDir := filepath.Join(dir, "file")
	os.WriteFile(notDir, nil, 0o600)
	if err := WriteFile(filepath.Join(notDir, "keys.json"), f, false); !errors.As(err, &nd) || !strings.Contains(err.Error(), "is not a directory") {
		t.Errorf("a key file under a file: %v", err)
	}
	if err := WriteFile(filepath.Join(dir, "keys.json"), f, false); err != nil {
		t.Fatalf("a key file in a directory that exists: %v", err)
	}
}

// A key file that is not JSON says so and keeps the decoder's error, so a
// caller can tell where it broke.
func TestKeyFileThatIsNotJSONKeepsItsCause(t *testing.T) {
	_, err := parseFile("/x/key.json", []byte("{not json"))
	var se *json.SyntaxError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "not a Cairn key file") {
		t.Fatalf("parse of a file that is not JSON: %v", err)
	}
}
