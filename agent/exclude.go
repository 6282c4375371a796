package agent

import (
	"fmt"
	"path"
	"strings"
)

// excludePattern is one of WalkOptions.Excludes, ready to match.
type excludePattern struct {
	raw string
	// comps are the pattern's components; for a name pattern, one.
	comps []string
	// anchor says what the pattern is matched against.
	anchor anchor
	// dirOnly: the pattern ended with a slash and matches directories only.
	dirOnly bool
	// matched: it left something out of this walk.
	matched bool
}

type anchor uint8

const (
	anchorName     anchor = iota // no slash: an entry's name, at any depth
	anchorAbsolute               // a leading slash: the entry's absolute path
	anchorRoot                   // a slash inside: the path below the backup root that holds the entry
)

// compileExcludes checks and prepares the patterns of WalkOptions.Excludes.
func compileExcludes(pats []string) ([]*excludePattern, error) {
	out := make([]*excludePattern, 0, len(pats))
	for _, raw := range pats {
		p := &excludePattern{raw: raw}
		s := raw
		if len(s) > 1 && strings.HasSuffix(s, "/") {
			p.dirOnly = true
			s = strings.TrimRight(s, "/")
		}
		switch {
		case s == "":
			return nil, fmt.Errorf("exclude pattern %q is empty: give a name (\"*.tmp\"), a path below the backup root (\"var/cache\") or an absolute path", raw)
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
				return nil, fmt.Errorf("exclude pattern %q is malformed (%v): each part between slashes is a shell glob (*, ?, [a-z]), and ** matches any number of directories", raw, err)
			}
			if c == "" {
				return nil, fmt.Errorf("exclude pattern %q has an empty part between two slashes", raw)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// match reports whether the pattern leaves out the entry at full (an
// absolute path) named name, below the backup root root. isDir: 1 a
// directory, 0 not one, -1 not known yet, which a pattern for directories
// only does not match.
func (p *excludePattern) match(full, name, root string, isDir int) bool {
	if p.dirOnly && isDir != 1 {
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
// "**" matching any number of them, none included.
func matchComponents(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(name); i++ {
				if matchComponents(pat[1:], name[i:]) {
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
