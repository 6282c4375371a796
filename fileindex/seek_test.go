package fileindex

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

// seekSlice is a Seeker over entries in memory, counting its seeks.
type seekSlice struct {
	sliceIterator
	seeks *int
}

func (s *seekSlice) Seek(past Past) {
	*s.seeks++
	s.i += sort.Search(len(s.entries)-s.i, func(k int) bool { return past(s.entries[s.i+k].Path) })
}

// randomChain is a full and incrementals over a tree of nested directories,
// with tombstones, each in index order.
func randomChain(rng *rand.Rand) [][]Entry {
	var all []string
	for a := 0; a < 4; a++ {
		da := fmt.Sprintf("/t/a%d", a)
		all = append(all, da)
		for b := 0; b < 4; b++ {
			db := fmt.Sprintf("%s/b%d", da, b)
			all = append(all, db, db+".x")
			for f := 0; f < 5; f++ {
				all = append(all, fmt.Sprintf("%s/f%d", db, f))
			}
		}
	}
	all = append(all, "/t")
	slices.SortFunc(all, Compare)
	var layers [][]Entry
	for l := 0; l < 4; l++ {
		var layer []Entry
		for _, p := range all {
			switch r := rng.IntN(10); {
			case l == 0 || r < 2:
				layer = append(layer, Entry{Path: p, Type: TypeFile, Size: int64(l)})
			case r < 3:
				layer = append(layer, Entry{Path: p, Type: TypeDeleted})
			}
		}
		layers = append(layers, layer)
	}
	return layers
}

// Select over seeking and over plain layers yields what filtering the
// whole merged tree yields, for random choices of subtrees and paths.
func TestSelectIsTheFilteredTree(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 300; round++ {
		layers := randomChain(rng)
		var plain []Iterator
		for _, l := range layers {
			plain = append(plain, SliceIterator(l))
		}
		tree, err := Collect(Merge(plain...))
		if err != nil {
			t.Fatal(err)
		}
		pick := func() string {
			if rng.IntN(8) == 0 {
				return fmt.Sprintf("/t/a%d/b%d/missing", rng.IntN(5), rng.IntN(5))
			}
			return layers[0][rng.IntN(len(layers[0]))].Path
		}
		var roots, points []string
		for range rng.IntN(3) {
			roots = append(roots, pick())
		}
		for range rng.IntN(4) {
			points = append(points, pick())
		}
		var want []Entry
		for _, e := range tree {
			if WithinAny(roots)(&e) && len(roots) > 0 || slices.Contains(points, e.Path) {
				want = append(want, e)
			}
		}
		seeks := 0
		var seekers []Iterator
		for _, l := range layers {
			seekers = append(seekers, &seekSlice{sliceIterator{entries: l}, &seeks})
		}
		var fresh []Iterator // plain was read to the end above
		for _, l := range layers {
			fresh = append(fresh, SliceIterator(l))
		}
		for name, its := range map[string][]Iterator{"plain": fresh, "seeking": seekers} {
			got, err := Collect(Select(Merge(its...), roots, points))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) || (len(got) > 0 && !slices.EqualFunc(got, want, func(a, b Entry) bool { return a.Path == b.Path && a.Size == b.Size })) {
				t.Fatalf("round %d, %s layers, roots %q, points %q: got %v, want %v", round, name, roots, points, pathsOf(got), pathsOf(want))
			}
		}
		if len(roots)+len(points) > 0 && seeks == 0 {
			t.Fatalf("round %d: the seeking layers were never sought", round)
		}
	}
}

func pathsOf(entries []Entry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Path)
	}
	return out
}

// Merge's Seek skips each layer to its first entry past the place, and
// After skips a directory's whole subtree, not a sibling that sorts
// between its entries in byte order.
func TestMergeSeekAfterSubtree(t *testing.T) {
	full := []Entry{{Path: "/a", Type: TypeDir}, {Path: "/a/b", Type: TypeDir}, {Path: "/a/b/c"}, {Path: "/a/b.x"}, {Path: "/a/c"}}
	inc := []Entry{{Path: "/a/b/d"}, {Path: "/a/b.x", Type: TypeDeleted}, {Path: "/a/d"}}
	seeks := 0
	m := Merge(&seekSlice{sliceIterator{entries: full}, &seeks}, &seekSlice{sliceIterator{entries: inc}, &seeks})
	if e, _ := m.Next(); e.Path != "/a" {
		t.Fatalf("first: %s", e.Path)
	}
	if e, _ := m.Next(); e.Path != "/a/b" {
		t.Fatalf("second: %s", e.Path)
	}
	m.Seek(After("/a/b"))
	rest, _ := Collect(m)
	if got := pathsOf(rest); !slices.Equal(got, []string{"/a/c", "/a/d"}) {
		t.Fatalf("after /a/b's subtree: %q", got)
	}
	if seeks != 2 {
		t.Fatalf("%d seeks, want one per layer", seeks)
	}
}

// Two entries of one layer that a merge, or a selection over it, hands out
// one after the other (among that layer's) lie next to each other in the
// layer exactly when their positions differ by one: whatever lies between
// them (shadowed by a newer layer, a tombstone, sought over, even by a
// layer that seeks without reading) leaves a gap. A restore plan tells the
// storage node from this which entries follow one another on the volume.
func TestPositionsTellNeighboursInALayer(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	neighbours, gaps := 0, 0
	for round := 0; round < 300; round++ {
		layers := randomChain(rng)
		place := make([]map[string]int, len(layers))
		for i, l := range layers {
			place[i] = map[string]int{}
			for j, e := range l {
				place[i][e.Path] = j
			}
		}
		var roots []string
		if rng.IntN(2) == 0 {
			roots = append(roots, layers[0][rng.IntN(len(layers[0]))].Path, layers[0][rng.IntN(len(layers[0]))].Path)
		}
		seeks := 0
		var its []Iterator
		for _, l := range layers {
			if rng.IntN(2) == 0 {
				its = append(its, &seekSlice{sliceIterator{entries: l}, &seeks})
			} else {
				its = append(its, SliceIterator(l))
			}
		}
		m := Merge(its...)
		var next func() (Entry, bool)
		var layer func() int
		var pos func() uint64
		if roots != nil {
			sel := Select(m, roots, nil)
			next, layer, pos = sel.Next, sel.Layer, sel.Position
		} else {
			next, layer, pos = m.Next, m.Layer, m.Position
		}
		type last struct {
			place int
			pos   uint64
		}
		prev := map[int]last{}
		for {
			e, ok := next()
			if !ok {
				break
			}
			l := layer()
			p, ok := place[l][e.Path]
			if !ok {
				t.Fatalf("round %d: %s is not in layer %d", round, e.Path, l)
			}
			if b, ok := prev[l]; ok {
				adjacent := p == b.place+1
				if (pos() == b.pos+1) != adjacent {
					t.Fatalf("round %d, roots %q: layer %d hands out %s (place %d, position %d) after place %d (position %d)", round, roots, l, e.Path, p, pos(), b.place, b.pos)
				}
				if adjacent {
					neighbours++
				} else {
					gaps++
				}
			}
			prev[l] = last{p, pos()}
		}
	}
	if neighbours == 0 || gaps == 0 {
		t.Fatalf("%d neighbours and %d gaps seen: the chains test nothing", neighbours, gaps)
	}
}
