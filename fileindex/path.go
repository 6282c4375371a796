package fileindex

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// Path is a path as it travels in JSON (the control messages and the
// catalog): any bytes but NUL, as a Linux file name is, and not only UTF-8,
// which is all a JSON string holds. encoding/json turns every byte that is
// not UTF-8 into U+FFFD, so two names differing in such a byte would come
// out the same, and a name like café in Latin-1 could never be asked for
// again.
//
// A Path is a JSON string either way. Valid UTF-8 is written as
// encoding/json writes a string. A byte that is not part of valid UTF-8,
// always 0x80 to 0xFF, is written as the escape of the lone surrogate
// U+DC80 to U+DCFF ("\udce9" for 0xE9), which no UTF-8 text holds, so the
// form is unambiguous: it is the "surrogateescape" of Python's file names
// (PEP 383), and os.fsencode of what Python's json module reads gives the
// bytes back. A reader that does not know the form, such as an older Cairn,
// reads U+FFFD there, which is what it read before.
type Path string

// Paths converts a list of strings.
func Paths(s []string) []Path {
	if s == nil {
		return nil
	}
	out := make([]Path, len(s))
	for i, v := range s {
		out[i] = Path(v)
	}
	return out
}

// Strings converts a list of Paths.
func Strings(p []Path) []string {
	if p == nil {
		return nil
	}
	out := make([]string, len(p))
	for i, v := range p {
		out[i] = string(v)
	}
	return out
}

// MarshalJSON writes p as a JSON string, each byte that is not UTF-8 as a
// lone surrogate escape. encoding/json then escapes <, >, & and U+2028/9
// as it does in any string, so the length is that of the string it would
// write with U+FFFD in place of each such byte.
func (p Path) MarshalJSON() ([]byte, error) {
	s := string(p)
	if utf8.ValidString(s) {
		return json.Marshal(s)
	}
	b := make([]byte, 0, len(s)+16)
	b = append(b, '"')
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = fmt.Appendf(b, `\udc%02x`, s[i])
			i++
			continue
		}
		q, _ := json.Marshal(s[i : i+size])
		b = append(b, q[1:len(q)-1]...)
		i += size
	}
	return append(b, '"'), nil
}

// UnmarshalJSON reads a JSON string, a lone surrogate escape U+DC80 to
// U+DCFF as the byte it stands for.
func (p *Path) UnmarshalJSON(b []byte) error {
	if !bytes.Contains(b, []byte(`\ud`)) && !bytes.Contains(b, []byte(`\uD`)) {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*p = Path(s)
		return nil
	}
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return fmt.Errorf("path: not a JSON string: %.40q", b)
	}
	in := b[1 : len(b)-1]
	out := make([]byte, 0, len(in))
	for i := 0; i < len(in); {
		c := in[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(in) {
			return fmt.Errorf("path: a JSON string ends inside an escape")
		}
		switch e := in[i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
			i += 2
		case 'b', 'f', 'n', 'r', 't':
			out = append(out, map[byte]byte{'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}[e])
			i += 2
		case 'u':
			r, ok := hex4(in[i+2:])
			if !ok {
				return fmt.Errorf("path: bad \\u escape in a JSON string")
			}
			i += 6
			switch {
			case r >= 0xdc80 && r <= 0xdcff:
				out = append(out, byte(r-0xdc00)) // a byte that is not UTF-8
			case utf16.IsSurrogate(r):
				// A pair, or a lone surrogate encoding/json reads as U+FFFD.
				if i+6 <= len(in) && in[i] == '\\' && in[i+1] == 'u' {
					if r2, ok := hex4(in[i+2 : i+6]); ok {
						if c := utf16.DecodeRune(r, r2); c != utf8.RuneError {
							out = utf8.AppendRune(out, c)
							i += 6
							continue
						}
					}
				}
				out = utf8.AppendRune(out, utf8.RuneError)
			default:
				out = utf8.AppendRune(out, r)
			}
		default:
			return fmt.Errorf("path: bad escape \\%c in a JSON string", e)
		}
	}
	*p = Path(out)
	return nil
}

// hex4 reads the four hex digits of a \u escape.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[:4]), 16, 16)
	return rune(v), err == nil
}
