package fileindex

import (
	"errors"
	"testing"
)

func TestUnescapeReadsWhatEscapeWrites(t *testing.T) {
	for _, c := range []struct{ raw, printed string }{
		{"/etc/hosts", "/etc/hosts"},
		{"/srv/caf\xe9.txt", `/srv/caf\xe9.txt`},
		{"/evil\x1b[2J\nroot.txt", `/evil\x1b[2J\nroot.txt`},
		{`/back\slash`, `/back\\slash`},
		{"/txt.exe\u202egnp", `/txt.exe\u202egnp`},
		{"/Grüße €", "/Grüße €"},
		{"/bell\a\x7f", `/bell\a\x7f`},
	} {
		if got := Escape(c.raw); got != c.printed {
			t.Errorf("Escape(%q) = %q, want %q", c.raw, got, c.printed)
		}
		if got, err := Unescape(c.printed); err != nil || got != c.raw {
			t.Errorf("Unescape(%q) = %q, %v; want %q", c.printed, got, err, c.raw)
		}
	}
	// Typed raw, a name reads as itself: the bytes a shell gives, and
	// UTF-8.
	for _, raw := range []string{"/srv/caf\xe9.txt", "/Grüße", "/tab\there"} {
		if got, err := Unescape(raw); err != nil || got != raw {
			t.Errorf("Unescape(%q) = %q, %v", raw, got, err)
		}
	}
	for _, bad := range []string{`/a\`, `/a\q`, `/a\x4`, `/a\xzz`, `/a\ud800`, `/a\U00110000`} {
		if _, err := Unescape(bad); !errors.Is(err, ErrBadEscape) {
			t.Errorf("Unescape(%q): %v, want ErrBadEscape", bad, err)
		}
	}
}

// FuzzEscape: every byte string prints as text that reads back to it, and
// no argument makes Unescape panic.
func FuzzEscape(f *testing.F) {
	f.Add("/srv/caf\xe9.txt")
	f.Add(`\x\u12\U0001f600\\`)
	f.Fuzz(func(t *testing.T, s string) {
		if got, err := Unescape(Escape(s)); err != nil || got != s {
			t.Fatalf("%q prints as %q and reads back as %q (%v)", s, Escape(s), got, err)
		}
		_, _ = Unescape(s)
	})
}
