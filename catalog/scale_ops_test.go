package catalog

// benchLs and benchPlan as the revision before the catalog could seek
// (6651f1c) read the catalog: bench/catalog10m.sh copies this file into
// that revision beside scale_bench_test.go. benchLs is server.treeList's
// loop over orchestrator.TreeFrom; benchPlan is the planner's count pass
// and its pass per backup of the chain, each over the whole merged tree.

import (
	"path"

	"github.com/cairnbackup/cairn/fileindex"
)

func benchLs(s *Store, backup uint64, dir string) (int, error) {
	chain, err := s.Chain(backup)
	if err != nil {
		return 0, err
	}
	layers := make([]fileindex.Iterator, len(chain))
	for i, b := range chain {
		layers[i] = s.IndexFrom(b.ID, dir)
	}
	it := fileindex.Merge(layers...)
	n, found := 0, false
	for {
		e, ok := it.Next()
		if !ok {
			break
		}
		if !fileindex.Within(e.Path, dir) {
			if found && fileindex.Compare(e.Path, dir) > 0 {
				break
			}
			continue
		}
		found = true
		if e.Path == dir || path.Dir(e.Path) != dir {
			continue
		}
		n++
		if n == 5000 {
			break
		}
	}
	return n, it.Err()
}

func benchPlan(s *Store, backup uint64, roots []string) (int, error) {
	chain, err := s.Chain(backup)
	if err != nil {
		return 0, err
	}
	ancestors := map[string]bool{}
	for _, r := range roots {
		for q := r; q != "/"; {
			q = path.Dir(q)
			ancestors[q] = true
		}
	}
	tree := func() *fileindex.MergeIterator {
		layers := make([]fileindex.Iterator, len(chain))
		for i, b := range chain {
			layers[i] = s.Index(b.ID)
		}
		return fileindex.Merge(layers...)
	}
	inRoot := fileindex.WithinAny(roots)
	n := 0
	// The count, then one pass per backup of the chain.
	for pass := -1; pass < len(chain); pass++ {
		it := tree()
		for {
			e, ok := it.Next()
			if !ok {
				break
			}
			if pass >= 0 && it.Layer() != pass {
				continue
			}
			if inRoot(&e) || (pass >= 0 && e.Type == fileindex.TypeDir && ancestors[e.Path]) {
				n++
			}
		}
		if err := it.Err(); err != nil {
			return 0, err
		}
	}
	return n, nil
}
