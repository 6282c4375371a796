package configfile

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzDecode feeds the decoder arbitrary files. Clean blanks comment lines,
// and only they, and trailing commas, to the same length; Decode never
// panics, says what is wrong as FieldErrors whose lines are in the file;
// and a config it read, written out again as an example with every field
// live, reads back to the same config, so that what 'config example'
// writes is what the decoder reads.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"{}", "// c\n{\n\t\"name\": \"x\",\n}\n", `{"poll": "1h30m", "limit": "50G", "tags": ["a",], "pools": [{"name": "D", "dir": "/p", "volume_size": "4G"}]}`,
		`{"lib": {"name": "l", "timeout": "5m", "emulated": {"slots": 2}}, "nats_auth": {"ca_file": "/c"}, "id": "old"}`,
		`{"poll": 30000000000, "limit": 1024, "tuning": 18446744073709551615, "verbose": true, "log_level": "x"}`,
		`{"nmae": 1, "workers": "2", "lib": null}`, "{\"a\": \"x\" // y\n}", "[1,]", "{,}", `{"name": "\ud800\u00e9\\""}`,
	} {
		f.Add([]byte(s))
	}
	docs := Docs{}
	var document func(s *Struct)
	document = func(s *Struct) {
		for _, fl := range s.Fields {
			docs[fl.DocKey()] = fl.GoName + " is a field."
			if fl.Elem != nil {
				document(fl.Elem)
			}
		}
	}
	document(SchemaOf(reflect.TypeFor[testConfig]()))
	document(SchemaOf(reflect.TypeFor[testRole]()))
	var live []string
	for _, t := range []reflect.Type{reflect.TypeFor[testConfig](), reflect.TypeFor[testRole]()} {
		for _, fl := range SchemaOf(t).Fields {
			live = append(live, fl.Name)
		}
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data)
		out := Clean(bytes.Clone(data))
		if len(out) != len(in) {
			t.Fatalf("%d bytes became %d", len(in), len(out))
		}
		inLines, outLines := bytes.Split(in, []byte("\n")), bytes.Split(out, []byte("\n"))
		for i, l := range inLines {
			comment := bytes.HasPrefix(bytes.TrimLeft(l, " \t\r"), []byte("//"))
			switch {
			case comment && len(bytes.Trim(outLines[i], " ")) != 0:
				t.Fatalf("comment line %d %q left as %q", i+1, l, outLines[i])
			case !comment && !bytes.Equal(bytes.ReplaceAll(l, []byte(","), []byte(" ")), bytes.ReplaceAll(outLines[i], []byte(","), []byte(" "))):
				t.Fatalf("line %d %q changed to %q", i+1, l, outLines[i])
			}
		}

		cfg, rf := testDefaults(), testRole{}
		warns, err := Decode(data, &cfg, &rf)
		if !bytes.Equal(data, in) {
			t.Fatal("Decode changed its input")
		}
		for _, w := range warns {
			if w.Line < 1 || w.Line > len(inLines) {
				t.Fatalf("warning on line %d of %d: %s", w.Line, len(inLines), w)
			}
		}
		if err != nil {
			for _, p := range Problems(err) {
				var fe *FieldError
				if !errors.As(p, &fe) {
					t.Fatalf("%T is no FieldError: %v", p, p)
				}
				if fe.Line < 0 || fe.Line > len(inLines) {
					t.Fatalf("an error on line %d of %d: %v", fe.Line, len(inLines), fe)
				}
			}
			return
		}
		write := func(cfg testConfig, rf testRole) []byte {
			def := testDefaults()
			ex := Example{Header: "fuzz", Values: []any{&cfg, &rf}, Defaults: []any{&def, &testRole{}}, Live: live, Docs: docs}
			b, err := ex.Write()
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		first := write(cfg, rf)
		again, rf2 := testDefaults(), testRole{}
		if warns, err := Decode(first, &again, &rf2); err != nil || len(warns) > 0 {
			t.Fatalf("a config written out does not read back: %v %v\n%s", warns, err, first)
		}
		if second := write(again, rf2); !bytes.Equal(first, second) {
			t.Fatalf("a config written out reads back as another:\n%s\n%s", first, second)
		}
	})
}
