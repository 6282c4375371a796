package fileindex

// Iterator yields entries in index order.
type Iterator interface {
	// Next returns the next entry; ok is false at the end or after an error,
	// which Err then reports.
	Next() (e Entry, ok bool)
	Err() error
}

type sliceIterator struct {
	entries []Entry
	i       int
}

// SliceIterator iterates over entries that are already in index order.
func SliceIterator(entries []Entry) Iterator { return &sliceIterator{entries: entries} }

func (s *sliceIterator) Next() (Entry, bool) {
	if s.i >= len(s.entries) {
		return Entry{}, false
	}
	s.i++
	return s.entries[s.i-1], true
}

func (s *sliceIterator) Err() error { return nil }

// SegmentSource returns a backup's encoded segments one at a time, in order;
// ok is false when there are no more.
type SegmentSource func() (data []byte, ok bool, err error)

type segmentIterator struct {
	next func() ([]byte, bool, error)
	cur  []Entry
	i    int
	err  error
}

// SegmentIterator decodes segments lazily, one in memory at a time.
func SegmentIterator(src SegmentSource) Iterator { return &segmentIterator{next: src} }

func (s *segmentIterator) Next() (Entry, bool) {
	for s.i >= len(s.cur) {
		if s.err != nil {
			return Entry{}, false
		}
		data, ok, err := s.next()
		if err != nil {
			s.err = err
			return Entry{}, false
		}
		if !ok {
			return Entry{}, false
		}
		s.cur, s.err = DecodeSegment(data)
		s.i = 0
		if s.err != nil {
			return Entry{}, false
		}
	}
	s.i++
	return s.cur[s.i-1], true
}

func (s *segmentIterator) Err() error { return s.err }

type layer struct {
	it   Iterator
	head Entry
	ok   bool
	// pos is the head's place in the layer: the entries taken from it
	// before the head. A Seek that skips entries without taking them
	// counts fewer, but always drops the head, which was never handed out.
	pos uint64
}

// advance takes the layer's next entry as its head.
func (l *layer) advance() {
	l.head, l.ok = l.it.Next()
	l.pos++
}

// MergeIterator is the tree of a backup chain; see Merge.
type MergeIterator struct {
	layers []*layer
	err    error
	keep   bool   // keep tombstones in the output
	last   int    // layer of the entry Next returned last
	pos    uint64 // its place in that layer
}

// Merge combines the indexes of a backup chain, oldest first, into the tree
// at the newest: for each path the entry of the newest layer that has it
// wins, and a path whose winner is a tombstone is left out.
func Merge(layers ...Iterator) *MergeIterator { return newMerge(layers, false) }

// MergeKeepDeleted is Merge that passes winning tombstones through, for
// callers that diff two trees.
func MergeKeepDeleted(layers ...Iterator) *MergeIterator { return newMerge(layers, true) }

func newMerge(its []Iterator, keep bool) *MergeIterator {
	m := &MergeIterator{keep: keep}
	for _, it := range its {
		l := &layer{it: it}
		l.head, l.ok = it.Next()
		if !l.ok && it.Err() != nil && m.err == nil {
			m.err = it.Err()
		}
		m.layers = append(m.layers, l)
	}
	return m
}

func (m *MergeIterator) Next() (Entry, bool) {
	for m.err == nil {
		// Chains are short (a full and its incrementals), so a linear scan
		// for the smallest head beats a heap.
		var best *layer
		bestIdx := -1
		for i, l := range m.layers {
			if !l.ok {
				continue
			}
			if best == nil || Compare(l.head.Path, best.head.Path) <= 0 {
				best, bestIdx = l, i // on equal paths the later (newer) layer wins
			}
		}
		if best == nil {
			return Entry{}, false
		}
		win, pos := best.head, best.pos
		for _, l := range m.layers {
			for l.ok && l.head.Path == win.Path {
				l.advance()
				if !l.ok && l.it.Err() != nil {
					m.err = l.it.Err()
					return Entry{}, false
				}
			}
		}
		if win.Type == TypeDeleted && !m.keep {
			continue
		}
		m.last, m.pos = bestIdx, pos
		return win, true
	}
	return Entry{}, false
}

func (m *MergeIterator) Err() error { return m.err }

// Layer is the index, in the layers given to Merge, of the layer that holds
// the entry Next returned last: which backup of a chain stored that version.
func (m *MergeIterator) Layer() int { return m.last }

// Position is the place, in its layer, of the entry Next returned last.
// Two entries of one layer that Next returned lie next to each other in
// that layer's index, nothing between them, exactly when their positions
// differ by one: an entry of the layer that a newer one shadowed, a
// tombstone left out, one a caller read and dropped, or one a Seek
// skipped, each leaves a gap. Positions only compare within one iterator.
func (m *MergeIterator) Position() uint64 { return m.pos }

type filterIterator struct {
	it   Iterator
	keep func(*Entry) bool
}

// Filter yields the entries of it for which keep returns true.
func Filter(it Iterator, keep func(*Entry) bool) Iterator {
	return &filterIterator{it: it, keep: keep}
}

func (f *filterIterator) Next() (Entry, bool) {
	for {
		e, ok := f.it.Next()
		if !ok {
			return e, false
		}
		if f.keep(&e) {
			return e, true
		}
	}
}

func (f *filterIterator) Err() error { return f.it.Err() }

// WithinAny returns a Filter predicate that keeps entries at or below any of roots.
func WithinAny(roots []string) func(*Entry) bool {
	return func(e *Entry) bool {
		if len(roots) == 0 {
			return true
		}
		for _, r := range roots {
			if Within(e.Path, r) {
				return true
			}
		}
		return false
	}
}

// Collect drains it into a slice.
func Collect(it Iterator) ([]Entry, error) {
	var out []Entry
	for {
		e, ok := it.Next()
		if !ok {
			return out, it.Err()
		}
		out = append(out, e)
	}
}
