package catalog

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// TestPoolCompression: a pool compresses with zstd until an administrator
// sets it to s2 or none; the setting survives what else rewrites the pool
// (another node joining it), and an unknown pool or codec is refused with
// nothing changed.
func TestPoolCompression(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	codec := func(name string) string {
		t.Helper()
		p, err := c.s.Pool(name)
		if err != nil {
			t.Fatal(err)
		}
		return p.DataCodec()
	}
	if got := codec("disk1"); got != "zstd" {
		t.Fatalf("a new pool compresses with %q, want zstd", got)
	}
	set := func(codec string) *Command {
		return &Command{Op: OpSetPoolCompression, PoolCompression: &PoolCompression{Pool: "disk1", Codec: codec}}
	}
	for _, want := range []string{"s2", "none", "zstd", "s2", "s2"} {
		c.must(set(want))
		if got := codec("disk1"); got != want {
			t.Fatalf("set to %s: the pool compresses with %q", want, got)
		}
	}
	p, _ := c.s.Pool("disk1")
	if !p.Compression || p.Codec != "s2" {
		t.Fatalf("pool set to s2: %+v", p)
	}
	c.must(&Command{Op: OpRegisterNode, Node: &StorageNode{ID: "sn2", DataAddr: "b:2", Pools: []NodePool{{Name: "disk1", Dir: "/y"}}}})
	if p, _ := c.s.Pool("disk1"); p.DataCodec() != "s2" || len(p.Nodes) != 2 {
		t.Fatalf("pool after a second node joined: %+v", p)
	}

	before := dump(t, c.s)
	e := c.refused(CodeNotFound, &Command{Op: OpSetPoolCompression, PoolCompression: &PoolCompression{Pool: "nosuch", Codec: "s2"}})
	if !errors.Is(e, ErrNotFound) || !strings.Contains(e.Msg, `"nosuch"`) || !strings.Contains(e.Hint, "cairn pool list") {
		t.Fatalf("unknown pool: %+v", e)
	}
	for _, bad := range []string{"lz4", "", "S2", "zstd "} {
		e := c.refused(CodeInvalidArgument, set(bad))
		if !strings.Contains(e.Msg, "disk1") {
			t.Errorf("codec %q: the refusal does not name the pool: %q", bad, e.Msg)
		}
		for _, name := range []string{"zstd", "s2", "none"} {
			if !strings.Contains(e.Hint, name) {
				t.Errorf("codec %q: the hint %q does not name %s", bad, e.Hint, name)
			}
		}
	}
	c.refused(CodeInvalidArgument, &Command{Op: OpSetPoolCompression})
	if after := dump(t, c.s); after != before {
		t.Fatalf("a refused change of compression changed the catalog:\n%s\n---\n%s", before, after)
	}

	// A pool created with a codec keeps it; one with a codec this version
	// does not know is not created.
	c.must(&Command{Op: OpCreatePool, Pool: &Pool{Name: "fast", Codec: "none", Compression: true}})
	if p, _ := c.s.Pool("fast"); p.Compression || p.DataCodec() != "none" {
		t.Fatalf("pool created with codec none: %+v", p)
	}
	c.refused(CodeInvalidArgument, &Command{Op: OpCreatePool, Pool: &Pool{Name: "odd", Codec: "brotli", Compression: true}})
}

// TestPoolCodecOfOldRecords: a record written before Codec has only
// compression, true (zstd) or false (none), and reads as it did.
func TestPoolCodecOfOldRecords(t *testing.T) {
	for js, want := range map[string]string{
		`{"name":"a","compression":true}`:                "zstd",
		`{"name":"a","compression":false}`:               "none",
		`{"name":"a"}`:                                   "none",
		`{"name":"a","compression":true,"codec":"s2"}`:   "s2",
		`{"name":"a","compression":false,"codec":"s2"}`:  "none",
		`{"name":"a","compression":true,"codec":"zstd"}`: "zstd",
	} {
		var p Pool
		if err := json.Unmarshal([]byte(js), &p); err != nil {
			t.Fatal(err)
		}
		if got := p.DataCodec(); got != want {
			t.Errorf("%s: codec %q, want %q", js, got, want)
		}
	}
	// A pool that was never set writes no codec, so its record stays
	// what older servers wrote.
	b, err := json.Marshal(&Pool{Name: "a", Compression: true})
	if err != nil || strings.Contains(string(b), "codec") {
		t.Fatalf("pool with no codec encodes as %s (%v)", b, err)
	}
}
