package storagenode

import (
	"errors"
	"io"
	"strings"
	"testing"
)

type countedVolume struct {
	*strings.Reader
	closed int
}

func (v *countedVolume) Close() error { v.closed++; return nil }

// A stream opens each volume once for all its read requests; the session
// readers that close what they were given close nothing of it; the end of
// the stream closes each once, and a volume that would not open is asked
// for again by the next request.
func TestKeptVolumesOpenOncePerStream(t *testing.T) {
	k := keptVolumes{}
	opened := map[string][]*countedVolume{}
	fail := true
	openOf := func(name string) func() (readerAtCloser, error) {
		return func() (readerAtCloser, error) {
			if name == "B" && fail {
				fail = false
				return nil, errors.New("not mountable")
			}
			v := &countedVolume{Reader: strings.NewReader("volume " + name)}
			opened[name] = append(opened[name], v)
			return v, nil
		}
	}
	for range 3 { // three read requests
		for _, name := range []string{"A", "B"} {
			ra, err := k.open(name, openOf(name))
			if name == "B" && err != nil {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 8)
			if _, err := ra.ReadAt(b, 0); err != nil || string(b) != "volume "+name {
				t.Fatalf("read of %s: %q, %v", name, b, err)
			}
			if c, ok := ra.(io.Closer); ok {
				c.Close() // as a session reader does
			}
		}
	}
	for _, name := range []string{"A", "B"} {
		if len(opened[name]) != 1 || opened[name][0].closed != 0 {
			t.Fatalf("volume %s over three requests: opened %d times, closed %d before the stream ended", name, len(opened[name]), opened[name][0].closed)
		}
	}
	k.release(nil)
	for _, name := range []string{"A", "B"} {
		if c := opened[name][0].closed; c != 1 {
			t.Fatalf("volume %s closed %d times at the stream's end", name, c)
		}
	}
	if len(k) != 0 {
		t.Fatalf("%d volumes kept after the stream ended", len(k))
	}
}
