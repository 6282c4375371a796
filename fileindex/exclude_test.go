package fileindex

import (
	"errors"
	"path"
	"strings"
	"testing"
)

// matchEverySplit is matchComponents as first written: each "**" tries
// every number of components. It is the reference the fuzzer holds the
// faster one to.
func matchEverySplit(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(name); i++ {
				if matchEverySplit(pat[1:], name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], name[0]); !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}

func TestExcludeMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, full string
		isDir         int
		want          bool
	}{
		{"var/cache", "/srv/var/cache", 1, true},
		{"var/cache", "/srv/x/var/cache", 1, false},
		{"/srv/var/cache", "/srv/var/cache", -1, true},
		{"cache", "/srv/x/var/cache", 0, true},
		{"cache/", "/srv/x/var/cache", 0, false},
		{"cache/", "/srv/x/var/cache", 1, true},
		{"**/build/*.o", "/srv/a/b/build/x.o", 0, true},
		{"**/build/*.o", "/srv/build/x.o", 0, true},
		{"src/**", "/srv/src", 1, true},
		{"src/**/x", "/srv/src/a/b/c/x", 0, true},
		{"src/**/x", "/srv/src/a/b/c/y", 0, false},
		{"/", "/", 1, true},
		{"**/a/**/a/**/a/**/b", "/srv/" + strings.Repeat("a/", 300) + "c", 0, false},
	} {
		p, err := ParseExclude(c.pattern)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Match(c.full, path.Base(c.full), "/srv", c.isDir); got != c.want {
			t.Errorf("%q matches %q (dir %d): %v, want %v", c.pattern, c.full, c.isDir, got, c.want)
		}
	}
	for _, bad := range []string{"", "a//b", "[x", "src/[x/*", "//"} {
		if _, err := ParseExclude(bad); !errors.Is(err, ErrBadExclude) {
			t.Errorf("pattern %q: %v, want ErrBadExclude", bad, err)
		}
	}
}

// FuzzExclude parses arbitrary patterns, as the server does with a backup
// request's and the agent with its order's: a pattern is parsed or refused
// with ErrBadExclude, and one that parses matches a path exactly when
// trying every split for each "**" does.
func FuzzExclude(f *testing.F) {
	for _, s := range [][2]string{
		{"var/cache", "/srv/var/cache"}, {"**/build/*.o", "/srv/a/build/x.o"}, {"/srv/**/x/**", "/srv/x"},
		{"cache/", "/srv/cache"}, {"[a-", "/srv/a"}, {"a//b", "/a/b"}, {"**/**/a*/**", "/srv/b/ab/c"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, full string) {
		p, err := ParseExclude(pattern)
		if err != nil {
			if !errors.Is(err, ErrBadExclude) {
				t.Fatalf("error %v does not wrap ErrBadExclude", err)
			}
			return
		}
		if full == "" || full[0] != '/' {
			full = "/" + full
		}
		for _, isDir := range []int{-1, 0, 1} {
			p.Match(full, path.Base(full), "/srv", isDir)
		}
		name := strings.Split(strings.Trim(full, "/"), "/")
		if len(p.comps) <= 6 && len(name) <= 12 {
			if got, want := matchComponents(p.comps, name), matchEverySplit(p.comps, name); got != want {
				t.Fatalf("%q against %q: %v, every split %v", p.comps, name, got, want)
			}
		}
	})
}
