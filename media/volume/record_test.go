package volume

import (
	"bytes"
	"errors"
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

// A record's numbers in their shortest form only: a length or an offset
// padded with zero groups, which binary.Uvarint takes and no writer
// writes, is a bad record, not a short one to wait on.
func TestRecordsRefusePaddedNumbers(t *testing.T) {
	rec := AppendDataRecord(nil, 5, []byte("abc")) // type, length 4, offset 5, data
	if _, body, _, err := ParseRecord(rec); err != nil {
		t.Fatal(err)
	} else if off, data, err := DecodeData(body); err != nil || off != 5 || string(data) != "abc" {
		t.Fatalf("DecodeData = %d, %q, %v", off, data, err)
	}
	paddedLen := append([]byte{rec[0], rec[1] | 0x80, 0}, rec[2:]...)
	if _, _, _, err := ParseRecord(paddedLen); !errors.Is(err, ErrBadRecord) {
		t.Errorf("ParseRecord of a padded length: %v, want ErrBadRecord", err)
	}
	if _, _, err := DecodeData([]byte{5 | 0x80, 0, 'a', 'b', 'c'}); !errors.Is(err, ErrBadRecord) {
		t.Errorf("DecodeData of a padded offset: %v, want ErrBadRecord", err)
	}
	bs := AppendBlockStartBody(nil, &BlockStart{Path: "/a", Len: 10, At: []int64{0}})
	if _, err := DecodeBlockStart(bs); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeBlockStart(append([]byte{bs[0] | 0x80, 0}, bs[1:]...)); !errors.Is(err, ErrBadRecord) {
		t.Errorf("DecodeBlockStart of a padded length: %v, want ErrBadRecord", err)
	}
	if _, err := BlockIndex([]byte{3 | 0x80, 0}); !errors.Is(err, ErrBadRecord) {
		t.Errorf("BlockIndex of a padded number: %v, want ErrBadRecord", err)
	}
}
