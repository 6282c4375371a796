package wire

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// The sizes here let a server fill a page of a list up to a byte budget
// without encoding every element twice: a restore plan of a million entries
// is sized as it is built. They are exact for what encoding/json writes, and
// TestEncodedLenIsExact holds them to it.

// JSONStringLen is the length of s encoded by encoding/json, quotes
// included: HTML characters and U+2028/2029 become \uXXXX, each invalid
// UTF-8 byte becomes \ufffd (or, in a fileindex.Path, \udcXX: the same
// length).
func JSONStringLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			switch {
			case b == '"' || b == '\\' || b == '\b' || b == '\f' || b == '\n' || b == '\r' || b == '\t':
				n += 2
			case b < 0x20 || b == '<' || b == '>' || b == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1, r == '\u2028', r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}

// uintLen is the number of decimal digits of v.
func uintLen(v uint64) int {
	n := 1
	for v >= 10 {
		v /= 10
		n++
	}
	return n
}

// EncodedLen is the length of l's JSON encoding.
func (l *ReadLoc) EncodedLen() int {
	// {"path":…,"loc":{"seq":…,"off":…,"in_block":…,"end_seq":…}}
	const fixed = len(`{"path":,"loc":{"seq":,"off":,"in_block":,"end_seq":}}`)
	n := fixed + JSONStringLen(string(l.Path)) + uintLen(l.Loc.Seq) + uintLen(l.Loc.Off) + uintLen(uint64(l.Loc.InBlock)) + uintLen(l.Loc.EndSeq)
	if l.Ancestor {
		n += len(`,"ancestor":true`)
	}
	if l.Loc.Len != 0 {
		n += len(`,"len":`) + uintLen(l.Loc.Len)
	}
	if l.Block != nil {
		n += len(`,"block":{"at":[]}`) + len(l.Block.At) - 1
		for _, at := range l.Block.At {
			n += uintLen(uint64(at))
		}
	}
	return n
}

// Fit trims Warnings, then Damaged, so that the report fits one message
// under maxPayload (the connection's max_payload; 0 leaves it as is), with
// a line that counts what was left out. An agent keeps up to a thousand of
// each, and with long paths they would outgrow a message: the report would
// be refused and the job left to the servers' watchdog.
func (r *JobDoneReq) Fit(maxPayload int64) {
	if maxPayload <= 0 {
		return
	}
	budget := int(maxPayload - maxPayload/8)
	js, err := json.Marshal(r)
	if err != nil {
		return
	}
	over := len(js) - budget
	trim := func(list []string, what string) []string {
		dropped := 0
		for over > 0 && len(list) > 0 {
			over -= JSONStringLen(list[len(list)-1]) + 1
			list = list[:len(list)-1]
			dropped++
		}
		if dropped == 0 {
			return list
		}
		note := fmt.Sprintf("... and %d more %s, left out to fit one message", dropped, what)
		over += JSONStringLen(note) + 1
		return append(list, note)
	}
	r.Warnings = trim(r.Warnings, "warnings")
	r.Damaged = trim(r.Damaged, "damaged entries")
}
