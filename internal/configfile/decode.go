package configfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Warning is something a file says that still works but should change: an
// older name of a field, a duration or size as a bare number.
type Warning struct {
	Field string
	Line  int
	Msg   string
}

func (w Warning) String() string {
	s := w.Field + ": " + w.Msg
	if w.Line > 0 {
		s = fmt.Sprintf("line %d: %s", w.Line, s)
	}
	return s
}

// Decoder reads a config file into structs.
type Decoder struct {
	// IgnoreUnknown skips a field no target has, to read a few fields of
	// a file (the log level again on SIGHUP) without knowing its role.
	IgnoreUnknown bool
}

// Decode fills targets, pointers to structs, from a config file's data
// (Clean is applied to a copy): a top-level field goes to the first target
// that has it. A field left out keeps the value the target had, so a
// target holding its defaults ends with the file over them; a list in the
// file replaces the target's. The error joins a FieldError for each field
// that is wrong, and decoding goes on past one, so that every mistake of a
// file is named at once; a file that is not JSON stops at its first
// syntax error.
func Decode(data []byte, targets ...any) ([]Warning, error) {
	return Decoder{}.Decode(data, targets...)
}

// Decode is the package's Decode with d's options.
func (d Decoder) Decode(data []byte, targets ...any) ([]Warning, error) {
	st := &decodeState{data: Clean(bytes.Clone(data)), ignoreUnknown: d.IgnoreUnknown}
	st.dec = json.NewDecoder(bytes.NewReader(st.data))
	st.dec.UseNumber()
	var parts []part
	for _, t := range targets {
		v := reflect.ValueOf(t)
		if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
			panic(fmt.Sprintf("configfile: decode into %T, not a pointer to a struct", t))
		}
		parts = append(parts, part{SchemaOf(v.Type()), v.Elem()})
	}
	if err := st.document(parts); err != nil {
		return st.warns, err
	}
	return st.warns, errors.Join(st.errs...)
}

type part struct {
	s *Struct
	v reflect.Value
}

type decodeState struct {
	data          []byte
	dec           *json.Decoder
	ignoreUnknown bool
	warns         []Warning
	errs          []error
	// lineStarts are the offsets of the lines after the first.
	lineStarts []int
}

// syntaxStop ends decoding: the file is not JSON past this point.
type syntaxStop struct{ err error }

func (st *decodeState) document(parts []part) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s, ok := r.(syntaxStop)
			if !ok {
				panic(r)
			}
			err = s.err
		}
	}()
	tok, err := st.dec.Token()
	switch {
	case err == io.EOF:
		return &FieldError{Err: errors.New("the file is empty: it must hold one JSON object, { ... }")}
	case err != nil:
		return st.syntaxError(err)
	case tok != json.Delim('{'):
		return &FieldError{Line: 1, Err: errors.New("the file must hold one JSON object, { ... }, with the fields inside")}
	}
	st.object("", parts)
	end := st.nextOffset(st.dec.InputOffset())
	if _, err := st.dec.Token(); err != io.EOF {
		line, col := st.position(end)
		return &FieldError{Line: line, Column: col, Err: errors.New("more after the object's closing }: the file holds one object")}
	}
	return nil
}

// token reads the next token, ending decoding on a syntax error or the end
// of the file; nil is JSON's null.
func (st *decodeState) token() json.Token {
	tok, err := st.dec.Token()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		panic(syntaxStop{st.syntaxError(err)})
	}
	return tok
}

func (st *decodeState) syntaxError(err error) error {
	off := st.dec.InputOffset()
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off = se.Offset // the offending byte's: the decoder read up to it
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return &FieldError{Err: errors.New("the file ends inside an object or a list: a } or ] is missing")}
	}
	line, col := st.position(off)
	msg := err.Error()
	if off >= 0 && off < int64(len(st.data)) && st.data[off] == '/' {
		msg += ": a // comment must be on a line of its own"
	}
	return &FieldError{Line: line, Column: col, Err: errors.New(msg)}
}

// position is the line and column (from 1) of byte offset off.
func (st *decodeState) position(off int64) (line, col int) {
	if st.lineStarts == nil {
		st.lineStarts = []int{}
		for i, c := range st.data {
			if c == '\n' {
				st.lineStarts = append(st.lineStarts, i+1)
			}
		}
	}
	o := int(max(0, min(off, int64(len(st.data)))))
	n := sort.SearchInts(st.lineStarts, o+1) // lines starting at or before o
	start := 0
	if n > 0 {
		start = st.lineStarts[n-1]
	}
	return n + 1, o - start + 1
}

// line is the line of the last token read.
func (st *decodeState) line() int {
	l, _ := st.position(st.dec.InputOffset() - 1)
	return l
}

func (st *decodeState) fail(path string, line int, err error) {
	st.errs = append(st.errs, &FieldError{Field: path, Line: line, Err: err})
}

func (st *decodeState) warn(path string, line int, format string, args ...any) {
	st.warns = append(st.warns, Warning{Field: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// object reads the fields of an object whose { has been read, up to and
// with its }.
func (st *decodeState) object(path string, parts []part) {
	type given struct {
		name string
		line int
	}
	seen := map[any]given{}
	for st.dec.More() {
		key, _ := st.token().(string)
		line := st.line()
		p := join(path, key)
		var f *Field
		var target reflect.Value
		var alias bool
		var g *Group
		for _, pt := range parts {
			if f, alias = pt.s.Lookup(key); f != nil {
				target = f.Value(pt.v)
				break
			}
			if g = pt.s.groups[key]; g != nil {
				target = pt.v.FieldByIndex(g.index)
				break
			}
		}
		var id any = f
		if g != nil {
			id = g
		}
		switch {
		case f == nil && g == nil:
			if !st.ignoreUnknown {
				st.fail(p, line, unknownField(key, parts))
			}
			st.skip(st.token())
			continue
		case seen[id] != given{}:
			was := seen[id]
			if was.name == key {
				st.fail(p, line, fmt.Errorf("given twice (also on line %d): keep one", was.line))
			} else {
				st.fail(p, line, fmt.Errorf("given twice, also as %s on line %d: keep one", was.name, was.line))
			}
			st.skip(st.token())
			continue
		}
		seen[id] = given{key, line}
		if g != nil {
			var names []string
			for _, inner := range g.Struct.Fields {
				names = append(names, g.Prefix+inner.Name)
			}
			st.warn(p, line, "the object form is deprecated: write its fields at the top level as %s", strings.Join(names, ", "))
			st.value(p, line, st.token(), target.Type(), false, target)
			continue
		}
		if alias {
			st.warn(p, line, "%s is the older name of %s: rename it", key, join(path, f.Name))
		}
		st.value(p, line, st.token(), f.Type, f.Size, target)
	}
	st.token() // }
}

// value reads into v, of type t, the value whose first token is tok.
func (st *decodeState) value(path string, line int, tok json.Token, t reflect.Type, size bool, v reflect.Value) {
	if tok == nil {
		return // null keeps what was there
	}
	bad := func(err error) {
		st.fail(path, line, err)
		st.skip(tok)
	}
	switch {
	case t == durationType:
		switch x := tok.(type) {
		case string:
			d, err := ParseDuration(x)
			if err != nil {
				bad(err)
				return
			}
			v.SetInt(int64(d))
		case json.Number:
			n, err := x.Int64()
			if err != nil {
				bad(fmt.Errorf("%s is not a duration: write one in quotes with a unit, like \"30s\" or \"5m\"", x))
				return
			}
			if n != 0 {
				st.warn(path, line, "a bare number is read as nanoseconds (%s), which is deprecated: write \"%s\"", FormatDuration(time.Duration(n)), FormatDuration(time.Duration(n)))
			}
			v.SetInt(n)
		default:
			bad(errors.New("a duration is a string with a unit, like \"30s\", \"5m\" or \"1h30m\""))
		}
		return
	case size:
		switch x := tok.(type) {
		case string:
			n, err := ParseSize(x)
			if err != nil {
				bad(err)
				return
			}
			v.SetInt(n)
		case json.Number:
			n, err := x.Int64()
			if err != nil || n < 0 {
				bad(fmt.Errorf("%s is not a size: write one in quotes with a unit, like \"512M\" or \"50G\"", x))
				return
			}
			if n != 0 {
				st.warn(path, line, "a bare number of bytes is deprecated: write \"%s\"", FormatSize(n))
			}
			v.SetInt(n)
		default:
			bad(errors.New("a size is a string with a unit, like \"512M\" or \"50G\""))
		}
		return
	}
	switch t.Kind() {
	case reflect.String:
		s, ok := tok.(string)
		if !ok {
			bad(fmt.Errorf("%s is not a string: put it in double quotes", describe(tok)))
			return
		}
		v.SetString(s)
	case reflect.Bool:
		b, ok := tok.(bool)
		if !ok {
			bad(fmt.Errorf("%s is not true or false (without quotes)", describe(tok)))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, ok := tok.(json.Number)
		i, err := strconv.ParseInt(string(n), 10, t.Bits())
		if !ok || err != nil {
			bad(fmt.Errorf("%s is not a whole number (without quotes)", describe(tok)))
			return
		}
		v.SetInt(i)
	case reflect.Uint64:
		n, ok := tok.(json.Number)
		i, err := strconv.ParseUint(string(n), 10, 64)
		if !ok || err != nil {
			bad(fmt.Errorf("%s is not a whole number of 0 or more (without quotes)", describe(tok)))
			return
		}
		v.SetUint(i)
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		st.value(path, line, tok, t.Elem(), size, v.Elem())
	case reflect.Struct:
		if tok != json.Delim('{') {
			bad(fmt.Errorf("%s is not an object: write { \"field\": value, ... }", describe(tok)))
			return
		}
		st.object(path, []part{{SchemaOf(t), v}})
	case reflect.Slice:
		if tok != json.Delim('[') {
			bad(fmt.Errorf("%s is not a list: write [ ... ]", describe(tok)))
			return
		}
		list := reflect.MakeSlice(t, 0, 0)
		for i := 0; st.dec.More(); i++ {
			elem := reflect.New(t.Elem()).Elem()
			st.value(fmt.Sprintf("%s[%d]", path, i), st.lineOfNext(), st.token(), t.Elem(), size, elem)
			list = reflect.Append(list, elem)
		}
		st.token() // ]
		v.Set(list)
	default:
		panic(fmt.Sprintf("configfile: cannot decode a %s", t))
	}
}

// lineOfNext is the line of the next value in a list.
func (st *decodeState) lineOfNext() int {
	l, _ := st.position(st.nextOffset(st.dec.InputOffset()))
	return l
}

// nextOffset is the offset of the first byte from off that is neither
// white space nor a comma: where the next token starts.
func (st *decodeState) nextOffset(off int64) int64 {
	for off < int64(len(st.data)) {
		switch st.data[off] {
		case ' ', '\t', '\r', '\n', ',':
			off++
			continue
		}
		break
	}
	return off
}

// skip reads the rest of the value whose first token is tok.
func (st *decodeState) skip(tok json.Token) {
	if tok != json.Delim('{') && tok != json.Delim('[') {
		return
	}
	for depth := 1; depth > 0; {
		switch st.token() {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
}

// describe shows a value the way the file wrote it, for an error.
func describe(tok json.Token) string {
	switch x := tok.(type) {
	case string:
		return strconv.Quote(x)
	case json.Delim:
		if x == '{' {
			return "an object"
		}
		return "a list"
	case nil:
		return "null"
	}
	return fmt.Sprint(tok)
}

// ErrUnknownField is a field no struct of the file has: a misspelling, or
// a file of another role.
var ErrUnknownField = errors.New("no such field")

func unknownField(key string, parts []part) error {
	var names []string
	for _, p := range parts {
		names = append(names, p.s.names()...)
	}
	if s := Closest(key, names); s != "" {
		return fmt.Errorf("%w: did you mean %s?", ErrUnknownField, s)
	}
	return ErrUnknownField
}
