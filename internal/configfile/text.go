package configfile

import "bytes"

// Clean returns a config file's JSON as the standard decoder reads it: each
// comment line, and each comma that ends the last item of an object or a
// list, is overwritten with spaces, in place. Nothing moves, so the byte
// offsets of a decode error still point into the file as written.
//
// A line whose first non-blank characters are // is a comment. JSON has
// none of its own; such a line can never be part of a JSON string (a
// string cannot hold a raw newline), so blanking it is exact. A // after a
// value on the same line is not a comment: the decoder refuses it, and
// Decode says to move it to a line of its own.
func Clean(data []byte) []byte {
	blankCommentLines(data)
	blankTrailingCommas(data)
	return data
}

func blankCommentLines(data []byte) {
	for start := 0; start < len(data); {
		end := bytes.IndexByte(data[start:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += start
		}
		line := data[start:end]
		if t := bytes.TrimLeft(line, " \t\r"); bytes.HasPrefix(t, []byte("//")) {
			for i := range line {
				line[i] = ' '
			}
		}
		start = end + 1
	}
}

// blankTrailingCommas blanks a comma outside a string that follows a value
// and is followed, past white space, by the } or ] that closes its object
// or list. A comma after [ or { or another comma is left for the decoder
// to refuse: it ends no item.
func blankTrailingCommas(data []byte) {
	inString, escaped := false, false
	var last byte // the last byte outside a string that is not white space
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
				last = '"'
			}
			continue
		}
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '"':
			inString = true
		case ',':
			if last != 0 && last != '[' && last != '{' && last != ',' && closesNext(data[i+1:]) {
				data[i] = ' '
				continue
			}
		}
		last = c
	}
}

// closesNext reports whether the first byte of b that is not white space
// is } or ].
func closesNext(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '}', ']':
			return true
		}
		return false
	}
	return false
}
