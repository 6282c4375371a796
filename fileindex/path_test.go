package fileindex

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// A path of any bytes survives JSON, as a JSON string; one that is valid
// UTF-8 is written exactly as encoding/json writes a string, and a byte
// that is not UTF-8 as a lone surrogate escape that an older reader takes
// for U+FFFD, as it did before.
func TestPathJSONIsLossless(t *testing.T) {
	for _, c := range []struct{ path, json string }{
		{"/etc/hosts", `"/etc/hosts"`},
		{"/srv/caf\xe9.txt", `"/srv/caf\udce9.txt"`},
		{"/x/\xff\xfe", `"/x/\udcff\udcfe"`},
		{"/a<b>&\"\\\n\x00", `"/a\u003cb\u003e\u0026\"\\\n\u0000"`},
		{"/evil\x1b[2J\xe9", `"/evil\u001b[2J\udce9"`},
		{"/ünïcode 😀", `"/ünïcode 😀"`},
		{"/half\xe6\x97", `"/half\udce6\udc97"`},
		{"/surrogate\xed\xa0\x80", `"/surrogate\udced\udca0\udc80"`},
	} {
		b, err := json.Marshal(struct {
			P Path `json:"p"`
		}{Path(c.path)})
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"p":` + c.json + `}`; string(b) != want {
			t.Errorf("%q encodes as %s, want %s", c.path, b, want)
		}
		var back struct {
			P Path `json:"p"`
		}
		if err := json.Unmarshal(b, &back); err != nil || string(back.P) != c.path {
			t.Errorf("%q reads back as %q (%v)", c.path, back.P, err)
		}
		var old struct {
			P string `json:"p"`
		}
		if err := json.Unmarshal(b, &old); err != nil || old.P != lossy(c.path) {
			t.Errorf("%q: an older reader reads %q (%v), want %q as before", c.path, old.P, err, lossy(c.path))
		}
	}
	// What other writers send: escaped pairs, and a lone high surrogate,
	// which encoding/json reads as U+FFFD.
	var p Path
	if err := json.Unmarshal([]byte(`"\ud83d\ude00\ud800x\u00e9"`), &p); err != nil || string(p) != "😀\ufffdxé" {
		t.Fatalf("read %q, %v", p, err)
	}
	var ps []Path
	if err := json.Unmarshal([]byte(`["/a","/b\udcff"]`), &ps); err != nil || len(ps) != 2 || ps[1] != "/b\xff" {
		t.Fatalf("a list: %q %v", ps, err)
	}
}

// lossy is what encoding/json makes of a string: U+FFFD for each byte that
// is not UTF-8.
func lossy(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r)
		i += size
	}
	return b.String()
}

// FuzzPathJSON: every byte string reads back as itself, and no input makes
// the reader panic.
func FuzzPathJSON(f *testing.F) {
	f.Add([]byte("/srv/caf\xe9.txt"), []byte(`"\udcff"`))
	f.Add([]byte("\x00\xff\\\"\u2028"), []byte(`"\ud800\udc00\ud800"`))
	f.Fuzz(func(t *testing.T, path, raw []byte) {
		b, err := json.Marshal(Path(path))
		if err != nil {
			t.Fatal(err)
		}
		var back Path
		if err := json.Unmarshal(b, &back); err != nil || string(back) != string(path) {
			t.Fatalf("%q encodes as %s and reads back as %q (%v)", path, b, back, err)
		}
		var any Path
		_ = json.Unmarshal(raw, &any)
	})
}
