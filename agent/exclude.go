package agent

import "github.com/cairnbackup/cairn/fileindex"

// excludePattern is one of WalkOptions.Excludes, ready to match.
type excludePattern struct {
	fileindex.Exclude
	// matched: it left something out of this walk.
	matched bool
}

// compileExcludes checks and prepares the patterns of WalkOptions.Excludes.
func compileExcludes(pats []string) ([]*excludePattern, error) {
	out := make([]*excludePattern, 0, len(pats))
	for _, raw := range pats {
		p, err := fileindex.ParseExclude(raw)
		if err != nil {
			return nil, err
		}
		out = append(out, &excludePattern{Exclude: p})
	}
	return out, nil
}
