package varint

import (
	"encoding/binary"
	"testing"
)

func TestUvarint(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 300, 1 << 32, 1<<64 - 1} {
		b := binary.AppendUvarint(nil, v)
		got, n := Uvarint(append(b, 0xff)) // a byte after it is not read
		if got != v || n != len(b) {
			t.Errorf("Uvarint(%x) = %d, %d; want %d, %d", b, got, n, v, len(b))
		}
		if _, n := Uvarint(b[:len(b)-1]); len(b) > 1 && n != 0 {
			t.Errorf("Uvarint of %x cut short: n = %d, want 0", b, n)
		}
	}
	for _, b := range [][]byte{
		{0x80, 0x00},             // 0 in two bytes
		{0x81, 0x00},             // 1 in two bytes
		{0xac, 0x82, 0x00},       // 300 in three bytes
		{0xff, 0xff, 0xff, 0x00}, // a zero group at the end
	} {
		if v, n := Uvarint(b); n >= 0 {
			t.Errorf("Uvarint(%x) = %d, %d: a padded number taken", b, v, n)
		}
	}
	over := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}
	if _, n := Uvarint(over); n >= 0 {
		t.Errorf("Uvarint of a number over 64 bits: n = %d, want negative", n)
	}
}
