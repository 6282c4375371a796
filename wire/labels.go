package wire

import (
	"fmt"
	"strings"
)

// ParseLabels reads client labels written KEY=VALUE, as an agent's config
// and 'cairn policy --label' take them. The catalog checks the keys and
// values further when it stores them.
func ParseLabels(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q: write it KEY=VALUE, such as role=db", kv)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("label %s is given twice", k)
		}
		out[k] = v
	}
	return out, nil
}
