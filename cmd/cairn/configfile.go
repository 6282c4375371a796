package main

import (
	"bytes"
	"fmt"
	"os"
)

// readConfigFile reads a role's JSON config file. A line whose first
// non-blank characters are // is a comment, so that a config file, like the
// packaged examples in /etc/cairn, can say what each field is for. JSON has
// no comments of its own; a comment that starts a line can never be part of
// a JSON string (a string cannot hold a raw newline), so blanking such lines
// is exact. They are blanked with spaces rather than cut, so that the byte
// offsets in a decode error still point into the file as written.
func readConfigFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	return blankComments(data), nil
}

// blankComments overwrites with spaces, in place, every line of data whose
// first non-blank characters are //.
func blankComments(data []byte) []byte {
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
	return data
}
