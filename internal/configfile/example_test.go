package configfile

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// testDocs reads the doc comments of the test types from their source, as
// a role's generated docs are read from its package's.
func testDocs(t *testing.T) Docs {
	t.Helper()
	dir := t.TempDir()
	src, err := os.ReadFile("types_test.go")
	if err != nil {
		t.Fatal(err)
	}
	// ReadDocs reads no test file, as a package's test types are no
	// config; here they are.
	if err := os.WriteFile(filepath.Join(dir, "types.go"), src, 0o600); err != nil {
		t.Fatal(err)
	}
	docs, err := ReadDocs(func(string) string { return dir }, SchemaOf(reflect.TypeFor[testConfig]()), SchemaOf(reflect.TypeFor[testRole]()))
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

func testExample(t *testing.T) (Example, testConfig) {
	values := testDefaults()
	values.DataDir = "/var/lib/x"
	values.Limit = 50 << 30
	values.Poll = 5 * time.Minute
	values.Auth.CA = "/etc/ca.crt"
	values.Pools = []testPool{{Name: "Default", Dir: "/p", VolumeSize: 4 << 30}, {Name: "B", Dir: "/q"}}
	values.Tags = []string{"a", "b"}
	values.Lib = &testLib{Name: "lib1", Emulated: &testEmulated{Slots: 24}}
	def := testDefaults()
	return Example{
		Header:   "A test role.\n  cairn test --config FILE",
		Values:   []any{&values, &testRole{LogLevel: "debug"}},
		Defaults: []any{&def, &testRole{}},
		Live:     []string{"data", "pools", "poll"},
		Docs:     testDocs(t),
	}, values
}

func TestExample(t *testing.T) {
	ex, values := testExample(t)
	out, err := ex.Write()
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	for _, want := range []string{
		"// A test role.\n//   cairn test --config FILE\n{\n",
		// The Go names of the struct's fields are the file's.
		"\t// name is the node's name.\n\t//\n\t// Default: the host name.\n\t// \"name\": \"host\",\n",
		"\t// data holds the node's state; name names it.\n\t\"data\": \"/var/lib/x\",\n",
		"\t// poll is how often to look again.\n\t//\n\t// Default: \"30s\".\n\t\"poll\": \"5m\",\n",
		"\t// limit caps a volume.\n\t// \"limit\": \"50G\",\n",
		"\t// nats_ca verifies the server.\n\t// \"nats_ca\": \"/etc/ca.crt\",\n",
		"\t// pools are disk pools.\n\t//   - name of the pool.\n\t//   - dir holds the volumes.\n\t//   - volume_size caps each volume.\n" +
			"\t\"pools\": [\n\t\t{\"name\": \"Default\", \"dir\": \"/p\", \"volume_size\": \"4G\"},\n\t\t{\"name\": \"B\", \"dir\": \"/q\"},\n\t],\n",
		"\t//   - emulated makes it emulated.\n\t//       - slots of the library.\n",
		"\t// \"lib\": {\"name\": \"lib1\", \"emulated\": {\"slots\": 24}},\n",
		"\t// log_level is debug or info.\n\t// \"log_level\": \"debug\",\n}\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the example has no\n%s\nin\n%s", want, text)
		}
	}

	// As written, the file sets its live fields and leaves the others at
	// their defaults.
	got, rf := testDefaults(), testRole{}
	if warns, err := Decode(out, &got, &rf); err != nil || len(warns) > 0 {
		t.Fatalf("the example does not decode: %v %v", warns, err)
	}
	want := testDefaults()
	want.DataDir, want.Pools, want.Poll = values.DataDir, values.Pools, values.Poll
	if !reflect.DeepEqual(got, want) || rf != (testRole{}) {
		t.Errorf("the example as written reads as\n%+v\nwant\n%+v", got, want)
	}
	// With every field uncommented, it holds the example's values.
	all := regexp.MustCompile(`(?m)^\t// ("|\t|\])`).ReplaceAll(out, []byte("\t$1"))
	got, rf = testDefaults(), testRole{}
	if warns, err := Decode(all, &got, &rf); err != nil || len(warns) > 0 {
		t.Fatalf("the example uncommented does not decode: %v %v\n%s", warns, err, all)
	}
	if !reflect.DeepEqual(got, values) || rf.LogLevel != "debug" {
		t.Errorf("the example uncommented reads as\n%+v %+v\nwant\n%+v %+v", got, *got.Lib, values, *values.Lib)
	}
	for i, l := range strings.Split(text, "\n") {
		if w := len(strings.ReplaceAll(l, "\t", "        ")); w > width && strings.HasPrefix(strings.TrimSpace(l), "//") && strings.Count(l, " ") > 2 {
			t.Errorf("line %d is %d columns wide: %q", i+1, w, l)
		}
	}
}

func TestExampleRefusesAnUndocumentedField(t *testing.T) {
	ex, _ := testExample(t)
	delete(ex.Docs, DocKey(reflect.TypeFor[testEmulated](), "Slots"))
	if _, err := ex.Write(); err == nil || !strings.Contains(err.Error(), "testEmulated.Slots") {
		t.Fatalf("an undocumented field: %v", err)
	}
	ex, _ = testExample(t)
	ex.Live = append(ex.Live, "nosuch")
	if _, err := ex.Write(); err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Fatalf("a live field that is none: %v", err)
	}
}

func TestDocsSource(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile("types_test.go")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "types.go"), src, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := DocsSource("github.com/cairnbackup/cairn/internal/configfile", "configfile", "docs", "a test", func(string) string { return dir },
		SchemaOf(reflect.TypeFor[testRole]()), SchemaOf(reflect.TypeFor[testPool]()))
	if err != nil {
		t.Fatal(err)
	}
	want := "// Code generated by a test; DO NOT EDIT.\n\npackage configfile\n\nimport (\n\t\"github.com/cairnbackup/cairn/internal/configfile\"\n)\n\n" +
		"// docs are the doc comments of the fields of the config files' structs.\nvar docs = configfile.Merge(\n" +
		"\tconfigfile.For[testPool](map[string]string{\n\t\t\"Dir\":        \"Dir holds the volumes.\",\n\t\t\"Name\":       \"Name of the pool.\",\n\t\t\"VolumeSize\": \"VolumeSize caps each volume.\",\n\t}),\n" +
		"\tconfigfile.For[testRole](map[string]string{\n\t\t\"LogLevel\": \"LogLevel is debug or info.\",\n\t}),\n)\n"
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	if d := For[testPool](map[string]string{"Dir": "x"}); d[DocKey(reflect.TypeFor[testPool](), "Dir")] != "x" {
		t.Errorf("For: %v", d)
	}
}
