package catalog

// benchLs and benchPlan read the catalog as the server does: benchLs as
// server.treeList (ListTree, a page of at most 5000 entries), benchPlan as
// the restore planner (server/orchestrator/plan.go): a count pass, then a
// pass per backup of the chain, each over the selection of the chosen paths
// and the directories above them. bench/catalog10m/baseline_ops_test.go.txt
// is the same for the revision before seeks.

import (
	"maps"
	"path"
	"slices"

	"github.com/cairnbackup/cairn/fileindex"
)

func benchLs(s *Store, backup uint64, dir string) (int, error) {
	chain, err := s.Chain(backup)
	if err != nil {
		return 0, err
	}
	n := 0
	_, err = s.ListTree(chain, dir, "", false, func(*TreeEntry) bool {
		n++
		return n < 5000
	})
	return n, err
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
	inRoot := fileindex.WithinAny(roots)
	n := 0
	for pass := -1; pass < len(chain); pass++ {
		it := fileindex.Select(s.TreeOf(chain), roots, slices.Collect(maps.Keys(ancestors)))
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
