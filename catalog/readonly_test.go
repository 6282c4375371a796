package catalog

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
)

// TestOpenReadOnly reads a closed catalog without changing a byte of it, and
// refuses writes and what is not a catalog.
func TestOpenReadOnly(t *testing.T) {
	c := newTestCatalog(t)
	c.must(&Command{Op: OpRegisterClient, Client: &Client{Name: "web01"}})
	path := c.s.Path()
	if err := c.s.Close(); err != nil {
		t.Fatal(err)
	}
	sum := func() [32]byte {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(data)
	}
	before := sum()

	ro, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	// A second reader shares the file.
	ro2, err := OpenReadOnly(path)
	if err != nil {
		t.Fatalf("a second read-only open: %v", err)
	}
	ro2.Close()
	if cl, err := ro.Client("web01"); err != nil || cl.Name != "web01" {
		t.Fatalf("read client: %+v, %v", cl, err)
	}
	if idx, err := ro.AppliedIndex(); err != nil || idx != c.index {
		t.Fatalf("applied index %d (%v), want %d", idx, err, c.index)
	}
	if res := ro.Apply(c.index+1, &Command{Op: OpRegisterClient, Client: &Client{Name: "web02"}}); res.Err == nil {
		t.Error("Apply on a read-only catalog succeeded")
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	if sum() != before {
		t.Error("a read-only open changed the catalog file")
	}

	other := filepath.Join(t.TempDir(), "other.db")
	if err := os.WriteFile(other, []byte("not a catalog"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenReadOnly(other); err == nil {
		t.Error("OpenReadOnly took a file that is not a catalog")
	}
}
