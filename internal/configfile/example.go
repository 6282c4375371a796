package configfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Docs are the doc comments of struct fields, keyed by DocKey: the text a
// commented example writes above each field. They are read from the Go
// source (DocsSource), so that the example says what the code says.
type Docs map[string]string

// Example is a commented config file of one role, as Write writes it:
// the header, then one object with every field the role reads, each under
// its documentation, those in Live as they are and the others commented
// out, so that a field is set by deleting the // before it.
type Example struct {
	// Header is the comment at the top of the file, without //: its
	// paragraphs are wrapped, and its indented lines kept as they are.
	Header string
	// Values are pointers to the structs the file fills (as Decode's
	// targets), holding what the example shows: the defaults, with the
	// fields the example sets or suggests changed.
	Values []any
	// Defaults are the same structs holding the role's defaults: a field
	// whose example value differs from its default says what the default
	// is.
	Defaults []any
	// Live are the top-level fields written uncommented.
	Live []string
	// Docs document the fields; a field without one is an error.
	Docs Docs
}

// width is the width an example's comments are wrapped to.
const width = 78

// Write writes the example. It fails on a field that has no doc comment,
// so that no field is left unexplained.
func (e Example) Write() ([]byte, error) {
	if len(e.Values) != len(e.Defaults) {
		return nil, errors.New("configfile: an example needs as many defaults as values")
	}
	live := map[string]bool{}
	for _, n := range e.Live {
		live[n] = true
	}
	var b bytes.Buffer
	writeComment(&b, "", strings.TrimSpace(e.Header))
	b.WriteString("{\n")
	var missing []string
	first := true
	for i, target := range e.Values {
		v := reflect.ValueOf(target).Elem()
		def := reflect.ValueOf(e.Defaults[i]).Elem()
		s := SchemaOf(v.Type())
		for _, f := range s.Fields {
			if !first {
				b.WriteString("\n")
			}
			first = false
			delete(live, f.Name)
			doc, ok := e.Docs[f.DocKey()]
			if !ok {
				missing = append(missing, f.DocKey())
			}
			text := goNamesToFileNames(doc, s, f.Owner)
			fv, dv := f.Value(v), f.Value(def)
			switch {
			case f.Default != "":
				text += "\n\nDefault: " + f.Default + "."
			case !reflect.DeepEqual(fv.Interface(), dv.Interface()) && !dv.IsZero():
				text += "\n\nDefault: " + strings.Join(encodeValue(f, dv), " ") + "."
			}
			writeComment(&b, "\t", text)
			if f.Elem != nil {
				missing = append(missing, writeElemDocs(&b, "", f.Elem, e.Docs)...)
			}
			lines := encodeValue(f, fv)
			lines[0] = strconv.Quote(f.Name) + ": " + lines[0]
			lines[len(lines)-1] += ","
			prefix := "\t// "
			if e.isLive(f.Name) {
				prefix = "\t"
			}
			for _, l := range lines {
				b.WriteString(prefix + l + "\n")
			}
		}
	}
	b.WriteString("}\n")
	for n := range live {
		missing = append(missing, "live field "+n+" is no field of the role")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("configfile: no doc comment for %s", strings.Join(missing, ", "))
	}
	return b.Bytes(), nil
}

func (e Example) isLive(name string) bool {
	for _, n := range e.Live {
		if n == name {
			return true
		}
	}
	return false
}

// writeElemDocs documents the fields of the objects a field holds, an item
// each, the fields of a nested object indented under theirs; it returns
// the fields that have no doc.
func writeElemDocs(b *bytes.Buffer, pad string, s *Struct, docs Docs) (missing []string) {
	for _, f := range s.Fields {
		doc, ok := docs[f.DocKey()]
		if !ok {
			missing = append(missing, f.DocKey())
		}
		text := goNamesToFileNames(doc, s, f.Owner)
		if rest, ok := strings.CutPrefix(text, f.Name); !ok || rest == "" || !strings.ContainsRune(" ,:;", rune(rest[0])) {
			text = f.Name + ": " + text
		}
		writeCommentHanging(b, "\t", pad+"  - ", pad+"    ", text)
		if f.Elem != nil {
			missing = append(missing, writeElemDocs(b, pad+"    ", f.Elem, docs)...)
		}
	}
	return missing
}

var goWord = regexp.MustCompile(`\b[A-Z][A-Za-z0-9]*\b`)

// goNamesToFileNames writes, in a doc comment of struct owner's field,
// the Go names of owner's fields as the file names of s.
func goNamesToFileNames(doc string, s *Struct, owner reflect.Type) string {
	names := map[string]string{}
	for _, f := range s.Fields {
		if f.Owner == owner {
			names[f.GoName] = f.Name
		}
	}
	return strings.TrimSpace(goWord.ReplaceAllStringFunc(doc, func(w string) string {
		if n, ok := names[w]; ok {
			return n
		}
		return w
	}))
}

// writeComment writes text as // comment lines at indent, its paragraphs
// wrapped; a paragraph whose lines are indented (a command, a list) is
// kept as it is.
func writeComment(b *bytes.Buffer, indent, text string) {
	writeCommentHanging(b, indent, "", "", text)
}

// writeCommentHanging is writeComment with first before the first line
// and rest before every other, for a list item.
func writeCommentHanging(b *bytes.Buffer, indent, first, rest, text string) {
	// A tab counts for 8 columns, as a terminal shows it.
	avail := width - 8*strings.Count(indent, "\t") - len(strings.ReplaceAll(indent, "\t", "")) - len("// ")
	emit := func(s string) { b.WriteString(strings.TrimRight(indent+"// "+s, " ") + "\n") }
	lead := first
	for i, para := range strings.Split(text, "\n\n") {
		if i > 0 {
			b.WriteString(indent + "//\n")
		}
		line := ""
		flush := func() {
			if line != "" {
				emit(lead + line)
				lead, line = rest, ""
			}
		}
		for _, l := range strings.Split(para, "\n") {
			if strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") {
				// A command or a list: as it is.
				flush()
				emit(lead + strings.Replace(l, "\t", "  ", 1))
				lead = rest
				continue
			}
			for _, w := range strings.Fields(l) {
				if line != "" && len(lead)+len(line)+1+len(w) > avail {
					flush()
				}
				if line != "" {
					line += " "
				}
				line += w
			}
		}
		flush()
	}
}

// encodeValue writes the value v of field f as the file's JSON, one line
// or, for a list of objects, one line per object, indented from the
// field's.
func encodeValue(f *Field, v reflect.Value) []string {
	if f.Type.Kind() == reflect.Slice && f.Elem != nil {
		if v.Len() == 0 {
			return []string{"[]"}
		}
		lines := []string{"["}
		for i := range v.Len() {
			lines = append(lines, "\t"+encodeInline(v.Index(i), f.Type.Elem(), false)+",")
		}
		return append(lines, "]")
	}
	return []string{encodeInline(v, f.Type, f.Size)}
}

// encodeInline writes a value on one line; an object shows its non-zero
// fields only, the others keeping their defaults.
func encodeInline(v reflect.Value, t reflect.Type, size bool) string {
	switch {
	case t == durationType:
		return strconv.Quote(FormatDuration(time.Duration(v.Int())))
	case size:
		return strconv.Quote(FormatSize(v.Int()))
	}
	switch t.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return "null"
		}
		return encodeInline(v.Elem(), t.Elem(), size)
	case reflect.Struct:
		s := SchemaOf(t)
		var parts []string
		for _, f := range s.Fields {
			fv := f.Value(v)
			if fv.IsZero() {
				continue
			}
			parts = append(parts, strconv.Quote(f.Name)+": "+encodeInline(fv, f.Type, f.Size))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case reflect.Slice:
		var parts []string
		for i := range v.Len() {
			parts = append(parts, encodeInline(v.Index(i), t.Elem(), size))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case reflect.String:
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(v.String())
		return strings.TrimSuffix(b.String(), "\n")
	}
	return fmt.Sprint(v.Interface())
}
