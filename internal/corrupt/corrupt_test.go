package corrupt

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFlipByteChangesOneByte(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v")
	if err := os.WriteFile(path, []byte{1, 2, 3}, 0o600); err != nil {
		t.Fatal(err)
	}
	FlipByte(t, path, 1)
	got, err := os.ReadFile(path)
	if err != nil || string(got) != string([]byte{1, 0xfd, 3}) {
		t.Fatalf("%v, %v", got, err)
	}
}
