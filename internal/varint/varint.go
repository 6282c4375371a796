// Package varint decodes the unsigned varints of Cairn's formats that come
// from outside a process (the file index, a volume's stream records, the
// catalog's Raft commands). Their encoders write every number with
// encoding/binary, in its shortest form.
package varint

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Uvarint is binary.Uvarint that also refuses a number padded with zero
// groups, which binary.Uvarint takes and no encoder writes: each value has
// one encoding, so what decodes encodes back to the bytes it came from. As
// with binary.Uvarint, n is 0 when b ends before the number does, and
// negative when the number is bad: longer than 64 bits, or padded.
func Uvarint(b []byte) (v uint64, n int) {
	v, n = binary.Uvarint(b)
	if n > 1 && b[n-1] == 0 {
		return 0, -n
	}
	return v, n
}

// Reader reads the varints and byte strings of a packed form off B, as a
// decoder of bytes from outside the process needs them: each number in
// its one encoding (Uvarint), no count believed beyond what the bytes left
// can hold. The first error stops it: every later read returns zero, and
// Err says what went wrong.
type Reader struct {
	B   []byte
	Err error
}

// Uint reads an unsigned number.
func (r *Reader) Uint() uint64 {
	if r.Err != nil {
		return 0
	}
	v, n := Uvarint(r.B)
	switch {
	case n == 0:
		r.Err = errors.New("a number runs past the end")
	case n < 0:
		r.Err = errors.New("a number longer than 64 bits, or padded")
	default:
		r.B = r.B[n:]
	}
	return v
}

// Int reads a signed number, zigzag on an unsigned one as
// binary.AppendVarint writes it.
func (r *Reader) Int() int64 {
	u := r.Uint()
	return int64(u>>1) ^ -int64(u&1)
}

// Count reads a number of items of at least min bytes each.
func (r *Reader) Count(min int) int {
	v := r.Uint()
	if r.Err == nil && v > uint64(len(r.B)/min) {
		r.Err = fmt.Errorf("%d items announced, with %d bytes left", v, len(r.B))
	}
	if r.Err != nil {
		return 0
	}
	return int(v)
}

// Bytes reads a byte string: its length, then its bytes, which it returns
// without a copy.
func (r *Reader) Bytes() []byte { return r.Next(r.Uint()) }

// Next reads n bytes, without a copy.
func (r *Reader) Next(n uint64) []byte {
	if r.Err == nil && n > uint64(len(r.B)) {
		r.Err = fmt.Errorf("%d bytes announced, %d left", n, len(r.B))
	}
	if r.Err != nil {
		return nil
	}
	out := r.B[:n:n]
	r.B = r.B[n:]
	return out
}
