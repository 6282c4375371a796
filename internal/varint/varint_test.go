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

func TestReader(t *testing.T) {
	b := binary.AppendUvarint(nil, 300)
	b = binary.AppendVarint(b, -5)
	b = binary.AppendUvarint(b, 2) // a count of two items of a byte
	b = append(b, 7, 8)
	b = binary.AppendUvarint(b, 3)
	b = append(b, "abc"...)
	r := Reader{B: b}
	if v := r.Uint(); v != 300 {
		t.Fatalf("Uint = %d", v)
	}
	if v := r.Int(); v != -5 {
		t.Fatalf("Int = %d", v)
	}
	if n := r.Count(1); n != 2 || string(r.Next(2)) != "\x07\x08" {
		t.Fatalf("Count = %d", n)
	}
	if s := r.Bytes(); string(s) != "abc" || r.Err != nil || len(r.B) != 0 {
		t.Fatalf("Bytes = %q, %v, %d left", s, r.Err, len(r.B))
	}
	// The first error sticks, and later reads return zero.
	for name, c := range map[string]struct {
		b    []byte
		read func(*Reader)
	}{
		"a number cut short":          {[]byte{0x80}, func(r *Reader) { r.Uint() }},
		"a padded number":             {[]byte{0x81, 0x00, 1}, func(r *Reader) { r.Uint() }},
		"a count past the bytes left": {[]byte{3, 1, 2}, func(r *Reader) { r.Count(1) }},
		"bytes past the end":          {[]byte{4, 'a', 'b'}, func(r *Reader) { r.Bytes() }},
	} {
		r := Reader{B: c.b}
		c.read(&r)
		if r.Err == nil {
			t.Errorf("%s: no error", name)
		}
		if v, s := r.Uint(), r.Bytes(); v != 0 || s != nil {
			t.Errorf("%s: a read after the error gave %d, %q", name, v, s)
		}
	}
}
