package keyring

import (
	"bytes"
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
