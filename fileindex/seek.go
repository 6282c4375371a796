package fileindex

import "slices"

// Seeker is an Iterator that can skip ahead without reading what it skips.
type Seeker interface {
	Iterator
	// Seek moves to the first entry, from the next one on, whose path past
	// holds for. past must be a Past: false up to some point in index
	// order and true from there on.
	Seek(past Past)
}

// Past tells whether a path lies at or after a point in index order.
type Past func(path string) bool

// From holds for p and every path after it.
func From(p string) Past { return func(x string) bool { return Compare(x, p) >= 0 } }

// After holds for the paths after dir and all below it: the next sibling
// of dir's subtree on.
func After(dir string) Past {
	return func(x string) bool { return Compare(x, dir) > 0 && !Within(x, dir) }
}

// Seek moves every layer to its first entry past holds for; a layer that
// is not a Seeker reads up to it.
func (m *MergeIterator) Seek(past Past) {
	for _, l := range m.layers {
		if m.err != nil || !l.ok || past(l.head.Path) {
			continue
		}
		if s, ok := l.it.(Seeker); ok {
			s.Seek(past)
		}
		for {
			l.advance()
			if !l.ok {
				if err := l.it.Err(); err != nil {
					m.err = err
				}
				break
			}
			if past(l.head.Path) {
				break
			}
		}
	}
}

// Selection is a tree with only what lies below some paths, or is one of
// some others; see Select.
type Selection struct {
	m     *MergeIterator
	spans []span
	i     int  // the span read now
	at    bool // m is positioned in or before span i
}

type span struct {
	path    string
	subtree bool // the path and all below it, or the path alone
}

// past tells whether p lies after everything the span holds.
func (s span) past(p string) bool {
	return Compare(p, s.path) > 0 && !(s.subtree && Within(p, s.path))
}

func (s span) holds(p string) bool {
	return p == s.path || (s.subtree && Within(p, s.path))
}

// Select yields the entries of m at or below one of roots, or at one of
// points, seeking over the rest: reading a few paths of a large tree costs
// a seek per path, not a read of the tree.
func Select(m *MergeIterator, roots, points []string) *Selection {
	var spans []span
	for _, r := range roots {
		spans = append(spans, span{path: r, subtree: true})
	}
	for _, p := range points {
		spans = append(spans, span{path: p})
	}
	sortSpans(spans)
	// Drop what an earlier subtree holds.
	kept := spans[:0]
	for _, s := range spans {
		if n := len(kept); n > 0 && kept[n-1].holds(s.path) && (kept[n-1].subtree || !s.subtree) {
			continue
		}
		kept = append(kept, s)
	}
	return &Selection{m: m, spans: kept}
}

func sortSpans(spans []span) {
	// A subtree before the point at the same path, which it holds.
	slices.SortFunc(spans, func(a, b span) int {
		if c := Compare(a.path, b.path); c != 0 || a.subtree == b.subtree {
			return c
		}
		if a.subtree {
			return -1
		}
		return 1
	})
}

func (s *Selection) Next() (Entry, bool) {
	for s.i < len(s.spans) {
		if !s.at {
			s.m.Seek(From(s.spans[s.i].path))
			s.at = true
		}
		e, ok := s.m.Next()
		if !ok {
			s.i = len(s.spans)
			break
		}
		for s.i < len(s.spans) && s.spans[s.i].past(e.Path) {
			s.i++
		}
		if s.i < len(s.spans) && s.spans[s.i].holds(e.Path) {
			return e, true
		}
		// e lies before the next span: seek to it.
		s.at = false
	}
	return Entry{}, false
}

func (s *Selection) Err() error { return s.m.Err() }

// Layer is the layer of the entry Next returned last, as MergeIterator's.
func (s *Selection) Layer() int { return s.m.Layer() }

// Position is the place of that entry in its layer, as MergeIterator's:
// an entry the selection seeks over leaves a gap too.
func (s *Selection) Position() uint64 { return s.m.Position() }
