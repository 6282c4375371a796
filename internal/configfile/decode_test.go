package configfile

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func decodeTest(t *testing.T, file string) (testConfig, testRole, []Warning, error) {
	t.Helper()
	cfg, rf := testDefaults(), testRole{}
	warns, err := Decode([]byte(file), &cfg, &rf)
	return cfg, rf, warns, err
}

func TestDecodeFillsEveryKindOfField(t *testing.T) {
	cfg, rf, warns, err := decodeTest(t, `// a node
{
	"name": "sn1",
	// "workers": 9,
	"data": "/srv // not a comment",
	"verbose": true,
	"poll": "1m30s",
	"limit": "50G",
	"tuning": 18446744073709551615,
	"nats_ca": "/etc/ca.crt",
	"tags": ["a", "b",],
	"pools": [
		{"name": "Default", "dir": "/p", "volume_size": "4G"},
		{"name": "Other", "dir": "/q"},
	],
	"lib": {"name": "lib1", "timeout": "5m", "emulated": {"slots": 24}},
	"log_level": "debug",
}
// the end`)
	if err != nil || len(warns) != 0 {
		t.Fatalf("warnings %v, error %v", warns, err)
	}
	want := testConfig{
		Name: "sn1", DataDir: "/srv // not a comment", Workers: 2, Verbose: true, Poll: 90 * time.Second,
		Limit: 50 << 30, Tuning: 1<<64 - 1, Auth: testAuth{CA: "/etc/ca.crt"}, Tags: []string{"a", "b"},
		Pools: []testPool{{"Default", "/p", 4 << 30}, {"Other", "/q", 0}},
		Lib:   &testLib{Name: "lib1", Timeout: 5 * time.Minute, Emulated: &testEmulated{Slots: 24}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
	if rf.LogLevel != "debug" {
		t.Errorf("the second target's field: %+v", rf)
	}
}

func TestDecodeOlderFormsWarn(t *testing.T) {
	cfg, _, warns, err := decodeTest(t, `{
	"id": "sn1",
	"poll": 30000000000,
	"limit": 1073741824,
	"nats_auth": {"ca_file": "/etc/ca.crt"},
	"pools": [{"name": "D", "dir": "/p", "max_volume_bytes": 2147483648}]
}`)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "sn1" || cfg.Poll != 30*time.Second || cfg.Limit != 1<<30 || cfg.Auth.CA != "/etc/ca.crt" || cfg.Pools[0].VolumeSize != 2<<30 {
		t.Errorf("older forms not read: %+v", cfg)
	}
	var got []string
	for _, w := range warns {
		got = append(got, w.String())
	}
	for i, want := range []string{
		"line 2: id: id is the older name of name: rename it",
		`line 3: poll: a bare number is read as nanoseconds (30s), which is deprecated: write "30s"`,
		`line 4: limit: a bare number of bytes is deprecated: write "1G"`,
		"line 5: nats_auth: the object form is deprecated: write its fields at the top level as nats_ca, nats_user",
		"line 5: nats_auth.ca_file: ca_file is the older name of nats_auth.ca: rename it",
		"line 6: pools[0].max_volume_bytes: max_volume_bytes is the older name of pools[0].volume_size: rename it",
		`line 6: pools[0].max_volume_bytes: a bare number of bytes is deprecated: write "2G"`,
	} {
		if i >= len(got) || got[i] != want {
			t.Errorf("warning %d: %q, want %q (all: %q)", i, at(got, i), want, got)
		}
	}
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return ""
}

// TestDecodeNamesEveryBadField: one pass names every mistake, each by its
// path and line, with what to write instead.
func TestDecodeNamesEveryBadField(t *testing.T) {
	_, _, _, err := decodeTest(t, `{
	"nmae": "x",
	"workers": "4",
	"poll": "30 seconds",
	"limit": "lots",
	"verbose": "yes",
	"tags": "a",
	"pools": [{"name": "D", "dri": "/p"}, {"name": 7}],
	"lib": {"emulated": {"slots": 1.5}},
	"name": "y",
	"id": "z",
	"workers": 3,
	"whatever": {"nested": [1, {"x": 2}]}
}`)
	want := []string{
		`line 2: nmae: no such field: did you mean name?`,
		`line 3: workers: "4" is not a whole number (without quotes)`,
		`line 4: poll: "30 seconds" is not a duration: use a number with a unit, ms, s, m or h (e.g. "30s", "5m", "1h30m")`,
		`line 5: limit: "lots" is not a size: use a whole number of bytes with K, M, G or T (e.g. "512M", "50G")`,
		`line 6: verbose: "yes" is not true or false (without quotes)`,
		`line 7: tags: "a" is not a list: write [ ... ]`,
		`line 8: pools[0].dri: no such field: did you mean dir?`,
		`line 8: pools[1].name: 7 is not a string: put it in double quotes`,
		`line 9: lib.emulated.slots: 1.5 is not a whole number (without quotes)`,
		`line 11: id: given twice, also as name on line 10: keep one`,
		`line 12: workers: given twice (also on line 3): keep one`,
		`line 13: whatever: no such field`,
	}
	probs := Problems(err)
	if len(probs) != len(want) {
		t.Fatalf("%d problems, want %d:\n%v", len(probs), len(want), err)
	}
	for i, p := range probs {
		var fe *FieldError
		if !errors.As(p, &fe) {
			t.Errorf("problem %d is no FieldError: %v", i, p)
		}
		if p.Error() != want[i] {
			t.Errorf("problem %d:\n got %s\nwant %s", i, p, want[i])
		}
	}
}

func TestDecodeSyntax(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{"", "the file is empty"},
		{"  \n// only a comment\n", "the file is empty"},
		{"[1]", "line 1: the file must hold one JSON object"},
		{"null", "line 1: the file must hold one JSON object"},
		{"{\n\t\"name\": \"x\" // here\n}", "line 2, column 14: invalid character '/' after object key:value pair: a // comment must be on a line of its own"},
		{"{\n\t\"name\": \"x\"\n\t\"data\": \"y\"\n}", "line 3, column 2: invalid character '\"' after object key:value pair"},
		{"{\"name\": \"x\"", "the file ends inside an object or a list: a } or ] is missing"},
		{"{}\n{}", "line 2, column 1: more after the object's closing }: the file holds one object"},
		{"{,}", "line 1, column 2: invalid character ','"},
	} {
		_, _, _, err := decodeTest(t, c.file)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.file, err, c.want)
		}
	}
}

func TestDecodeKeepsWhatTheFileLeavesOut(t *testing.T) {
	cfg := testDefaults()
	cfg.Pools = []testPool{{Name: "flag"}}
	if _, err := Decode([]byte(`{"poll": null, "lib": null}`), &cfg); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, func() testConfig { c := testDefaults(); c.Pools = []testPool{{Name: "flag"}}; return c }()) {
		t.Errorf("defaults changed: %+v", cfg)
	}
	// A list in the file replaces the one there was.
	if _, err := Decode([]byte(`{"pools": []}`), &cfg); err != nil || len(cfg.Pools) != 0 || cfg.Pools == nil {
		t.Errorf("pools %#v, %v", cfg.Pools, err)
	}
}

func TestDecodeIgnoreUnknown(t *testing.T) {
	var rf testRole
	if _, err := (Decoder{IgnoreUnknown: true}).Decode([]byte(`{"name": [1, {"a": 2}], "log_level": "warn"}`), &rf); err != nil || rf.LogLevel != "warn" {
		t.Fatalf("%+v, %v", rf, err)
	}
	if _, err := Decode([]byte(`{"name": "x", "log_level": "warn"}`), &rf); err == nil {
		t.Fatal("an unknown field was accepted")
	}
}

func TestSchemaOf(t *testing.T) {
	s := SchemaOf(reflect.TypeFor[testConfig]())
	var names, flags []string
	for _, f := range s.Fields {
		names = append(names, f.Name)
		flags = append(flags, f.Flag)
	}
	if want := "name data workers verbose poll limit tuning nats_ca nats_user tags pools lib"; strings.Join(names, " ") != want {
		t.Errorf("fields %q, want %q", names, want)
	}
	if want := "name data workers verbose poll limit tuning nats-ca nats-user tags pool lib"; strings.Join(flags, " ") != want {
		t.Errorf("flags %q, want %q", flags, want)
	}
	f, alias := s.Lookup("node_id")
	if f == nil || f.Name != "name" || !alias || f.Default != "the host name" {
		t.Errorf("lookup node_id: %+v, %v", f, alias)
	}
	if !s.Field("lib").FileOnly || s.Field("pools").FileOnly || !s.Field("limit").Size {
		t.Error("tags not read")
	}
	for _, bad := range []any{
		struct {
			A string `json:"a"`
			B string `json:"b" config:"alias=a"`
		}{},
		struct {
			A string
		}{},
		struct {
			A int32 `json:"a" config:"size"`
		}{},
		struct {
			A map[string]string `json:"a"`
		}{},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%T: no panic", bad)
				}
			}()
			SchemaOf(reflect.TypeOf(bad))
		}()
	}
}

func TestFieldErrorsIn(t *testing.T) {
	err := In("libraries[1]", errors.Join(
		Fieldf("drives", "empty: list the drives"),
		Fieldf("[0]", "not a device"),
		errors.New("plain"),
	))
	var got []string
	for _, p := range Problems(err) {
		got = append(got, p.Error())
	}
	want := []string{"libraries[1].drives: empty: list the drives", "libraries[1][0]: not a device", "libraries[1]: plain"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%q, want %q", got, want)
	}
	if AtField("x", nil) != nil || In("x", nil) != nil {
		t.Error("nil is no error")
	}
	if !errors.Is(AtField("x", errTest), errTest) {
		t.Error("FieldError does not unwrap")
	}
}

var errTest = errors.New("test")

func TestClosest(t *testing.T) {
	names := []string{"name", "data", "data_addr", "advertise_addr", "nats_ca", "heartbeat_interval"}
	for in, want := range map[string]string{
		"nmae": "name", "NAME": "name", "data-addr": "data_addr", "dataaddr": "data_addr", "advertise": "",
		"heartbeat": "", "hearbeat_interval": "heartbeat_interval", "nats_cs": "nats_ca", "zzzz": "", "x": "",
	} {
		if got := Closest(in, names); got != want {
			t.Errorf("Closest(%q) = %q, want %q", in, got, want)
		}
	}
}
