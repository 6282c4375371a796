package server

import (
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// TestPoolCodecsAreTheVolumes: the catalog names a pool's codecs itself,
// since it imports no medium, and the storage node hands the name to
// media/volume as it is: each must be the volume's name, and both must
// refuse the same names.
func TestPoolCodecsAreTheVolumes(t *testing.T) {
	for codec, want := range map[string]string{
		catalog.CodecZstd: volume.CompressionZstd,
		catalog.CodecS2:   volume.CompressionS2,
		catalog.CodecNone: volume.CompressionNone,
	} {
		if err := volume.CheckCompression(codec); err != nil || codec != want || !catalog.ValidCodec(codec) {
			t.Errorf("catalog codec %q: the volume's is %q, and refuses it: %v; the catalog takes it: %v", codec, want, err, catalog.ValidCodec(codec))
		}
	}
	for _, bad := range []string{"", "lz4", "S2", "zstd ", "gzip"} {
		if err := volume.CheckCompression(bad); err == nil || catalog.ValidCodec(bad) {
			t.Errorf("codec %q: the volume refuses it: %v; the catalog takes it: %v", bad, err != nil, catalog.ValidCodec(bad))
		}
	}
}

// TestPoolSetCompression: pool.set changes the codec pool.list shows and
// the grants of disk and tape volumes carry, for jobs that start after it;
// an unknown pool or codec is refused with a hint, and changes nothing.
func TestPoolSetCompression(t *testing.T) {
	h := newHarness(t)
	_, orders := h.tapeSetup()
	h.must(h.api(wire.OpMediaLabel, wire.MediaLabelReq{Slot: 1, Pool: "Weekly"}, nil))
	listed := func() map[string]string {
		var pools wire.PoolListResp
		h.must(h.api(wire.OpPoolList, wire.Empty{}, &pools))
		m := map[string]string{}
		for _, p := range pools.Pools {
			m[p.Name] = p.Compression
		}
		return m
	}
	if got := listed(); got["Default"] != "zstd" || got["Weekly"] != "zstd" {
		t.Fatalf("new pools compress with %v, want zstd", got)
	}
	// grant starts a backup to pool and returns its first volume's grant;
	// the job is then aborted, so the next one can start.
	grant := func(pool string) wire.VolumeGrant {
		t.Helper()
		var started wire.JobStarted
		h.must(h.api(wire.OpBackupStart, wire.BackupStartReq{Client: "web", Paths: []fileindex.Path{"/srv"}, Level: "full", Pool: pool}, &started))
		<-orders
		var g wire.VolumeGrant
		h.must(h.node(wire.OpVolumeAcquire, wire.VolumeAcquireReq{JobID: started.JobID, Pool: pool}, &g))
		h.must(h.node(wire.OpSessionAbort, wire.SessionAbortReq{JobID: started.JobID, Error: wire.Error{Code: wire.CodeIO, Message: "test"}}, nil))
		return g
	}
	if g := grant("Default"); !g.Compression || g.Codec != "zstd" || g.DataCodec() != "zstd" {
		t.Fatalf("grant of a new pool: compression %v codec %q", g.Compression, g.Codec)
	}

	var resp wire.PoolSetResp
	h.must(h.api(wire.OpPoolSet, wire.PoolSetReq{Name: "Default", Compression: "s2"}, &resp))
	if resp != (wire.PoolSetResp{Name: "Default", Compression: "s2"}) {
		t.Fatalf("pool.set answered %+v", resp)
	}
	h.must(h.api(wire.OpPoolSet, wire.PoolSetReq{Name: "Weekly", Compression: "none"}, nil))
	if got := listed(); got["Default"] != "s2" || got["Weekly"] != "none" {
		t.Fatalf("pool list after pool.set: %v", got)
	}
	if g := grant("Default"); !g.Compression || g.Codec != "s2" || g.DataCodec() != "s2" {
		t.Fatalf("disk grant of an s2 pool: compression %v codec %q", g.Compression, g.Codec)
	}
	// A node from before Codec reads Compression alone: none stays none.
	if g := grant("Weekly"); g.Barcode == "" || g.Compression || g.Codec != "none" || g.DataCodec() != "none" {
		t.Fatalf("tape grant of a pool without compression: %+v", g)
	}

	err := h.api(wire.OpPoolSet, wire.PoolSetReq{Name: "Nosuch", Compression: "s2"}, nil)
	wantCode(t, err, wire.CodeNotFound)
	if !strings.Contains(err.Error(), `"Nosuch"`) || !strings.Contains(wire.AsError(err).Hint, "cairn pool list") {
		t.Fatalf("unknown pool: %v (hint %q)", err, wire.AsError(err).Hint)
	}
	for _, bad := range []string{"lz4", ""} {
		err := h.api(wire.OpPoolSet, wire.PoolSetReq{Name: "Default", Compression: bad}, nil)
		wantCode(t, err, wire.CodeInvalidArgument)
		if hint := wire.AsError(err).Hint; !strings.Contains(hint, "zstd") || !strings.Contains(hint, "s2") || !strings.Contains(hint, "none") {
			t.Fatalf("codec %q: hint %q names not every codec", bad, hint)
		}
	}
	if got := listed(); got["Default"] != "s2" || got["Weekly"] != "none" {
		t.Fatalf("refused pool.set changed the pools: %v", got)
	}
}
