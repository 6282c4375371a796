package fileindex

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Exclude is a backup's exclude pattern, parsed: what the agent's walk
// matches entries against, and what the server checks a backup request's
// patterns with, so a pattern the walk would refuse is refused before a
// job is made.
//
//	*.tmp, node_modules   without a slash: a name, at any depth
//	var/cache             with a slash: a path below each backup root
//	/var/cache            with a leading slash: that absolute path
//	cache/                a trailing slash: directories only
//	**/build/*.o          each part a shell glob (path.Match); ** any
//	                      number of directories, none included
type Exclude struct {
	// Raw is the pattern as given.
	Raw string
	// comps are the pattern's components; for a name pattern, one.
	comps []string
	// anchor says what the pattern is matched against.
	anchor excludeAnchor
	// DirOnly: the pattern ended with a slash and matches directories
	// only.
	DirOnly bool
}

type excludeAnchor uint8

const (
	anchorName     excludeAnchor = iota // no slash: an entry's name, at any depth
	anchorAbsolute                      // a leading slash: the entry's absolute path
	anchorRoot                          // a slash inside: the path below the backup root that holds the entry
)

// ErrBadExclude is wrapped by ParseExclude's errors.
var ErrBadExclude = errors.New("bad exclude pattern")

// ParseExclude parses an exclude pattern. Its errors say what is wrong and
// what the syntax is.
func ParseExclude(raw string) (Exclude, error) {
	p := Exclude{Raw: raw}
	s := raw
	if len(s) > 1 && strings.HasSuffix(s, "/") {
		p.DirOnly = true
		s = strings.TrimRight(s, "/")
	}
	switch {
	case s == "":
		return Exclude{}, fmt.Errorf("%w: %q is empty: give a name (\"*.tmp\"), a path below the backup root (\"var/cache\") or an absolute path", ErrBadExclude, raw)
	case strings.HasPrefix(s, "/"):
		p.anchor = anchorAbsolute
		s = strings.TrimLeft(s, "/")
	case strings.Contains(s, "/"):
		p.anchor = anchorRoot
	}
	if s != "" { // "/" is the whole filesystem: no components
		for _, c := range strings.Split(s, "/") {
			// "**/**" is "**", and would cost a scan per copy.
			if c != "**" || len(p.comps) == 0 || p.comps[len(p.comps)-1] != "**" {
				p.comps = append(p.comps, c)
			}
		}
	}
	for _, c := range p.comps {
		if _, err := path.Match(c, "x"); err != nil {
			return Exclude{}, fmt.Errorf("%w: %q is malformed (%w): each part between slashes is a shell glob (*, ?, [a-z]), and ** matches any number of directories", ErrBadExclude, raw, err)
		}
		if c == "" {
			return Exclude{}, fmt.Errorf("%w: %q has an empty part between two slashes", ErrBadExclude, raw)
		}
	}
	return p, nil
}

// Match reports whether the pattern leaves out the entry at full (an
// absolute path) named name, below the backup root root. isDir: 1 a
// directory, 0 not one, -1 not known yet, which a pattern for directories
// only does not match.
func (p *Exclude) Match(full, name, root string, isDir int) bool {
	if p.DirOnly && isDir != 1 {
		return false
	}
	switch p.anchor {
	case anchorName:
		ok, _ := path.Match(p.comps[0], name)
		return ok
	case anchorAbsolute:
		if full == "/" {
			return len(p.comps) == 0
		}
		return matchComponents(p.comps, strings.Split(full[1:], "/"))
	}
	rel, ok := belowRoot(full, root)
	if !ok || rel == "" {
		return false
	}
	return matchComponents(p.comps, strings.Split(rel, "/"))
}

// belowRoot returns full's path relative to root: "" for the root itself.
func belowRoot(full, root string) (string, bool) {
	switch {
	case full == root:
		return "", true
	case root == "/":
		return full[1:], true
	case strings.HasPrefix(full, root+"/"):
		return full[len(root)+1:], true
	}
	return "", false
}

// matchComponents matches path components against pattern components,
// "**" matching any number of them, none included. It is the wildcard
// match of text, components for characters: on a mismatch only the last
// "**" takes one more component, so a pattern with many of them costs at
// most its length times the path's, where trying every split for each
// "**" cost the path's length to the power of their number.
func matchComponents(pat, name []string) bool {
	p, n := 0, 0
	star, resume := -1, 0 // the last "**" seen, and where its match ends now
	for n < len(name) {
		switch {
		case p < len(pat) && pat[p] == "**":
			star, resume = p, n
			p++
		case p < len(pat) && componentMatch(pat[p], name[n]):
			p++
			n++
		case star >= 0:
			resume++
			p, n = star+1, resume
		default:
			return false
		}
	}
	for p < len(pat) && pat[p] == "**" {
		p++
	}
	return p == len(pat)
}

func componentMatch(pat, name string) bool {
	ok, _ := path.Match(pat, name)
	return ok
}
