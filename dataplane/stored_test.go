package dataplane

import (
	"bytes"
	"errors"
	"testing"
)

func TestStoredBlockHead(t *testing.T) {
	data := []byte("compressed")
	p := append(AppendStoredHead(nil, 4, 1<<20), data...)
	codec, n, got, err := ParseStoredBlock(p)
	if err != nil || codec != 4 || n != 1<<20 || !bytes.Equal(got, data) {
		t.Fatalf("parsed %d, %d, %q, %v", codec, n, got, err)
	}
	for name, bad := range map[string][]byte{
		"empty":       nil,
		"version 2":   append([]byte{2}, p[1:]...),
		"codec 0":     AppendStoredHead(nil, 0, 10),
		"length 0":    AppendStoredHead(nil, 1, 0),
		"too long":    AppendStoredHead(nil, 1, MaxFrame+1),
		"cut in head": p[:2],
	} {
		if _, _, _, err := ParseStoredBlock(bad); !errors.Is(err, ErrStoredBlock) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
