package fileindex

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns a path (any bytes) as text that is safe to show on a
// terminal and reads back to exactly those bytes with Unescape: what the
// CLI prints, what job logs quote, and what the CLI takes back as an
// argument. A name from a client's disk may hold an escape sequence that
// rewrites the terminal, a newline that forges a line of output, bytes
// that are not UTF-8, or a bidirectional override that shows it backwards:
// those are written as Go-style escapes (\n, \x1b, \xff, \u202e), and a
// backslash as \\, so no two paths look the same. A common name comes out
// unchanged.
func Escape(s string) string {
	if isPlain(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r == ' ' || unicode.IsPrint(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRune(r) // '\n', '\x1b', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

// isPlain: printable ASCII without a backslash, which Escape leaves as is.
func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' || c == '\\' {
			return false
		}
	}
	return true
}

// ErrBadEscape is wrapped by Unescape's errors.
var ErrBadEscape = errors.New("bad escape")

// Unescape reads a path written as Escape writes it: \\ is a backslash,
// \xHH a byte, \n \t \r \a \b \f \v and \uHHHH \UHHHHHHHH what Go reads
// them as; every other byte is itself, so a name typed raw (or with bytes
// that are not UTF-8, given by the shell) reads as itself unless it holds
// a backslash. A backslash that starts none of these is an error: the
// name is ambiguous, and \\ says a backslash.
func Unescape(s string) (string, error) {
	i := strings.IndexByte(s, '\\')
	if i < 0 {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	b = append(b, s[:i]...)
	for i < len(s) {
		c := s[i]
		if c != '\\' {
			b = append(b, c)
			i++
			continue
		}
		if i+1 == len(s) {
			return "", fmt.Errorf("%w: %q ends with a backslash; write a backslash as \\\\", ErrBadEscape, s)
		}
		switch e := s[i+1]; e {
		case '\\':
			b = append(b, '\\')
			i += 2
		case 'a', 'b', 'f', 'n', 'r', 't', 'v':
			b = append(b, map[byte]byte{'a': '\a', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t', 'v': '\v'}[e])
			i += 2
		case 'x':
			if i+4 > len(s) {
				return "", fmt.Errorf("%w: %q: \\x takes two hex digits", ErrBadEscape, s)
			}
			v, err := strconv.ParseUint(s[i+2:i+4], 16, 8)
			if err != nil {
				return "", fmt.Errorf("%w: %q: \\x takes two hex digits, not %q", ErrBadEscape, s, s[i+2:i+4])
			}
			b = append(b, byte(v))
			i += 4
		case 'u', 'U':
			n := 4
			if e == 'U' {
				n = 8
			}
			if i+2+n > len(s) {
				return "", fmt.Errorf("%w: %q: \\%c takes %d hex digits", ErrBadEscape, s, e, n)
			}
			v, err := strconv.ParseUint(s[i+2:i+2+n], 16, 32)
			if err != nil || !utf8.ValidRune(rune(v)) {
				return "", fmt.Errorf("%w: %q: \\%c%s is not a character", ErrBadEscape, s, e, s[i+2:i+2+n])
			}
			b = utf8.AppendRune(b, rune(v))
			i += 2 + n
		default:
			return "", fmt.Errorf("%w: %q: \\%c is not an escape; write a backslash as \\\\", ErrBadEscape, s, e)
		}
	}
	return string(b), nil
}
