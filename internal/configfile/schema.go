package configfile

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"
)

// Field is one field of a configuration file, read from a Go struct
// field's tags (see the package comment).
type Field struct {
	// Name is the field's name in the file.
	Name string
	// Aliases are older names, still read with a warning.
	Aliases []string
	// Flag is the name of the role's flag that sets the field: Name with
	// '-' for '_', unless the tag says otherwise.
	Flag string
	// Size: an int64 of bytes written with a unit.
	Size bool
	// FileOnly: no flag sets the field (a list of objects, a library).
	FileOnly bool
	// Default says what the field is when the file leaves it out and the
	// default is not a constant (the host's name), else "".
	Default string
	// Type is the Go field's type.
	Type reflect.Type
	// Owner is the struct that declares the Go field, and GoName its
	// name: together they key the field's doc comment.
	Owner  reflect.Type
	GoName string
	// Elem is the struct a struct, pointer or list field holds, nil for
	// a scalar.
	Elem *Struct
	// Group is the inline struct the field comes from, nil for a field
	// of the struct itself.
	Group *Group

	index []int
}

// DocKey is the key of the field's doc comment: the declaring struct's
// package path and name, and the Go field's name.
func (f *Field) DocKey() string { return DocKey(f.Owner, f.GoName) }

// DocKey keys the doc comment of the field goName of struct type t.
func DocKey(t reflect.Type, goName string) string {
	return t.PkgPath() + "." + t.Name() + "." + goName
}

// Value is the field in v, a value of the struct the field belongs to.
func (f *Field) Value(v reflect.Value) reflect.Value { return v.FieldByIndex(f.index) }

// Group is an inline struct: its fields are the file's top-level fields
// with Prefix before their names. Name, its Go field's json name, is the
// older form, an object of the struct's own fields, still read.
type Group struct {
	Name   string
	Prefix string
	Owner  reflect.Type
	GoName string
	Struct *Struct
	index  []int
}

// DocKey is the key of the inline struct field's doc comment.
func (g *Group) DocKey() string { return DocKey(g.Owner, g.GoName) }

// Struct is the fields of a struct type, in the order of its declaration,
// an inline struct's fields in its place.
type Struct struct {
	Type   reflect.Type
	Fields []*Field
	Groups []*Group

	byName  map[string]*Field
	byAlias map[string]*Field
	groups  map[string]*Group
}

// Lookup finds the field named name, or that name is an older name of;
// alias says which.
func (s *Struct) Lookup(name string) (f *Field, alias bool) {
	if f := s.byName[name]; f != nil {
		return f, false
	}
	if f := s.byAlias[name]; f != nil {
		return f, true
	}
	return nil, false
}

// Field is the field named name (not an alias), or nil.
func (s *Struct) Field(name string) *Field { return s.byName[name] }

// names are every name the struct reads, for suggestions.
func (s *Struct) names() []string {
	var out []string
	for _, f := range s.Fields {
		out = append(out, f.Name)
		out = append(out, f.Aliases...)
	}
	for _, g := range s.Groups {
		out = append(out, g.Name)
	}
	return out
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	schemas      sync.Map // reflect.Type -> *Struct
)

// SchemaOf is the file's view of struct type t (or a pointer to one). It
// panics on a field it cannot read or write, which is a mistake in the
// struct's tags that any test of the struct finds.
func SchemaOf(t reflect.Type) *Struct {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if s, ok := schemas.Load(t); ok {
		return s.(*Struct)
	}
	s := build(t)
	actual, _ := schemas.LoadOrStore(t, s)
	return actual.(*Struct)
}

func build(t reflect.Type) *Struct {
	if t.Kind() != reflect.Struct {
		panic(fmt.Sprintf("configfile: %s is not a struct", t))
	}
	s := &Struct{Type: t, byName: map[string]*Field{}, byAlias: map[string]*Field{}, groups: map[string]*Group{}}
	add := func(f *Field) {
		for _, n := range append([]string{f.Name}, f.Aliases...) {
			if s.byName[n] != nil || s.byAlias[n] != nil || s.groups[n] != nil {
				panic(fmt.Sprintf("configfile: %s: two fields are named %s", t, n))
			}
		}
		s.byName[f.Name] = f
		for _, a := range f.Aliases {
			s.byAlias[a] = f
		}
		s.Fields = append(s.Fields, f)
	}
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			panic(fmt.Sprintf("configfile: %s.%s has no json name", t, sf.Name))
		}
		opts := parseTag(sf.Tag.Get("config"))
		if prefix, ok := opts["inline"]; ok {
			if sf.Type.Kind() != reflect.Struct {
				panic(fmt.Sprintf("configfile: %s.%s: only a struct is inline", t, sf.Name))
			}
			g := &Group{Name: name, Prefix: prefix, Owner: t, GoName: sf.Name, Struct: SchemaOf(sf.Type), index: sf.Index}
			for _, inner := range g.Struct.Fields {
				f := *inner
				f.Name = prefix + inner.Name
				f.Aliases = nil // the older names are those of the object form
				f.Flag = strings.ReplaceAll(prefix, "_", "-") + inner.Flag
				f.Group = g
				f.index = append(append([]int{}, sf.Index...), inner.index...)
				add(&f)
			}
			if s.byName[name] != nil || s.byAlias[name] != nil {
				panic(fmt.Sprintf("configfile: %s: two fields are named %s", t, name))
			}
			s.groups[name] = g
			s.Groups = append(s.Groups, g)
			continue
		}
		f := &Field{Name: name, Flag: strings.ReplaceAll(name, "_", "-"), Type: sf.Type, Owner: t, GoName: sf.Name, index: sf.Index}
		if a := opts["alias"]; a != "" {
			f.Aliases = strings.Split(a, "|")
		}
		if fl := opts["flag"]; fl != "" {
			f.Flag = fl
		}
		_, f.Size = opts["size"]
		_, f.FileOnly = opts["fileonly"]
		f.Default = opts["default"]
		if f.Size && sf.Type.Kind() != reflect.Int64 {
			panic(fmt.Sprintf("configfile: %s.%s: a size is an int64", t, sf.Name))
		}
		f.Elem = elemSchema(t, sf)
		add(f)
	}
	return s
}

// elemSchema is the struct a field holds, and checks that the decoder can
// read the field's type.
func elemSchema(t reflect.Type, sf reflect.StructField) *Struct {
	ft := sf.Type
	switch {
	case ft == durationType:
		return nil
	case ft.Kind() == reflect.Struct:
		return SchemaOf(ft)
	case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
		return SchemaOf(ft.Elem())
	case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
		return SchemaOf(ft.Elem())
	case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.String:
		return nil
	case ft.Kind() == reflect.Pointer && scalar(ft.Elem()):
		return nil
	case scalar(ft):
		return nil
	}
	panic(fmt.Sprintf("configfile: %s.%s: a %s is not read from a file", t, sf.Name, ft))
}

func scalar(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int64, reflect.Uint64:
		return true
	}
	return false
}

// parseTag reads a config tag: options separated by commas, each a word or
// word=value.
func parseTag(tag string) map[string]string {
	opts := map[string]string{}
	for _, o := range strings.Split(tag, ",") {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		k, v, _ := strings.Cut(o, "=")
		opts[k] = v
	}
	return opts
}
