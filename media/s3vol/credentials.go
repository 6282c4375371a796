package s3vol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// Credentials are an access key and its secret.
type Credentials struct {
	AccessKey string `json:"access_key"`
	SecretKey string `json:"secret_key"`
}

// ParseCredentials reads a credentials file's content: one JSON object
// with access_key and secret_key, nothing else.
func ParseCredentials(b []byte) (Credentials, error) {
	var c Credentials
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		return Credentials{}, fmt.Errorf("want {\"access_key\": \"...\", \"secret_key\": \"...\"}: %w", err)
	}
	if d.More() {
		return Credentials{}, errors.New("want one JSON object, and there is more after it")
	}
	if c.AccessKey == "" || c.SecretKey == "" {
		return Credentials{}, errors.New("access_key and secret_key must both be given")
	}
	return c, nil
}

// LoadCredentials reads the credentials file at path. A file that its
// group or others may read is refused: the secret would be theirs too.
func LoadCredentials(path string) (Credentials, error) {
	f, err := os.Open(path)
	if err != nil {
		return Credentials{}, fmt.Errorf("read S3 credentials file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Credentials{}, fmt.Errorf("read S3 credentials file: %w", err)
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		return Credentials{}, fmt.Errorf("S3 credentials file %s has mode %04o: its group or others can read the secret key; make it readable by the storage node's user only (chmod 600 %s)", path, m, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return Credentials{}, fmt.Errorf("read S3 credentials file: %w", err)
	}
	c, err := ParseCredentials(b)
	if err != nil {
		return Credentials{}, fmt.Errorf("S3 credentials file %s: %w", path, err)
	}
	return c, nil
}

// The environment variables credentials come from when no file is
// given, as the AWS tools name them.
const (
	EnvAccessKey = "AWS_ACCESS_KEY_ID"
	EnvSecretKey = "AWS_SECRET_ACCESS_KEY"
)

// ResolveCredentials reads the credentials file at path (LoadCredentials)
// or, when path is empty, takes $AWS_ACCESS_KEY_ID and
// $AWS_SECRET_ACCESS_KEY. Never a flag: a command line is readable by
// every user of the machine.
func ResolveCredentials(path string) (Credentials, error) {
	if path != "" {
		return LoadCredentials(path)
	}
	c := Credentials{AccessKey: os.Getenv(EnvAccessKey), SecretKey: os.Getenv(EnvSecretKey)}
	if c.AccessKey == "" || c.SecretKey == "" {
		return c, fmt.Errorf("no S3 credentials: give a credentials file (JSON with access_key and secret_key, mode 0600), or set %s and %s in the environment", EnvAccessKey, EnvSecretKey)
	}
	return c, nil
}
