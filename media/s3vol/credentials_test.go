package s3vol

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A credentials file is taken at mode 0600 and refused, with what to
// do, when its group or others may read it or when it is not the format.
func TestLoadCredentials(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := `{"access_key": "AK", "secret_key": "SK"}`
	c, err := LoadCredentials(write("ok", good, 0o600))
	if err != nil || c != (Credentials{"AK", "SK"}) {
		t.Fatalf("%+v, %v", c, err)
	}
	for _, bad := range []struct {
		name, text string
		mode       os.FileMode
		want       string
	}{
		{"group", good, 0o640, "chmod 600"},
		{"world", good, 0o604, "mode 0604"},
		{"unknown field", `{"access_key": "AK", "secret_key": "SK", "token": "x"}`, 0o600, "unknown field"},
		{"no secret", `{"access_key": "AK"}`, 0o600, "must both be given"},
		{"two objects", good + good, 0o600, "more after it"},
	} {
		_, err := LoadCredentials(write(bad.name, bad.text, bad.mode))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v; want it to say %q", bad.name, err, bad.want)
		}
	}
}

// ParseCredentials never panics, and what it takes has both keys.
func FuzzParseCredentials(f *testing.F) {
	f.Add([]byte(`{"access_key": "AK", "secret_key": "SK"}`))
	f.Add([]byte(`{"access_key": 1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCredentials(b)
		if err == nil && (c.AccessKey == "" || c.SecretKey == "") {
			t.Fatalf("took %q with an empty key", b)
		}
	})
}
