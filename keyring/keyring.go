// Package keyring keeps data keys safe and recoverable. Each pool has a
// data key that encrypts its volumes; the catalog stores it wrapped by the
// servers' key-encryption key (KEK), which lives in a file, never in the
// catalog nor in its Raft log or snapshots: in the server's data directory
// by default, better elsewhere (the server's --kek-file, or a systemd
// credential), so that a copy of the data directory opens no data key. An admin exports the data keys to a
// key file for escrow, because a lost key means lost data; the same file
// lets `cairn volume ls/extract` read volumes with no server at all.
package keyring

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// KeySize is the size of data keys and of the KEK (AES-256).
const KeySize = 32

// NewKey returns a fresh random key.
func NewKey() []byte {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return k
}

// ReadKEK reads the KEK at path: 32 raw bytes. A missing file is an error
// that errors.Is fs.ErrNotExist.
func ReadKEK(path string) ([]byte, error) {
	k, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key-encryption key: %w", err)
	}
	if len(k) != KeySize {
		return nil, fmt.Errorf("key-encryption key %s has %d bytes, want %d: the file is damaged; restore it from your escrow copy", path, len(k), KeySize)
	}
	return k, nil
}

// LoadOrCreateKEK reads the KEK at path, creating it (mode 0600) when the
// file does not exist.
func LoadOrCreateKEK(path string) ([]byte, error) {
	k, err := ReadKEK(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	k = NewKey()
	if err := writeNew(path, k); err != nil {
		return nil, fmt.Errorf("create key-encryption key: %w", err)
	}
	return k, nil
}

// writeNew writes a file that must not exist yet, durably, making its
// directory (0700) if need be: the keys a role keeps in its own directory.
func writeNew(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return writeNewIn(path, data)
}

// writeNewIn is writeNew in a directory that must exist.
func writeNewIn(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// Wrap encrypts a data key with the KEK, binding its id so a wrapped key
// cannot be passed off as another.
func Wrap(kek []byte, id string, key []byte) ([]byte, error) {
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return gcm.Seal(nonce, nonce, key, []byte(id)), nil
}

// ErrWrongKEK means a wrapped key does not open with this KEK.
var ErrWrongKEK = errors.New("wrapped data key does not open with this key-encryption key")

// Unwrap reverses Wrap.
func Unwrap(kek []byte, id string, wrapped []byte) ([]byte, error) {
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	if len(wrapped) < gcm.NonceSize() {
		return nil, fmt.Errorf("unwrap key %s: %w", id, ErrWrongKEK)
	}
	key, err := gcm.Open(nil, wrapped[:gcm.NonceSize()], wrapped[gcm.NonceSize():], []byte(id))
	if err != nil {
		return nil, fmt.Errorf("unwrap key %s: %w (is this server's kek file the one the catalog was written with?)", id, ErrWrongKEK)
	}
	return key, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("key-encryption key has %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// FileKey is one key in a key file.
type FileKey struct {
	ID      string    `json:"id"`
	Pool    string    `json:"pool,omitempty"`
	Key     []byte    `json:"key"` // base64 in JSON
	Created time.Time `json:"created,omitzero"`
}

// File is an escrow key file: {"v":1,"keys":[{"id":...,"key":"<base64>"}]}.
type File struct {
	V    int       `json:"v"`
	Keys []FileKey `json:"keys"`
}

// ReadFile reads a key file.
func ReadFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	return parseFile(path, data)
}

// parseFile decodes the content of the key file at path.
func parseFile(path string, data []byte) (*File, error) {
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("key file %s is not a Cairn key file (%w); write one with 'cairn key export'", path, err)
	}
	if f.V != 1 {
		return nil, fmt.Errorf("key file %s has version %d; this program reads version 1", path, f.V)
	}
	for _, k := range f.Keys {
		if len(k.Key) != KeySize {
			return nil, fmt.Errorf("key file %s: key %q has %d bytes, want %d", path, k.ID, len(k.Key), KeySize)
		}
	}
	return &f, nil
}

// WriteFile writes a key file with mode 0600. It refuses to replace an
// existing file unless overwrite is set, so an escrow copy is not lost by a
// typo, and to make directories (CheckFileDir), so a typo in one does not
// put every data key in the clear where nobody looks for them.
func WriteFile(path string, f *File, overwrite bool) error {
	if err := CheckFileDir(path); err != nil {
		return err
	}
	if f.V == 0 {
		f.V = 1
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if overwrite {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("write key file: %w", err)
		}
	}
	if err := writeNewIn(path, data); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("key file %s already exists; choose another name or pass --force", path)
		}
		return fmt.Errorf("write key file: %w", err)
	}
	return nil
}

// NoDirError is a key file asked for in a directory that does not exist.
type NoDirError struct {
	Path, Dir string
	Err       error
}

func (e *NoDirError) Error() string {
	return fmt.Sprintf("key file %s: directory %s %v; create it first, or choose a directory that exists", e.Path, e.Dir, e.Err)
}

func (e *NoDirError) Unwrap() error { return e.Err }

// CheckFileDir checks that the directory a key file is to be written in
// exists: WriteFile makes none. It is for checking before the keys are
// fetched.
func CheckFileDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &NoDirError{Path: path, Dir: dir, Err: errors.New("does not exist")}
	case err != nil:
		return &NoDirError{Path: path, Dir: dir, Err: err}
	case !fi.IsDir():
		return &NoDirError{Path: path, Dir: dir, Err: errors.New("is not a directory")}
	}
	return nil
}

// Lookup returns the key with id.
func (f *File) Lookup(id string) ([]byte, bool) {
	for _, k := range f.Keys {
		if k.ID == id {
			return k.Key, true
		}
	}
	return nil, false
}

// IDs lists the key ids in the file, for error messages.
func (f *File) IDs() []string {
	var ids []string
	for _, k := range f.Keys {
		ids = append(ids, k.ID)
	}
	return ids
}
