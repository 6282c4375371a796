package fileindex

import (
	"bytes"
	"testing"
)

// The digest of a file with holes does not depend on where the stream split
// its data into records, and changes with its content, the place of its
// data, and its size.
func TestSparseHashIsOfTheFileNotOfTheStream(t *testing.T) {
	// The byte at each offset of the file.
	content := func(off, n int64) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(uint64(off+int64(i)) * 2654435761 >> 13)
		}
		return b
	}
	digest := func(size int64, parts ...[2]int64) []byte {
		h := NewSparseHash()
		for _, p := range parts {
			h.Add(p[0], content(p[0], p[1]))
		}
		return h.Sum(nil, size)
	}
	whole := digest(1<<30, [2]int64{4096, 200 << 10}, [2]int64{1 << 20, 50 << 10})
	split := digest(1<<30, [2]int64{4096, 1}, [2]int64{4097, 100<<10 - 1}, [2]int64{4096 + 100<<10, 100 << 10},
		[2]int64{1 << 20, 50 << 10})
	if !bytes.Equal(whole, split) {
		t.Fatal("the same regions split into other records give another digest")
	}
	for name, other := range map[string][]byte{
		"data moved":       digest(1<<30, [2]int64{8192, 200 << 10}, [2]int64{1 << 20, 50 << 10}),
		"size":             digest(1<<30+1, [2]int64{4096, 200 << 10}, [2]int64{1 << 20, 50 << 10}),
		"region cut short": digest(1<<30, [2]int64{4096, 200<<10 - 1}, [2]int64{1 << 20, 50 << 10}),
		"hole filled":      digest(1<<30, [2]int64{4096, 200 << 10}, [2]int64{1 << 20, 50 << 10}, [2]int64{2 << 20, 1}),
	} {
		if bytes.Equal(whole, other) {
			t.Errorf("%s: same digest", name)
		}
	}
	h := NewSparseHash()
	h.Add(0, []byte("ab"))
	flipped := NewSparseHash()
	flipped.Add(0, []byte("ac"))
	if bytes.Equal(h.Sum(nil, 2), flipped.Sum(nil, 2)) {
		t.Error("a changed byte gives the same digest")
	}
}

// A state saved in the middle of a run and taken back into another hash
// goes on as the hash it was saved from.
func TestSparseHashStateTakenBack(t *testing.T) {
	a := NewSparseHash()
	a.Add(0, []byte("first run"))
	a.Add(4096, []byte("second "))
	state, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	a.Add(4103, []byte("run, read once"))
	b := NewSparseHash()
	b.Add(77, []byte("something else, taken back"))
	if err := b.UnmarshalBinary(state); err != nil {
		t.Fatal(err)
	}
	b.Add(4103, []byte("run, read once"))
	if x, y := a.Sum(nil, 9000), b.Sum(nil, 9000); !bytes.Equal(x, y) {
		t.Fatalf("%x after the state taken back, want %x", y, x)
	}
	for _, bad := range [][]byte{nil, {1}, state[:len(state)-3], append(bytes.Clone(state), 0), append([]byte{2}, state[1:]...)} {
		if err := b.UnmarshalBinary(bad); err == nil {
			t.Fatalf("state %x taken", bad)
		}
	}
}
