// Package varint decodes the unsigned varints of Cairn's formats that come
// from outside a process (the file index, a volume's stream records, the
// catalog's Raft commands). Their encoders write every number with
// encoding/binary, in its shortest form.
package varint

import "encoding/binary"

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
