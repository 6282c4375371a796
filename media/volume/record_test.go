package volume

import (
	"bytes"
	"testing"
)

// The head PutDataHeader writes, with the data after it, is the record
// AppendDataRecord makes (the agent reads file data in after the head).
func TestPutDataHeaderMatchesVolumeEncoding(t *testing.T) {
	data := make([]byte, MaxDataBody)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, off := range []int64{0, 1, 127, 128, 1 << 20, 1<<40 + 3} {
		for _, n := range []int{0, 1, 100, 127, 128, 16383, 16384, MaxDataBody} {
			want := AppendDataRecord(nil, off, data[:n])
			var head [MaxDataHeader]byte
			h := PutDataHeader(head[:], off, n)
			if got := append(head[:h:h], data[:n]...); !bytes.Equal(got, want) {
				t.Fatalf("off %d n %d: header %x, want %x", off, n, head[:h], want[:h])
			}
		}
	}
}
