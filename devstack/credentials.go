package devstack

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cairnbackup/cairn/natsauth"
	"github.com/cairnbackup/cairn/wire"
)

// CredentialsDir is where a stack in dir keeps its roles' nkey seeds and
// its client file: DIR/nats, mode 0700.
func CredentialsDir(dir string) string { return filepath.Join(dir, "nats") }

// ClientFilePath is the client file of a stack in dir.
func ClientFilePath(dir string) string { return filepath.Join(CredentialsDir(dir), "client.json") }

// credentials makes (or, on a restart, reads) the nkey user of each role of
// a stack in dir: its server, storage node, the agent of client, and an
// admin who may also export keys, since whoever runs the stack owns its
// data. Each is allowed its role's subjects and nothing else, as in a
// deployment.
func credentials(dir, client string) ([]natsauth.User, error) {
	creds := CredentialsDir(dir)
	if err := os.MkdirAll(creds, 0o700); err != nil {
		return nil, fmt.Errorf("devstack credentials: %w", err)
	}
	// A directory made by an older version, or by hand, may be open to
	// others: the seeds are what keeps them out.
	if err := os.Chmod(creds, 0o700); err != nil {
		return nil, fmt.Errorf("devstack credentials: %w", err)
	}
	var users []natsauth.User
	for _, r := range []struct{ kind, name string }{
		{wire.KindServer, ServerName}, {wire.KindNode, NodeName}, {wire.KindAgent, client}, {wire.KindAdmin, AdminName},
	} {
		u, err := natsauth.LoadOrCreateUser(creds, r.kind, r.name)
		if err != nil {
			return nil, fmt.Errorf("devstack credentials: %w", err)
		}
		if err := os.Chmod(u.SeedFile, 0o600); err != nil {
			return nil, fmt.Errorf("devstack credentials: %w", err)
		}
		u.KeyAdmin = r.kind == wire.KindAdmin
		users = append(users, u)
	}
	return users, nil
}

// ClientFile tells an admin command on this machine how to reach a running
// stack: its NATS URL and the admin's name and seed. 'cairn dev' writes one
// in its data directory and another where the admin commands of the same
// user look by default.
type ClientFile struct {
	V        int    `json:"v"`
	URL      string `json:"url"`
	Admin    string `json:"admin"`
	NkeyFile string `json:"nkey_file"`
	// Dir is the stack's data directory, for telling the user.
	Dir string `json:"dir"`
}

// ClientFile is the stack's client file.
func (s *Stack) ClientFile() ClientFile {
	return ClientFile{V: 1, URL: s.URL(), Admin: s.Admin, NkeyFile: s.AdminAuth.NkeyFile, Dir: s.Config.Dir}
}

// WriteClientFile writes f to path, readable by its owner only (mode 0600,
// its directory made 0700 when missing), replacing what was there at once.
func WriteClientFile(path string, f ClientFile) error {
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("client file: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".client-*.json")
	if err != nil {
		return fmt.Errorf("client file: %w", err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes the file 0600 already; said again because this is
	// what keeps other users out.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("client file: %w", err)
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("client file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("client file %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("client file %s: %w", path, err)
	}
	return nil
}

// ErrNoClientFile means there is no client file where one was looked for.
var ErrNoClientFile = errors.New("no cairn dev client file")

// ReadClientFile reads a file WriteClientFile wrote. A missing file is
// ErrNoClientFile; one the caller may not read is fs.ErrPermission.
func ReadClientFile(path string) (ClientFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return ClientFile{}, fmt.Errorf("%w at %s", ErrNoClientFile, path)
		}
		return ClientFile{}, err
	}
	var f ClientFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil || f.V != 1 || f.URL == "" || f.NkeyFile == "" {
		return ClientFile{}, fmt.Errorf("%s is not a cairn dev client file (%w); start 'cairn dev' again to write it", path, err)
	}
	return f, nil
}
