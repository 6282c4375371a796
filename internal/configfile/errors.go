package configfile

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is a field that is wrong, named by its path in the file
// ("tape_pools[0].spool_chunk_bytes"), which is also its flag's name for a
// top-level field; Err says what is wrong and what to do. Line is the
// field's line in the file when it came from one, else 0.
type FieldError struct {
	Field  string
	Line   int
	Column int
	Err    error
}

func (e *FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.Line > 0 && e.Column > 0:
		fmt.Fprintf(&b, "line %d, column %d: ", e.Line, e.Column)
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.Err }

// AtField is a FieldError of the field at path, or nil when err is nil.
func AtField(path string, err error) error {
	if err == nil {
		return nil
	}
	return &FieldError{Field: path, Err: err}
}

// Fieldf is a FieldError of the field at path with a formatted message.
func Fieldf(path, format string, args ...any) error {
	return &FieldError{Field: path, Err: fmt.Errorf(format, args...)}
}

// In puts the errors of a part of a config (one pool of a list, one
// library) under that part's path: each FieldError in err, alone or
// joined, gets prefix before its field ("libraries[1]" and "drives" make
// "libraries[1].drives"), and any other error becomes a FieldError of
// prefix itself.
func In(prefix string, err error) error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, In(prefix, e))
		}
		return errors.Join(out...)
	}
	if fe, ok := err.(*FieldError); ok {
		field := prefix
		switch {
		case fe.Field == "":
		case strings.HasPrefix(fe.Field, "["):
			field += fe.Field
		case prefix != "":
			field += "." + fe.Field
		default:
			field = fe.Field
		}
		return &FieldError{Field: field, Line: fe.Line, Column: fe.Column, Err: fe.Err}
	}
	return &FieldError{Field: prefix, Err: err}
}

// Problems lists the errors joined in err, each FieldError apart, in order.
func Problems(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Problems(e)...)
		}
		return out
	}
	return []error{err}
}
